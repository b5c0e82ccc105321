"""The task-admission input document: built in one place, validated against one schema.

The policy can only be as right as its input. Every field is required to be present (optional ones
are filled with ``null`` so a policy never has to guess between "absent" and "empty"), unknown fields
are refused (a misspelt ``principal.roles`` must not silently mean "no roles"), and the whole document
is capped in size and history length, because a policy that is slow on a huge input is a way to stall
the runner. Every problem is a :class:`PolicyError`, which the runner turns into a deny.

Rate limits count *every execution that started*, whatever its outcome (see docs/policy-input.md):
counting only successes would let a failing action be retried without limit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sandbox.errors import PolicyError

MAX_INPUT_BYTES = 256 * 1024  # serialized input document
MAX_HISTORY = 1000  # history entries inside the window
OUTCOMES = ("started", "success", "failure", "timeout", "interrupted", "error")
PRINCIPAL_TYPES = ("workflow", "user", "service")
TRIGGER_TYPES = ("monitor", "manual", "schedule", "api")

_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_OPT_NAME = {"type": ["string", "null"], "maxLength": 256}
_ACTION = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}
_SCALAR = {"type": ["string", "integer", "boolean"], "maxLength": 256}

INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "par task admission input (data.par.decision)",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "action",
        "action_info",
        "parameters",
        "principal",
        "trigger",
        "task",
        "now",
        "now_ns",
        "history",
        "runner",
    ],
    "properties": {
        "action": {"type": "string", "minLength": 1, "maxLength": 128},
        "action_info": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["category", "services", "replicas", "timeout_s"],
                    "properties": {
                        "category": {"enum": ["restart", "group_restart", "scale", "diagnostic"]},
                        "services": {"type": "array", "maxItems": 64, "items": _NAME},
                        "replicas": {"type": ["integer", "null"], "minimum": 0},
                        "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                },
            ]
        },
        "parameters": {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,31}$"},
            "additionalProperties": _SCALAR,
        },
        "principal": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "id", "name", "roles"],
            "properties": {
                "type": {"enum": list(PRINCIPAL_TYPES)},
                "id": _NAME,
                "name": _NAME,
                "roles": {"type": "array", "maxItems": 32, "uniqueItems": True, "items": _NAME},
            },
        },
        "trigger": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "monitor_id", "monitor_name", "workflow_id", "workflow_name"],
            "properties": {
                "type": {"enum": list(TRIGGER_TYPES)},
                "monitor_id": _OPT_NAME,
                "monitor_name": _OPT_NAME,
                "workflow_id": _OPT_NAME,
                "workflow_name": _OPT_NAME,
            },
        },
        "task": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "client", "expires_at"],
            "properties": {"id": _NAME, "client": _OPT_NAME, "expires_at": _OPT_NAME},
        },
        "now": {"type": "string", "minLength": 20, "maxLength": 40},
        "now_ns": {"type": "integer", "minimum": 0},
        "history": {
            "type": "array",
            "maxItems": MAX_HISTORY,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["action", "ts_ns", "outcome", "principal_id", "service"],
                "properties": {
                    "action": _ACTION,
                    "ts_ns": {"type": "integer", "minimum": 0},
                    "outcome": {"enum": list(OUTCOMES)},
                    "principal_id": _NAME,
                    "service": _OPT_NAME,
                },
            },
        },
        "runner": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id"],
            "properties": {"id": _NAME},
        },
    },
}



@functools.cache
def _validator() -> Any:
    """Built on first use: jsonschema costs ~19 MB resident, which the proxy process never needs."""
    from jsonschema.validators import Draft202012Validator  # noqa: PLC0415

    return Draft202012Validator(INPUT_SCHEMA)


def validate_task_input(doc: Any) -> None:
    """Raise PolicyError naming the first offending field, or if the document is too large."""
    errors = sorted(
        _validator().iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        err = errors[0]
        where = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        message = err.message if len(err.message) <= 200 else err.message[:200] + "..."
        raise PolicyError(f"invalid policy input: {where}: {message}")
    size = len(json.dumps(doc, separators=(",", ":")))
    if size > MAX_INPUT_BYTES:
        raise PolicyError(f"policy input is {size} bytes, over the {MAX_INPUT_BYTES}-byte limit")


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_ns(now: datetime) -> int:
    """Exact nanoseconds (no float rounding), so boundary tests in Rego and Python agree."""
    delta = now.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def history_entries(
    *, action: str, ts_ns: int, outcome: str, principal_id: str, services: Sequence[str]
) -> list[dict[str, Any]]:
    """History entries for one execution: one per service it touched (or one with service null).

    A group restart touches several services, and "3 restarts of the same service" must see each.
    Policies count executions by distinct ``ts_ns`` per action, so the fan-out never double-counts.
    """
    base = {"action": action, "ts_ns": ts_ns, "outcome": outcome, "principal_id": principal_id}
    if not services:
        return [{**base, "service": None}]
    return [{**base, "service": s} for s in dict.fromkeys(services)]


def build_task_input(
    *,
    action: str,
    parameters: Mapping[str, Any] | None,
    principal: Mapping[str, Any],
    trigger: Mapping[str, Any] | None,
    task: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
    runner_id: str,
    now: datetime,
    catalog_action: Any | None,
    history_window_s: int = 3600,
) -> dict[str, Any]:
    """Assemble and validate the input for ``data.par.decision``; PolicyError on anything off."""
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise PolicyError("build_task_input: 'now' must be a timezone-aware datetime")
    now_ns = to_ns(now)
    if not isinstance(principal, Mapping):
        raise PolicyError("invalid policy input: input.principal must be an object")
    principal_doc = dict(principal)
    principal_doc.setdefault("roles", [])
    trigger_doc: dict[str, Any] = {"monitor_id": None, "monitor_name": None, "workflow_id": None, "workflow_name": None}
    if trigger is None:
        trigger_doc["type"] = "manual"
    elif isinstance(trigger, Mapping):
        trigger_doc.update(trigger)
    else:
        raise PolicyError("invalid policy input: input.trigger must be an object")
    task_doc: dict[str, Any] = {"client": None, "expires_at": None}
    if not isinstance(task, Mapping):
        raise PolicyError("invalid policy input: input.task must be an object")
    task_doc.update(task)
    window_ns = history_window_s * 1_000_000_000
    recent = []
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping):
            raise PolicyError(f"invalid policy input: input.history[{i}] must be an object")
        ts = entry.get("ts_ns")
        # Entries in the future are kept: with clock skew they are still recent executions.
        if isinstance(ts, int) and not isinstance(ts, bool) and now_ns - ts >= window_ns:
            continue
        recent.append(dict(entry))
        if len(recent) > MAX_HISTORY:
            raise PolicyError(
                f"invalid policy input: more than {MAX_HISTORY} executions in the last {history_window_s} s; "
                "refusing rather than dropping entries a rate limit may need"
            )
    recent.sort(key=lambda e: e["ts_ns"] if isinstance(e.get("ts_ns"), int) else 0)
    doc = {
        "action": action,
        "action_info": _action_info(catalog_action),
        "parameters": dict(parameters) if isinstance(parameters, Mapping) else parameters,
        "principal": principal_doc,
        "trigger": trigger_doc,
        "task": task_doc,
        "now": rfc3339(now),
        "now_ns": now_ns,
        "history": recent,
        "runner": {"id": runner_id},
    }
    if doc["parameters"] is None:
        doc["parameters"] = {}
    validate_task_input(doc)
    return doc


def _action_info(action: Any | None) -> dict[str, Any] | None:
    """Catalog facts the policy needs; null for an action the catalog does not know."""
    if action is None:
        return None
    return {
        "category": action.category,
        "services": list(action.services),
        "replicas": action.replicas,
        "timeout_s": action.timeout_s,
    }
