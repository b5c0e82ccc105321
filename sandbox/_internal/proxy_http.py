"""Strict HTTP/1.1 parsing of client requests and rebuilding of what goes upstream.

dockerd (Go's net/http) is lenient; a proxy that parses differently from its upstream is how request
smuggling and filter bypasses happen. So the proxy parses each request exactly once, with h11 plus a few
checks h11 leaves out (it silently merges duplicate ``Content-Length`` and prefers ``Transfer-Encoding``
over ``Content-Length``), and then never forwards client bytes: the upstream request is rebuilt from the
parsed, checked fields and a short header allowlist. Anything ambiguous is refused rather than guessed.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from dataclasses import dataclass

import h11

# Under /_ping or /v1.NN/..., only these characters, never "%" (no decoding differences), ".." or "//".
_PATH_RE = re.compile(r"^/(?:_ping|v1\.[0-9]{2}/[A-Za-z0-9_.:/-]+)$")
_VERSION_RE = re.compile(r"^/v1\.([0-9]{2})(/.*)$")
_QUERY_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UA_RE = re.compile(r"^[\x20-\x7e]{1,256}$")
MAX_QUERY_FIELDS = 32
FRAMING_RULES = frozenset(
    {"http_parse", "http_version", "cl_te_conflict", "duplicate_content_length", "duplicate_header"}
)
MIN_API_MINOR = 24  # compose v2 negotiates down to the engine's version (1.41 here); older is refused


class BadRequest(Exception):
    """A request the proxy will not interpret; ``rule`` names the check, ``status`` the HTTP answer."""

    def __init__(self, rule: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        # Framing problems get their HTTP status; everything the proxy understood but refuses is a 403.
        self.status = status if status is not None else (400 if rule in FRAMING_RULES else 403)


@dataclass
class ClientRequest:
    """One parsed, checked request; ``route_path`` is the path without the ``/v1.NN`` prefix."""

    method: str
    path: str
    route_path: str
    api_version: str | None
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes
    upgrade: bool = False
    user_agent: str = ""
    content_type: str = ""


class RequestReader:
    """Reads requests off one client connection with a total per-request deadline (slow clients)."""

    def __init__(self, sock: socket.socket, *, max_header_bytes: int, max_body_bytes: int, timeout_s: float) -> None:
        self.sock = sock
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.buffer = b""  # bytes received but not yet given to h11 (head checking happens first)

    def next_request(self) -> ClientRequest | None:
        """The next request, or None when the client closed (or idled out) cleanly between requests.

        The per-request deadline starts with the request's first byte: an idle keep-alive connection
        (compose keeps several) is closed quietly after the timeout, a slow request is refused.
        """
        if not self.buffer:
            data = self._recv(time.monotonic() + self.timeout_s, idle=True)
            if not data:
                return None
            self.buffer = data
        deadline = time.monotonic() + self.timeout_s
        head_end = self._read_head(deadline)
        if head_end is None:
            return None
        # h11 only ever sees this request's bytes: a pipelined next request stays in self.buffer and
        # goes through every check again on its own.
        head, self.buffer = self.buffer[:head_end], self.buffer[head_end:]
        _check_raw_head(head)
        self.conn.receive_data(head)
        event = self._next_event(deadline)
        if not isinstance(event, h11.Request):
            raise BadRequest("http_parse", "malformed request")
        return self._finish(event, deadline)

    def _read_head(self, deadline: float) -> int | None:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                if end + 4 > self.max_header_bytes:
                    raise BadRequest("header_too_large", f"request head over {self.max_header_bytes} bytes", 431)
                return end + 4
            if b"\n\n" in self.buffer or b"\r\r" in self.buffer:
                raise BadRequest("http_parse", "bare LF or CR line endings are not accepted")
            if len(self.buffer) > self.max_header_bytes:
                raise BadRequest("header_too_large", f"request head over {self.max_header_bytes} bytes", 431)
            data = self._recv(deadline)
            if not data:
                if self.buffer:
                    raise BadRequest("http_parse", "connection closed inside a request head")
                return None
            self.buffer += data

    def _recv(self, deadline: float, *, idle: bool = False) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BadRequest("client_timeout", f"request not received within {self.timeout_s:g} s", 408)
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except TimeoutError as exc:
            if idle:
                return b""
            raise BadRequest("client_timeout", f"request not received within {self.timeout_s:g} s", 408) from exc
        except OSError:
            return b""

    def _next_event(self, deadline: float) -> object:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest("http_parse", f"malformed request: {exc}") from exc
            if event is h11.NEED_DATA:  # head and body were handed over whole: the framing disagrees
                raise BadRequest("http_parse", "request framing is inconsistent")
            return event

    def _finish(self, req: h11.Request, deadline: float) -> ClientRequest:
        if req.http_version != b"1.1":
            raise BadRequest("http_version", "only HTTP/1.1 is accepted")
        method = req.method.decode("ascii")
        target = req.target.decode("ascii", errors="strict")
        headers = [(k.decode("ascii").lower(), v.decode("latin-1")) for k, v in req.headers]
        length = _content_length(headers)
        if length > self.max_body_bytes:
            raise BadRequest("body_too_large", f"request body over {self.max_body_bytes} bytes", 413)
        while len(self.buffer) < length:
            data = self._recv(deadline)
            if not data:
                raise BadRequest("http_parse", "connection closed inside a request body")
            self.buffer += data
        if length:  # receive_data(b"") would mean "the client closed"
            self.conn.receive_data(self.buffer[:length])
            self.buffer = self.buffer[length:]
        body = bytearray()
        while True:
            event = self._next_event(deadline)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body_bytes:
                    raise BadRequest("body_too_large", f"request body over {self.max_body_bytes} bytes", 413)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise BadRequest("http_parse", "malformed request body")
        path, query = parse_target(target)
        api_version, route_path = split_version(path)
        content_type = _single(headers, "content-type")
        if body:
            media = content_type.split(";", 1)[0].strip().lower()
            params = content_type.split(";", 1)[1].strip().lower() if ";" in content_type else ""
            if media != "application/json" or params not in ("", "charset=utf-8"):
                raise BadRequest("content_type", "a request body must be Content-Type: application/json", 415)
        ua = _single(headers, "user-agent")
        connection = {t.strip().lower() for t in _single(headers, "connection").split(",") if t.strip()}
        upgrade = "upgrade" in connection and _single(headers, "upgrade").strip().lower() == "tcp"
        return ClientRequest(
            method=method,
            path=path,
            route_path=route_path,
            api_version=api_version,
            query=query,
            headers=headers,
            body=bytes(body),
            upgrade=upgrade,
            user_agent=ua if _UA_RE.match(ua) else "",
            content_type=content_type,
        )


def _check_raw_head(head: bytes) -> None:
    """Checks on the raw header lines that h11 would otherwise normalise away."""
    names: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        if b"\n" in line or b"\r" in line or b"\0" in line:
            raise BadRequest("http_parse", "control characters in a header line")
        names.append(line.split(b":", 1)[0].strip().lower())
    cl = names.count(b"content-length")
    te = names.count(b"transfer-encoding")
    if cl and te:
        raise BadRequest("cl_te_conflict", "both Content-Length and Transfer-Encoding (request smuggling)")
    if cl > 1:
        raise BadRequest("duplicate_content_length", "more than one Content-Length header")
    if te:
        raise BadRequest("transfer_encoding", "chunked request bodies are not accepted; send Content-Length", 411)
    for name in (b"host", b"connection", b"upgrade", b"content-type", b"user-agent"):
        if names.count(name) > 1:
            raise BadRequest("duplicate_header", f"more than one {name.decode()} header")


def _content_length(headers: list[tuple[str, str]]) -> int:
    value = _single(headers, "content-length")
    if not value:
        return 0
    if not value.isdigit() or len(value) > 12:
        raise BadRequest("http_parse", "invalid Content-Length")
    return int(value)


def _single(headers: list[tuple[str, str]], name: str) -> str:
    for k, v in headers:
        if k == name:
            return v
    return ""


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Split and check a request target; reject anything dockerd's router could read differently."""
    if not target.startswith("/") or "#" in target:
        raise BadRequest("path", "request target must be an absolute path")
    path, _, raw_query = target.partition("?")
    if "%" in path or ".." in path or "//" in path or not _PATH_RE.match(path):
        raise BadRequest("path", f"path {path[:120]!r} is not a plain /_ping or /v1.NN/ path")
    query: dict[str, str] = {}
    if raw_query:
        if ";" in raw_query:
            raise BadRequest("query", "';' is not a query separator")
        try:
            pairs = urllib.parse.parse_qsl(
                raw_query,
                keep_blank_values=True,
                strict_parsing=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("query", f"malformed query string: {exc}") from exc
        for key, value in pairs:
            if not _QUERY_KEY_RE.match(key):
                raise BadRequest("query", f"query parameter name {key[:64]!r} is not allowed")
            if key in query:
                raise BadRequest("duplicate_query", f"query parameter {key!r} given more than once")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise BadRequest("query", f"control characters in query parameter {key!r}")
            query[key] = value
    return path, query


def split_version(path: str) -> tuple[str | None, str]:
    if path == "/_ping":
        return None, "/_ping"
    m = _VERSION_RE.match(path)
    if m is None:  # pragma: no cover - _PATH_RE already guarantees the shape
        raise BadRequest("path", "missing /v1.NN/ prefix")
    if int(m.group(1)) < MIN_API_MINOR:
        raise BadRequest("api_version", f"API version 1.{m.group(1)} is older than 1.{MIN_API_MINOR}")
    return f"1.{m.group(1)}", m.group(2)


def build_request(
    method: str, path: str, query: dict[str, str], body: bytes | None, *, user_agent: str = "", upgrade: bool = False
) -> h11.Request:
    """The request sent upstream: our own request line and a fixed header set, never client bytes."""
    target = path
    if query:
        target += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
    headers = [("Host", "docker")]
    if user_agent and _UA_RE.match(user_agent):
        headers.append(("User-Agent", user_agent))
    if body is not None and (body or method in ("POST", "PUT")):
        headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(body))))
    if upgrade:
        headers.append(("Connection", "Upgrade"))
        headers.append(("Upgrade", "tcp"))
    return h11.Request(method=method, target=target, headers=headers)


# Response headers passed back to the client; Location is never passed (no redirects are followed or relayed).
RESPONSE_HEADERS = frozenset(
    {
        "api-version",
        "content-type",
        "docker-experimental",
        "ostype",
        "server",
        "date",
        "cache-control",
        "pragma",
        "builder-version",
        "swarm",
    }
)


def response_headers(headers: list[tuple[bytes, bytes]], *, keep_framing: bool) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in headers:
        name = k.lower()
        if name.decode("latin-1") in RESPONSE_HEADERS or (keep_framing and name == b"content-length"):
            out.append((k, v))
    return out
