"""Attacks on the runner, each refused with the right code, audited, and with nothing executed.

"Nothing executed" is checked on the engine itself: transaction-service's StartedAt is unchanged and the
audit log has no execution record for the task.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox import protocol
from sandbox._internal import demo_stack
from tests.conftest import unique_project
from tests.runner.support import Harness, make_install, principal, records_for, remove_install, started_at
from tests.support.env import require

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.slow]


@pytest.fixture(scope="module")
def h(docker_engine, demo_compose_file) -> Iterator[Harness]:
    require("docker", "root", "seccomp", "landlock")
    project = unique_project(os.environ.get("PAR_TEST_PROJECT_PREFIX", "dogbanktest"))
    demo_stack.up(project, demo_compose_file)
    inst = make_install(project, demo_compose_file)
    harness = Harness(inst)
    try:
        harness.start_runner()
        yield harness
    finally:
        harness.close()
        remove_install(inst)
        subprocess.run([*demo_stack.compose_argv(project, demo_compose_file), "down", "--remove-orphans", "-t", "2"],
                       capture_output=True, check=False)


def payload(h: Harness, task_id: str, **changes):
    cfg = h.cfg
    doc = protocol.task_payload(
        task_id=task_id, org_id=cfg.runner.org_id, runner_id=cfg.runner.runner_id,
        action="restart_transaction_service", parameters={}, principal=principal("workflow-auto-restart"),
        trigger=principal("trigger-pix-latency"), client="attacker", ttl_s=300,
    )
    doc.update(changes)
    return doc


def deliver(h: Harness, task_id: str, doc=None, *, signers=None, data: bytes | None = None, mutate=None) -> None:
    data = data if data is not None else protocol.canonical_json(doc if doc is not None else payload(h, task_id))
    if signers is None:
        signers = [(h.plane.key_id, h.plane.signing_key)]
    message = {"task_id": task_id, "envelope": protocol.sign_envelope(data, signers)}
    if mutate is not None:
        mutate(message)
    h.plane.enqueue_raw(task_id, json.dumps(message).encode())


def refused(h: Harness, task_id: str, code: str, before: list[str]) -> dict:
    result = h.wait_result(task_id, timeout=60)
    assert result["success"] is False, result
    assert result["error"]["errorCode"] == code, result
    recs = records_for(h.inst, task_id)
    kinds = {r["kind"] for r in recs}
    assert kinds and kinds <= {"task_rejected", "decision"}, recs
    assert "execution_started" not in kinds
    if "task_rejected" in kinds:
        assert any(r["data"]["code"] == code for r in recs if r["kind"] == "task_rejected")
    else:
        assert all(r["data"]["allow"] is False for r in recs)
    time.sleep(0.2)
    assert started_at(h.inst.project, "transaction-service") == before, "the container was restarted"
    return result


@pytest.fixture
def before(h):
    return started_at(h.inst.project, "transaction-service")


def test_unsigned_task(h, before):
    deliver(h, "atk-unsigned", signers=[])
    refused(h, "atk-unsigned", "SIGNATURE_ERROR", before)


def test_wrong_key(h, before):
    deliver(h, "atk-wrongkey", signers=[(h.plane.key_id, Ed25519PrivateKey.generate())])
    refused(h, "atk-wrongkey", "SIGNATURE_ERROR", before)


def test_unknown_key_id(h, before):
    deliver(h, "atk-keyid", signers=[("attacker-key", Ed25519PrivateKey.generate())])
    refused(h, "atk-keyid", "SIGNATURE_KEY_NOT_FOUND", before)


def test_tampered_data(h, before):
    def tamper(message):
        data = base64.b64decode(message["envelope"]["data"])
        data = data.replace(b'"client":"attacker"', b'"client":"attackeR"')
        message["envelope"]["data"] = base64.b64encode(data).decode()

    deliver(h, "atk-tampered", mutate=tamper)
    refused(h, "atk-tampered", "SIGNATURE_ERROR", before)


def test_expired_task(h, before):
    past = time.time() - 3600
    doc = payload(h, "atk-expired", issued_at=protocol.rfc3339(past - 300), expires_at=protocol.rfc3339(past))
    deliver(h, "atk-expired", doc)
    refused(h, "atk-expired", "EXPIRED_TASK", before)


def test_other_runners_task(h, before):
    deliver(h, "atk-otherrunner", payload(h, "atk-otherrunner", runner_id="someone-else"))
    refused(h, "atk-otherrunner", "MISMATCHED_RUNNER_ID", before)


def test_other_org(h, before):
    deliver(h, "atk-otherorg", payload(h, "atk-otherorg", org_id="evilcorp"))
    refused(h, "atk-otherorg", "MISMATCHED_ORG_ID", before)


def test_unknown_action(h, before):
    tid = h.submit("rm_rf_everything", principal("user-platform-admin"))
    refused(h, tid, "INVALID_PARAMETERS", before)


@pytest.mark.parametrize("params", [
    {"service": "transaction-service; docker run --privileged busybox"},
    {"service": "transaction-service", "tail": "10 --follow"},
    {"service": "transaction-service", "extra": "x"},
    {"service": "../../etc/passwd"},
])
def test_parameter_injection(h, before, params):
    tid = h.submit("check_service_logs", principal("user-sre"), **params)
    refused(h, tid, "INVALID_PARAMETERS", before)


def test_oversized_task(h, before):
    doc = payload(h, "atk-oversized", client="x" * 200)
    doc["parameters"] = {"padding": "A" * (h.cfg.runner.max_task_bytes + 10)}
    deliver(h, "atk-oversized", doc)
    refused(h, "atk-oversized", "INVALID_TASK", before)


def test_message_over_the_transport_cap_is_reported_by_its_id(h, before):
    """Beyond 4/3 of max_task_bytes the message is not parsed as a task, but its refusal still reaches the plane."""
    def pad(message):
        message["envelope"]["data"] += "A" * (2 * h.cfg.runner.max_task_bytes)

    deliver(h, "atk-huge", mutate=pad)
    result = refused(h, "atk-huge", "INVALID_TASK", before)
    assert "bytes, over" in result["error"]["message"]


def test_unknown_field(h, before):
    deliver(h, "atk-field", payload(h, "atk-field", command=["sh", "-c", "id"]))
    refused(h, "atk-field", "INVALID_TASK", before)


def test_policy_denied_principal(h, before):
    tid = h.submit("restart_transaction_service", principal("user-developer"))
    result = refused(h, tid, "POLICY_DENIED", before)
    assert "authz" in result["error"]["message"]
    # a workflow triggered by the wrong monitor is refused too
    tid = h.submit("restart_transaction_service", principal("workflow-auto-restart"), principal("trigger-kafka-lag"))
    refused(h, tid, "POLICY_DENIED", before)


def test_replayed_task_also_after_restart(h):
    tid = h.submit("restart_transaction_service", principal("workflow-auto-restart"), principal("trigger-pix-latency"))
    assert h.wait_result(tid, timeout=120)["success"] is True
    after_first = started_at(h.inst.project, "transaction-service")
    captured = h.plane.store.delivery_body(tid)
    assert captured is not None
    h.plane.enqueue_raw(tid, captured)
    updates = h.wait_updates(tid, 2)
    assert updates[-1]["error"]["errorCode"] == "REPLAYED_TASK"
    h.stop_runner()
    h.start_runner()  # the seen ids come back from the audit log
    h.plane.enqueue_raw(tid, captured)
    updates = h.wait_updates(tid, 3)
    assert updates[-1]["error"]["errorCode"] == "REPLAYED_TASK"
    assert started_at(h.inst.project, "transaction-service") == after_first
    kinds = [r["kind"] for r in records_for(h.inst, tid)]
    assert kinds.count("execution_started") == 1
    assert kinds.count("task_rejected") == 2
    assert h.plane.show(tid)["result"]["success"] is True  # the replay never rewrote the real result


def test_forged_id_does_not_block_a_genuine_task(h, before):
    # An attacker who guesses a future task id and sends garbage under it must not get it marked "seen".
    deliver(h, "task-guessed", signers=[])
    refused(h, "task-guessed", "SIGNATURE_ERROR", before)
    body = h.plane.delivery_body("task-guessed", payload(h, "task-guessed", action="check_services_status",
                                                         principal=principal("user-sre"),
                                                         trigger={"type": "manual"}))
    h.plane.enqueue_raw("task-guessed", body)
    updates = h.wait_updates("task-guessed", 2)
    assert updates[-1]["success"] is True, updates[-1]
