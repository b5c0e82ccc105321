"""The two seed workflows end to end: real control plane (HTTP), runner, policy, jail, proxy, dockerd."""

from __future__ import annotations

import socket

import pytest

from sandbox import metrics
from tests.runner.support import (
    audit_verify,
    principal,
    records_for,
    running_replicas,
    started_at,
)

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.slow]

@pytest.fixture
def statsd():
    """A DogStatsD 'agent' on loopback UDP; returns a function that drains what the runner sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    metrics.set_client(metrics.Metrics("127.0.0.1", sock.getsockname()[1]))

    def received() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(9000))
            except TimeoutError:
                return out

    yield received
    metrics.set_client(None)
    sock.close()


SUCCESS_KEYS = {"executedCommand", "exitCode", "stdout", "stderr", "durationMillis", "truncated", "auditSeq"}


def test_auto_restart_workflow(harness, statsd):
    project = harness.inst.project
    before = started_at(project, "transaction-service")
    assert before
    tid = harness.submit("restart_transaction_service", principal("workflow-auto-restart"),
                         principal("trigger-pix-latency"))
    result = harness.wait_result(tid, timeout=120)
    assert result["success"] is True, result
    out = result["outputs"]
    assert set(out) == SUCCESS_KEYS
    assert out["exitCode"] == 0 and out["executedCommand"][:2] == ["docker", "compose"]
    assert out["executedCommand"][-2:] == ["restart", "transaction-service"]
    assert out["truncated"] == {"stdout": 0, "stderr": 0}
    after = started_at(project, "transaction-service")
    assert after and after != before, "the container was not restarted"
    kinds = [r["kind"] for r in records_for(harness.inst, tid)]
    assert kinds == ["decision", "execution_started", "execution_finished"]
    finished = records_for(harness.inst, tid)[-1]
    assert finished["seq"] == out["auditSeq"] and finished["data"]["outcome"] == "success"
    sent = statsd()
    assert b"dogbank.par.tasks:1|c|#outcome:success,action:restart_transaction_service" in sent
    assert any(d.startswith(b"dogbank.par.action.duration:") for d in sent)
    assert b"dogbank.par.decisions:1|c|#decision:allow,rule:authz.workflow,action:restart_transaction_service" in sent
    harness.stop_runner()
    verified = audit_verify(harness.inst)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_auto_scale_workflow_and_rate_limit(harness, statsd):
    project = harness.inst.project
    wf, trig = principal("workflow-auto-scale"), principal("trigger-kafka-lag")
    tid = harness.submit("scale_pix_worker_3", wf, trig)
    result = harness.wait_result(tid, timeout=120)
    assert result["success"] is True, result
    assert running_replicas(project, "pix-worker") == 3
    # The follow-up scale right away: the policy allows no scale within 60 s of the previous one.
    early = harness.submit("scale_pix_worker_1", wf, trig)
    refused = harness.wait_result(early, timeout=60)
    assert refused["success"] is False
    assert refused["error"]["errorCode"] == "RATE_LIMITED"
    assert "rate_limit.scale_interval" in refused["error"]["message"]
    assert running_replicas(project, "pix-worker") == 3, "a refused scale changed the replica count"
    recs = records_for(harness.inst, early)
    assert [r["kind"] for r in recs] == ["decision"] and recs[0]["data"]["allow"] is False
    assert b"dogbank.par.tasks.rejected:1|c|#code:RATE_LIMITED" in statsd()
