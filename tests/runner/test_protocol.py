"""The protocol's pure checks, attacked one by one (no network, no Docker)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox import protocol
from sandbox.errors import TaskRejected
from sandbox.protocol import ErrorCode

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
KEYS = {"cp": KEY.public_key()}
PRINCIPAL = {"type": "user", "id": "ana", "name": "Ana", "roles": ["sre"]}


def payload(**changes):
    doc = protocol.task_payload(
        task_id="task-1", org_id="dogbank", runner_id="r1", action="check_services_status", parameters={},
        principal=PRINCIPAL, trigger={"type": "manual"}, client="test", ttl_s=60,
    )
    doc.update(changes)
    return doc


def body(doc=None, *, signers=(("cp", KEY),), task_id="task-1", data=None):
    data = data if data is not None else protocol.canonical_json(doc or payload())
    env = protocol.sign_envelope(data, list(signers))
    return json.dumps({"task_id": task_id, "envelope": env}).encode()


def verify(raw, **kw):
    delivery = protocol.parse_delivery(raw, max_task_bytes=65536)
    args = dict(keys=KEYS, org_id="dogbank", runner_id="r1", max_task_bytes=65536, max_clock_skew_s=30)
    args.update(kw)
    return protocol.verify_task(delivery, **args)


def code_of(raw, **kw):
    with pytest.raises(TaskRejected) as exc:
        verify(raw, **kw)
    return exc.value.code


def test_legitimate_task_verifies():
    task = verify(body())
    assert task.id == "task-1" and task.action == "check_services_status" and task.signed_by == ("cp",)


def test_every_known_signature_is_tried():
    # A bad signature by a known key first, then a good one: Datadog's runner would stop at the first.
    data = protocol.canonical_json(payload())
    env = protocol.sign_envelope(data, [("cp", OTHER), ("cp", KEY)])
    raw = json.dumps({"task_id": "task-1", "envelope": env}).encode()
    assert verify(raw).signed_by == ("cp",)


def test_unsigned_task_is_refused():
    assert code_of(body(signers=())) == ErrorCode.SIGNATURE_ERROR


def test_unknown_key_is_refused():
    assert code_of(body(signers=(("someone", OTHER),))) == ErrorCode.SIGNATURE_KEY_NOT_FOUND


def test_wrong_key_under_a_known_id_is_refused():
    assert code_of(body(signers=(("cp", OTHER),))) == ErrorCode.SIGNATURE_ERROR


def test_tampered_data_is_refused():
    doc = json.loads(body())
    data = base64.b64decode(doc["envelope"]["data"]).replace(b"check_services_status", b"restart_all_backend")
    doc["envelope"]["data"] = base64.b64encode(data).decode()
    assert code_of(json.dumps(doc).encode()) == ErrorCode.SIGNATURE_ERROR


def test_wrong_hash_type_is_refused():
    doc = json.loads(body())
    doc["envelope"]["hash_type"] = "MD5"
    assert code_of(json.dumps(doc).encode()) == ErrorCode.SIGNATURE_ERROR


def test_expired_task_is_refused_beyond_the_skew():
    old = time.time() - 120
    doc = payload(issued_at=protocol.rfc3339(old - 60), expires_at=protocol.rfc3339(old))
    assert code_of(body(doc)) == ErrorCode.EXPIRED_TASK
    # within the tolerated skew it still passes
    recent = payload(expires_at=protocol.rfc3339(time.time() - 10))
    assert verify(body(recent)).id == "task-1"


def test_task_from_the_future_is_refused():
    doc = payload(issued_at=protocol.rfc3339(time.time() + 3600), expires_at=protocol.rfc3339(time.time() + 7200))
    assert code_of(body(doc)) == ErrorCode.EXPIRED_TASK


def test_other_runner_and_other_org_are_refused():
    assert code_of(body(payload(runner_id="r2"))) == ErrorCode.MISMATCHED_RUNNER_ID
    assert code_of(body(payload(org_id="evilcorp"))) == ErrorCode.MISMATCHED_ORG_ID


def test_unknown_fields_are_refused():
    assert code_of(body(payload(shell="rm -rf /"))) == ErrorCode.INVALID_TASK
    doc = json.loads(body())
    doc["envelope"]["extra"] = 1
    assert code_of(json.dumps(doc).encode()) == ErrorCode.INVALID_TASK
    doc = json.loads(body())
    doc["priority"] = 1
    assert code_of(json.dumps(doc).encode()) == ErrorCode.INVALID_TASK


def test_oversized_task_is_refused_before_parsing_the_payload():
    big = payload(client="x" * 200)
    big["parameters"] = {"p": "y" * 70000}
    assert code_of(body(big)) == ErrorCode.INVALID_TASK
    huge = b"{" + b" " * (protocol.max_body_bytes(65536) + 10) + b"}"
    assert code_of(huge) == ErrorCode.INVALID_TASK


def test_oversized_message_keeps_its_claimed_id_for_the_report_up_to_the_read_cap():
    over = json.dumps({"task_id": "task-9", "envelope": {"data": "A" * 200_000}}).encode()
    with pytest.raises(TaskRejected) as info:
        protocol.parse_delivery(over, max_task_bytes=65536)
    assert info.value.code == ErrorCode.INVALID_TASK and info.value.task_id == "task-9"
    beyond = json.dumps({"task_id": "task-9", "envelope": {"data": "A" * protocol.REPORTABLE_BODY_BYTES}}).encode()
    with pytest.raises(TaskRejected) as info:
        protocol.parse_delivery(beyond, max_task_bytes=65536)
    assert info.value.task_id is None  # the transport stopped reading: nothing to report it under
    forged_id = json.dumps({"task_id": "../x y", "envelope": {"data": "A" * 200_000}}).encode()
    with pytest.raises(TaskRejected) as info:
        protocol.parse_delivery(forged_id, max_task_bytes=65536)
    assert info.value.task_id is None  # an id outside the id grammar is never echoed
    assert protocol.read_cap_bytes(65536) == protocol.REPORTABLE_BODY_BYTES


def test_outer_id_must_match_the_signed_id():
    assert code_of(body(task_id="task-2")) == ErrorCode.INVALID_TASK


def test_duplicate_json_keys_are_refused():
    raw = body().replace(b'"task_id": "task-1"', b'"task_id": "task-1", "task_id": "task-1"')
    assert code_of(raw) == ErrorCode.INVALID_TASK


def test_not_json_is_refused():
    assert code_of(b"\x00garbage") == ErrorCode.INVALID_TASK


def test_jwt_round_trip_and_attacks():
    runner_key = ec.generate_private_key(ec.SECP256R1())
    enrolled = {"r1": runner_key.public_key()}
    token = protocol.make_jwt(runner_key, org_id="dogbank", runner_id="r1")
    assert protocol.verify_jwt(token, enrolled, org_id="dogbank").runner_id == "r1"
    # another key claiming to be r1
    forged = protocol.make_jwt(ec.generate_private_key(ec.SECP256R1()), org_id="dogbank", runner_id="r1")
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(forged, enrolled, org_id="dogbank")
    # expired
    old = protocol.make_jwt(runner_key, org_id="dogbank", runner_id="r1", now=time.time() - 600)
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(old, enrolled, org_id="dogbank")
    # unenrolled runner, wrong org, alg=none, long-lived token
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(protocol.make_jwt(runner_key, org_id="dogbank", runner_id="r9"), enrolled, org_id="dogbank")
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(protocol.make_jwt(runner_key, org_id="x", runner_id="r1"), enrolled, org_id="dogbank")
    none_token = jwt.encode({"orgId": "dogbank", "runnerId": "r1", "iat": int(time.time()),
                             "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(none_token, enrolled, org_id="dogbank")
    now = int(time.time())
    long_lived = jwt.encode({"orgId": "dogbank", "runnerId": "r1", "iat": now, "exp": now + 86400}, runner_key,
                            algorithm="ES256")
    with pytest.raises(TaskRejected):
        protocol.verify_jwt(long_lived, enrolled, org_id="dogbank")


def test_runner_jwt_is_a_standard_es256_token():
    """make_jwt signs without PyJWT; PyJWT (and the raw JWS rules) must accept exactly what it makes."""
    runner_key = ec.generate_private_key(ec.SECP256R1())
    token = protocol.make_jwt(runner_key, org_id="dogbank", runner_id="r1", now=1_800_000_000)
    header_b64, payload_b64, sig_b64 = token.split(".")
    assert "=" not in token and "+" not in token and "/" not in token  # base64url without padding
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT"}
    assert len(base64.urlsafe_b64decode(sig_b64 + "==")) == 64  # raw r||s, not DER (RFC 7518 3.4)
    claims = jwt.decode(token, runner_key.public_key(), algorithms=["ES256"],
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"orgId": "dogbank", "runnerId": "r1", "iat": 1_800_000_000, "exp": 1_800_000_060}
    # one flipped bit in the payload and PyJWT refuses it
    tampered = f"{header_b64}.{payload_b64[:-2]}{'A' if payload_b64[-2] != 'A' else 'B'}{payload_b64[-1]}.{sig_b64}"
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(tampered, runner_key.public_key(), algorithms=["ES256"], options={"verify_exp": False})


def test_result_payloads():
    ok = protocol.success_result("task-1", "r1", argv=["docker", "ps"], exit_code=0, stdout=b"hi", stderr=b"",
                                 duration_ms=12.5, truncated={"stdout": 0, "stderr": 3}, audit_seq=7).to_dict()
    assert ok == {"task_id": "task-1", "runner_id": "r1", "success": True, "outputs": {
        "executedCommand": ["docker", "ps"], "exitCode": 0, "stdout": "hi", "stderr": "", "durationMillis": 12.5,
        "truncated": {"stdout": 0, "stderr": 3}, "auditSeq": 7}}
    assert protocol.check_result(ok) is None
    bad = protocol.failure_result("task-1", "r1", ErrorCode.POLICY_DENIED, "no").to_dict()
    assert bad["error"] == {"errorCode": "POLICY_DENIED", "message": "no"}
    assert protocol.check_result(bad) is None
    assert protocol.check_result({**bad, "success": True}) is not None
    assert protocol.check_result({**bad, "error": {"errorCode": "MADE_UP", "message": ""}}) is not None


# --- fuzzing: whatever arrives, the answer is a TaskRejected with a code, never another exception ----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _never_crashes(raw: bytes) -> None:
    try:
        verify(raw)
    except TaskRejected as exc:
        assert exc.code in {c.value for c in ErrorCode}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(raw):
    _never_crashes(raw)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fuzz_json_documents(doc):
    _never_crashes(json.dumps({"task_id": "task-1", "envelope": doc}).encode())
    _never_crashes(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(protocol.TASK_SCHEMA["properties"])), _json, max_size=12))
def test_fuzz_signed_payloads(changes):
    # correctly signed, arbitrary field values: the schema (not a KeyError or TypeError) must refuse them
    _never_crashes(body(payload(**changes)))


def test_nan_and_infinity_are_not_json():
    raw = body().replace(b'"task_id": "task-1"', b'"task_id": "task-1", "x": NaN')
    assert code_of(raw) == ErrorCode.INVALID_TASK
    data = protocol.canonical_json(payload()).replace(b'"parameters":{}', b'"parameters":{"n":Infinity}')
    assert code_of(body(data=data)) == ErrorCode.INVALID_TASK
