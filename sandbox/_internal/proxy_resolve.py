"""Talking to the real engine on the proxy's own behalf: resolving names, ID prefixes and labels.

dockerd accepts a container, network or exec by full ID, unique ID prefix or name. The proxy never tries to
reproduce that lookup; it asks dockerd (inspect), reads the project label of what dockerd found, and rewrites
the client's path to the full ID, so the object that was checked is exactly the object that is acted on even
if a name is reassigned in between.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from sandbox.errors import ProxyError

API = "/v1.41"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class Upstream:
    """A factory of connections to the real Docker socket plus a small JSON request helper."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise ProxyError(f"cannot reach the Docker engine at {self.path}: {exc.strerror or exc}") from exc
        return sock

    def get_json(self, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        """GET ``/v1.41{path}``; returns (status, parsed JSON or None)."""
        status, _, doc, _ = self.get(path, query)
        return status, doc

    def get(self, path: str, query: dict[str, str] | None = None) -> tuple[int, list[tuple[bytes, bytes]], Any, bytes]:
        """GET ``/v1.41{path}``; returns (status, headers, parsed JSON or None, raw body)."""
        target = API + path
        if query:
            target += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
        sock = self.connect()
        try:
            conn = h11.Connection(h11.CLIENT)
            head = conn.send(h11.Request(method="GET", target=target, headers=[("Host", "docker")])) or b""
            sock.sendall(head + (conn.send(h11.EndOfMessage()) or b""))
            status = 0
            headers: list[tuple[bytes, bytes]] = []
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                    continue
                if isinstance(event, h11.Response):
                    status, headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise ProxyError(f"engine response to {path} is over {MAX_RESPONSE_BYTES} bytes")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except (OSError, h11.ProtocolError) as exc:
            raise ProxyError(f"engine request {path} failed: {exc}") from exc
        finally:
            sock.close()
        try:
            return status, headers, json.loads(bytes(body)) if body else None, bytes(body)
        except ValueError as exc:
            raise ProxyError(f"engine answered {path} with invalid JSON") from exc


@dataclass(frozen=True)
class Resolved:
    """An engine object as the policy sees it: kind, full id, name and the compose labels."""

    kind: str
    id: str
    name: str = ""
    project: str | None = None
    service: str | None = None
    oneoff: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The engine's own inspect answer (headers, body), replayed for an allowed plain inspect of the
    # same object instead of asking the engine a second time.
    response: tuple[list[tuple[bytes, bytes]], bytes] | None = field(default=None, compare=False, repr=False)

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "project": self.project,
            "service": self.service,
            "oneoff": self.oneoff,
        }


def _labels(obj: dict[str, Any], *keys: str) -> dict[str, str]:
    node: Any = obj
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return {str(k): str(v) for k, v in node.items()} if isinstance(node, dict) else {}


class Resolver:
    """Inspect-based lookups; ``None`` means the engine does not know the reference (404)."""

    def __init__(self, upstream: Upstream, project: str) -> None:
        self.upstream = upstream
        self.project = project

    def container(self, ref: str) -> Resolved | None:
        status, headers, doc, body = self.upstream.get(f"/containers/{ref}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("Id"), str):
            raise ProxyError(f"engine could not inspect container {ref!r} (HTTP {status})")
        labels = _labels(doc, "Config", "Labels")
        return Resolved(
            kind="container",
            id=doc["Id"],
            name=str(doc.get("Name", "")).lstrip("/"),
            project=labels.get(PROJECT_LABEL),
            service=labels.get(SERVICE_LABEL),
            oneoff=labels.get(ONEOFF_LABEL, "False") == "True",
            raw=doc,
            response=(headers, body),
        )

    def exec_instance(self, ref: str) -> tuple[Resolved, Resolved | None] | None:
        """The exec and the container it belongs to (the container carries the project label)."""
        status, doc = self.upstream.get_json(f"/exec/{ref}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("ID"), str):
            raise ProxyError(f"engine could not inspect exec {ref!r} (HTTP {status})")
        container = self.container(str(doc.get("ContainerID", ""))) if doc.get("ContainerID") else None
        resolved = Resolved(
            kind="exec",
            id=doc["ID"],
            project=container.project if container else None,
            service=container.service if container else None,
            raw=doc,
        )
        return resolved, container

    def volume(self, name: str) -> Resolved | None:
        status, doc = self.upstream.get_json(f"/volumes/{name}")
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("Name"), str):
            raise ProxyError(f"engine could not inspect volume {name!r} (HTTP {status})")
        labels = _labels(doc, "Labels")
        return Resolved(kind="volume", id=doc["Name"], name=doc["Name"], project=labels.get(PROJECT_LABEL), raw=doc)

    def network(self, ref: str) -> Resolved | None:
        status, doc = self.upstream.get_json(f"/networks/{ref}")
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("Id"), str):
            raise ProxyError(f"engine could not inspect network {ref!r} (HTTP {status})")
        labels = _labels(doc, "Labels")
        return Resolved(
            kind="network", id=doc["Id"], name=str(doc.get("Name", "")), project=labels.get(PROJECT_LABEL), raw=doc
        )

    def project_containers(self, service: str | None = None) -> list[dict[str, Any]]:
        labels = {f"{PROJECT_LABEL}={self.project}": True}
        if service is not None:
            labels[f"{SERVICE_LABEL}={service}"] = True
        filters = json.dumps({"label": labels})
        status, doc = self.upstream.get_json("/containers/json", {"all": "1", "filters": filters})
        if status != 200 or not isinstance(doc, list):
            raise ProxyError(f"engine could not list the project's containers (HTTP {status})")
        return [c for c in doc if isinstance(c, dict) and _labels(c, "Labels").get(PROJECT_LABEL) == self.project]

    def reference_container(self, service: str) -> Resolved | None:
        """An existing, non-one-off container of ``service`` in the project: the model for a replica."""
        for summary in sorted(self.project_containers(service), key=lambda c: str(c.get("Id"))):
            labels = _labels(summary, "Labels")
            if labels.get(ONEOFF_LABEL, "False") != "False" or labels.get(SERVICE_LABEL) != service:
                continue
            found = self.container(str(summary.get("Id")))
            if found is not None and found.project == self.project:
                return found
        return None

    def image(self, ref: str) -> dict[str, Any] | None:
        status, doc = self.upstream.get_json(f"/images/{ref}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict):
            raise ProxyError(f"engine could not inspect image {ref!r} (HTTP {status})")
        return doc

    def project_images(self) -> set[str]:
        """Image names and IDs the project's containers run: the only images the client may inspect."""
        out: set[str] = set()
        for c in self.project_containers():
            for key in ("Image", "ImageID"):
                if isinstance(c.get(key), str):
                    out.add(c[key])
        return out
