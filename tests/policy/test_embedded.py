"""The embedded engine: shipped decisions, fail-closed behaviour, reload, threads."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from sandbox._internal.policy_embedded import EmbeddedEngine, encode_input
from sandbox.config import PolicyConfig
from sandbox.errors import PolicyError
from sandbox.policy import Decision, PolicyEngine, install_sighup_reload, open_engine
from tests.policy.helpers import (
    CONFLICT,
    DEVELOPER,
    LAG_MONITOR,
    PIX_MONITOR,
    POLICIES,
    RESTART_WF,
    SCALE_WF,
    SIMPLE_POLICY,
    SRE,
    catalog,
    ran,
    task_input,
    write_policy,
)

# compiled is the default; "isolated" is compiled with the build in a child process, as the runner and the
# proxy open it (sandbox/_internal/policy_build.py). All must behave the same and fail closed.
MODES = ["compiled", "interpreter", "isolated"]


def open_mode(cfg: PolicyConfig, mode: str, **kw: Any) -> PolicyEngine:
    isolated = mode == "isolated"
    cfg = dataclasses.replace(cfg, embedded_mode="compiled" if isolated else mode)  # type: ignore[arg-type]
    return open_engine(cfg, isolate_build=isolated, **kw)


@pytest.fixture(scope="module", params=MODES)
def engine(request: pytest.FixtureRequest) -> Any:
    eng = open_mode(PolicyConfig(path=POLICIES, watch=False), request.param)
    yield eng
    eng.close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def simple_engine(root: Path, mode: str = "compiled", **kw: Any) -> PolicyEngine:
    return open_mode(PolicyConfig(path=root, watch=False), mode, **kw)


def test_compiled_is_the_default_mode() -> None:
    assert PolicyConfig().embedded_mode == "compiled"


# -- the shipped policies through the Python API ---------------------------------------------------


def test_open_engine_satisfies_the_protocol(engine: PolicyEngine) -> None:
    assert isinstance(engine, PolicyEngine)
    assert len(engine.revision) == 64


def test_seed_workflows_are_allowed(engine: PolicyEngine) -> None:
    d = engine.decide(task_input("restart_transaction_service", RESTART_WF, PIX_MONITOR))
    assert d.allow, d.reasons
    assert d.rule_ids == ("authz.workflow",)
    assert d.limits == {"timeout_s": 120}
    assert d.revision == engine.revision
    d = engine.decide(task_input("scale_pix_worker_3", SCALE_WF, LAG_MONITOR))
    assert d.allow, d.reasons


def test_too_early_second_scale_is_refused_with_when(engine: PolicyEngine) -> None:
    d = engine.decide(
        task_input("scale_pix_worker_5", SCALE_WF, LAG_MONITOR, [ran("scale_pix_worker_3", 20, "pix-worker")])
    )
    assert not d.allow
    assert d.rule_ids == ("rate_limit.scale_interval",)
    assert "next attempt allowed at 2027-01-15T08:00:40Z (in 40 s)" in d.reasons[0]


def test_attack_workflow_spoofing_a_human_role_is_denied(engine: PolicyEngine) -> None:
    forged = {**SCALE_WF, "roles": ["sre", "platform-admin"]}
    d = engine.decide(task_input("restart_all_backend", forged, LAG_MONITOR))
    assert not d.allow
    assert any(r.startswith("authz.workflow:") for r in d.reasons)


def test_attack_developer_restart_is_denied(engine: PolicyEngine) -> None:
    d = engine.decide(task_input("restart_pix_worker", DEVELOPER))
    assert not d.allow and d.rule_ids == ("authz.role",)
    assert engine.decide(task_input("check_kafka_topics", DEVELOPER)).allow


def test_attack_unknown_action_is_denied_even_if_input_claims_catalog_facts(engine: PolicyEngine) -> None:
    doc = task_input("restart_pix_worker")
    doc["action"] = "docker_run_privileged"  # action_info still says "restart"
    d = engine.decide(doc)
    assert not d.allow and "allowlist" in d.rule_ids


def test_decision_to_dict_round_trips(engine: PolicyEngine) -> None:
    d = engine.decide(task_input("check_services_status"))
    assert d.to_dict() == {
        "allow": True,
        "reasons": list(d.reasons),
        "rule_ids": list(d.rule_ids),
        "limits": {"timeout_s": 60},
        "revision": engine.revision,
    }


# -- fail closed -----------------------------------------------------------------------------------


def assert_policy_error(d: Decision, fragment: str) -> None:
    assert not d.allow
    assert d.rule_ids == ("policy_error",)
    assert d.reasons[0].startswith("policy_error: "), d.reasons
    assert fragment in d.reasons[0], d.reasons


@pytest.mark.parametrize(
    ("decision_rego", "fragment"),
    [
        ('decision := {"reasons": ["x"]}', "'allow' is missing"),
        ('decision := {"allow": "true", "reasons": []}', "'allow' is a str, not a boolean"),
        ('decision := {"allow": 1}', "'allow' is a int, not a boolean"),
        ('decision := {"allow": false, "reasons": []}', "a deny must carry at least one reason"),
        ('decision := {"allow": true, "reasons": "ok"}', "'reasons' must be a list of strings"),
        ('decision := {"allow": true, "rule_ids": [1]}', "'rule_ids' must be a list of strings"),
        ('decision := {"allow": true, "limits": []}', "'limits' must be an object"),
        ('decision := ["allow"]', "must be an object"),
        ("decision := true if input.never", "is undefined"),
    ],
)
def test_malformed_decisions_deny(tmp_path: Path, mode: str, decision_rego: str, fragment: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": f"package par\n\nimport rego.v1\n\n{decision_rego}\n"})
    eng = simple_engine(root, mode)
    try:
        assert_policy_error(eng.decide({"a": True}), fragment)
    finally:
        eng.close()




def test_attack_conflicting_rule_is_a_deny_in_the_interpreter(tmp_path: Path) -> None:
    eng = simple_engine(write_policy(tmp_path / "p", {"par.rego": CONFLICT}), "interpreter")
    try:
        assert_policy_error(eng.decide({"a": True}), "policy_error")
    finally:
        eng.close()


def test_attack_conflicting_rule_does_not_load_in_compiled_mode(tmp_path: Path) -> None:
    """The RVM would make x undefined (not an error) here: the lint refuses the policy instead."""
    with pytest.raises(PolicyError, match=r"par\.rego:5: data\.par\.x: defined more than once"):
        simple_engine(write_policy(tmp_path / "p", {"par.rego": CONFLICT}), "compiled")


def test_undefined_query_and_non_path_query_deny(engine: PolicyEngine) -> None:
    assert_policy_error(engine.decide({}, query="data.par.nothing_here"), "not defined by any loaded policy")
    assert_policy_error(engine.decide({}, query="data.par.decision; true"), "is not a data path")
    assert_policy_error(engine.decide({}, query='input.x == "y"'), "is not a data path")


def test_input_that_is_not_json_denies(engine: PolicyEngine) -> None:
    assert_policy_error(engine.decide({"x": {1, 2}}), "not plain JSON")
    assert_policy_error(engine.decide({"x": float("nan")}), "not plain JSON")


def test_huge_input_denies(engine: PolicyEngine) -> None:
    assert_policy_error(engine.decide({"x": "a" * (2 * 1024 * 1024)}), "over")


def test_compile_error_at_open_is_a_policy_error(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": "package par\nimport rego.v1\ndecision if {\n"})
    with pytest.raises(PolicyError, match=r"par\.rego"):
        simple_engine(root, mode)


def test_unresolvable_reference_is_caught_at_load_not_first_request(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": "package par\nimport rego.v1\ndecision := no_such_function(1)\n"})
    with pytest.raises(PolicyError, match="does not compile"):
        simple_engine(root, mode)


# -- reload ----------------------------------------------------------------------------------------


def test_reload_with_compile_error_keeps_the_old_decisions(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = simple_engine(root, mode, on_reload=lambda e, err: events.append((e, err)))
    try:
        before = eng.revision
        assert eng.decide({"ok": True}).allow
        (root / "par.rego").write_text(SIMPLE_POLICY.replace("allow if input.ok == true", "allow if {"))
        assert eng.reload() is False
        assert events and events[-1][0] == "policy_reload_failed"
        assert events[-1][1] is not None and "par.rego" in events[-1][1]
        assert eng.revision == before
        assert eng.decide({"ok": True}).allow  # still the old, working policy
        assert not eng.decide({"ok": False}).allow
    finally:
        eng.close()


def test_reload_with_bad_data_keeps_the_old_decisions(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    eng = simple_engine(root, mode)
    try:
        (root / "data.json").write_text("[1, 2, 3]")
        assert eng.reload() is False
        assert eng.decide({"ok": True}).allow
    finally:
        eng.close()


def test_reload_swaps_in_a_new_policy_for_every_thread(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = simple_engine(root, mode, on_reload=lambda e, err: events.append((e, err)))
    try:
        results: list[bool] = []
        t = threading.Thread(target=lambda: results.append(eng.decide({"ok": True}).allow))
        t.start()
        t.join()
        (root / "par.rego").write_text(SIMPLE_POLICY.replace("input.ok == true", "input.ok == 42"))
        assert eng.reload() is True
        assert events == [("policy_reloaded", None)]
        assert not eng.decide({"ok": True}).allow
        assert eng.decide({"ok": 42}).allow
        t = threading.Thread(target=lambda: results.append(eng.decide({"ok": True}).allow))
        t.start()
        t.join()
        assert results == [True, False]
    finally:
        eng.close()


def test_reload_without_changes_is_quiet(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = simple_engine(root, on_reload=lambda e, err: events.append((e, err)))
    try:
        assert eng.reload() is True
        assert events == []
    finally:
        eng.close()


def test_watch_picks_up_file_changes(tmp_path: Path, mode: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = EmbeddedEngine(
        root, on_reload=lambda e, err: events.append((e, err)), watch=True, watch_interval_s=0.05,
        mode="compiled" if mode == "isolated" else mode, isolate_build=mode == "isolated",
        entry_points=("data.par.decision",),
    )
    try:
        (root / "par.rego").write_text(SIMPLE_POLICY.replace("input.ok == true", "input.ok == 7"))
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == [("policy_reloaded", None)]
        assert eng.decide({"ok": 7}).allow
        (root / "par.rego").write_text("package par\ndecision if {")
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events[1][0] == "policy_reload_failed"
        assert eng.decide({"ok": 7}).allow
    finally:
        eng.close()


def test_sighup_reloads(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = simple_engine(root, on_reload=lambda e, err: events.append((e, err)))
    restore = install_sighup_reload(eng)
    try:
        (root / "par.rego").write_text(SIMPLE_POLICY.replace("input.ok == true", "input.ok == 3"))
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == [("policy_reloaded", None)]
        assert eng.decide({"ok": 3}).allow
    finally:
        restore()
        eng.close()


def test_concurrent_decisions_from_many_threads(engine: PolicyEngine) -> None:
    allow_doc = task_input("restart_transaction_service", RESTART_WF, PIX_MONITOR)
    deny_doc = task_input("restart_pix_worker", DEVELOPER)
    errors: list[str] = []

    def worker() -> None:
        for _ in range(50):
            if not engine.decide(allow_doc).allow or engine.decide(deny_doc).allow:
                errors.append("wrong decision")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []


# -- compiled mode (regorus RVM) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled() -> Any:
    eng = open_engine(PolicyConfig(path=POLICIES, watch=False, embedded_mode="compiled"))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def interpreter() -> Any:
    eng = open_engine(PolicyConfig(path=POLICIES, watch=False, embedded_mode="interpreter"))
    yield eng
    eng.close()


def corpus() -> list[dict[str, Any]]:
    """Every catalog action x a spread of principals/triggers/histories: allows and every deny rule."""
    principals = [
        SRE,
        DEVELOPER,
        RESTART_WF,
        SCALE_WF,
        {**SRE, "roles": ["platform-admin"]},
        {"type": "service", "id": "svc", "name": "svc", "roles": ["sre"]},
    ]
    triggers = [None, PIX_MONITOR, LAG_MONITOR]
    histories = [
        [],
        [ran("scale_pix_worker_3", 30, "pix-worker")],
        [ran("scale_pix_worker_3", a, "pix-worker") for a in (100, 400, 800, 1200)],
        [ran("restart_transaction_service", a, "transaction-service") for a in (10, 20, 30)],
        [ran("restart_all_backend", 100, s) for s in ("transaction-service", "pix-worker")],
        [ran("restart_messaging", 3599, "kafka", outcome="failure")],
    ]
    docs = []
    for action in [*catalog().actions, "not_an_action"]:
        for i, principal in enumerate(principals):
            trigger = triggers[i % len(triggers)]
            for history in histories:
                docs.append(task_input(action, principal, trigger, history))
    return docs


def test_compiled_mode_decides_exactly_like_the_interpreter(interpreter: PolicyEngine, compiled: PolicyEngine) -> None:
    docs = corpus()
    assert len(docs) > 500
    allowed = denied = 0
    for doc in docs:
        a, b = interpreter.decide(doc), compiled.decide(doc)
        assert a == b, doc
        allowed += a.allow
        denied += not a.allow
    assert allowed > 50 and denied > 50


def test_compiled_mode_fails_closed_too(compiled: PolicyEngine) -> None:
    assert_policy_error(compiled.decide({}, query="data.par.nothing_here"), "policy_error")
    assert_policy_error(compiled.decide({"x": float("inf")}), "not plain JSON")
    assert not compiled.decide({}).allow


def test_input_encoding_is_byte_for_byte_the_stdlib_json(engine: PolicyEngine) -> None:
    """decide() serializes with ujson for speed; it must write exactly what json.dumps writes."""
    docs = [
        *corpus()[:200],
        {"s": 'é\u2028\ud800/\x00"\\', "f": [0.1, 1e300, -0.0, 5e-324, 180.0], "i": [2**64, -(2**63)]},
    ]
    for doc in docs:
        assert encode_input(doc) == json.dumps(doc, allow_nan=False, separators=(",", ":"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), {1, 2}, b"x", object()])
def test_attack_input_that_is_not_json_denies_in_every_mode(engine: PolicyEngine, bad: Any) -> None:
    assert_policy_error(engine.decide({"x": bad}), "not plain JSON")


def test_attack_circular_input_denies(engine: PolicyEngine) -> None:
    doc: dict[str, Any] = {}
    doc["self"] = doc
    assert_policy_error(engine.decide(doc), "not plain JSON")


def test_any_mapping_is_accepted_as_input(engine: PolicyEngine) -> None:
    doc = task_input("check_services_status")
    assert engine.decide(MappingProxyType(doc)) == engine.decide(doc)


PROXY_DOCS = [
    {"project": "dogbank", "method": "HEAD", "endpoint": "ping", "path": "/_ping", "query": {}},
    {"project": "dogbank", "method": "GET", "endpoint": "containers.list", "path": "/v1.41/containers/json",
     "query": {"all": "1"}},
    {"project": "dogbank", "method": "POST", "endpoint": "images.create", "path": "/v1.41/images/create",
     "query": {"fromImage": "alpine"}},
    {"project": "dogbank", "method": "POST", "endpoint": "nope", "path": "/v1.41/swarm/init", "query": {}},
]


def test_one_compiled_program_answers_both_configured_queries(interpreter: PolicyEngine) -> None:
    """The runner with its in-process proxy asks two queries; one program (one copy of the compiled bundle,
    ~4 MB) must answer both, and answer each exactly as the interpreter does."""
    from sandbox._internal import policy_embedded  # noqa: PLC0415 - white box: which programs exist

    cfg = PolicyConfig(path=POLICIES, watch=False, embedded_mode="compiled")
    eng = open_engine(cfg)
    try:
        for doc in PROXY_DOCS:
            assert eng.decide(doc, query=cfg.proxy_decision) == interpreter.decide(doc, query=cfg.proxy_decision)
        for doc in corpus()[:100]:
            assert eng.decide(doc) == interpreter.decide(doc)
        vms = policy_embedded._tls.engines[eng._token].vms  # type: ignore[attr-defined]
        assert vms[cfg.decision] is vms[cfg.proxy_decision]
        # a query outside the configured pair gets a program of its own, and still decides
        assert not eng.decide({}, query="data.par.authz.grants").allow  # not a decision document: deny
        assert "data.par.authz.grants" in vms and vms["data.par.authz.grants"] is not vms[cfg.decision]
    finally:
        eng.close()


def test_the_fast_decision_constructor_builds_exactly_a_decision() -> None:
    """parse_decision skips the frozen dataclass' __init__ for speed; a field added to Decision must break this."""
    from types import MappingProxyType as MP  # noqa: PLC0415

    from sandbox._internal.policy_decision import _decision  # noqa: PLC0415

    args = (False, ("authz: no",), ("authz.deny",), MP({"timeout_s": 5}), "rev1")
    fast, slow = _decision(*args), Decision(*args)
    assert fast == slow and repr(fast) == repr(slow) and hash(fast.reasons) == hash(slow.reasons)
    assert set(vars(fast)) == {f.name for f in dataclasses.fields(Decision)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.allow = True  # type: ignore[misc]
