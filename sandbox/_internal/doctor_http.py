"""A minimal HTTP/1.1 GET over a unix socket, for `par doctor`'s probes of the proxy and the engine.

h11 does the parsing (the same parser the proxy trusts); responses are size-capped and every socket
operation has a timeout, because a doctor must never hang on the thing it is diagnosing.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def unix_get(path: Path, target: str, *, timeout_s: float = 5.0) -> Reply:
    """GET ``target`` from the HTTP server on unix socket ``path``; OSError/h11 errors propagate."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=target, headers=[("Host", "docker"), ("Connection", "close")])
        sock.sendall((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise OSError(f"response to {target} is larger than {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Reply(status, bytes(body))
    finally:
        sock.close()
