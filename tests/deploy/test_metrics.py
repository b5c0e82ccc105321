"""sandbox.metrics: real DogStatsD datagrams on loopback UDP, sanitized tags, never an exception."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import metrics
from sandbox.audit import AuditLog
from sandbox.config import AuditConfig
from sandbox.keys import generate


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    """A fake Datadog Agent: a UDP socket on loopback; the module's client points at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    metrics.set_client(metrics.Metrics("127.0.0.1", sock.getsockname()[1], constant_tags={"env": "test"}))
    yield sock
    metrics.set_client(None)
    sock.close()


def _receive(sock: socket.socket, n: int) -> list[str]:
    return [sock.recv(65536).decode() for _ in range(n)]


def test_task_finished_sends_count_and_duration(agent: socket.socket) -> None:
    metrics.task_finished("success", 1.25, action="restart_transaction_service")
    assert _receive(agent, 2) == [
        "dogbank.par.tasks:1|c|#env:test,outcome:success,action:restart_transaction_service",
        "dogbank.par.action.duration:1.25|d|#env:test,outcome:success,action:restart_transaction_service",
    ]


def test_decisions_rejections_denials_and_checkpoint_age(agent: socket.socket) -> None:
    metrics.decision(False, ["ratelimit.scale_cooldown", "who.workflow"], action="scale_pix_worker_3")
    metrics.task_rejected("RATE_LIMITED", action="scale_pix_worker_3")
    metrics.proxy_denied("container_not_in_project", "POST")
    metrics.audit_checkpoint_age(42)
    got = _receive(agent, 6)
    assert got[0] == (
        "dogbank.par.decisions:1|c|#env:test,decision:deny,rule:ratelimit.scale_cooldown,action:scale_pix_worker_3"
    )
    assert got[1].startswith("dogbank.par.decisions:1|c|#env:test,decision:deny,rule:who.workflow")
    assert got[2] == "dogbank.par.tasks:1|c|#env:test,outcome:rejected,action:scale_pix_worker_3"
    assert got[3] == "dogbank.par.tasks.rejected:1|c|#env:test,code:RATE_LIMITED"
    assert got[4] == "dogbank.par.proxy.denials:1|c|#env:test,rule:container_not_in_project,method:POST"
    assert got[5] == "dogbank.par.audit.checkpoint_age:42|g|#env:test"


def test_tag_values_cannot_forge_metrics_or_tags(agent: socket.socket) -> None:
    # A rule id or action name from policy/task data, crafted to smuggle a second metric line and a tag.
    metrics.decision(True, ["x|c\ndogbank.par.tasks:999|c|#outcome:success,evil:1"], action="a,b#c")
    (line,) = _receive(agent, 1)
    assert "\n" not in line and line.count("|") == 2 and line.count("#") == 1
    assert line.endswith("action:a_b_c")
    assert ",evil" not in line and "|#outcome" not in line


def test_agent_absent_never_raises_and_counts_drops() -> None:
    # Nothing listens on this port: sends are fire-and-forget, errors are swallowed and counted.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    m = metrics.Metrics("127.0.0.1", port)
    for _ in range(5):
        m.count("tasks", 1, {"outcome": "success"})
    m.gauge("audit.checkpoint_age", float("nan"))  # not finite: dropped silently, not sent
    m.close()
    invalid = metrics.Metrics("127.0.0.1", 0)  # sendto fails (EINVAL) without any traffic leaving loopback
    invalid.count("tasks")
    assert invalid.dropped == 1
    invalid.close()


def test_configuration_from_the_datadog_environment_variables() -> None:
    m = metrics.Metrics.from_env({"DD_AGENT_HOST": "datadog-agent", "DD_DOGSTATSD_PORT": "18125",
                                  "DD_ENV": "prod", "DD_SERVICE": "par-runner", "DD_VERSION": "0.1.0"})
    assert m.address == ("datadog-agent", 18125) and m.enabled
    assert m.format("tasks", 1, "c") == b"dogbank.par.tasks:1|c|#env:prod,service:par-runner,version:0.1.0"
    off = metrics.Metrics.from_env({"DD_DOGSTATSD_DISABLE": "true"})
    assert not off.enabled and off.address == ("127.0.0.1", 8125)
    with pytest.raises(ValueError):
        m.format("Bad Name|c", 1, "c")


def test_checkpoint_age_from_a_real_audit_log(tmp_path: Path, agent: socket.socket) -> None:
    assert metrics.checkpoint_age_s(tmp_path) is None  # no checkpoint yet: nothing reported
    cfg = AuditConfig(dir=tmp_path / "audit")
    log = AuditLog.open(cfg, signer=generate("audit"))  # type: ignore[arg-type]
    log.append("runner_started", {})
    log.checkpoint()
    log.close()
    age = metrics.checkpoint_age_s(cfg.dir, now=time.time() + 100)
    assert age is not None and 99 <= age <= 110
    reporter = metrics.CheckpointAgeReporter(cfg.dir, interval_s=0.05).start()
    try:
        line = agent.recv(65536).decode()
    finally:
        reporter.stop()
    assert line.startswith("dogbank.par.audit.checkpoint_age:") and line.endswith("|g|#env:test")
    assert os.path.isdir(cfg.dir / "checkpoints")
