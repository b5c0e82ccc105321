"""The local control plane: the runner's peer for local use, the demo and the tests.

It speaks the same endpoints as Datadog's on-prem management service (see :mod:`sandbox.protocol`):
runners authenticate every request with an ES256 JWT checked against the public key enrolled for their
runner id, tasks are signed with the control plane's Ed25519 key, and the queue and results live in
SQLite so a restart loses nothing. An admin API (``/admin/v1/tasks``) submits tasks and shows results;
it is bound to loopback and needs the bearer token stored beside the database (mode 0600), because
whoever can submit gets tasks signed.

Production points the runner at Datadog instead; nothing in the runner depends on this module.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox import protocol
from sandbox._internal.controlplane_store import TaskStore
from sandbox.config import RunnerConfig
from sandbox.errors import ConfigError, ProtocolError, TaskRejected
from sandbox.keys import load_ed25519_private_key, load_runner_public_key
from sandbox.logs import get_logger

log = get_logger(__name__)
ADMIN_PREFIX = "/admin/v1/tasks"
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Submission:
    action: str
    parameters: Mapping[str, Any]
    principal: Mapping[str, Any]
    trigger: Mapping[str, Any]
    client: str = "par-submit"
    timeout_s: float | None = None
    ttl_s: float | None = None
    runner_id: str | None = None


class ControlPlane:
    """Queue + signer + HTTP server. ``start()`` serves in a thread; ``serve_forever()`` in the caller's."""

    def __init__(
        self,
        cfg: RunnerConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        signing_key: Ed25519PrivateKey | None = None,
        enrolled: Mapping[str, EllipticCurvePublicKey] | None = None,
        database: Path | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ProtocolError(f"the local control plane only listens on loopback, not {host!r}")
        cp = cfg.control_plane
        self.cfg = cfg
        self.org_id = cfg.runner.org_id
        self.key_id = cp.signing_key_id
        self.signing_key = signing_key or load_ed25519_private_key(cp.signing_key)
        self.enrolled = dict(enrolled) if enrolled is not None else {
            cfg.runner.runner_id: load_runner_public_key(cp.runner_public_key)
        }
        db = database or cp.database
        try:
            self.store = TaskStore(db)
            self.admin_token = _admin_token(self.store.path)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"control plane database {db}: {exc}",
                hint="Check control_plane.database in the config and that its directory is writable.",
            ) from exc
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            self.store.close()
            raise ProtocolError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                hint="Pick a free port with --listen 127.0.0.1:PORT.") from exc
        self._server.plane = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    # --- lifecycle ---
    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="controlplane", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    # --- admin (also used in-process by tests and the demo) ---
    def submit(self, sub: Submission) -> str:
        task_id = f"task-{uuid.uuid4().hex}"
        runner_id = sub.runner_id or self.cfg.runner.runner_id
        payload = protocol.task_payload(
            task_id=task_id, org_id=self.org_id, runner_id=runner_id, action=sub.action,
            parameters=sub.parameters, principal=sub.principal, trigger=sub.trigger, client=sub.client,
            ttl_s=sub.ttl_s if sub.ttl_s is not None else self.cfg.control_plane.task_ttl_s,
            timeout_s=sub.timeout_s,
        )
        body = self.delivery_body(task_id, payload)
        self.store.add_task(task_id, runner_id, sub.action, payload, body)
        log.info("task submitted", task_id=task_id, action=sub.action, runner_id=runner_id)
        return task_id

    def delivery_body(self, task_id: str, payload: Mapping[str, Any]) -> bytes:
        envelope = protocol.sign_envelope(protocol.canonical_json(payload), [(self.key_id, self.signing_key)])
        return json.dumps({"task_id": task_id, "envelope": envelope}).encode()

    def enqueue_raw(self, task_id: str, body: bytes, *, runner_id: str | None = None) -> None:
        """Queue a message exactly as given: the hook tests use to deliver forged or replayed tasks."""
        self.store.add_delivery(task_id, runner_id or self.cfg.runner.runner_id, body)

    def show(self, task_id: str) -> dict[str, Any] | None:
        return self.store.show(task_id)

    # --- runner endpoints ---
    def authenticate(self, token: str | None) -> protocol.RunnerClaims:
        if not token:
            raise TaskRejected(protocol.ErrorCode.SIGNATURE_ERROR, f"missing {protocol.JWT_HEADER} header")
        return protocol.verify_jwt(token, self.enrolled, org_id=self.org_id)


def _admin_token(db: Path) -> str:
    """The admin bearer token beside the database, created 0600 on first start."""
    path = admin_token_path(db)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def admin_token_path(db: Path) -> Path:
    return db.with_name(db.name + ".admin-token")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    plane: ControlPlane


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "par-controlplane"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle on, the body waits for the client's delayed
        # ACK (~40 ms per request on Linux), which would cap a runner at ~20 dequeues/s.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are logged through sandbox.logs at debug level instead."""
        log.debug("http", line=format % args)

    # --- plumbing ---
    def _send(self, status: int, doc: Any | None = None) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        if doc is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
            raise _HttpError(411 if length is None else 413, "a Content-Length up to 1 MiB is required")
        raw = self.rfile.read(int(length))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _HttpError(400, "body is not JSON") from exc

    def _runner(self) -> protocol.RunnerClaims:
        try:
            return self.server.plane.authenticate(self.headers.get(protocol.JWT_HEADER))
        except TaskRejected as exc:
            raise _HttpError(401, f"{exc.code}: {exc.message}") from exc

    def _admin(self) -> None:
        given = self.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.server.plane.admin_token}".encode()):
            raise _HttpError(401, "admin API needs 'Authorization: Bearer <token>' (token file beside the database)")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except _HttpError as exc:
            self._send(exc.status, {"errors": [exc.message]})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _route(self, method: str) -> None:
        plane = self.server.plane
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == protocol.HEALTH_PATH:
            claims = self._runner()
            self._send(200, {"status": "ok", "runner_id": claims.runner_id})
        elif method == "POST" and path == protocol.DEQUEUE_PATH:
            claims = self._runner()
            self._body()
            body = plane.store.next_delivery(claims.runner_id)
            if body is None:
                self._send(204)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif method == "POST" and path == protocol.HEARTBEAT_PATH:
            self._runner()
            doc = self._body()
            task_id = doc.get("task_id") if isinstance(doc, dict) else None
            if not isinstance(task_id, str):
                raise _HttpError(400, "heartbeat needs task_id")
            self._send(200, {"known": plane.store.heartbeat(task_id)})
        elif method == "POST" and path == protocol.PUBLISH_PATH:
            claims = self._runner()
            doc = self._body()
            problem = protocol.check_result(doc)
            if problem is not None:
                raise _HttpError(400, f"malformed task update: {problem}")
            if doc["runner_id"] != claims.runner_id:
                raise _HttpError(403, "runner_id in the update differs from the JWT's")
            status = plane.store.record_update(doc["task_id"], doc)
            log.info("task update", task_id=doc["task_id"], success=doc["success"], status=status)
            self._send(200, {"status": status})
        elif method == "POST" and path == ADMIN_PREFIX:
            self._admin()
            self._send(201, {"task_id": plane.submit(_submission(self._body()))})
        elif method == "GET" and path.startswith(ADMIN_PREFIX + "/"):
            self._admin()
            doc = plane.show(path[len(ADMIN_PREFIX) + 1 :])
            if doc is None:
                raise _HttpError(404, "no such task")
            self._send(200, doc)
        else:
            raise _HttpError(404, f"no route {method} {path[:100]}")


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _submission(doc: Any) -> Submission:
    if not isinstance(doc, dict) or not isinstance(doc.get("action"), str):
        raise _HttpError(400, "submission needs at least an 'action' string")
    allowed = {"action", "parameters", "principal", "trigger", "client", "timeout_s", "ttl_s", "runner_id"}
    unknown = set(doc) - allowed
    if unknown:
        raise _HttpError(400, f"unknown submission field(s): {', '.join(sorted(unknown))}")
    return Submission(
        action=doc["action"],
        parameters=doc.get("parameters") or {},
        principal=doc.get("principal") or {},
        trigger=doc.get("trigger") or {},
        client=str(doc.get("client") or "par-submit"),
        timeout_s=doc.get("timeout_s"),
        ttl_s=doc.get("ttl_s"),
        runner_id=doc.get("runner_id"),
    )
