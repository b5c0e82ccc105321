"""workflows/: the seed's two workflows and two monitors, checked against the catalog and the policy.

What matters for safety is that every private-action step names an action of this runner's catalog
with parameters its schema accepts, and that the shipped policy admits exactly these workflows when
their own monitor triggers them; the rest is structure (edges, handles) so the import does not break.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.catalog import Catalog, load_catalog
from sandbox.config import PolicyConfig
from sandbox.errors import Error
from sandbox.policy import build_task_input, open_engine

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.workflow.json"))
MONITORS = sorted((REPO / "workflows").glob("*.monitor.json"))
PAR_ACTION = "com.datadoghq.script.runPredefinedScript"
SEED_WORKFLOWS = {"[DogBank] Auto-Restart Transaction Service", "[DogBank] Auto-Scale PIX Worker"}
SEED_MONITORS = {"[DogBank] PIX - Alta Latencia P99", "[DogBank] Kafka - Consumer Lag Alto"}


def _params(step: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in step.get("parameters", [])}


def private_action_problems(doc: dict[str, Any], catalog: Catalog) -> list[str]:
    """Every reason a workflow's private-action steps would not run on this runner (empty = fine)."""
    problems = []
    spec = doc["data"]["attributes"]["spec"]
    labels = {c["label"] for env in spec.get("connectionEnvs", []) for c in env["connections"]}
    for step in spec["steps"]:
        action_id = step["actionId"]
        if action_id.startswith("com.datadoghq.script.") and action_id != PAR_ACTION:
            problems.append(f"{step['name']}: {action_id} is not the predefined-script action")
            continue
        if action_id != PAR_ACTION:
            continue
        if step.get("connectionLabel") not in labels:
            problems.append(f"{step['name']}: connection {step.get('connectionLabel')!r} is not declared")
        params = _params(step)
        try:
            catalog.validate_parameters(params.get("scriptName"), params.get("parameters"))
        except Error as exc:
            problems.append(f"{step['name']}: {exc.message}")
    return problems


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "config/credentials/script.yaml")


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in WORKFLOWS:
        doc = json.loads(path.read_text())
        docs[doc["data"]["attributes"]["name"]] = doc
    return docs


@pytest.fixture(scope="module")
def monitors() -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in (json.loads(p.read_text()) for p in MONITORS)}


def test_the_seed_workflows_and_monitors_are_all_there(workflows: dict, monitors: dict) -> None:
    assert set(workflows) == SEED_WORKFLOWS
    assert set(monitors) == SEED_MONITORS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_structure_imports_cleanly(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["data"]["type"] == "workflows"
    attrs = doc["data"]["attributes"]
    spec = attrs["spec"]
    assert re.fullmatch(r"[a-z0-9-]+", spec["handle"])
    names = [s["name"] for s in spec["steps"]]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names)
    (trigger,) = spec["triggers"]
    assert "monitorTrigger" in trigger and trigger["monitorTrigger"]["rateLimit"]["count"] >= 1
    # every edge points at a step, and every step is reachable from the trigger
    reachable, todo = set(), list(trigger["startStepNames"])
    by_name = {s["name"]: s for s in spec["steps"]}
    while todo:
        name = todo.pop()
        assert name in by_name, f"edge to unknown step {name}"
        if name not in reachable:
            reachable.add(name)
            todo += [e["nextStepName"] for e in by_name[name].get("outboundEdges", [])]
    assert reachable == set(names)
    for step in spec["steps"]:
        branches = [e["branchName"] for e in step.get("outboundEdges", [])]
        if step["actionId"] == "com.datadoghq.core.if":
            assert sorted(branches) == ["false", "true"]


def test_private_actions_reference_only_catalog_actions(workflows: dict, catalog: Catalog) -> None:
    used = set()
    for doc in workflows.values():
        assert private_action_problems(doc, catalog) == []
        used |= {_params(s)["scriptName"] for s in doc["data"]["attributes"]["spec"]["steps"]
                 if s["actionId"] == PAR_ACTION}
    assert used == {"restart_transaction_service", "scale_pix_worker_1", "scale_pix_worker_3", "scale_pix_worker_5"}


def test_the_check_catches_unknown_actions_bad_parameters_and_raw_scripts(workflows: dict, catalog: Catalog) -> None:
    doc = copy.deepcopy(workflows["[DogBank] Auto-Scale PIX Worker"])
    steps = doc["data"]["attributes"]["spec"]["steps"]
    par_steps = [s for s in steps if s["actionId"] == PAR_ACTION]
    par_steps[0]["parameters"][0]["value"] = "scale_pix_worker_50"            # not in the catalog
    par_steps[1]["parameters"][1]["value"] = {"replicas": 50}                 # not in its parameterSchema
    par_steps[2]["connectionLabel"] = "INTEGRATION_SOMEONE_ELSES_RUNNER"     # undeclared connection
    steps.append({"name": "Raw", "actionId": "com.datadoghq.script.runScript", "parameters": []})
    problems = private_action_problems(doc, catalog)
    assert len(problems) == 4, problems
    assert any("scale_pix_worker_50" in p and "not in the catalog" in p for p in problems)
    assert any("replicas" in p for p in problems)
    assert any("INTEGRATION_SOMEONE_ELSES_RUNNER" in p for p in problems)
    assert any("runScript" in p for p in problems)


def test_each_monitor_triggers_its_workflow(workflows: dict, monitors: dict) -> None:
    policy = json.loads((REPO / "policies/data.json").read_text())["dogbank"]["workflows"]
    for name, doc in workflows.items():
        handle = doc["data"]["attributes"]["spec"]["handle"]
        mentioning = [m for m in monitors.values() if f"@workflow-{handle}" in m["message"]]
        assert len(mentioning) == 1, f"{name}: exactly one monitor must mention @workflow-{handle}"
        assert mentioning[0]["name"] in policy[name]["monitors"]
    for m in monitors.values():
        thresholds = m["options"]["thresholds"]
        assert m["type"] == "query alert" and thresholds["critical"] > thresholds["warning"]
        assert re.search(r" > [0-9.]+$", m["query"])
    lag = monitors["[DogBank] Kafka - Consumer Lag Alto"]["options"]["thresholds"]
    assert (lag["critical"], lag["warning"]) == (1000, 500)  # OK state == lag < 500: the workflow's branch


def test_the_shipped_policy_admits_these_workflows_and_nothing_more(workflows: dict, monitors: dict,
                                                                   catalog: Catalog) -> None:
    engine = open_engine(PolicyConfig(path=REPO / "policies", watch=False))
    try:
        for name, doc in workflows.items():
            spec = doc["data"]["attributes"]["spec"]
            handle = spec["handle"]
            (monitor,) = [m for m in monitors.values() if f"@workflow-{handle}" in m["message"]]
            for step in spec["steps"]:
                if step["actionId"] != PAR_ACTION:
                    continue
                action = _params(step)["scriptName"]

                def decide(principal_name: str, monitor_name: str, action: str = action, handle: str = handle) -> bool:
                    doc_in = build_task_input(
                        action=action, parameters={},
                        principal={"type": "workflow", "id": f"wf-{handle}", "name": principal_name},
                        trigger={"type": "monitor", "monitor_id": "1", "monitor_name": monitor_name},
                        task={"id": "task-workflow-test"}, history=[], runner_id="dogbank-par",
                        now=datetime.now(UTC), catalog_action=catalog.get(action),
                    )
                    return engine.decide(doc_in).allow

                assert decide(name, monitor["name"]), f"{name} should be allowed to run {action}"
                other = next(m for m in monitors if m != monitor["name"])
                assert not decide(name, other), f"{name} must not run {action} when {other} fires"
                assert not decide("[DogBank] Some Other Workflow", monitor["name"])
    finally:
        engine.close()
