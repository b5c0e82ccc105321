"""build_task_input: the schema is strict, sizes are capped, history is windowed and complete."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import INPUT_SCHEMA, MAX_HISTORY, build_task_input, history_entries, validate_task_input
from tests.policy.helpers import NOW, NOW_NS, POLICIES, SEC, SRE, TASK, catalog, ran, task_input


def build(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "action": "restart_pix_worker",
        "parameters": {},
        "principal": SRE,
        "trigger": None,
        "task": TASK,
        "history": [],
        "runner_id": "dogbank-par",
        "now": NOW,
        "catalog_action": catalog().actions["restart_pix_worker"],
    }
    args.update(overrides)
    return build_task_input(**args)


def test_well_formed_input() -> None:
    doc = build(trigger={"type": "monitor", "monitor_name": "m"})
    assert doc["now"] == "2027-01-15T08:00:00.000000Z"
    assert doc["now_ns"] == NOW_NS
    assert doc["action_info"] == {
        "category": "restart",
        "services": ["pix-worker"],
        "replicas": None,
        "timeout_s": 120.0,
    }
    assert doc["trigger"] == {
        "type": "monitor",
        "monitor_id": None,
        "monitor_name": "m",
        "workflow_id": None,
        "workflow_name": None,
    }
    assert doc["runner"] == {"id": "dogbank-par"}
    assert set(doc) == set(INPUT_SCHEMA["required"])


def test_unknown_action_has_null_action_info() -> None:
    assert build(action="nope", catalog_action=None)["action_info"] is None


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"principal": {**SRE, "role": ["sre"]}}, "input.principal"),  # misspelt field
        ({"principal": {"type": "user", "id": "a", "roles": []}}, "input.principal"),  # missing name
        ({"principal": {**SRE, "type": "admin"}}, "input.principal.type"),
        ({"principal": {**SRE, "roles": "sre"}}, "input.principal.roles"),
        ({"principal": {**SRE, "id": ""}}, "input.principal.id"),
        ({"principal": {**SRE, "roles": ["sre", "sre"]}}, "input.principal.roles"),
        ({"trigger": {"type": "cron"}}, "input.trigger.type"),
        ({"trigger": {"type": "monitor", "extra": 1}}, "input.trigger"),
        ({"task": {"id": "t", "owner": "x"}}, "input.task"),
        ({"parameters": {"tail": [1]}}, "input.parameters.tail"),
        ({"parameters": {"Bad-Name": 1}}, "input.parameters"),
        (
            {"history": [{"action": "x", "ts_ns": NOW_NS, "outcome": "success", "principal_id": "p"}]},
            "input.history[0]",
        ),
        ({"history": [ran("restart_pix_worker", 1, None, outcome="skipped")]}, "input.history[0].outcome"),
        ({"history": [{**ran("restart_pix_worker", 1, None), "ts_ns": "1"}]}, "input.history[0].ts_ns"),
        ({"runner_id": ""}, "input.runner.id"),
        ({"action": ""}, "input.action"),
    ],
)
def test_bad_fields_are_rejected(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError, match="invalid policy input") as err:
        build(**overrides)
    assert where in err.value.message


def test_optional_task_and_trigger_fields_default_to_null() -> None:
    assert build(task={"id": "t"})["task"] == {"id": "t", "client": None, "expires_at": None}
    assert build(trigger=None)["trigger"]["type"] == "manual"


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(PolicyError, match="timezone-aware"):
        build(now=datetime(2027, 1, 1))  # noqa: DTZ001


def test_huge_input_is_rejected() -> None:
    history = [ran("check_services_status", 1, "x" * 250) for _ in range(MAX_HISTORY)]
    history = [{**h, "principal_id": "p" * 250} for h in history]
    with pytest.raises(PolicyError, match="over the 262144-byte limit"):
        build(history=history)


def test_too_much_history_is_refused_not_truncated() -> None:
    history = [ran("check_services_status", 1, None) for _ in range(MAX_HISTORY + 1)]
    with pytest.raises(PolicyError, match="refusing rather than dropping"):
        build(history=history)


def test_history_outside_the_window_is_dropped_and_rest_sorted() -> None:
    history = [
        ran("restart_pix_worker", 10, "pix-worker"),
        ran("restart_pix_worker", 3600, "pix-worker"),
        ran("restart_pix_worker", 500, "pix-worker"),
    ]
    doc = build(history=history)
    assert [h["ts_ns"] for h in doc["history"]] == [NOW_NS - 500 * SEC, NOW_NS - 10 * SEC]
    # Entries from the future (clock skew) are kept: they still count.
    doc = build(history=[{**ran("restart_pix_worker", 0, None), "ts_ns": NOW_NS + 5 * SEC}])
    assert len(doc["history"]) == 1


def test_history_entries_fan_out_per_service() -> None:
    entries = history_entries(
        action="restart_messaging",
        ts_ns=5,
        outcome="started",
        principal_id="p",
        services=["kafka", "zookeeper", "kafka"],
    )
    assert [e["service"] for e in entries] == ["kafka", "zookeeper"]
    assert (
        history_entries(action="check_services_status", ts_ns=5, outcome="success", principal_id="p", services=[])[0][
            "service"
        ]
        is None
    )


def test_validate_task_input_rejects_extra_top_level_field() -> None:
    doc = task_input("restart_pix_worker")
    validate_task_input(doc)
    with pytest.raises(PolicyError, match="Additional properties"):
        validate_task_input({**doc, "is_admin": True})


def test_policy_data_allowlist_matches_the_catalog() -> None:
    """data.dogbank.actions and script.yaml are two lists: drift between them must be noticed."""
    data = json.loads((POLICIES / "data.json").read_text())
    assert data["dogbank"]["actions"] == {name: a.category for name, a in catalog().actions.items()}
