"""Shared builders for the policy tests."""

from __future__ import annotations

import functools
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.catalog import Catalog, load_catalog
from sandbox.policy import build_task_input

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
REFERENCE_V1 = Path(__file__).resolve().parent / "reference_v1"  # the par policies before restructuring
CATALOG_FILE = REPO / "config" / "credentials" / "script.yaml"
NOW = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)
NOW_NS = 1_800_000_000_000_000_000
SEC = 1_000_000_000

SRE = {"type": "user", "id": "alice", "name": "Alice", "roles": ["sre"]}
DEVELOPER = {"type": "user", "id": "bob", "name": "Bob", "roles": ["developer"]}
RESTART_WF = {"type": "workflow", "id": "wf-1", "name": "[DogBank] Auto-Restart Transaction Service", "roles": []}
SCALE_WF = {"type": "workflow", "id": "wf-2", "name": "[DogBank] Auto-Scale PIX Worker", "roles": []}
PIX_MONITOR = {"type": "monitor", "monitor_id": "m-1", "monitor_name": "[DogBank] PIX - Alta Latencia P99"}
LAG_MONITOR = {"type": "monitor", "monitor_id": "m-2", "monitor_name": "[DogBank] Kafka - Consumer Lag Alto"}
TASK = {"id": "task-1", "client": "test", "expires_at": "2027-01-15T08:05:00Z"}


@functools.cache
def catalog() -> Catalog:
    return load_catalog(CATALOG_FILE)


def task_input(
    action: str,
    principal: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cat = catalog()
    return build_task_input(
        action=action,
        parameters=parameters or {},
        principal=principal or SRE,
        trigger=trigger,
        task=TASK,
        history=history or [],
        runner_id="dogbank-par",
        now=NOW,
        catalog_action=cat.actions.get(action),
    )


def ran(action: str, ago_s: int, service: str | None, outcome: str = "success") -> dict[str, Any]:
    return {
        "action": action,
        "ts_ns": NOW_NS - ago_s * SEC,
        "outcome": outcome,
        "principal_id": "alice",
        "service": service,
    }


def copy_policies(dst: Path) -> Path:
    """A private copy of the shipped policies to edit in a test."""
    target = dst / "policies"
    shutil.copytree(POLICIES, target)
    return target


def write_policy(root: Path, files: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return root


# Two definitions of x that disagree when input.a: a conflict error in the interpreter, undefined in the RVM.
CONFLICT = 'package par\n\nimport rego.v1\n\nx := 1\nx := 2 if input.a\ndecision := {"allow": x == 1}\n'


SIMPLE_POLICY = """package par

import rego.v1

default allow := false

allow if input.ok == true

decision := {"allow": true, "reasons": ["simple: ok"], "rule_ids": ["simple"], "limits": {"timeout_s": 5}} if allow
else := {"allow": allow, "reasons": ["simple: ok is not true"], "rule_ids": ["simple"], "limits": {}}
"""


def par_bundle(root: Path, *, reference: bool, data: dict[str, Any]) -> Path:
    """A policy dir with the shipped par modules (or the reference_v1 copy of them) and ``data``."""
    (root / "par").mkdir(parents=True)
    if reference:
        for src in REFERENCE_V1.glob("*.rego.txt"):
            (root / "par" / src.name.removesuffix(".txt")).write_text(src.read_text())
    else:
        for src in (POLICIES / "par").glob("*.rego"):
            if not src.name.endswith("_test.rego"):
                shutil.copy(src, root / "par" / src.name)
    (root / "data.json").write_text(json.dumps(data))
    return root
