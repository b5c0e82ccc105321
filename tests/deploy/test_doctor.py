"""`par doctor` against a complete, healthy local setup, then with each precondition broken on purpose.

The setup is real: a demo compose project with its network on the shared dockerd, the project-scoped
proxy serving a unix socket, the local control plane on loopback with this runner enrolled, keys made
by sandbox.keys, a signed audit log, the repository's policies and catalog.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox._internal import demo_stack
from sandbox.audit import AuditLog
from sandbox.config import ProxyConfig, RunnerConfig, load_config
from sandbox.controlplane import ControlPlane
from sandbox.doctor import CHECKS, CheckResult, run_checks
from sandbox.keys import generate, save_key_pair
from sandbox.policy import open_engine
from sandbox.proxy import DockerProxy
from tests.conftest import unique_project
from tests.support.env import require

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    project: str
    compose_file: Path
    proxy_socket: Path
    control_plane_url: str
    keys: Path  # runner + audit key pairs, and the control plane's public key


@pytest.fixture(scope="module")
def stack(demo_compose_file: Path, world_readable_dir: Path) -> Iterator[Stack]:
    require("docker", "root", "landlock", "seccomp")
    demo_stack.ensure_images()
    project = unique_project("dogbankdoctor")
    base = world_readable_dir / project
    keys = base / "keys"
    keys.mkdir(parents=True)
    runner_key = generate("runner")
    save_key_pair(runner_key, keys / "private_key.pem")
    save_key_pair(generate("audit"), keys / "audit_key.pem", keys / "audit_key.pub")
    cp_key = generate("controlplane")
    save_key_pair(cp_key, keys / "controlplane_key.pem", keys / "controlplane_key.pub")
    demo_stack.up(project, demo_compose_file)
    subprocess.run(
        ["docker", "network", "create", "--internal", "--label", f"com.docker.compose.project={project}",
         f"{project}_default"], check=True, capture_output=True, timeout=60,
    )
    engine = open_engine(load_config_for_policies())
    proxy = DockerProxy(listen=base / "proxy.sock", upstream=Path("/var/run/docker.sock"), project=project,
                        policy=engine, audit=None, cfg=ProxyConfig(socket_group=""))
    plane = ControlPlane(RunnerConfig(), signing_key=cp_key,  # type: ignore[arg-type]
                         enrolled={"dogbank-par": runner_key.public_key()},  # type: ignore[dict-item]
                         database=base / "cp.sqlite3")
    proxy.start()
    plane.start()
    try:
        yield Stack(project, demo_compose_file, base / "proxy.sock", plane.url, keys)
    finally:
        plane.stop()
        proxy.stop()
        engine.close()
        subprocess.run(["docker", "network", "rm", f"{project}_default"], capture_output=True, check=False)
        subprocess.run([*demo_stack.compose_argv(project, demo_compose_file), "down", "--remove-orphans", "-t", "1"],
                       capture_output=True, check=False)


def load_config_for_policies() -> Any:
    from sandbox.config import PolicyConfig  # noqa: PLC0415

    return PolicyConfig(path=REPO / "policies", watch=False)


class Site:
    """One runner installation in a temp dir: config, keys, catalog, policies, a verified audit log."""

    def __init__(self, root: Path, stack: Stack) -> None:
        self.root = root
        self.config_dir = root / "config"
        shutil.copytree(stack.keys, self.config_dir)
        (self.config_dir / "credentials").mkdir()
        shutil.copy(REPO / "config/credentials/script.yaml", self.config_dir / "credentials/script.yaml")
        shutil.copytree(REPO / "policies", root / "policies")
        self.audit_dir = root / "audit"
        self.doc: dict[str, Any] = {
            "runner": {"private_key": "private_key.pem"},
            "control_plane": {
                "url": stack.control_plane_url,
                "task_signing_keys": [{"key_id": "local-controlplane", "public_key": "controlplane_key.pub"}],
                "request_timeout_s": 3,
            },
            "catalog": "credentials/script.yaml",
            "policy": {"engine": "embedded", "path": "../policies", "watch": False},
            "audit": {"dir": "../audit", "signing_key": "audit_key.pem", "public_key": "audit_key.pub"},
            "docker": {"project": stack.project, "compose_file": str(stack.compose_file),
                       "upstream_socket": "/var/run/docker.sock"},
            "proxy": {"socket_path": str(stack.proxy_socket), "socket_group": ""},
            "jail": {"user": "nobody", "group": "nogroup"},
            "logging": {"format": "json", "level": "warning"},
        }
        self.write()
        cfg = load_config(self.config)
        log = AuditLog.open(cfg.audit, signer=_audit_signer(cfg.audit.signing_key))
        log.append("runner_started", {"version": "doctor-test"})
        log.close()

    @property
    def config(self) -> Path:
        return self.config_dir / "runner.yaml"

    def write(self) -> None:
        self.config.write_text(yaml.safe_dump(self.doc))

    def set(self, section: str, key: str, value: Any) -> None:
        self.doc[section][key] = value
        self.write()

    def check(self, *names: str) -> dict[str, CheckResult]:
        return {r.name: r for r in run_checks(self.config, only=names or None, timeout_s=3)}


def _audit_signer(path: Path) -> Any:
    from sandbox.keys import load_ed25519_private_key  # noqa: PLC0415

    return load_ed25519_private_key(path)


@pytest.fixture
def site(stack: Stack, tmp_path: Path) -> Site:
    return Site(tmp_path, stack)


def _failed(results: dict[str, CheckResult], name: str, *needles: str) -> CheckResult:
    r = results[name]
    assert not r.ok, f"{name} should FAIL: {r.detail}"
    text = f"{r.detail}\n{r.fix}"
    for needle in needles:
        assert needle in text, f"{name}: {needle!r} not in {text!r}"
    assert r.fix, f"{name}: a FAIL must say how to fix it"
    return r


# ---- healthy ----------------------------------------------------------------------------------------


def test_every_check_is_ok_on_a_healthy_setup(site: Site) -> None:
    results = site.check()
    assert list(results) == list(CHECKS)
    bad = {n: r.detail for n, r in results.items() if not r.ok}
    assert not bad, bad
    assert "200 OK" in results["proxy_socket"].detail
    assert "cannot connect" in results["jail_docker_socket"].detail
    assert "via engine socket" in results["docker_network"].detail
    assert "10 containers" in results["docker_project"].detail
    assert "landlock" in results["jail"].detail and "Landlock ABI" in results["jail"].detail
    assert "records verify" in results["audit_log"].detail


def test_cli_json_report_and_exit_codes(site: Site) -> None:
    argv = [sys.executable, "-m", "sandbox", "--config", str(site.config), "doctor", "--json",
            "--only", "config,key_file,catalog,proxy_socket,audit_log"]
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and [c["status"] for c in doc["checks"]] == ["OK"] * 5
    (site.config_dir / "private_key.pem").chmod(0o644)
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    failing = [c for c in doc["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failing] == ["key_file"] and "chmod 600" in failing[0]["fix"]
    human = subprocess.run(argv[:-3], capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert human.returncode == 1 and "FAIL  key_file" in human.stdout and "fix: chmod 600" in human.stdout


def test_unknown_check_name_is_a_clear_error(site: Site) -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "--config", str(site.config), "doctor", "--only", "nope"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    assert proc.returncode == 2 and "unknown doctor check(s): nope" in proc.stderr and "Traceback" not in proc.stderr


# ---- each precondition broken on purpose ------------------------------------------------------------


def test_key_readable_by_others(site: Site) -> None:
    (site.config_dir / "private_key.pem").chmod(0o644)
    _failed(site.check("key_file"), "key_file", "mode 0644", "chmod 600")


def test_key_missing(site: Site) -> None:
    (site.config_dir / "private_key.pem").unlink()
    results = site.check("key_file", "control_plane")
    _failed(results, "key_file", "does not exist", "par keygen")
    _failed(results, "control_plane", "skipped", "runner key")


def test_key_of_the_wrong_type(site: Site) -> None:
    shutil.copy(site.config_dir / "audit_key.pem", site.config_dir / "private_key.pem")
    _failed(site.check("key_file"), "key_file", "P-256")


def test_config_missing_skips_everything_else(site: Site) -> None:
    site.config.unlink()
    results = site.check()
    _failed(results, "config", "runner.yaml")
    for name in CHECKS:
        if name != "config":
            _failed(results, name, "config", "did not load")


def test_broken_script_yaml(site: Site) -> None:
    (site.config_dir / "credentials/script.yaml").write_text("schemaId: script-credentials-v1\nrunPredefinedScript:\n"
                                                             "  evil: {command: [sh, -c, 'rm -rf /']}\n")
    _failed(site.check("catalog"), "catalog", "script.yaml", "evil")


def test_policy_that_does_not_compile(site: Site) -> None:
    (site.root / "policies/broken.rego").write_text("package par.broken\n\nallow if {\n")
    _failed(site.check("policy"), "policy", "do not load")


def test_policy_whose_tests_fail(site: Site) -> None:
    (site.root / "policies/doctor_test.rego").write_text(
        "package par.doctor_test\n\nimport rego.v1\n\ntest_always_fails if {\n\tfalse\n}\n"
    )
    _failed(site.check("policy"), "policy", "test_always_fails", "par policy test")


def test_opa_backend_down(site: Site) -> None:
    site.set("policy", "engine", "opa")
    site.set("policy", "opa_url", f"http://127.0.0.1:{_closed_port()}")
    _failed(site.check("policy"), "policy", "did not answer", "opa")


def test_proxy_socket_absent(site: Site) -> None:
    site.set("proxy", "socket_path", str(site.root / "no-proxy.sock"))
    _failed(site.check("proxy_socket"), "proxy_socket", "does not exist", "par-docker-proxy")


def test_proxy_socket_that_is_not_the_proxy(site: Site) -> None:
    path = site.root / "mute.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        site.set("proxy", "socket_path", str(path))
        _failed(site.check("proxy_socket"), "proxy_socket", "does not answer")
    finally:
        srv.close()


def test_jail_uid_that_can_reach_the_docker_socket(site: Site, world_readable_dir: Path) -> None:
    # A "docker socket" anyone may connect to (what a 0666 docker.sock or a jail uid in the docker group is),
    # in a directory the jail uid can traverse (pytest's tmp dirs are 0700, which alone would stop it).
    path = world_readable_dir / f"open-docker-{os.getpid()}.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    try:
        path.chmod(0o666)
        site.set("docker", "upstream_socket", str(path))
        _failed(site.check("jail_docker_socket"), "jail_docker_socket", "CAN connect", "docker group")
        path.chmod(0o600)  # the fix
        assert site.check("jail_docker_socket")["jail_docker_socket"].ok
    finally:
        srv.close()
        path.unlink()


def test_network_and_project_missing(site: Site) -> None:
    site.set("docker", "project", unique_project("dogbankabsent"))
    results = site.check("docker_network", "docker_project")
    _failed(results, "docker_network", "_default does not exist", "up -d")
    _failed(results, "docker_project", "has no containers", "up -d")


def test_network_and_project_are_asked_through_the_proxy_when_the_engine_is_out_of_reach(site: Site) -> None:
    # The runner container has no Docker socket: the doctor falls back to the proxy, which only shows the project.
    site.set("docker", "upstream_socket", str(site.root / "no-docker.sock"))
    results = site.check("docker_network", "docker_project")
    assert results["docker_project"].ok and "via proxy socket" in results["docker_project"].detail
    assert results["docker_network"].ok, results["docker_network"].detail


def test_control_plane_down(site: Site) -> None:
    site.set("control_plane", "url", f"http://127.0.0.1:{_closed_port()}")
    _failed(site.check("control_plane"), "control_plane", "health check", "control_plane.url")


def test_runner_not_enrolled_at_the_control_plane(site: Site) -> None:
    save_key_pair(generate("runner"), site.config_dir / "private_key.pem", force=True)
    _failed(site.check("control_plane"), "control_plane", "401", "public key")


def test_audit_log_tampered(site: Site) -> None:
    segment = sorted(site.audit_dir.glob("audit-*.jsonl"))[0]
    segment.write_bytes(segment.read_bytes().replace(b"doctor-test", b"doctor-tEst", 1))
    _failed(site.check("audit_log"), "audit_log", "does not verify", "par audit verify")


def test_audit_dir_unwritable(site: Site) -> None:
    with _immutable(site.audit_dir) as target:
        if target != site.audit_dir:
            site.set("audit", "dir", str(target))
        _failed(site.check("audit_log"), "audit_log", "not writable", "nothing runs")


def test_audit_dir_missing_and_audit_key_unsafe(site: Site) -> None:
    shutil.rmtree(site.audit_dir)
    _failed(site.check("audit_log"), "audit_log", "does not exist", "mkdir")
    (site.config_dir / "audit_key.pem").chmod(0o640)
    _failed(site.check("audit_log"), "audit_log", "audit signing key", "mode 0640")


def test_jail_that_cannot_apply_its_controls(site: Site) -> None:
    site.set("jail", "user", "par-doctor-no-such-user")
    _failed(site.check("jail", "jail_docker_socket"), "jail", "does not exist", "useradd")


# ---- helpers ----------------------------------------------------------------------------------------


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@contextlib.contextmanager
def _immutable(directory: Path) -> Iterator[Path]:
    """The directory made unwritable even for root (chattr +i); sysfs where the filesystem cannot."""
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(directory)], capture_output=True,
                                                 check=False).returncode == 0:
        try:
            yield directory
        finally:
            subprocess.run(["chattr", "-i", str(directory)], capture_output=True, check=False)
    else:
        yield Path("/sys/kernel")
    assert os.path.isdir(directory)


def test_a_missing_component_is_reported_not_a_crash(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # A partial install (a module of the package absent): that check FAILs by name, the others still run.
    monkeypatch.setitem(sys.modules, "sandbox.audit", None)  # makes `import sandbox.audit` raise ModuleNotFoundError
    results = site.check("catalog", "audit_log")
    assert results["catalog"].ok
    _failed(results, "audit_log", "component not installed: sandbox.audit", "pip install")
