"""Faults: control plane down, dockerd down, OPA down, audit disk full, kill -9 and SIGTERM mid-action."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.controlplane import ControlPlane, Submission
from tests.runner.support import (
    Harness,
    InProcessRunner,
    Install,
    SubprocessRunner,
    audit_records,
    audit_verify,
    free_port,
    make_install,
    principal,
    records_for,
    remove_install,
    started_at,
    wait_for_record,
)
from tests.support.env import require

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.slow]


@pytest.fixture
def install_ta(demo_project) -> Iterator[Install]:
    """An install with the test-only actions (check_sleep, check_true) in catalog and policy data."""
    require("docker", "root", "seccomp", "landlock")
    project, compose_file = demo_project
    inst = make_install(project, compose_file, test_actions=True)
    try:
        yield inst
    finally:
        remove_install(inst)


def restart(h: Harness) -> str:
    return h.submit("restart_transaction_service", principal("workflow-auto-restart"),
                    principal("trigger-pix-latency"))


def test_control_plane_down_backs_off_and_recovers(install):
    port = free_port()
    install.rewrite(control_plane={"url": f"http://127.0.0.1:{port}"})
    runner = InProcessRunner(install.cfg)
    plane = None
    try:
        time.sleep(2.0)
        errors = runner.runner.stats.poll_errors
        # backoff 0.05 s doubling to 0.5 s: a handful of attempts in 2 s; a busy loop would make thousands
        assert 2 <= errors <= 40, errors
        plane = ControlPlane(install.cfg, port=port)
        plane.start()
        tid = plane.submit(Submission(action="check_services_status", parameters={}, principal=principal("user-sre"),
                                      trigger={"type": "manual"}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (plane.show(tid) or {}).get("result"):
            time.sleep(0.1)
        result = plane.show(tid)["result"]
        assert result is not None and result["success"] is True, result
    finally:
        runner.stop()
        if plane is not None:
            plane.stop()


def test_dockerd_down_fails_cleanly(install):
    dead = install.root / "run" / "dead-docker.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()  # the file stays; connecting to it is refused, like a stopped dockerd
    install.rewrite(docker={"upstream_socket": str(dead)})
    before = started_at(install.project, "transaction-service")
    h = Harness(install)
    try:
        h.start_runner()
        tid = restart(h)
        result = h.wait_result(tid, timeout=120)
        assert result["success"] is False
        assert result["error"]["errorCode"] == "ACTION_ERROR"
        assert result["outputs"]["exitCode"] not in (0, None)
        finished = wait_for_record(install, tid, "execution_finished")
        assert finished["data"]["outcome"] == "failure"
        assert started_at(install.project, "transaction-service") == before
    finally:
        h.close()


def test_opa_backend_down_denies(install):
    install.rewrite(policy={"engine": "opa", "opa_url": f"http://127.0.0.1:{free_port()}", "opa_timeout_s": 0.3})
    before = started_at(install.project, "transaction-service")
    h = Harness(install)
    try:
        h.start_runner()
        tid = restart(h)
        result = h.wait_result(tid, timeout=60)
        assert result["error"]["errorCode"] == "POLICY_DENIED"
        assert "policy_error" in result["error"]["message"]
        kinds = [r["kind"] for r in records_for(install, tid)]
        assert kinds == ["decision"]
        assert started_at(install.project, "transaction-service") == before
    finally:
        h.close()


def test_audit_disk_full_nothing_executes(install):
    mnt = install.root / "auditfs"
    mnt.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        install.rewrite(audit={"dir": str(mnt / "audit")})
        before = started_at(install.project, "transaction-service")
        h = Harness(install)
        try:
            h.start_runner()
            for chunk in (65536, 4096, 1):  # fill the disk, down to the last byte of the filler's pages
                with contextlib.suppress(OSError), open(mnt / "filler", "ab") as f:
                    while True:
                        f.write(b"\0" * chunk)
                        f.flush()
            # The segment file's last page may still have a little room: refused tasks (one small
            # `decision` record each) use it up until a write fails, which must happen quickly.
            for _ in range(40):
                denied = h.wait_result(h.submit("restart_transaction_service", principal("user-developer")))
                if denied["error"]["errorCode"] == "INTERNAL_ERROR":
                    break
                assert denied["error"]["errorCode"] == "POLICY_DENIED"
            else:
                pytest.fail("the audit log never reported the full disk")
            tid = restart(h)
            result = h.wait_result(tid, timeout=60)
            assert result["success"] is False
            assert result["error"]["errorCode"] == "INTERNAL_ERROR"
            assert "audit" in result["error"]["message"]
            time.sleep(0.5)
            assert started_at(install.project, "transaction-service") == before
            assert not [r for r in records_for(install, tid) if r["kind"] == "execution_started"]
        finally:
            h.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_audit_unusable_at_start_refuses_to_run(install):
    blocker = install.root / "not-a-dir"
    blocker.write_text("x")
    install.rewrite(audit={"dir": str(blocker / "audit")})
    proc = subprocess.run([str(Path(".venv/bin/par").resolve()), "--config", str(install.config_path), "run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "audit" in proc.stderr.lower(), proc.stderr


def test_group_readable_runner_key_refuses_to_start(install):
    key = install.cfg.runner.private_key
    key.chmod(0o640)
    proc = subprocess.run([str(Path(".venv/bin/par").resolve()), "--config", str(install.config_path), "run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "chmod 600" in proc.stderr, proc.stderr


def test_kill_9_mid_action_is_reported_interrupted_not_rerun(install_ta):
    h = Harness(install_ta)
    runner = None
    try:
        runner = SubprocessRunner(install_ta)
        tid = h.submit("check_sleep", principal("user-sre"), seconds=15)
        wait_for_record(install_ta, tid, "execution_started", timeout=60)
        os.kill(runner.proc.pid, signal.SIGKILL)
        runner.proc.wait(10)
        runner.kill()
        runner = SubprocessRunner(install_ta)  # recovery happens on start
        result = h.wait_result(tid, timeout=60)
        assert result["success"] is False
        assert result["error"]["errorCode"] == "INTERRUPTED"
        assert "interrupted" in result["error"]["message"]
        recs = records_for(install_ta, tid)
        assert [r["kind"] for r in recs] == ["decision", "execution_started", "execution_finished"]
        assert recs[-1]["data"]["outcome"] == "interrupted"
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0, runner.output()
        runner = None
        assert audit_verify(install_ta).returncode == 0
    finally:
        if runner is not None:
            runner.kill()
        h.close()


def test_sigterm_lets_a_running_action_finish(install_ta):
    install_ta.rewrite(runner={"drain_timeout_s": 20.0})
    h = Harness(install_ta)
    runner = SubprocessRunner(install_ta)
    try:
        tid = h.submit("check_sleep", principal("user-sre"), seconds=2)
        wait_for_record(install_ta, tid, "execution_started", timeout=60)
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0, runner.output()
        result = h.wait_result(tid, timeout=5)
        assert result["success"] is True, result
        kinds = [r["kind"] for r in audit_records(install_ta)]
        assert "runner_stopped" in kinds and kinds[-1] == "checkpoint"
    finally:
        runner.kill()
        h.close()


def test_sigterm_kills_an_action_after_the_drain_timeout(install_ta):
    install_ta.rewrite(runner={"drain_timeout_s": 1.0})
    h = Harness(install_ta)
    runner = SubprocessRunner(install_ta)
    try:
        tid = h.submit("check_sleep", principal("user-sre"), seconds=60)
        wait_for_record(install_ta, tid, "execution_started", timeout=60)
        t0 = time.monotonic()
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0, runner.output()
        assert time.monotonic() - t0 < 30
        result = h.wait_result(tid, timeout=5)
        assert result["error"]["errorCode"] == "INTERRUPTED", result
        finished = wait_for_record(install_ta, tid, "execution_finished", timeout=5)
        assert finished["data"]["outcome"] == "interrupted"
    finally:
        runner.kill()
        h.close()


def test_errno_constant_sanity():
    # ENOSPC is what a full tmpfs returns; keeps the disk-full test honest about what it simulates.
    assert errno.ENOSPC == 28


def test_result_survives_control_plane_outage_and_kill_9(install_ta):
    """The action finished while the control plane was down; the runner was then killed before it could
    publish. The next start re-sends the result from the audit log, and the action is not re-run."""
    h = Harness(install_ta)
    port = h.plane.address[1]
    runner = SubprocessRunner(install_ta)
    try:
        tid = h.submit("check_sleep", principal("user-sre"), seconds=1)
        wait_for_record(install_ta, tid, "execution_started", timeout=60)
        h.plane.stop()
        wait_for_record(install_ta, tid, "execution_finished", timeout=30)
        time.sleep(0.5)  # the publish is now failing and being retried
        runner.proc.send_signal(signal.SIGKILL)
        runner.wait(10)
        h.plane = ControlPlane(install_ta.cfg, port=port)
        h.plane.start()
        assert (h.plane.show(tid) or {}).get("result") is None
        runner = SubprocessRunner(install_ta)
        result = h.wait_result(tid, timeout=60)
        assert result["success"] is True, result
        assert result["outputs"]["executedCommand"] == ["sleep", "1"]
        kinds = [r["kind"] for r in records_for(install_ta, tid)]
        assert kinds.count("execution_started") == 1
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0
    finally:
        runner.kill()
        h.close()
