"""The runner <-> control plane protocol: signed task envelopes, request JWTs, result payloads, error codes.

Modelled on Datadog's Private Action Runner so that pointing the runner at Datadog stays a thin adapter:

* **Paths** (all under the control plane URL): ``POST /api/v2/on-prem-management-service/workflow-tasks/dequeue``
  (204 or an empty body = nothing to do), ``.../workflow-tasks/heartbeat``, ``.../workflow-tasks/publish-task-update``
  and ``GET /api/v2/on-prem-management-service/runner/health-check``.
* **Authentication**: every request carries a fresh ES256 JWT in :data:`JWT_HEADER` with claims ``orgId``,
  ``runnerId``, ``iat`` and ``exp = iat + 60 s``, signed with the runner's ECDSA P-256 key. A stolen token
  is useful for a minute at most, and the control plane never holds a runner secret.
* **Tasks**: the dequeue answer is ``{"task_id", "envelope"}``; ``envelope`` is ``{"data": base64,
  "hash_type": "SHA256", "signatures": [{"key_type": "ED25519", "key_id", "signature": base64}]}`` and each
  signature is Ed25519 over ``SHA-256(data)``. ``data`` is the UTF-8 JSON task payload (:data:`TASK_SCHEMA`).
  The outer ``task_id`` is only a correlation id for reporting a refusal; it must equal the signed one.
  Unlike Datadog's runner (which stops at the first signature), **every** signature made with a key we know
  is tried, so adding a new control-plane key next to an old one (key rotation) never breaks verification.
* **Action names** are this runner's catalog names (``restart_transaction_service``). In Datadog terms that
  is the ``script`` input of ``com.datadoghq.script.runPredefinedScript``; an adapter maps one to the other.
  Because of that an unknown action is reported as ``INVALID_PARAMETERS``, like an unknown script name.

Everything here is pure (no I/O): the runner and the local control plane share it, and tests call it directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jsonschema.validators import Draft202012Validator

from sandbox._internal import strictjson
from sandbox.errors import TaskRejected

API_PREFIX = "/api/v2/on-prem-management-service"
DEQUEUE_PATH = f"{API_PREFIX}/workflow-tasks/dequeue"
HEARTBEAT_PATH = f"{API_PREFIX}/workflow-tasks/heartbeat"
PUBLISH_PATH = f"{API_PREFIX}/workflow-tasks/publish-task-update"
HEALTH_PATH = f"{API_PREFIX}/runner/health-check"
JWT_HEADER = "X-Datadog-OnPrem-JWT"
JWT_ALGORITHM = "ES256"
JWT_LIFETIME_S = 60
JWT_LEEWAY_S = 5
HASH_TYPE = "SHA256"
KEY_TYPE = "ED25519"
MAX_SIGNATURES = 8
#: The HTTP body of a dequeue answer may exceed the task size (base64 is 4/3 of it, plus the wrapper);
#: anything beyond this is refused before it is parsed at all.
BODY_OVERHEAD_BYTES = 4096
#: An oversized dequeue answer up to this size is still read, only to find the id to report it under.
REPORTABLE_BODY_BYTES = 1024 * 1024


class ErrorCode(StrEnum):
    """Failure codes of a task result. The first eight are Datadog's; the rest are this runner's."""

    INTERNAL_ERROR = "INTERNAL_ERROR"
    ACTION_ERROR = "ACTION_ERROR"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    SIGNATURE_KEY_NOT_FOUND = "SIGNATURE_KEY_NOT_FOUND"
    SIGNATURE_ERROR = "SIGNATURE_ERROR"
    EXPIRED_TASK = "EXPIRED_TASK"
    MISMATCHED_ORG_ID = "MISMATCHED_ORG_ID"
    MISMATCHED_RUNNER_ID = "MISMATCHED_RUNNER_ID"
    POLICY_DENIED = "POLICY_DENIED"
    RATE_LIMITED = "RATE_LIMITED"
    REPLAYED_TASK = "REPLAYED_TASK"
    INVALID_PARAMETERS = "INVALID_PARAMETERS"
    #: Malformed task: oversized, unknown or missing fields, not JSON, ids that disagree.
    INVALID_TASK = "INVALID_TASK"
    #: The runner died while the action ran; reported on the next start, never re-run.
    INTERRUPTED = "INTERRUPTED"


#: Codes that can only be produced after the signature was verified: a task id recorded with one of these
#: was really issued by the control plane, so it counts as "seen" for replay protection. Ids of refusals
#: before that point are attacker-chosen and must not block a genuine task later.
VERIFIED_CODES = frozenset(
    {ErrorCode.REPLAYED_TASK, ErrorCode.INVALID_PARAMETERS, ErrorCode.POLICY_DENIED, ErrorCode.RATE_LIMITED,
     ErrorCode.INTERNAL_ERROR}
)

_ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
_TEXT = {"type": "string", "maxLength": 256}
_RFC3339 = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"}

PRINCIPAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "id", "name"],
    "properties": {
        "type": {"enum": ["workflow", "user", "service"]},
        "id": _TEXT,
        "name": _TEXT,
        "roles": {"type": "array", "maxItems": 32, "items": _TEXT},
    },
}
TRIGGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"enum": ["monitor", "manual", "schedule", "api"]},
        "monitor_id": _TEXT,
        "monitor_name": _TEXT,
        "workflow_id": _TEXT,
        "workflow_name": _TEXT,
    },
}
#: The signed task payload. Unknown fields anywhere are refused: a field we ignore is a field an attacker
#: can use to make two parties read the same task differently.
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "org_id", "runner_id", "action", "parameters", "principal", "trigger", "client",
                 "issued_at", "expires_at"],
    "properties": {
        "id": _ID,
        "org_id": _ID,
        "runner_id": _ID,
        "action": {"type": "string", "maxLength": 128},
        "parameters": {"type": "object", "maxProperties": 32},
        "principal": PRINCIPAL_SCHEMA,
        "trigger": TRIGGER_SCHEMA,
        "client": _TEXT,
        "issued_at": _RFC3339,
        "expires_at": _RFC3339,
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    },
}
ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["data", "hash_type", "signatures"],
    "properties": {
        "data": {"type": "string"},
        "hash_type": {"type": "string"},
        "signatures": {
            "type": "array",
            "maxItems": MAX_SIGNATURES,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key_type", "key_id", "signature"],
                "properties": {
                    "key_type": {"type": "string", "maxLength": 32},
                    "key_id": {"type": "string", "maxLength": 128},
                    "signature": {"type": "string", "maxLength": 256},
                },
            },
        },
    },
}
DEQUEUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["task_id", "envelope"],
    "properties": {"task_id": _ID, "envelope": {"type": "object"}},
}

_TASK_V = Draft202012Validator(TASK_SCHEMA)
_ENVELOPE_V = Draft202012Validator(ENVELOPE_SCHEMA)
_DEQUEUE_V = Draft202012Validator(DEQUEUE_SCHEMA)
_ID_RE = re.compile(_ID["pattern"])


@dataclass(frozen=True)
class Task:
    """A task whose signature, expiry and addressing were verified."""

    id: str
    org_id: str
    runner_id: str
    action: str
    parameters: Mapping[str, Any]
    principal: Mapping[str, Any]
    trigger: Mapping[str, Any]
    client: str
    issued_at: str
    expires_at: str
    timeout_s: float | None
    signed_by: tuple[str, ...]  # key ids whose signature verified
    size: int  # bytes of the signed payload

    def policy_view(self) -> dict[str, Any]:
        """The ``task`` member of the policy input."""
        return {"id": self.id, "client": self.client, "expires_at": self.expires_at}


@dataclass(frozen=True)
class Delivery:
    """One dequeued message before any check: the correlation id and the raw envelope."""

    task_id: str | None  # None when the message is too broken to name a task
    envelope: Any
    body_size: int


# --- time -------------------------------------------------------------------------------------------


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 with second precision, the one form we emit."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise TaskRejected(ErrorCode.INVALID_TASK, f"not an RFC 3339 time: {value[:40]!r}") from exc


# --- envelopes ----------------------------------------------------------------------------------------


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_envelope(data: bytes, keys: Sequence[tuple[str, Ed25519PrivateKey]]) -> dict[str, Any]:
    """Wrap ``data`` in an envelope signed by each ``(key_id, key)``."""
    digest = hashlib.sha256(data).digest()
    return {
        "data": base64.b64encode(data).decode(),
        "hash_type": HASH_TYPE,
        "signatures": [
            {"key_type": KEY_TYPE, "key_id": kid, "signature": base64.b64encode(key.sign(digest)).decode()}
            for kid, key in keys
        ],
    }


def parse_delivery(body: bytes, *, max_task_bytes: int) -> Delivery:
    """Parse a dequeue answer just enough to know which task it is; nothing in it is trusted yet."""
    limit = max_body_bytes(max_task_bytes)
    if len(body) > limit:
        raise TaskRejected(ErrorCode.INVALID_TASK, f"dequeued message is {len(body)} bytes, over {limit}",
                           task_id=_claimed_task_id(body))
    try:
        doc = strictjson.loads(body)
    except (ValueError, RecursionError) as exc:
        raise TaskRejected(ErrorCode.INVALID_TASK, f"dequeued message is not JSON: {str(exc)[:120]}") from exc
    task_id = doc.get("task_id") if isinstance(doc, dict) else None
    if not isinstance(task_id, str) or not _ID_RE.match(task_id):
        task_id = None
    errors = list(_DEQUEUE_V.iter_errors(doc))
    if errors:
        raise _shape_error(errors[0], "dequeued message")
    return Delivery(task_id=task_id, envelope=doc["envelope"], body_size=len(body))


def max_body_bytes(max_task_bytes: int) -> int:
    return (max_task_bytes * 4) // 3 + 4 + BODY_OVERHEAD_BYTES


def read_cap_bytes(max_task_bytes: int) -> int:
    """How much of a dequeue answer the runner reads: enough to report an oversized task by its id."""
    return max(max_body_bytes(max_task_bytes), REPORTABLE_BODY_BYTES)


def _claimed_task_id(body: bytes) -> str | None:
    """The ``task_id`` an oversized message claims, so its refusal can be reported; None if unreadable.

    Only the id is looked at (the same unverified id every pre-signature refusal is reported under);
    past :data:`REPORTABLE_BODY_BYTES` the transport stopped reading and there is nothing to parse.
    """
    if len(body) > REPORTABLE_BODY_BYTES:
        return None
    try:
        doc = strictjson.loads(body)
    except (ValueError, RecursionError):
        return None
    task_id = doc.get("task_id") if isinstance(doc, dict) else None
    return task_id if isinstance(task_id, str) and _ID_RE.match(task_id) else None


def verify_task(
    delivery: Delivery,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    org_id: str,
    runner_id: str,
    max_task_bytes: int,
    max_clock_skew_s: float,
    now: float | None = None,
) -> Task:
    """Shape/size, signatures, expiry, org and runner ids, in that order; raise :class:`TaskRejected`."""
    now = time.time() if now is None else now
    tid = delivery.task_id
    env = delivery.envelope
    errors = list(_ENVELOPE_V.iter_errors(env))
    if errors:
        raise _shape_error(errors[0], "envelope")
    try:
        data = base64.b64decode(env["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TaskRejected(ErrorCode.INVALID_TASK, "envelope data is not base64") from exc
    if len(data) > max_task_bytes:
        raise TaskRejected(ErrorCode.INVALID_TASK, f"task is {len(data)} bytes, over the limit of {max_task_bytes}")
    if env["hash_type"] != HASH_TYPE:
        raise TaskRejected(ErrorCode.SIGNATURE_ERROR, f"hash_type {env['hash_type'][:20]!r} is not {HASH_TYPE}")
    signed_by = verify_signatures(data, env["signatures"], keys)
    try:
        payload = strictjson.loads(data)
    except (ValueError, RecursionError) as exc:
        raise TaskRejected(ErrorCode.INVALID_TASK, "signed task data is not JSON") from exc
    errors = list(_TASK_V.iter_errors(payload))
    if errors:
        raise _shape_error(errors[0], "task")
    if tid is not None and payload["id"] != tid:
        raise TaskRejected(ErrorCode.INVALID_TASK, f"dequeued id {tid!r} differs from the signed id")
    expires = parse_rfc3339(payload["expires_at"])
    if expires + max_clock_skew_s <= now:
        raise TaskRejected(
            ErrorCode.EXPIRED_TASK, f"task expired at {payload['expires_at']} (now {rfc3339(now)})"
        )
    issued = parse_rfc3339(payload["issued_at"])
    if issued - max_clock_skew_s > now:
        raise TaskRejected(ErrorCode.EXPIRED_TASK, f"task issued in the future ({payload['issued_at']})")
    if payload["org_id"] != org_id:
        raise TaskRejected(ErrorCode.MISMATCHED_ORG_ID, f"task is for org {payload['org_id']!r}, not {org_id!r}")
    if payload["runner_id"] != runner_id:
        raise TaskRejected(
            ErrorCode.MISMATCHED_RUNNER_ID, f"task is for runner {payload['runner_id']!r}, not {runner_id!r}"
        )
    return Task(
        id=payload["id"],
        org_id=payload["org_id"],
        runner_id=payload["runner_id"],
        action=payload["action"],
        parameters=payload["parameters"],
        principal=payload["principal"],
        trigger=payload["trigger"],
        client=payload["client"],
        issued_at=payload["issued_at"],
        expires_at=payload["expires_at"],
        timeout_s=payload.get("timeout_s"),
        signed_by=signed_by,
        size=len(data),
    )


def verify_signatures(
    data: bytes, signatures: Sequence[Mapping[str, str]], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, ...]:
    """Try every signature made with a known key; at least one must verify."""
    if not signatures:
        raise TaskRejected(ErrorCode.SIGNATURE_ERROR, "task is not signed")
    digest = hashlib.sha256(data).digest()
    known = 0
    good: list[str] = []
    for sig in signatures:
        key = keys.get(sig["key_id"]) if sig["key_type"] == KEY_TYPE else None
        if key is None:
            continue
        known += 1
        try:
            key.verify(base64.b64decode(sig["signature"], validate=True), digest)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        good.append(sig["key_id"])
    if good:
        return tuple(good)
    if known == 0:
        ids = ", ".join(repr(s["key_id"][:40]) for s in signatures)
        raise TaskRejected(ErrorCode.SIGNATURE_KEY_NOT_FOUND, f"no signature by a known key (key ids: {ids})")
    raise TaskRejected(ErrorCode.SIGNATURE_ERROR, f"none of {known} signature(s) by known keys verifies")


def _shape_error(err: Any, what: str) -> TaskRejected:
    where = "/".join(str(p) for p in err.absolute_path) or "(top)"
    msg = err.message if len(err.message) <= 160 else err.message[:160] + "..."
    return TaskRejected(ErrorCode.INVALID_TASK, f"{what} {where}: {msg}")


def task_payload(
    *,
    task_id: str,
    org_id: str,
    runner_id: str,
    action: str,
    parameters: Mapping[str, Any],
    principal: Mapping[str, Any],
    trigger: Mapping[str, Any],
    client: str,
    ttl_s: float,
    timeout_s: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Build a task payload (the control plane's side)."""
    now = time.time() if now is None else now
    doc: dict[str, Any] = {
        "id": task_id,
        "org_id": org_id,
        "runner_id": runner_id,
        "action": action,
        "parameters": dict(parameters),
        "principal": dict(principal),
        "trigger": dict(trigger),
        "client": client,
        "issued_at": rfc3339(now),
        "expires_at": rfc3339(now + ttl_s),
    }
    if timeout_s is not None:
        doc["timeout_s"] = timeout_s
    return doc


# --- JWTs ----------------------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_JWT_HEADER_B64 = _b64url(json.dumps({"alg": JWT_ALGORITHM, "typ": "JWT"}, separators=(",", ":")).encode())


def make_jwt(key: EllipticCurvePrivateKey, *, org_id: str, runner_id: str, now: float | None = None) -> str:
    """An ES256 JWT (RFC 7515 compact form) signed with cryptography's ECDSA directly.

    The runner only ever *creates* tokens, and PyJWT costs ~5 MB resident (it imports every algorithm
    and an HTTP client for JWKS), a twelfth of the runner's idle budget. Verification, where a library
    matters, stays on PyJWT in :func:`verify_jwt`; the tests verify every token made here with it.
    """
    now = time.time() if now is None else now
    iat = int(now)
    claims = {"orgId": org_id, "runnerId": runner_id, "iat": iat, "exp": iat + JWT_LIFETIME_S}
    signing_input = f"{_JWT_HEADER_B64}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True)
class RunnerClaims:
    org_id: str
    runner_id: str


def verify_jwt(token: str, enrolled: Mapping[str, EllipticCurvePublicKey], *, org_id: str) -> RunnerClaims:
    """Check a runner JWT against the key enrolled for the runner it names (control plane side)."""
    import jwt  # noqa: PLC0415 - control-plane side only; the runner does not carry PyJWT (see make_jwt)

    if len(token) > 2048:
        raise TaskRejected(ErrorCode.SIGNATURE_ERROR, "JWT too long")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        runner_id = unverified.get("runnerId")
        key = enrolled.get(runner_id) if isinstance(runner_id, str) else None
        if key is None:
            raise TaskRejected(ErrorCode.SIGNATURE_KEY_NOT_FOUND, f"runner {str(runner_id)[:60]!r} is not enrolled")
        claims = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "iat", "orgId", "runnerId"]},
            leeway=JWT_LEEWAY_S,
        )
    except jwt.PyJWTError as exc:
        raise TaskRejected(ErrorCode.SIGNATURE_ERROR, f"invalid runner JWT: {exc}") from exc
    if claims["exp"] - claims["iat"] > JWT_LIFETIME_S + JWT_LEEWAY_S:
        raise TaskRejected(ErrorCode.SIGNATURE_ERROR, "JWT lifetime exceeds 60 s")
    if claims["orgId"] != org_id:
        raise TaskRejected(ErrorCode.MISMATCHED_ORG_ID, f"JWT org {str(claims['orgId'])[:60]!r} is not {org_id!r}")
    return RunnerClaims(org_id=claims["orgId"], runner_id=claims["runnerId"])


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """What the runner publishes for one task; ``to_dict`` is the publish-task-update body."""

    task_id: str
    runner_id: str
    success: bool
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"task_id": self.task_id, "runner_id": self.runner_id, "success": self.success}
        if self.success:
            doc["outputs"] = dict(self.outputs)
        else:
            doc["error"] = {"errorCode": self.error_code, "message": self.error_message or ""}
            if self.outputs:
                doc["outputs"] = dict(self.outputs)
        return doc


def success_result(
    task_id: str,
    runner_id: str,
    *,
    argv: Sequence[str],
    exit_code: int,
    stdout: bytes,
    stderr: bytes,
    duration_ms: float,
    truncated: Mapping[str, int],
    audit_seq: int,
) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        runner_id=runner_id,
        success=True,
        outputs=execution_outputs(
            argv, exit_code, stdout, stderr, duration_ms=duration_ms, truncated=truncated, audit_seq=audit_seq
        ),
    )


def execution_outputs(
    argv: Sequence[str],
    exit_code: int | None,
    stdout: bytes,
    stderr: bytes,
    *,
    duration_ms: float,
    truncated: Mapping[str, int],
    audit_seq: int,
) -> dict[str, Any]:
    return {
        "executedCommand": list(argv),
        "exitCode": exit_code,
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr.decode("utf-8", "replace"),
        "durationMillis": round(duration_ms, 3),
        "truncated": {"stdout": int(truncated.get("stdout", 0)), "stderr": int(truncated.get("stderr", 0))},
        "auditSeq": audit_seq,
    }


def failure_result(
    task_id: str, runner_id: str, code: str, message: str, *, outputs: Mapping[str, Any] | None = None
) -> TaskResult:
    return TaskResult(
        task_id=task_id, runner_id=runner_id, success=False, outputs=dict(outputs or {}),
        error_code=str(code), error_message=message[:1000],
    )


RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["task_id", "runner_id", "success"],
    "properties": {
        "task_id": _ID,
        "runner_id": _ID,
        "success": {"type": "boolean"},
        "outputs": {"type": "object"},
        "error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["errorCode", "message"],
            "properties": {"errorCode": {"enum": [c.value for c in ErrorCode]}, "message": {"type": "string"}},
        },
    },
}
_RESULT_V = Draft202012Validator(RESULT_SCHEMA)


def check_result(doc: Any) -> str | None:
    """Why a publish-task-update body is malformed, or None (control plane side)."""
    errors = list(_RESULT_V.iter_errors(doc))
    if errors:
        return str(errors[0].message[:200])
    if doc["success"] == ("error" in doc):
        return "a success has no 'error', a failure must have one"
    return None
