"""The runner's side of the control-plane HTTP protocol (keep-alive, a fresh JWT per request).

Kept behind the small :class:`ControlPlanePeer` interface so the pipeline never touches the network
itself (the python-tuf way): tests and the benchmark talk to the real local control plane over HTTP,
a Datadog adapter would be another implementation of the same four calls.

The client is h11 (the proxy's HTTP parser) over a plain socket, not httpx (which the CLI's admin
commands use) nor ``http.client``: the runner makes four kinds of JSON requests to one origin, and
httpx, or ``http.client`` with the ``email`` and ``ssl`` modules it imports, costs 2-6 MB of the
runner's 60 MB idle budget (bench/bench_pipeline.py); ``ssl`` is imported only for an https URL. What
httpx gave us is kept on purpose: one keep-alive connection per thread (the poll loop, the heartbeat
and the publish threads never share one), a connection found closed by the server is replaced
*before* a request is sent (never a resent POST: a dequeue must not be replayed), no redirects, no
proxy from the environment, certificates always verified on https with the system trust store, and
the response body capped.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import urllib.parse
from typing import Any, Protocol

import h11
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from sandbox import protocol
from sandbox.errors import ProtocolError

READ_CHUNK = 64 * 1024  # bytes per recv
MAX_HEADERS = 64 * 1024  # bytes of response head h11 will buffer


class ControlPlanePeer(Protocol):
    def health_check(self) -> None: ...
    def dequeue(self) -> bytes | None: ...
    def heartbeat(self, task_id: str) -> None: ...
    def publish(self, result: protocol.TaskResult) -> None: ...
    def close(self) -> None: ...


class PermanentPublishError(ProtocolError):
    """The control plane refused an update as malformed (4xx other than 401/429): retrying cannot help."""


class _Response:
    """Status and (capped) body of one exchange; the connection is already free for the next request."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection:
    """One keep-alive HTTP/1.1 connection, driven by h11."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host_header = host_header
        self.h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEADERS)

    def dropped(self) -> bool:
        """True if the server closed it while idle (readable at rest means EOF or junk)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str], cap: int) -> _Response:
        """Send one request, read the response; the body stops at ``cap + 1`` bytes (then the connection dies)."""
        head = [("Host", self.host_header), *headers.items()]
        if body is not None:
            head.append(("Content-Length", str(len(body))))
        out = self.h11.send(h11.Request(method=method, target=target, headers=head))
        if body:
            out = (out or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        out = (out or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        self.sock.sendall(out)
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(READ_CHUNK))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                chunks.append(event.data)
                if size > cap:
                    self.close()  # not read to the end: this connection cannot carry another request
                    return _Response(status, b"".join(chunks)[: cap + 1])
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("the server closed the connection mid-response")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        else:
            self.close()  # "Connection: close" or an HTTP/1.0 server
        return _Response(status, b"".join(chunks))

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and self.sock.fileno() >= 0

    def close(self) -> None:
        self.sock.close()


class HttpPeer:
    def __init__(
        self,
        url: str,
        *,
        key: EllipticCurvePrivateKey,
        org_id: str,
        runner_id: str,
        timeout_s: float,
        max_body_bytes: int,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
                or parts.username is not None):
            raise ProtocolError(f"control_plane.url must be http(s)://host[:port][/path], got {url[:80]!r}")
        try:
            self._port = parts.port
        except ValueError as exc:
            raise ProtocolError(f"control_plane.url has a bad port: {url[:80]!r}") from exc
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._base_path = parts.path.rstrip("/")
        self._timeout = timeout_s
        self._key = key
        self._org_id = org_id
        self._runner_id = runner_id
        self._max_body = max_body_bytes
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tls: Any = None  # ssl.SSLContext, made on first use (https only)

    # -- connections -------------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and (not conn.reusable or conn.dropped()):
            self._discard(conn)
            conn = None
        if conn is None:
            with self._lock:
                if self._closed:
                    raise ProtocolError("the control-plane client is closed")
            conn = _Connection(self._connect(), self._host_header)
            with self._lock:
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def _connect(self) -> socket.socket:
        port = self._port or (443 if self._https else 80)
        sock = socket.create_connection((self._host, port), timeout=self._timeout)
        if not self._https:
            return sock
        if self._tls is None:
            import ssl  # noqa: PLC0415 - only an https control plane needs TLS (~5 MB resident)

            self._tls = ssl.create_default_context()  # system trust store, hostname checked
        try:
            tls_sock: socket.socket = self._tls.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return tls_sock

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _exchange(self, method: str, path: str, body: bytes | None, what: str, *, cap: int) -> _Response:
        try:
            conn = self._connection()
        except OSError as exc:
            raise ProtocolError(f"{what}: cannot connect to {self.url}: {type(exc).__name__}: {exc}") from exc
        headers = {protocol.JWT_HEADER: self._jwt(), "Content-Type": "application/json"}
        try:
            return conn.exchange(method, self._base_path + path, body, headers, cap)
        except ProtocolError as exc:
            self._discard(conn)
            raise ProtocolError(f"{what}: {exc.message}") from exc
        except (OSError, h11.ProtocolError) as exc:
            self._discard(conn)
            raise ProtocolError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _jwt(self) -> str:
        return protocol.make_jwt(self._key, org_id=self._org_id, runner_id=self._runner_id)

    # -- the four calls ----------------------------------------------------------------------------

    def health_check(self) -> None:
        r = self._exchange("GET", protocol.HEALTH_PATH, None, "health check", cap=64 * 1024)
        if r.status_code != 200:
            raise ProtocolError(f"health check: HTTP {r.status_code}: {r.text[:200]}")

    def dequeue(self) -> bytes | None:
        r = self._exchange("POST", protocol.DEQUEUE_PATH, b"{}", "dequeue", cap=self._max_body)
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise ProtocolError(f"dequeue: HTTP {r.status_code}: {r.text[:200]}")
        # Over the cap, the first max_body + 1 bytes are returned: the pipeline rejects the task as
        # oversized without parsing it, and audits that.
        return r.body or None

    def heartbeat(self, task_id: str) -> None:
        r = self._post(protocol.HEARTBEAT_PATH, {"task_id": task_id}, "heartbeat")
        if r.status_code != 200:
            raise ProtocolError(f"heartbeat: HTTP {r.status_code}")

    def publish(self, result: protocol.TaskResult) -> None:
        r = self._post(protocol.PUBLISH_PATH, result.to_dict(), "publish")
        if r.status_code == 200:
            return
        if 400 <= r.status_code < 500 and r.status_code not in (401, 408, 429):
            raise PermanentPublishError(f"publish refused: HTTP {r.status_code}: {r.text[:200]}")
        raise ProtocolError(f"publish: HTTP {r.status_code}: {r.text[:200]}")

    def _post(self, path: str, doc: Any, what: str) -> _Response:
        return self._exchange("POST", path, json.dumps(doc).encode(), what, cap=64 * 1024)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
