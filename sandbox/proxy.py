"""The Docker socket proxy: the jailed child's only door to Docker, scoped to one compose project.

Mounting the real socket (even read-only) hands out root on the host, and URL-prefix filters (what the
common socket proxies do) cannot tell project A's container from project B's or a replica from a
privileged container. This proxy:

1. parses each request once, strictly (``_internal/proxy_http``), and refuses anything ambiguous;
2. recognises the route and, for objects named by name or ID prefix, asks the engine what they are
   (``_internal/proxy_resolve``), rewriting the path to the full ID that was checked;
3. describes JSON bodies as facts, comparing a container create with the service's existing container
   (``_internal/proxy_inspect``);
4. asks the Rego policy ``data.par.docker_proxy.decision`` (``policies/docker_proxy.rego``) - an engine
   failure is a refusal;
5. audits every refusal and every allowed state-changing call (an audit failure is a refusal), then
   sends a *rebuilt* request upstream and relays the answer, filtering lists and events to the project
   (``_internal/proxy_stream``).

One thread per client connection (compose keeps several keep-alive connections open), each keeping its
own keep-alive connection to the engine. Policy decisions run on a fixed pool of two threads, because the
embedded engine compiles one copy of the policy per calling thread, and are memoised per (policy revision,
input document): a decision is a pure function of both, and compose repeats the same reads many times.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11

from sandbox import metrics
from sandbox._internal import proxy_json
from sandbox._internal.proxy_http import BadRequest, ClientRequest, RequestReader, build_request, response_headers
from sandbox._internal.proxy_inspect import (
    create_facts,
    exec_create_facts,
    exec_inspect_facts,
    volume_create_facts,
)
from sandbox._internal.proxy_resolve import PROJECT_LABEL, Resolved, Resolver, Upstream
from sandbox._internal.proxy_stream import EventFilter, Relay, UpstreamFailed, filter_list
from sandbox.config import ProxyConfig
from sandbox.errors import ProxyError
from sandbox.logs import get_logger

if TYPE_CHECKING:  # the proxy needs only these interfaces, not the engines' and the log's heavy imports
    from sandbox.audit import AuditSink
    from sandbox.policy import PolicyEngine

log = get_logger(__name__)

DECISION_QUERY = "data.par.docker_proxy.decision"
# One policy thread: evaluation holds the GIL, so a second thread added ~8 MB (its compiled copy) and no
# throughput (measured with bench/bench_proxy.py: idle RSS 59 -> 45-51 MB, per-request ratio unchanged).
DECISION_WORKERS = 1
DECISION_CACHE_SIZE = 512
# Bounds staleness where the revision cannot tell (an OPA server's policy can change behind our back).
DECISION_CACHE_TTL_S = 10.0
POLICY_TIMEOUT_S = 10.0  # a decision slower than this is an engine failure: refuse
MAX_UNIX_PATH = 107

# Calls that change engine state: every allowed one is audited before it is forwarded.
STATE_CHANGING = frozenset(
    {
        "container.start",
        "container.stop",
        "container.restart",
        "container.delete",
        "container.create",
        "container.rename",
        "exec.create",
        "exec.start",
        "volume.create",
    }
)
_FILTERED_LISTS = frozenset({"containers.list", "volumes.list", "networks.list"})
_FILTER_KEYS = frozenset({"label", "name", "id", "status", "type", "event", "container", "network", "volume"})
_BODY_SCHEMAS: dict[str, Any] = {
    "container.create": proxy_json.CONTAINER_CREATE,
    "exec.create": proxy_json.EXEC_CREATE,
    "exec.start": proxy_json.EXEC_START,
    "volume.create": proxy_json.VOLUME_CREATE,
}

_NAME = r"(?P<ref>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
_ROUTES: tuple[tuple[str, re.Pattern[str], str | None], ...] = tuple(
    (endpoint, re.compile(pattern), kind)
    for endpoint, pattern, kind in (
        ("ping", r"^/_ping$", None),
        ("version", r"^/version$", None),
        ("containers.list", r"^/containers/json$", None),
        ("container.create", r"^/containers/create$", None),
        ("container.inspect", rf"^/containers/{_NAME}/json$", "container"),
        ("container.start", rf"^/containers/{_NAME}/start$", "container"),
        ("container.stop", rf"^/containers/{_NAME}/stop$", "container"),
        ("container.restart", rf"^/containers/{_NAME}/restart$", "container"),
        ("container.rename", rf"^/containers/{_NAME}/rename$", "container"),
        ("container.logs", rf"^/containers/{_NAME}/logs$", "container"),
        ("exec.create", rf"^/containers/{_NAME}/exec$", "container"),
        ("container.delete", rf"^/containers/{_NAME}$", "container"),
        ("exec.start", r"^/exec/(?P<ref>[A-Za-z0-9]{1,64})/start$", "exec"),
        ("exec.inspect", r"^/exec/(?P<ref>[A-Za-z0-9]{1,64})/json$", "exec"),
        ("events", r"^/events$", None),
        ("image.inspect", r"^/images/(?P<ref>[A-Za-z0-9][A-Za-z0-9_.:/-]{0,255})/json$", "image"),
        ("volumes.list", r"^/volumes$", None),
        ("volume.create", r"^/volumes/create$", None),
        ("volume.inspect", rf"^/volumes/{_NAME}$", "volume"),
        ("networks.list", r"^/networks$", None),
        ("network.inspect", rf"^/networks/{_NAME}$", "network"),
    )
)


@dataclass
class _Routed:
    endpoint: str
    kind: str | None
    ref: str | None
    span: tuple[int, int] = (0, 0)  # where ref sits in the route path, for rewriting it to the full ID


@dataclass
class _Prepared:
    """A checked request: the policy input and what would be sent upstream if it is allowed."""

    doc: dict[str, Any]
    path: str
    query: dict[str, str]
    body: bytes
    replay: tuple[list[tuple[bytes, bytes]], bytes] | None = None


@dataclass
class _UpstreamSlot:
    """The engine connection a client connection keeps between requests (keep-alive, like compose's)."""

    sock: socket.socket | None = None
    conn: h11.Connection | None = None


@dataclass
class _Refusal(Exception):
    rule: str
    reasons: list[str]
    status: int = 403
    close: bool = False


def route(route_path: str) -> _Routed:
    for endpoint, pattern, kind in _ROUTES:
        m = pattern.match(route_path)
        if m:
            if "ref" in pattern.groupindex:
                return _Routed(endpoint, kind, m.group("ref"), m.span("ref"))
            return _Routed(endpoint, kind, None)
    return _Routed("unknown", None, None)


def force_project_filter(query: dict[str, str], project: str) -> dict[str, str]:
    """Return the query with ``label=com.docker.compose.project=<project>`` added to ``filters``."""
    raw = query.get("filters", "")
    filters: Any = proxy_json.loads_strict(raw.encode("utf-8")) if raw else {}
    if not isinstance(filters, dict):
        raise BadRequest("filters", "filters must be a JSON object")
    out: dict[str, dict[str, bool]] = {}
    for key, value in filters.items():
        if key not in _FILTER_KEYS:
            raise BadRequest("filters", f"filter {key!r} is not allowed")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = dict.fromkeys(value, True)
        elif isinstance(value, dict) and all(isinstance(k, str) and v is True for k, v in value.items()):
            out[key] = dict(value)
        else:
            raise BadRequest("filters", f"filter {key!r} must map strings to true")
    out.setdefault("label", {})[f"{PROJECT_LABEL}={project}"] = True
    return {**query, "filters": json.dumps(out, separators=(",", ":"), sort_keys=True)}


class DockerProxy:
    """Serve ``listen`` (a unix socket), forwarding to ``upstream`` what the policy allows for ``project``."""

    def __init__(
        self,
        *,
        listen: Path,
        upstream: Path,
        project: str,
        policy: PolicyEngine,
        audit: AuditSink | None,
        cfg: ProxyConfig,
        socket_gid: int | None = None,
        decision_query: str = DECISION_QUERY,
        decider: Executor | None = None,
    ) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9_-]*$", project):
            raise ProxyError(
                f"invalid compose project name {project!r}", hint="Use lowercase letters, digits, - and _."
            )
        self.listen = Path(listen)
        self.project = project
        self.policy = policy
        self.audit = audit
        self.cfg = cfg
        self.socket_gid = socket_gid
        self.decision_query = decision_query
        self.upstream = Upstream(Path(upstream), cfg.upstream_timeout_s)
        self.resolver = Resolver(self.upstream, project)
        self._server: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        # Decisions run on a fixed pool: the embedded engine compiles one policy copy per thread, and a
        # copy per client connection would cost ~7 MB and a compile on every new connection. A caller that
        # already has a policy thread (the runner, in process) passes it as ``decider`` to share its copy.
        self._own_decider = decider is None
        self._decider: Executor = decider or ThreadPoolExecutor(
            max_workers=DECISION_WORKERS, thread_name_prefix="proxy-policy"
        )
        self._decider_closed = False
        self._decisions: OrderedDict[tuple[str, str], tuple[float, bool, tuple[str, ...], tuple[str, ...]]] = (
            OrderedDict()
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the socket (mode/group set before it becomes visible) and serve in the background."""
        if self._server is not None:
            return
        up = self.upstream.path
        try:
            if not stat.S_ISSOCK(up.stat().st_mode):
                raise ProxyError(f"upstream {up} is not a unix socket")
        except OSError as exc:
            raise ProxyError(f"upstream Docker socket {up} is not reachable: {exc.strerror}") from exc
        self._server = self._bind()
        self._stopped.clear()
        if self._own_decider and self._decider_closed:
            self._decider = ThreadPoolExecutor(max_workers=DECISION_WORKERS, thread_name_prefix="proxy-policy")
            self._decider_closed = False
        self._warm_up()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="docker-proxy-accept", daemon=True)
        self._accept_thread.start()
        log.info("proxy_started", listen=str(self.listen), upstream=str(up), project=self.project)

    def _warm_up(self) -> None:
        """Compile the policy in every decision worker now, not on the first requests."""
        doc = {"project": self.project, "method": "HEAD", "endpoint": "ping", "path": "/_ping", "query": {}}
        futures = [
            self._decider.submit(self.policy.decide, doc, query=self.decision_query)
            for _ in range(DECISION_WORKERS if self._own_decider else 1)
        ]
        for f in futures:
            with contextlib.suppress(Exception):
                f.result(timeout=POLICY_TIMEOUT_S)

    def _bind(self) -> socket.socket:
        if len(str(self.listen).encode()) > MAX_UNIX_PATH:
            raise ProxyError(f"listen path {self.listen} is longer than {MAX_UNIX_PATH} bytes")
        parent = self.listen.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if self.listen.is_symlink() or (self.listen.exists() and not stat.S_ISSOCK(self.listen.lstat().st_mode)):
                raise ProxyError(f"{self.listen} exists and is not a socket; refusing to replace it")
            # Bind inside a private directory, fix mode and group, then rename into place: the socket is
            # never reachable at its public path with the wrong permissions.
            tmpdir = Path(tempfile.mkdtemp(prefix=".par-proxy-", dir=parent))
        except OSError as exc:
            raise ProxyError(f"cannot create the proxy socket in {parent}: {exc.strerror}") from exc
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            tmp = tmpdir / "s"
            server.bind(str(tmp))
            os.chmod(tmp, self.cfg.socket_mode)
            if self.socket_gid is not None:
                os.chown(tmp, -1, self.socket_gid)
            server.listen(128)
            os.replace(tmp, self.listen)
        except OSError as exc:
            server.close()
            raise ProxyError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return server

    def stop(self) -> None:
        self._stopped.set()
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
            with contextlib.suppress(OSError):
                self.listen.unlink()
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._own_decider:
            self._decider.shutdown(wait=False, cancel_futures=True)
            self._decider_closed = True
        log.info("proxy_stopped", listen=str(self.listen))

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stopped.wait(1.0):
                pass
        finally:
            self.stop()

    def __enter__(self) -> DockerProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        server = self._server
        while server is not None and not self._stopped.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            with self._lock:
                too_many = len(self._clients) >= self.cfg.max_connections
                if not too_many:
                    self._clients.add(client)
            if too_many:
                with contextlib.suppress(OSError):
                    client.sendall(_raw_response(503, {"message": "too many connections to the Docker proxy"}))
                client.close()
                continue
            threading.Thread(target=self._serve_client, args=(client,), daemon=True).start()

    # -- one client connection ---------------------------------------------------------------------

    def _serve_client(self, sock: socket.socket) -> None:
        peer = _peer(sock)
        reader = RequestReader(
            sock,
            max_header_bytes=self.cfg.max_header_bytes,
            max_body_bytes=self.cfg.max_body_bytes,
            timeout_s=self.cfg.client_timeout_s,
        )
        slot = _UpstreamSlot()
        try:
            while not self._stopped.is_set():
                try:
                    req = reader.next_request()
                except BadRequest as exc:
                    self._deny("", "", exc.rule, [f"{exc.rule}: {exc.message}"], peer)
                    _send_raw(sock, exc.status, exc.rule, exc.message)
                    return
                if req is None:
                    return
                if not self._handle(reader, req, peer, slot):
                    return
                conn = reader.conn
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    return
        except OSError:
            return
        finally:
            if slot.sock is not None:
                slot.sock.close()
            with self._lock:
                self._clients.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _handle(self, reader: RequestReader, req: ClientRequest, peer: dict[str, int], slot: _UpstreamSlot) -> bool:
        """Decide and forward one request; False when the connection must be closed."""
        routed = route(req.route_path)
        try:
            prepared = self._prepare(req, routed)
            self._decide(req, routed, prepared.doc, peer)
        except _Refusal as r:
            self._deny(req.method, req.path, r.rule, r.reasons, peer)
            return self._reply(reader, r.status, {"message": "; ".join(r.reasons)}, close=r.close)
        except BadRequest as exc:
            self._deny(req.method, req.path, exc.rule, [f"{exc.rule}: {exc.message}"], peer)
            return self._reply(reader, exc.status, {"message": f"{exc.rule}: {exc.message}"}, close=True)
        except ProxyError as exc:
            self._deny(req.method, req.path, "upstream_error", [f"upstream_error: {exc.message}"], peer)
            return self._reply(reader, 502, {"message": f"upstream_error: {exc.message}"}, close=True)
        if prepared.replay is not None:
            return self._replay(reader, prepared.replay)
        return self._forward(
            reader, req, routed, slot=slot, path=prepared.path, query=prepared.query, body=prepared.body
        )

    def _replay(self, reader: RequestReader, response: tuple[list[tuple[bytes, bytes]], bytes]) -> bool:
        headers = response_headers(response[0], keep_framing=False)
        headers.append((b"Content-Length", str(len(response[1])).encode("ascii")))
        conn = reader.conn
        data = conn.send(h11.Response(status_code=200, headers=headers)) or b""
        data += conn.send(h11.Data(data=response[1])) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        reader.sock.sendall(data)
        return True

    def _prepare(self, req: ClientRequest, routed: _Routed) -> _Prepared:
        """Parse the body, resolve the target, build the policy input; return what to send upstream."""
        ep = routed.endpoint
        checked: Any = None
        schema = _BODY_SCHEMAS.get(ep)
        if schema is not None and req.body:
            checked = proxy_json.loads_strict(req.body)
            if not isinstance(checked, dict):
                raise BadRequest("json_shape", "the body must be a JSON object")
            proxy_json.check_shape(checked, schema)
        elif req.body:
            raise BadRequest("unexpected_body", f"{ep} takes no request body")
        body_out = proxy_json.dumps(checked) if checked is not None else b""
        doc: dict[str, Any] = {
            "project": self.project,
            "method": req.method,
            "endpoint": ep,
            "path": req.route_path,
            "api_version": req.api_version,
            "query": dict(req.query),
            "upgrade": req.upgrade,
            "object": None,
            "body": None,
        }
        upstream_route = req.route_path
        obj: Resolved | None = None
        if routed.kind in ("container", "exec", "volume", "network") and routed.ref is not None:
            if routed.kind == "container":
                obj = self.resolver.container(routed.ref)
            elif routed.kind == "volume":
                obj = self.resolver.volume(routed.ref)
            elif routed.kind == "network":
                obj = self.resolver.network(routed.ref)
            else:
                found = self.resolver.exec_instance(routed.ref)
                if found is not None:
                    obj = found[0]
                    doc["exec"] = exec_inspect_facts(obj.raw, found[1].raw if found[1] else None)
            if obj is not None:
                doc["object"] = obj.to_doc()
                start, end = routed.span
                upstream_route = upstream_route[:start] + obj.id + upstream_route[end:]
        if ep == "image.inspect" and routed.ref is not None:
            doc["image"] = {"ref": routed.ref, "in_project": routed.ref in self.resolver.project_images()}
        if isinstance(checked, dict):
            if ep == "container.create":
                doc["body"] = create_facts(checked, req.query.get("name", ""), self.resolver)
            elif ep == "exec.create":
                doc["body"] = exec_create_facts(checked)
            elif ep == "volume.create":
                doc["body"] = volume_create_facts(checked)
            else:
                doc["body"] = {}
        query = dict(req.query)
        if ep in _FILTERED_LISTS or ep == "events":
            query = force_project_filter(query, self.project)
            doc["filter_projects"] = _filter_projects(req.query.get("filters", ""))
        prefix = f"/v{req.api_version}" if req.api_version else ""
        replay = None
        if ep == "container.inspect" and obj is not None and not req.query and req.method == "GET":
            replay = obj.response  # the engine just answered exactly this request
        return _Prepared(doc, prefix + upstream_route, query, body_out, replay)

    def _decide(self, req: ClientRequest, routed: _Routed, doc: dict[str, Any], peer: dict[str, int]) -> None:
        allow, reasons, rule_ids = self._evaluate(doc)
        rule = ",".join(rule_ids) or "policy"
        if not allow:
            raise _Refusal(rule, reasons or [f"{rule}: denied"])
        if routed.endpoint in STATE_CHANGING:
            record = {"method": req.method, "path": req.path, "rule": rule, "reasons": reasons}
            if self.audit is not None:
                try:
                    self.audit.append("proxy_allowed", record)
                except Exception as exc:  # AuditError or anything else: no record, no action
                    raise _Refusal("audit_unavailable", [f"audit_unavailable: {exc}"]) from exc
            log.info("proxy_allowed", **record, **peer)
        else:
            log.debug("proxy_allowed", method=req.method, path=req.path, rule=rule, **peer)

    def _evaluate(self, doc: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
        """The policy's verdict; memoised briefly per (policy revision, input), since a decision is a pure
        function of both (the proxy policy reads no clock or network), and compose repeats the same reads."""
        try:
            key = (str(getattr(self.policy, "revision", "")), json.dumps(doc, sort_keys=True, default=str))
        except (TypeError, ValueError):
            key = None
        if key is not None:
            with self._lock:
                hit = self._decisions.get(key)
                if hit is not None and hit[0] > time.monotonic():
                    self._decisions.move_to_end(key)
                    return hit[1], list(hit[2]), list(hit[3])
        try:
            future = self._decider.submit(self.policy.decide, doc, query=self.decision_query)
            decision = future.result(timeout=POLICY_TIMEOUT_S)
            verdict = (decision.allow is True, tuple(decision.reasons), tuple(decision.rule_ids))
        except Exception as exc:  # noqa: BLE001 - the engine promises not to raise; fail closed if it does
            return False, [f"policy_error: {exc!r}"], ["policy_error"]
        if key is not None and "policy_error" not in verdict[2]:  # engine trouble is transient: never cached
            with self._lock:
                self._decisions[key] = (time.monotonic() + DECISION_CACHE_TTL_S, *verdict)
                if len(self._decisions) > DECISION_CACHE_SIZE:
                    self._decisions.popitem(last=False)
        return verdict[0], list(verdict[1]), list(verdict[2])

    def _deny(self, method: str, path: str, rule: str, reasons: list[str], peer: dict[str, int]) -> None:
        record = {"method": method, "path": path[:512], "rule": rule, "reasons": reasons}
        log.warning("proxy_denied", **record, **peer)
        metrics.proxy_denied(rule, method)
        if self.audit is not None:
            try:
                self.audit.append("proxy_denied", record)
            except Exception as exc:  # noqa: BLE001 - refused anyway; make the lost record visible
                log.error("proxy_audit_failed", error=str(exc), **record)

    # -- talking back ------------------------------------------------------------------------------

    def _reply(self, reader: RequestReader, status: int, doc: dict[str, Any], *, close: bool) -> bool:
        body = json.dumps(doc).encode()
        conn = reader.conn
        if close or conn.our_state is not h11.SEND_RESPONSE:
            _send_raw(reader.sock, status, "", "", body=body)
            return False
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        reader.sock.sendall(data)
        return True

    def _forward(
        self,
        reader: RequestReader,
        req: ClientRequest,
        routed: _Routed,
        *,
        slot: _UpstreamSlot,
        path: str,
        query: dict[str, str],
        body: bytes,
    ) -> bool:
        ep = routed.endpoint
        streaming = ep == "events" or (ep == "container.logs" and req.query.get("follow") in ("1", "true", "True"))
        idle = None if streaming else self.cfg.upstream_timeout_s
        upgrade = ep == "exec.start" and req.upgrade
        kept, slot.sock, slot.conn = (slot.sock, slot.conn), None, None
        if kept[0] is not None and not _still_idle(kept[0]):
            kept[0].close()
            kept = (None, None)
        upstream = kept[0]
        if upstream is None:
            try:
                upstream = self.upstream.connect()
            except ProxyError as exc:
                return self._reply(reader, 502, {"message": f"upstream_error: {exc.message}"}, close=True)
        relay = Relay(reader, upstream, idle_timeout_s=idle, uconn=kept[1])
        reuse = False
        try:
            upstream_body = body if (body or req.method == "POST") else None
            relay.send_request(
                build_request(req.method, path, query, upstream_body, user_agent=req.user_agent, upgrade=upgrade),
                body,
            )
            head = relay.read_head()
            if isinstance(head, h11.InformationalResponse):
                if not upgrade:
                    raise UpstreamFailed("unexpected protocol switch from the engine")
                sent, received = relay.pipe_upgraded(head)
                log.debug("proxy_exec_stream", path=req.path, sent=sent, received=received)
                return False
            if ep in _FILTERED_LISTS and head.status_code == 200:
                raw = relay.read_body()
                try:
                    parsed = json.loads(raw)
                except ValueError as exc:
                    raise UpstreamFailed("engine list response is not JSON") from exc
                filtered = filter_list(ep, parsed, self.project)
                # The engine honoured the forced filter (the usual case): relay its bytes, already checked.
                relay.send_buffered(head, raw if filtered == parsed else json.dumps(filtered).encode())
            elif ep == "events" and head.status_code == 200:
                relay.send_head(head)
                relay.stream_body(EventFilter(self.project))
            else:
                relay.send_head(head)
                relay.stream_body()
            reuse = not streaming and relay.reusable()
        except UpstreamFailed as exc:
            log.info("proxy_upstream_ended", path=req.path, reason=str(exc))
            if not relay.sent_head:
                _send_raw(reader.sock, 502, "upstream_error", str(exc))
            return False
        except (OSError, h11.LocalProtocolError):
            return False
        finally:
            if reuse:
                upstream.settimeout(self.cfg.upstream_timeout_s)
                slot.sock, slot.conn = upstream, relay.uconn
            else:
                with contextlib.suppress(OSError):
                    upstream.close()
        return True


def _still_idle(sock: socket.socket) -> bool:
    """A kept engine connection is usable only if the engine has neither closed it nor sent anything."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not ready


def _filter_projects(raw: str) -> list[str]:
    """Projects the client's own label filter asks for (already validated by force_project_filter)."""
    if not raw:
        return []
    labels = json.loads(raw).get("label", {})
    values = labels if isinstance(labels, list) else list(labels)
    prefix = f"{PROJECT_LABEL}="
    return sorted({v[len(prefix) :] for v in values if isinstance(v, str) and v.startswith(prefix)})


def _raw_response(status: int, doc: dict[str, Any], body: bytes | None = None) -> bytes:
    payload = body if body is not None else json.dumps(doc).encode()
    reason = {
        400: "Bad Request",
        403: "Forbidden",
        408: "Request Timeout",
        411: "Length Required",
        413: "Payload Too Large",
        415: "Unsupported Media Type",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def _send_raw(sock: socket.socket, status: int, rule: str, message: str, *, body: bytes | None = None) -> None:
    """A final answer written without h11 (its state may be broken by what the client sent)."""
    with contextlib.suppress(OSError):
        sock.sendall(_raw_response(status, {"message": f"{rule}: {message}"}, body))
        sock.shutdown(socket.SHUT_WR)


def _peer(sock: socket.socket) -> dict[str, int]:
    """The connecting process (SO_PEERCRED), for the log: which jailed child sent what."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except OSError:
        return {}
    return {"peer_pid": pid, "peer_uid": uid, "peer_gid": gid}
