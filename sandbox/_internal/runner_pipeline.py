"""The pure decisions of the per-task pipeline: which check fails with which code, and what to report.

No I/O here: every function takes what it needs and returns a value or raises
:class:`~sandbox.errors.TaskRejected` with the protocol error code, so the order of the checks and the
code each one maps to are readable in one place and unit-testable without a control plane or Docker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import protocol
from sandbox.catalog import Action, Catalog
from sandbox.errors import ParameterError, TaskRejected, UnknownActionError
from sandbox.protocol import ErrorCode, Task, TaskResult

RATE_LIMIT_PREFIX = "rate_limit"


@dataclass(frozen=True)
class Resolved:
    action: Action
    parameters: dict[str, Any]
    argv: list[str]


def resolve(catalog: Catalog, task: Task, runner_vars: Mapping[str, str]) -> Resolved:
    """Catalog lookup, parameter validation and argv rendering; all failures are INVALID_PARAMETERS.

    An unknown action is INVALID_PARAMETERS because, in Datadog's model, the action name is the ``script``
    input of ``runPredefinedScript``: naming a script the allowlist lacks is an invalid parameter.
    """
    try:
        action = catalog.get(task.action)
    except UnknownActionError as exc:
        raise TaskRejected(ErrorCode.INVALID_PARAMETERS, exc.message) from exc
    try:
        params = catalog.validate_parameters(action.name, dict(task.parameters))
        argv = catalog.render(action.name, params, runner_vars)
    except ParameterError as exc:
        raise TaskRejected(ErrorCode.INVALID_PARAMETERS, exc.message) from exc
    return Resolved(action=action, parameters=params, argv=argv)


def refusal_code(allow: bool, rule_ids: tuple[str, ...]) -> ErrorCode | None:
    """None when allowed; RATE_LIMITED only when *every* denying rule is a rate limit.

    A principal that is not authorized and also over a limit is POLICY_DENIED: waiting would not help.
    """
    if allow:
        return None
    if rule_ids and all(r.startswith(RATE_LIMIT_PREFIX) for r in rule_ids):
        return ErrorCode.RATE_LIMITED
    return ErrorCode.POLICY_DENIED


def effective_timeout(
    action_timeout_s: float | None, policy_limits: Mapping[str, Any], task_timeout_s: float | None, default_s: float
) -> float:
    """The smallest of every timeout that applies; the jail's default only when none does."""
    candidates = [t for t in (action_timeout_s, task_timeout_s) if t is not None and t > 0]
    limit = policy_limits.get("timeout_s")
    if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
        candidates.append(float(limit))
    return float(min(candidates)) if candidates else default_s


@dataclass(frozen=True)
class Outcome:
    outcome: str  # success | failure | timeout | interrupted
    success: bool
    code: ErrorCode | None
    message: str


def outcome_of(
    exit_code: int | None, signal: int | None, *, timed_out: bool, cancelled: bool, timeout_s: float
) -> Outcome:
    if cancelled:
        return Outcome("interrupted", False, ErrorCode.INTERRUPTED,
                       "interrupted: killed at runner shutdown after the drain timeout")
    if timed_out:
        return Outcome("timeout", False, ErrorCode.ACTION_ERROR, f"action timed out after {timeout_s:g} s")
    if exit_code == 0:
        return Outcome("success", True, None, "")
    if signal is not None:
        return Outcome("failure", False, ErrorCode.ACTION_ERROR, f"action killed by signal {signal}")
    return Outcome("failure", False, ErrorCode.ACTION_ERROR, f"action exited with code {exit_code}")


def finished_record(
    task_id: str, action: str, outcome: str, result: Any | None, *, duration_ms: float | None = None
) -> dict[str, Any]:
    """``execution_finished`` data (architecture.md); ``result`` is a JailResult or None."""
    stdout = bytes(getattr(result, "stdout", b"") or b"")
    stderr = bytes(getattr(result, "stderr", b"") or b"")
    truncated = dict(getattr(result, "truncated", {}) or {})
    return {
        "task_id": task_id,
        "action": action,
        "outcome": outcome,
        "exit_code": getattr(result, "exit_code", None),
        "signal": getattr(result, "signal", None),
        "timed_out": bool(getattr(result, "timed_out", False)),
        "duration_ms": duration_ms if duration_ms is not None else getattr(result, "duration_ms", 0.0),
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr.decode("utf-8", "replace"),
        "stdout_sha256": hashlib.sha256(stdout).hexdigest(),
        "stderr_sha256": hashlib.sha256(stderr).hexdigest(),
        "truncated": {"stdout": int(truncated.get("stdout", 0)), "stderr": int(truncated.get("stderr", 0))},
    }


_OUTCOME_CODES = {"timeout": ErrorCode.ACTION_ERROR, "failure": ErrorCode.ACTION_ERROR,
                  "interrupted": ErrorCode.INTERRUPTED, "error": ErrorCode.INTERNAL_ERROR}


def result_from_records(
    runner_id: str, kind: str, seq: int, data: Mapping[str, Any], argv: list[str] | None = None
) -> TaskResult | None:
    """Rebuild the result a task got from its final audit record (to re-send what was never acknowledged)."""
    task_id = data.get("task_id")
    if not isinstance(task_id, str):
        return None
    if kind == "task_rejected":
        code = data.get("code")
        if not isinstance(code, str) or code not in ErrorCode.__members__:
            return None
        return protocol.failure_result(task_id, runner_id, ErrorCode(code), str(data.get("reason", "")))
    if kind == "decision":
        rule_ids = tuple(str(r) for r in data.get("rule_ids") or ())
        denied = refusal_code(False, rule_ids)
        assert denied is not None
        return protocol.failure_result(task_id, runner_id, denied, "; ".join(map(str, data.get("reasons") or ())))
    if kind != "execution_finished":
        return None
    outputs = protocol.execution_outputs(
        argv or [], data.get("exit_code"), str(data.get("stdout", "")).encode(), str(data.get("stderr", "")).encode(),
        duration_ms=float(data.get("duration_ms") or 0.0), truncated=data.get("truncated") or {}, audit_seq=seq,
    )
    outcome = str(data.get("outcome"))
    if outcome == "success":
        return TaskResult(task_id=task_id, runner_id=runner_id, success=True, outputs=outputs)
    code = _OUTCOME_CODES.get(outcome, ErrorCode.INTERNAL_ERROR)
    return protocol.failure_result(task_id, runner_id, code, f"{outcome} (re-sent from the audit log)",
                                   outputs=outputs)
