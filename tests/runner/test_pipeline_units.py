"""Pure parts of the runner: backoff, circuit breaker, check-to-code mapping, timeouts, ledger from the log."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox import protocol
from sandbox._internal.runner_backoff import Backoff, CircuitBreaker
from sandbox._internal.runner_ledger import Ledger
from sandbox._internal.runner_pipeline import (
    effective_timeout,
    outcome_of,
    refusal_code,
    resolve,
    result_from_records,
)
from sandbox.catalog import load_catalog
from sandbox.errors import TaskRejected
from sandbox.protocol import ErrorCode
from sandbox.runner import Runner

REPO = Path(__file__).resolve().parents[2]


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(1.0, 180.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(20)]
    assert all(1.0 <= d <= 180.0 for d in delays)
    assert max(delays[:3]) <= 4.0  # 1, 2, 4 caps at first
    assert max(delays[10:]) > 30  # grows towards the cap
    assert len(set(delays)) == len(delays)  # jitter: no two runners in lockstep
    b.reset()
    assert b.next_delay() == 1.0


def test_circuit_breaker_opens_then_half_opens():
    now = [0.0]
    cb = CircuitBreaker(3, 60.0, clock=lambda: now[0])
    assert not cb.failure() and not cb.failure()
    assert cb.state == "closed"
    assert cb.failure() is True
    assert cb.state == "open" and cb.wait_s() == 60.0
    now[0] = 61.0
    assert cb.state == "half-open" and cb.wait_s() == 0
    cb.failure()  # the probe failed: open again
    assert cb.state == "open"
    cb.success()
    assert cb.state == "closed"


def test_refusal_codes():
    assert refusal_code(True, ("authz.workflow",)) is None
    assert refusal_code(False, ("rate_limit.scale_interval",)) == ErrorCode.RATE_LIMITED
    assert refusal_code(False, ("rate_limit.scale_count", "rate_limit.scale_interval")) == ErrorCode.RATE_LIMITED
    # not authorized AND over a limit: waiting would not help, so it is a denial
    assert refusal_code(False, ("authz.role", "rate_limit.scale_interval")) == ErrorCode.POLICY_DENIED
    assert refusal_code(False, ("policy_error",)) == ErrorCode.POLICY_DENIED
    assert refusal_code(False, ()) == ErrorCode.POLICY_DENIED


def test_effective_timeout_is_the_smallest():
    assert effective_timeout(120, {"timeout_s": 30}, None, 99) == 30
    assert effective_timeout(120, {}, 10, 99) == 10
    assert effective_timeout(None, {}, None, 99) == 99
    assert effective_timeout(None, {"timeout_s": True}, None, 99) == 99  # a bool is not a number


def test_outcomes():
    assert outcome_of(0, None, timed_out=False, cancelled=False, timeout_s=5).success
    assert outcome_of(None, 15, timed_out=True, cancelled=False, timeout_s=5).outcome == "timeout"
    o = outcome_of(None, 9, timed_out=False, cancelled=True, timeout_s=5)
    assert o.code == ErrorCode.INTERRUPTED and "interrupted" in o.message
    assert outcome_of(3, None, timed_out=False, cancelled=False, timeout_s=5).code == ErrorCode.ACTION_ERROR


def _task(action, params):
    return SimpleNamespace(action=action, parameters=params)


def test_resolve_maps_catalog_errors_to_invalid_parameters():
    catalog = load_catalog(REPO / "config" / "credentials" / "script.yaml")
    rv = {"project": "p", "compose_file": "/c.yml"}
    ok = resolve(catalog, _task("check_service_logs", {"service": "kafka"}), rv)
    assert ok.argv[-3:] == ["--tail", "100", "kafka"]
    for action, params in [("nope", {}), ("check_service_logs", {"service": "kafka;id"}),
                           ("check_service_logs", {}), ("restart_transaction_service", {"x": 1})]:
        with pytest.raises(TaskRejected) as exc:
            resolve(catalog, _task(action, params), rv)
        assert exc.value.code == ErrorCode.INVALID_PARAMETERS


def _rec(kind, ts, **data):
    return SimpleNamespace(kind=kind, ts=ts, data=data)


def test_ledger_rebuilt_from_records():
    records = [
        _rec("task_rejected", "2026-01-01T00:00:00Z", task_id="forged", code="SIGNATURE_ERROR", reason="x"),
        _rec("task_rejected", "2026-01-01T00:00:01Z", task_id="bad-params", code="INVALID_PARAMETERS", reason="x"),
        _rec("decision", "2026-01-01T00:00:02Z", task_id="t1", allow=True),
        _rec("execution_started", "2026-01-01T00:00:02.5Z", task_id="t1", action="scale_pix_worker_3",
             services=["pix-worker"], principal_id="wf"),
        _rec("execution_finished", "2026-01-01T00:00:05Z", task_id="t1", outcome="success"),
        _rec("decision", "2026-01-01T00:00:06Z", task_id="t2", allow=True),
        _rec("execution_started", "2026-01-01T00:00:06Z", task_id="t2", action="restart_transaction_service",
             services=["transaction-service"], principal_id="wf"),
    ]
    ledger = Ledger.from_records(records)
    assert ledger.seen == {"bad-params", "t1", "t2"}  # not the forged id
    assert [e.task_id for e in ledger.unfinished()] == ["t2"]
    now_ns = 1767225610 * 10**9  # 2026-01-01T00:00:10Z
    hist = ledger.history(now_ns, 3600)
    assert {(h["action"], h["outcome"], h["service"]) for h in hist} == {
        ("scale_pix_worker_3", "success", "pix-worker"),
        ("restart_transaction_service", "started", "transaction-service"),
    }
    assert ledger.history(now_ns, 1) == []
    assert ledger.check_and_mark_seen("t1") is True
    assert ledger.check_and_mark_seen("t3") is False and ledger.check_and_mark_seen("t3") is True


def test_verified_codes_cover_only_post_signature_refusals():
    assert ErrorCode.SIGNATURE_ERROR not in protocol.VERIFIED_CODES
    assert ErrorCode.REPLAYED_TASK in protocol.VERIFIED_CODES


def _srec(seq, kind, **data):
    return SimpleNamespace(seq=seq, kind=kind, ts="2026-01-01T00:00:00Z", data=data)


def test_results_to_resend_after_a_crash_and_after_a_clean_stop():
    first_run = [_srec(0, "runner_started"), _srec(1, "decision", task_id="old", allow=False, rule_ids=["authz"]),
                 _srec(2, "runner_stopped", unacknowledged=[])]
    crashed = [*first_run, _srec(3, "runner_started"),
               _srec(4, "decision", task_id="a", allow=True),
               _srec(5, "execution_started", task_id="a", action="x", argv=["docker", "ps"]),
               _srec(6, "execution_finished", task_id="a", outcome="success", exit_code=0, stdout="hi", stderr="",
                     duration_ms=3.0, truncated={"stdout": 0, "stderr": 0}),
               _srec(7, "task_rejected", task_id="b", code="SIGNATURE_ERROR", reason="bad"),
               _srec(8, "task_rejected", task_id="a", code="REPLAYED_TASK", reason="again")]
    ledger = Ledger.from_records(crashed)
    assert ledger.results_to_resend() == {"a": 6, "b": 7}  # every result of the crashed run; a's first one
    clean = [*crashed, _srec(9, "runner_started"), _srec(10, "task_rejected", task_id="c", code="EXPIRED_TASK",
                                                          reason="old"),
             _srec(11, "task_rejected", task_id="d", code="EXPIRED_TASK", reason="old"),
             _srec(12, "runner_stopped", unacknowledged=["d"])]
    assert Ledger.from_records(clean).results_to_resend() == {"d": 11}
    assert Ledger.from_records(first_run).results_to_resend() == {}


def test_result_rebuilt_from_records():
    ok = result_from_records("r", "execution_finished", 6, {
        "task_id": "a", "outcome": "success", "exit_code": 0, "stdout": "hi", "stderr": "", "duration_ms": 3.0,
        "truncated": {"stdout": 0, "stderr": 0}}, ["docker", "ps"]).to_dict()
    assert ok["success"] and ok["outputs"]["executedCommand"] == ["docker", "ps"] and ok["outputs"]["auditSeq"] == 6
    denied = result_from_records("r", "decision", 1, {"task_id": "x", "allow": False,
                                                      "rule_ids": ["rate_limit.scale_interval"], "reasons": ["wait"]})
    assert denied.error_code == "RATE_LIMITED" and denied.error_message == "wait"
    timeout = result_from_records("r", "execution_finished", 2, {"task_id": "t", "outcome": "timeout"}, None)
    assert timeout.error_code == "ACTION_ERROR" and protocol.check_result(timeout.to_dict()) is None
    assert result_from_records("r", "task_rejected", 3, {"task_id": "z", "code": "MADE_UP", "reason": ""}, None) is None


def test_a_burst_of_reads_cannot_crowd_out_or_deny_remediation():
    """1,500 diagnostic runs in the window: history keeps only the state-changing one, and the policy input
    stays under its bound (which would otherwise fail closed and deny every restart for an hour)."""
    records = [_rec("execution_started", "2026-01-01T00:00:00Z", task_id="s1", action="scale_pix_worker_3",
                    services=["pix-worker"], principal_id="wf")]
    records += [
        _rec("execution_started", "2026-01-01T00:00:01Z", task_id=f"d{i}", action="check_services_status",
             services=[], principal_id="dev")
        for i in range(1500)
    ]
    ledger = Ledger.from_records(records)
    now_ns = 1767225610 * 10**9
    assert len(ledger.history(now_ns, 3600)) == 1501
    hist = ledger.history(now_ns, 3600, counts=lambda a: not a.startswith("check_"))
    assert [(h["action"], h["service"]) for h in hist] == [("scale_pix_worker_3", "pix-worker")]


def test_runner_counts_every_state_changing_action_and_no_diagnostic():
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "config" / "credentials" / "script.yaml")
    fake = SimpleNamespace(catalog=catalog)
    for name, action in catalog.actions.items():
        assert Runner._counts_toward_limits(fake, name) is (action.category != "diagnostic"), name
    assert Runner._counts_toward_limits(fake, "removed_from_catalog_since") is True
