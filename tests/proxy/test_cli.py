"""`par proxy` as a command, `par policy test` on the proxy policy, and the connection cap."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import ProxyError
from sandbox.proxy import DockerProxy
from tests.conftest import REPO
from tests.proxy.conftest import TEST_CFG, UPSTREAM, Stacks, read_response, request
from tests.support.env import require

PAR = [sys.executable, "-m", "sandbox", "-c", str(REPO / "config" / "runner.yaml")]


def test_policy_tests_for_the_proxy_pass() -> None:
    r = subprocess.run(
        [*PAR, "policy", "test", str(REPO / "policies"), "--run", "docker_proxy", "--fail-on-empty"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_unknown_socket_group_is_a_clear_error() -> None:
    r = subprocess.run(
        [*PAR, "proxy", "--listen", "/tmp/par-never.sock", "--socket-group", "no-such-group-xyz", "--no-audit"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "socket group 'no-such-group-xyz' does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_upstream_is_a_clear_error(sock_dir: Path) -> None:
    d = sock_dir
    r = subprocess.run(
        [
            *PAR,
            "proxy",
            "--listen",
            str(d / "s.sock"),
            "--upstream",
            str(d / "nope.sock"),
            "--socket-group",
            "",
            "--no-audit",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "not reachable" in r.stderr and "Traceback" not in r.stderr
    assert not (d / "s.sock").exists()


def test_par_proxy_serves_and_stops_on_sigterm(docker_engine: None, sock_dir: Path) -> None:
    require("docker")
    d = sock_dir
    sock = d / "s.sock"
    proc = subprocess.Popen(
        [*PAR, "proxy", "--listen", str(sock), "--project", "dogbankcli", "--socket-group", "", "--no-audit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        assert sock.exists(), proc.stderr.read() if proc.stderr and proc.poll() is not None else "no socket"
        assert request(sock, "GET", "/_ping").status == 200
        r = request(sock, "GET", "/v1.41/info")
        assert r.status == 403 and "route_not_allowed" in r.json()["message"]
        # SIGHUP reloads the policy (operators upgrade rules without a restart); the proxy keeps serving.
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
        assert request(sock, "GET", "/_ping").status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not sock.exists()
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "proxy_denied" in out and "route_not_allowed" in out  # the structured log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_connection_cap(stacks: Stacks, proxy_engine: Any, sock_dir: Path) -> None:
    require("docker")
    sock = sock_dir / "s.sock"
    cfg = dataclasses.replace(TEST_CFG, max_connections=2, client_timeout_s=5.0)
    with DockerProxy(listen=sock, upstream=UPSTREAM, project=stacks.ours, policy=proxy_engine, audit=None, cfg=cfg):
        held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for s in held:
                s.connect(str(sock))
            time.sleep(0.2)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
                extra.settimeout(5)
                extra.connect(str(sock))
                r = read_response(extra)
                assert r is not None and r.status == 503
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        assert request(sock, "GET", "/_ping").status == 200


def test_existing_non_socket_path_is_never_replaced(docker_engine: None, proxy_engine: Any, sock_dir: Path) -> None:
    require("docker")
    d = sock_dir
    victim = d / "important"
    victim.write_text("keep me")
    px = DockerProxy(
        listen=victim, upstream=UPSTREAM, project="dogbankcli", policy=proxy_engine, audit=None, cfg=TEST_CFG
    )
    with pytest.raises(ProxyError):
        px.start()
    assert victim.read_text() == "keep me"



def test_proxy_refuses_to_run_with_an_unsigned_audit_log(tmp_path: Path) -> None:
    """Auditing is on unless --no-audit is said: without the audit key the proxy does not start."""
    cfg = tmp_path / "runner.yaml"
    cfg.write_text(f"audit:\n  dir: {tmp_path / 'audit'}\n  signing_key: {tmp_path / 'absent.pem'}\n"
                   f"policy:\n  path: {REPO / 'policies'}\n")
    r = subprocess.run(
        [sys.executable, "-m", "sandbox", "-c", str(cfg), "proxy", "--listen", str(tmp_path / "s.sock"),
         "--socket-group", ""],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "absent.pem" in r.stderr and "par keygen" in r.stderr
    assert not (tmp_path / "s.sock").exists()
