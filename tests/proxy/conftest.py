"""Fixtures for the Docker proxy tests: two demo stacks (ours and `other`), a proxy, raw-socket helpers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox._internal import demo_stack
from sandbox.config import PolicyConfig, ProxyConfig
from sandbox.errors import AuditError
from sandbox.policy import PolicyEngine, open_engine
from sandbox.proxy import DockerProxy
from tests.conftest import REPO, unique_project

UPSTREAM = Path("/var/run/docker.sock")
TEST_CFG = ProxyConfig(client_timeout_s=2.0, upstream_timeout_s=30.0, max_header_bytes=8192, max_body_bytes=65536)


class ListSink:
    """An in-memory AuditSink; ``fail`` makes append raise like a full disk would."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.fail = False
        self._lock = threading.Lock()

    def append(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> int:
        if self.fail:
            raise AuditError("audit disk full (test)")
        with self._lock:
            self.records.append((kind, dict(data)))
            return len(self.records)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for k, d in self.records if k == kind]


@dataclass
class Stacks:
    ours: str
    other: str
    compose_file: Path


@dataclass
class Proxy:
    sock: Path
    project: str
    audit: ListSink
    proxy: DockerProxy
    env: dict[str, str] = field(default_factory=dict)


def docker(*args: str, timeout: float = 60) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def containers(project: str, service: str | None = None) -> dict[str, str]:
    """name -> StartedAt of every container of the project (directly on the engine)."""
    flt = ["--filter", f"label=com.docker.compose.project={project}"]
    if service:
        flt += ["--filter", f"label=com.docker.compose.service={service}"]
    ids = docker("ps", "-aq", "--no-trunc", *flt).split()
    if not ids:
        return {}
    out = json.loads(docker("inspect", *ids))
    return {c["Name"].lstrip("/"): c["State"]["StartedAt"] for c in out}


def container_id(project: str, service: str) -> str:
    ids = docker(
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ).split()
    assert ids, f"no {service} container in {project}"
    return sorted(ids)[0]


@pytest.fixture(scope="session")
def proxy_engine() -> Iterator[PolicyEngine]:
    engine = open_engine(PolicyConfig(path=REPO / "policies", watch=False))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def stacks(docker_engine: None, demo_compose_file: Path) -> Iterator[Stacks]:
    """Our project and an `other` project, both running, brought up in parallel."""
    ours, other = unique_project("dogbankproxy"), unique_project("other")
    errors: list[BaseException] = []

    def up(p: str) -> None:
        try:
            demo_stack.up(p, demo_compose_file)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(p,)) for p in (ours, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        if errors:
            raise errors[0]
        yield Stacks(ours, other, demo_compose_file)
    finally:
        for p in (ours, other):
            subprocess.run(
                [*demo_stack.compose_argv(p, demo_compose_file), "down", "--remove-orphans", "-t", "1"],
                capture_output=True,
                check=False,
                timeout=180,
            )


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for a unix socket (pytest's tmp paths can exceed the 107-byte limit)."""
    d = Path(tempfile.mkdtemp(prefix="parpx-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def proxy(stacks: Stacks, proxy_engine: PolicyEngine) -> Iterator[Proxy]:
    d = Path(tempfile.mkdtemp(prefix="parpx-", dir="/tmp"))
    sock = d / "docker.sock"
    sink = ListSink()
    px = DockerProxy(listen=sock, upstream=UPSTREAM, project=stacks.ours, policy=proxy_engine, audit=sink, cfg=TEST_CFG)
    px.start()
    try:
        yield Proxy(sock, stacks.ours, sink, px, env={"DOCKER_HOST": f"unix://{sock}"})
    finally:
        px.stop()
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(s: socket.socket) -> Response | None:
    """One HTTP response with a Content-Length (every answer the proxy writes itself has one)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest[:n]
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
    else:
        body = rest
    return Response(status, headers, body)


def raw(sock: Path, data: bytes, *, responses: int = 1, timeout: float = 20) -> list[Response]:
    """Send raw bytes over the unix socket and read up to ``responses`` answers."""
    out: list[Response] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(data)
        for _ in range(responses):
            r = read_response(s)
            if r is None:
                break
            out.append(r)
    return out


def request(
    sock: Path, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
) -> Response:
    payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    lines = [f"{method} {path} HTTP/1.1", "Host: docker"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if payload or method == "POST":
        if not headers or "Content-Type" not in headers:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
    rs = raw(sock, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    assert rs, f"no response to {method} {path}"
    return rs[0]
