"""The local control plane over real HTTP on 127.0.0.1: authentication, queue, idempotent results, restarts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox import protocol
from sandbox._internal.runner_http import HttpPeer, PermanentPublishError
from sandbox.config import RunnerConfig, RunnerIdentity
from sandbox.controlplane import ADMIN_PREFIX, ControlPlane, Submission
from sandbox.errors import ConfigError, ProtocolError

PRINCIPAL = {"type": "user", "id": "ana", "name": "Ana", "roles": ["sre"]}


@pytest.fixture
def setup(tmp_path: Path):
    cfg = dataclasses.replace(RunnerConfig(), runner=RunnerIdentity(runner_id="r1", org_id="dogbank"))
    sign = Ed25519PrivateKey.generate()
    runner_key = ec.generate_private_key(ec.SECP256R1())
    db = tmp_path / "cp.sqlite3"

    def plane():
        p = ControlPlane(cfg, signing_key=sign, enrolled={"r1": runner_key.public_key()}, database=db)
        p.start()
        return p

    def peer(p, key=runner_key, runner_id="r1"):
        return HttpPeer(p.url, key=key, org_id="dogbank", runner_id=runner_id, timeout_s=5,
                        max_body_bytes=protocol.max_body_bytes(65536))

    return cfg, sign, plane, peer


def test_runner_endpoints_need_a_valid_jwt(setup):
    _, _, plane, peer = setup
    p = plane()
    try:
        peer(p).health_check()
        for path in (protocol.HEALTH_PATH, protocol.DEQUEUE_PATH):
            r = httpx.request("GET" if path == protocol.HEALTH_PATH else "POST", p.url + path, content=b"{}")
            assert r.status_code == 401
        with pytest.raises(ProtocolError):
            peer(p, key=ec.generate_private_key(ec.SECP256R1())).dequeue()  # not the enrolled key
        with pytest.raises(ProtocolError):
            peer(p, runner_id="r2").dequeue()  # not enrolled at all
    finally:
        p.stop()


def test_submit_dequeue_verify_publish_idempotent(setup):
    _, sign, plane, peer = setup
    p = plane()
    try:
        client = peer(p)
        assert client.dequeue() is None
        tid = p.submit(Submission(action="check_services_status", parameters={}, principal=PRINCIPAL,
                                  trigger={"type": "manual"}))
        raw = client.dequeue()
        assert raw is not None
        delivery = protocol.parse_delivery(raw, max_task_bytes=65536)
        task = protocol.verify_task(delivery, keys={"local-controlplane": sign.public_key()}, org_id="dogbank",
                                    runner_id="r1", max_task_bytes=65536, max_clock_skew_s=30)
        assert task.id == tid and client.dequeue() is None
        client.heartbeat(tid)
        result = protocol.failure_result(tid, "r1", protocol.ErrorCode.POLICY_DENIED, "no")
        client.publish(result)
        client.publish(result)  # a retry after a lost ack: harmless
        other = protocol.failure_result(tid, "r1", protocol.ErrorCode.REPLAYED_TASK, "again")
        client.publish(other)  # a later, different update never rewrites the first result
        shown = p.show(tid)
        assert shown["state"] == "failed" and shown["heartbeats"] == 1
        assert shown["result"]["error"]["errorCode"] == "POLICY_DENIED"
        assert [u["error"]["errorCode"] for u in shown["updates"]] == ["POLICY_DENIED"] * 2 + ["REPLAYED_TASK"]
        with pytest.raises(PermanentPublishError):
            client.publish(protocol.TaskResult(task_id=tid, runner_id="r2", success=True))  # not its JWT's id
    finally:
        p.stop()


def test_queue_and_results_survive_a_restart(setup):
    _, _, plane, peer = setup
    p = plane()
    tid = p.submit(Submission(action="check_services_status", parameters={}, principal=PRINCIPAL, trigger={}))
    done = p.submit(Submission(action="check_services_status", parameters={}, principal=PRINCIPAL, trigger={}))
    peer(p).dequeue()
    peer(p).publish(protocol.failure_result(tid, "r1", protocol.ErrorCode.ACTION_ERROR, "x"))
    token = p.admin_token
    p.stop()
    p = plane()
    try:
        assert p.admin_token == token
        raw = peer(p).dequeue()
        assert raw is not None and json.loads(raw)["task_id"] == done
        assert p.show(tid)["result"]["error"]["errorCode"] == "ACTION_ERROR"
    finally:
        p.stop()


def test_admin_api_needs_the_token(setup):
    _, _, plane, _ = setup
    p = plane()
    try:
        doc = {"action": "check_services_status", "principal": PRINCIPAL}
        assert httpx.post(p.url + ADMIN_PREFIX, json=doc).status_code == 401
        assert httpx.post(p.url + ADMIN_PREFIX, json=doc, headers={"Authorization": "Bearer nope"}).status_code == 401
        r = httpx.post(p.url + ADMIN_PREFIX, json=doc, headers={"Authorization": f"Bearer {p.admin_token}"})
        assert r.status_code == 201
        tid = r.json()["task_id"]
        r = httpx.get(f"{p.url}{ADMIN_PREFIX}/{tid}", headers={"Authorization": f"Bearer {p.admin_token}"})
        assert r.json()["state"] == "queued"
        assert (p.store.path.with_name("cp.sqlite3.admin-token").stat().st_mode & 0o777) == 0o600
    finally:
        p.stop()


def test_only_loopback(setup):
    cfg, sign, _, _ = setup
    with pytest.raises(ProtocolError):
        ControlPlane(cfg, host="0.0.0.0", signing_key=sign, enrolled={})


def test_unusable_database_is_a_clear_error(setup, tmp_path):
    cfg, sign, _, _ = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as exc:
        ControlPlane(cfg, signing_key=sign, enrolled={}, database=blocker / "cp.sqlite3")
    assert "control_plane.database" in exc.value.hint


def test_port_in_use_is_a_clear_error(setup):
    _, _, plane, _ = setup
    p = plane()
    try:
        with pytest.raises(ProtocolError) as exc:
            ControlPlane(p.cfg, port=p.address[1], signing_key=p.signing_key, enrolled={},
                         database=p.store.path.with_name("other.sqlite3"))
        assert "cannot listen" in exc.value.message
    finally:
        p.stop()
