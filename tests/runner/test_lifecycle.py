"""Concurrency limit, heartbeats, timeouts and publish retries, with real actions in the jail."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sandbox import protocol
from sandbox._internal.runner_outbox import Heartbeats, Outbox
from sandbox.controlplane import ControlPlane, Submission
from sandbox.errors import ProtocolError
from tests.runner.support import (
    Harness,
    Install,
    audit_records,
    make_install,
    principal,
    remove_install,
    wait_for_record,
)
from tests.support.env import require


class FakePeer:
    """Only for the outbox/heartbeat unit tests; the end-to-end tests below use the real control plane."""

    def __init__(self, fail_first: int = 0) -> None:
        self.beats: list[str] = []
        self.published: list[str] = []
        self.fail_first = fail_first

    def heartbeat(self, task_id: str) -> None:
        self.beats.append(task_id)

    def publish(self, result: protocol.TaskResult) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ProtocolError("down")
        self.published.append(result.task_id)


def test_heartbeats_stop_when_the_task_timeout_passes():
    peer = FakePeer()
    hb = Heartbeats(peer, 0.05)  # type: ignore[arg-type]
    try:
        hb.add("t1", timeout_s=0.3)
        time.sleep(0.6)
        n = len(peer.beats)
        assert n >= 3
        time.sleep(0.3)
        assert len(peer.beats) == n, "heartbeats went on after the task's timeout"
    finally:
        hb.close()


def test_outbox_retries_until_acknowledged():
    peer = FakePeer(fail_first=3)
    box = Outbox(peer, backoff_min_s=0.01, backoff_max_s=0.05)  # type: ignore[arg-type]
    box.put(protocol.failure_result("t1", "r", protocol.ErrorCode.ACTION_ERROR, "x"))
    assert box.flush(5)
    assert peer.published == ["t1"]
    box.close(1)


@pytest.fixture
def inst(demo_project) -> Iterator[Install]:
    require("docker", "root", "seccomp", "landlock")
    project, compose_file = demo_project
    i = make_install(project, compose_file, test_actions=True, runner={"concurrency": 2})
    try:
        yield i
    finally:
        remove_install(i)


@pytest.mark.docker
@pytest.mark.slow
def test_concurrency_limit_and_heartbeats(inst):
    h = Harness(inst)
    try:
        h.start_runner()
        sre = principal("user-sre")
        ids = [h.submit("check_sleep", sre, seconds=1) for _ in range(4)]
        for tid in ids:
            assert h.wait_result(tid, timeout=60)["success"] is True
        events = []
        for r in audit_records(inst):
            if r["kind"] in ("execution_started", "execution_finished") and r["data"]["task_id"] in ids:
                events.append((r["seq"], +1 if r["kind"] == "execution_started" else -1))
        running = peak = 0
        for _, delta in sorted(events):
            running += delta
            peak = max(peak, running)
        assert peak == 2, f"{peak} actions ran at once with concurrency 2"
        assert sum(h.plane.show(t)["heartbeats"] for t in ids) >= 1  # 0.5 s interval, 1 s actions
    finally:
        h.close()


@pytest.mark.docker
@pytest.mark.slow
def test_task_timeout_kills_the_action(inst):
    h = Harness(inst)
    try:
        h.start_runner()
        tid = h.plane.submit(Submission(action="check_sleep", parameters={"seconds": 30},
                                        principal=principal("user-sre"), trigger={"type": "manual"}, timeout_s=1.0))
        t0 = time.monotonic()
        result = h.wait_result(tid, timeout=60)
        assert time.monotonic() - t0 < 20
        assert result["error"]["errorCode"] == "ACTION_ERROR" and "timed out" in result["error"]["message"]
        assert wait_for_record(inst, tid, "execution_finished")["data"]["outcome"] == "timeout"
    finally:
        h.close()


@pytest.mark.docker
@pytest.mark.slow
def test_result_published_after_the_control_plane_comes_back(inst):
    h = Harness(inst)
    port = h.plane.address[1]
    try:
        h.start_runner()
        tid = h.submit("check_sleep", principal("user-sre"), seconds=1)
        wait_for_record(inst, tid, "execution_started")
        h.plane.stop()  # down while the action runs: the publish fails and is retried
        time.sleep(2.5)
        h.plane = ControlPlane(inst.cfg, port=port)
        h.plane.start()
        result = h.wait_result(tid, timeout=30)
        assert result["success"] is True
    finally:
        h.close()
