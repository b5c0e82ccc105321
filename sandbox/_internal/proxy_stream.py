"""Relaying the engine's answers: streamed bodies, project-filtered lists and events, hijacked exec streams.

Responses are parsed with h11 too (the proxy never splices upstream bytes into the client connection
outside of a body it framed itself), except after an ``exec/{id}/start`` upgrade, where both sides have
agreed to switch to a raw byte stream. List and event responses are filtered to the project even though
the query already forces the label filter: a filter the engine ignored or misread must not leak other
projects' objects.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Callable
from typing import Any

import h11

from sandbox._internal.proxy_http import RequestReader, response_headers
from sandbox._internal.proxy_resolve import PROJECT_LABEL

MAX_BUFFERED_RESPONSE = 64 * 1024 * 1024
CHUNK = 65536


class UpstreamFailed(Exception):
    """The engine closed, timed out or spoke malformed HTTP; the client gets a 502 if nothing was sent."""


def _labels_of(item: Any, *path: str) -> dict[str, Any]:
    node = item
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def filter_list(endpoint: str, doc: Any, project: str) -> Any:
    """Keep only objects labelled with the project; anything else shaped unexpectedly is dropped."""
    if endpoint in ("containers.list", "networks.list"):
        items = doc if isinstance(doc, list) else []
        return [x for x in items if _labels_of(x, "Labels").get(PROJECT_LABEL) == project]
    if endpoint == "volumes.list":
        vols = doc.get("Volumes") if isinstance(doc, dict) else None
        kept = [v for v in (vols or []) if _labels_of(v, "Labels").get(PROJECT_LABEL) == project]
        return {"Volumes": kept, "Warnings": None}
    return doc


def event_in_project(event: Any, project: str) -> bool:
    return _labels_of(event, "Actor", "Attributes").get(PROJECT_LABEL) == project


class Relay:
    """One upstream exchange for one client request."""

    def __init__(
        self,
        reader: RequestReader,
        upstream: socket.socket,
        *,
        idle_timeout_s: float | None,
        uconn: h11.Connection | None = None,
    ) -> None:
        self.reader = reader
        self.client = reader.sock
        self.upstream = upstream
        self.uconn = uconn if uconn is not None else h11.Connection(h11.CLIENT)
        self.idle_timeout_s = idle_timeout_s
        self.sent_head = False
        self.client_eof = False

    def send_request(self, request: h11.Request, body: bytes) -> None:
        data = self.uconn.send(request) or b""
        if body:
            data += self.uconn.send(h11.Data(data=body)) or b""
        data += self.uconn.send(h11.EndOfMessage()) or b""
        try:
            self.upstream.sendall(data)
        except OSError as exc:
            raise UpstreamFailed(f"sending to the engine failed: {exc}") from exc

    # -- reading upstream --------------------------------------------------------------------------

    def _wait_readable(self) -> None:
        """Block until the engine sends something; stop early if the client hung up."""
        while True:
            watch = [self.upstream] if self.client_eof else [self.upstream, self.client]
            try:
                ready, _, _ = select.select(watch, [], [], self.idle_timeout_s)
            except (OSError, ValueError) as exc:
                raise UpstreamFailed("connection closed") from exc
            if not ready:
                raise UpstreamFailed("the engine did not answer in time")
            if self.upstream in ready:
                return
            try:
                data = self.client.recv(CHUNK)
            except OSError:
                data = b""
            if not data:
                # A half-closed client still reads its answer; but an endless stream (logs --follow,
                # events) for a client that hung up would hold a thread and an engine stream forever.
                if self.idle_timeout_s is None:
                    raise UpstreamFailed("client went away")
                self.client_eof = True
                continue
            self.reader.buffer += data  # a pipelined next request; parsed after this response
            if len(self.reader.buffer) > self.reader.max_header_bytes + self.reader.max_body_bytes:
                raise UpstreamFailed("client sent too much while a response was streaming")

    def next_event(self) -> Any:
        while True:
            try:
                event = self.uconn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamFailed(f"malformed engine response: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            self._wait_readable()
            try:
                data = self.upstream.recv(CHUNK)
            except OSError as exc:
                raise UpstreamFailed(f"reading from the engine failed: {exc}") from exc
            self.uconn.receive_data(data)

    def read_head(self) -> h11.Response | h11.InformationalResponse:
        while True:
            event = self.next_event()
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return event
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed("the engine closed the connection without answering")
            # other 1xx: skip

    # -- writing to the client ---------------------------------------------------------------------

    def _to_client(self, event: Any) -> None:
        data = self.reader.conn.send(event)
        if data:
            self.client.sendall(data)

    def send_head(self, head: h11.Response) -> None:
        headers = response_headers(list(head.headers), keep_framing=True)
        self.sent_head = True
        self._to_client(h11.Response(status_code=head.status_code, headers=headers, reason=head.reason))

    def stream_body(self, transform: Callable[[bytes], bytes] | None = None) -> None:
        while True:
            event = self.next_event()
            if isinstance(event, h11.Data):
                out = transform(bytes(event.data)) if transform else bytes(event.data)
                if out:
                    self._to_client(h11.Data(data=out))
            elif isinstance(event, h11.EndOfMessage):
                self._to_client(h11.EndOfMessage())
                return
            else:
                raise UpstreamFailed("the engine closed the connection mid-body")

    def read_body(self) -> bytes:
        body = bytearray()
        while True:
            event = self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BUFFERED_RESPONSE:
                    raise UpstreamFailed("engine response too large to filter")
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise UpstreamFailed("the engine closed the connection mid-body")

    def send_buffered(self, head: h11.Response, body: bytes) -> None:
        headers = response_headers(list(head.headers), keep_framing=False)
        headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        self.sent_head = True
        conn = self.reader.conn
        data = conn.send(h11.Response(status_code=head.status_code, headers=headers, reason=head.reason)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        self.client.sendall(data)  # one write: the answer is complete, no reason to split it

    def reusable(self) -> bool:
        """True if the engine connection finished this exchange cleanly and can carry the next one."""
        if self.uconn.our_state is h11.DONE and self.uconn.their_state is h11.DONE:
            self.uconn.start_next_cycle()
            return True
        return False

    # -- exec hijack -------------------------------------------------------------------------------

    def pipe_upgraded(self, head: h11.InformationalResponse) -> tuple[int, int]:
        """Answer 101 and copy raw bytes both ways until both sides are done (half-close aware)."""
        headers = [*response_headers(list(head.headers), keep_framing=False)]
        headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]
        self._to_client(h11.InformationalResponse(status_code=101, headers=headers, reason=b"UPGRADED"))
        up_pending, _ = self.uconn.trailing_data
        cl_pending = self.reader.buffer + self.reader.conn.trailing_data[0]
        self.reader.buffer = b""
        sent = received = 0
        if up_pending:
            self.client.sendall(up_pending)
            received += len(up_pending)
        if cl_pending:
            self.upstream.sendall(cl_pending)
            sent += len(cl_pending)
        open_from = {self.client: self.upstream, self.upstream: self.client}
        while open_from:
            try:
                ready, _, _ = select.select(list(open_from), [], [], self.idle_timeout_s)
            except (OSError, ValueError):
                break
            if not ready:
                break  # idle too long
            for src in ready:
                dst = open_from[src]
                try:
                    data = src.recv(CHUNK)
                except OSError:
                    data = b""
                if data:
                    try:
                        dst.sendall(data)
                    except OSError:
                        open_from.clear()
                        break
                    if src is self.client:
                        sent += len(data)
                    else:
                        received += len(data)
                    continue
                del open_from[src]
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                if src is self.upstream:
                    open_from.clear()  # the engine finished the exec: nothing more can matter
                    break
        return sent, received


class EventFilter:
    """Re-frames the engine's event stream (one JSON object per message) and keeps project events."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.buffer = ""
        self.decoder = json.JSONDecoder()

    def __call__(self, chunk: bytes) -> bytes:
        self.buffer += chunk.decode("utf-8", errors="replace")
        if len(self.buffer) > MAX_BUFFERED_RESPONSE:
            raise UpstreamFailed("event larger than the buffer")
        out: list[str] = []
        while True:
            text = self.buffer.lstrip()
            if not text:
                self.buffer = ""
                break
            try:
                event, end = self.decoder.raw_decode(text)
            except ValueError:
                self.buffer = text
                break
            self.buffer = text[end:]
            if event_in_project(event, self.project):
                out.append(json.dumps(event, separators=(",", ":")) + "\n")
        return "".join(out).encode("utf-8")
