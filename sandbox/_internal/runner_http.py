"""The runner's side of the control-plane HTTP protocol (httpx, keep-alive, a fresh JWT per request).

Kept behind the small :class:`ControlPlanePeer` interface so the pipeline never touches the network
itself (the python-tuf way): tests and the benchmark talk to the real local control plane over HTTP,
a Datadog adapter would be another implementation of the same four calls.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from sandbox import protocol
from sandbox.errors import ProtocolError


class ControlPlanePeer(Protocol):
    def health_check(self) -> None: ...
    def dequeue(self) -> bytes | None: ...
    def heartbeat(self, task_id: str) -> None: ...
    def publish(self, result: protocol.TaskResult) -> None: ...
    def close(self) -> None: ...


class PermanentPublishError(ProtocolError):
    """The control plane refused an update as malformed (4xx other than 401/429): retrying cannot help."""


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
        if not url.startswith(("http://", "https://")):
            raise ProtocolError(f"control_plane.url must be http(s)://..., got {url[:80]!r}")
        self.url = url.rstrip("/")
        self._key = key
        self._org_id = org_id
        self._runner_id = runner_id
        self._max_body = max_body_bytes
        # Plain http:// (the local control plane on loopback) never uses TLS, so skip loading the CA bundle
        # (~3 MB resident); https:// (Datadog) always verifies certificates.
        https = url.startswith("https://")
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=https)

    def _headers(self) -> dict[str, str]:
        token = protocol.make_jwt(self._key, org_id=self._org_id, runner_id=self._runner_id)
        return {protocol.JWT_HEADER: token, "Content-Type": "application/json"}

    def _post(self, path: str, doc: Any) -> httpx.Response:
        try:
            return self._client.post(self.url + path, content=json.dumps(doc).encode(), headers=self._headers())
        except httpx.HTTPError as exc:
            raise ProtocolError(f"POST {path}: {type(exc).__name__}: {exc}") from exc

    def health_check(self) -> None:
        try:
            r = self._client.get(self.url + protocol.HEALTH_PATH, headers=self._headers())
        except httpx.HTTPError as exc:
            raise ProtocolError(f"health check: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise ProtocolError(f"health check: HTTP {r.status_code}: {r.text[:200]}")

    def dequeue(self) -> bytes | None:
        try:
            with self._client.stream(
                "POST", self.url + protocol.DEQUEUE_PATH, content=b"{}", headers=self._headers()
            ) as r:
                if r.status_code == 204:
                    return None
                if r.status_code != 200:
                    r.read()
                    raise ProtocolError(f"dequeue: HTTP {r.status_code}: {r.text[:200]}")
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    chunks.append(chunk)
                    if size > self._max_body:
                        break  # the pipeline rejects it as oversized without parsing
        except httpx.HTTPError as exc:
            raise ProtocolError(f"dequeue: {type(exc).__name__}: {exc}") from exc
        body = b"".join(chunks)
        return body or None

    def heartbeat(self, task_id: str) -> None:
        r = self._post(protocol.HEARTBEAT_PATH, {"task_id": task_id})
        if r.status_code != 200:
            raise ProtocolError(f"heartbeat: HTTP {r.status_code}")

    def publish(self, result: protocol.TaskResult) -> None:
        r = self._post(protocol.PUBLISH_PATH, result.to_dict())
        if r.status_code == 200:
            return
        if 400 <= r.status_code < 500 and r.status_code not in (401, 408, 429):
            raise PermanentPublishError(f"publish refused: HTTP {r.status_code}: {r.text[:200]}")
        raise ProtocolError(f"publish: HTTP {r.status_code}: {r.text[:200]}")

    def close(self) -> None:
        self._client.close()
