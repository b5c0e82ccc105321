"""The compiled-mode lint and hardening: every shape where regorus' RVM and interpreter disagree.

Each rejected shape is shown to really differ on the raw RVM (so the lint is not guessing), and to be
refused at load and at reload (old policy kept). Each accepted shape, and each shape the hardening
(``x := e`` compiled as ``x = e``) fixes, is shown to give the interpreter's answer on the RVM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import regorus

from sandbox._internal import policy_embedded
from sandbox._internal.policy_bundle import load_bundle
from sandbox._internal.policy_embedded import EmbeddedEngine, compile_bundle
from sandbox._internal.policy_lint import LintProblem, harden, lint_engine
from sandbox._internal.policy_testing import FAIL, PASS, run_tests
from sandbox.config import PolicyConfig
from sandbox.errors import PolicyError
from sandbox.policy import open_engine
from tests.policy.helpers import POLICIES, SIMPLE_POLICY, write_policy

HEADER = "package t\n\nimport rego.v1\n\n"  # rules start on line 5


def lint(body: str) -> list[LintProblem]:
    engine = regorus.Engine()
    engine.add_policy("t.rego", HEADER + body + "\n")
    return lint_engine(engine)


def outcome(run: Any) -> Any:
    try:
        value = json.loads(run())
    except Exception:  # noqa: BLE001 - an engine error is one of the outcomes compared
        return "error"
    return "undefined" if value == "<undefined>" else value


def interpreter(body: str, query: str, doc: dict[str, Any]) -> Any:
    engine = regorus.Engine()
    engine.add_policy("t.rego", HEADER + body + "\n")
    engine.set_input_json(json.dumps(doc))
    return outcome(lambda: engine.eval_rule_as_json(query))


def rvm(body: str, query: str, doc: dict[str, Any], *, hardened: bool) -> Any:
    modules = [("t.rego", HEADER + body + "\n")]
    if hardened:
        modules = harden(modules)

    def run() -> str:
        program = regorus.Program.compile_from_modules("{}", modules, [query])
        vm = regorus.Rvm()
        vm.load_program(program)
        vm.set_data_json("{}")
        vm.set_input_json(json.dumps(doc))
        return str(vm.execute_entry_point(query))

    return outcome(run)


# -- rejected: the RVM would not report what the interpreter reports --------------------------------

# (id, policy, query, an input on which the raw RVM differs from the interpreter, fragment of the problem)
REJECTED = [
    ("two definitions", "x := 1 if input.a\nx := 2 if input.b", "data.t.x", {"a": 1, "b": 1}, "defined more than once"),
    ("iterating body", "x := v if { some v in input.xs }", "data.t.x", {"xs": [1, 2]}, "depends on v"),
    (
        "iterating else",
        "x := 1 if input.no else := v if { some v in input.xs }",
        "data.t.x",
        {"xs": [1, 2]},
        "depends on v",
    ),
    ("wildcard index", "x := v if { v := input.xs[_] }", "data.t.x", {"xs": [1, 2]}, "depends on v"),
    ("unbound index", "x := i if { input.xs[i] > 0 }", "data.t.x", {"xs": [1, 2]}, "depends on i"),
    ("some declaration", "x := v if { some v; input.xs[v] }", "data.t.x", {"xs": [1, 2]}, "depends on v"),
    ("function", "f(a) := v if { some v in a }\nx := f(input.xs)", "data.t.x", {"xs": [1, 2]}, "for one call"),
    (
        "object several values",
        'p[k] := v if { k := "a"; some v in input.xs }',
        "data.t.p",
        {"xs": [1, 2]},
        "for one key",
    ),
    (
        "object key from a ref",
        "p[x.n] := x.v if { some x in input.xs }",
        "data.t.p",
        {"xs": [{"n": "a", "v": 1}, {"n": "a", "v": 2}]},
        "the key",
    ),
    (
        "objects overlapping",
        "p[k] := 1 if k := input.k\np[k] := 2 if k := input.j",
        "data.t.p",
        {"k": "a", "j": "a"},
        "defined more than once",
    ),
    (
        "comprehension over iteration",
        "x := [y | y := v] if { some v in input.xs }",
        "data.t.x",
        {"xs": [1, 2]},
        "depends on v",
    ),
    (
        "several bodies, one value",
        "x := input.y if input.a\nx := input.z if input.b",
        "data.t.x",
        {"a": 1, "b": 1, "y": 1, "z": 2},
        "defined more than once",
    ),
    # A local shadowing a rule is not the rule: still iteration (regorus errors on this one either way).
    ("shadowing", "route := 5\nx := route if { some route in input.xs }", "data.t.x", None, "depends on route"),
    ("set member from a ref", 'g contains {"a": input.nope} if true', "data.t.g", {}, "uses a reference"),
    (
        "set member from a call",
        'g contains sprintf("%v", [input.nope]) if true',
        "data.t.g",
        {},
        "uses a function call",
    ),
    ("set member from a rule", "r := input.nope\ng contains r if true", "data.t.g", {}, "rule or global `r`"),
    (
        "comprehension term from a ref",
        "x := [v.a | some v in input.xs]",
        "data.t.x",
        {"xs": [{"a": 1}, {"b": 2}]},
        "comprehension term",
    ),
    ("object value from a ref", 'p[k] := input.nope if k := "a"', "data.t.p", {}, "the value"),
]


@pytest.mark.parametrize(("name", "body", "query", "doc", "fragment"), REJECTED, ids=[r[0] for r in REJECTED])
def test_attack_unsafe_shape_is_rejected_and_really_differs(
    name: str, body: str, query: str, doc: dict[str, Any] | None, fragment: str
) -> None:
    problems = lint(body)
    assert problems, f"{name}: the lint accepted it"
    assert any(fragment in p.message for p in problems), [str(p) for p in problems]
    assert all(p.file == "t.rego" and p.line >= 5 and p.rule.startswith("data.t") for p in problems)
    if doc is not None:
        # Not a guess: on this input the RVM (even hardened) answers differently from the interpreter.
        assert rvm(body, query, doc, hardened=True) != interpreter(body, query, doc)


def test_walk_is_rejected_when_the_value_depends_on_it() -> None:
    # The RVM cannot compile walk (that query would fall back to the interpreter); rejected anyway.
    assert any("walk" in p.message for p in lint("x := v if { walk(input, [_, v]) }"))


def test_problem_names_file_line_rule_and_rewrite() -> None:
    (problem,) = lint("allow if input.a\n\nx := v if {\n\tsome v in input.xs\n}")
    assert str(problem).startswith("t.rego:7: data.t.x: value `v` depends on v")
    assert "comprehension" in problem.message and "constant" in problem.message


# -- accepted: the RVM answers what the interpreter answers -------------------------------------------

INPUTS = [
    {},
    {"a": True, "b": True, "xs": [1, 2, 2], "obj": {"a": 1, "b": 2}, "y": 3, "k": "a", "ks": ["a", "b", "a"]},
    {"a": False, "xs": [], "obj": {}, "pair": [1, 2], "items": [{"n": "a"}, {"n": "a"}]},
]

ACCEPTED = [
    ("constant value, iterating", "allow if { some v in input.xs; v > 1 }\nallow if input.b", "data.t.allow"),
    ("value independent of iteration", "x := count(input.xs) if { some v in input.xs; v > 1 }", "data.t.x"),
    ("comprehension", "x := [v | some v in input.xs]", "data.t.x"),
    ("object, unique key", "p[k] := v if { some k, v in input.obj }", "data.t.p"),
    ("object, constant value", "p[k] := true if { some k in input.ks }", "data.t.p"),
    ("object, value from the key", "p[k] := v if { some k in input.ks; v := upper(k) }", "data.t.p"),
    ("function", "f(a) := b if { b := a + 1 }\nx := f(input.y)", "data.t.x"),
    ("else chain", "x := 1 if input.a else := 2 if input.b else := 3", "data.t.x"),
    ("every", "x := y if { y := input.y; every v in input.xs { v > 0 } }", "data.t.x"),
    ("not over iteration", "x := input.y if { not input.xs[_] == 3 }", "data.t.x"),
    ("same constant functions", "f(a) := 1 if a > 0\nf(a) := 1 if a < -5\nx := f(input.y)", "data.t.x"),
    ("destructuring", "x := b if { [a, b] := input.pair; a == 1 }", "data.t.x"),
    ("lookup by input", 'x := {"a": 1}[input.k]', "data.t.x"),
    ("distinct paths", "p.q := 1 if input.a\np.r := 2 if input.b", "data.t.p"),
    ("default and one definition", "default x := 0\nx := input.y if input.a", "data.t.x"),
    ("set member from bound variables", 'g contains {"n": n} if { some it in input.items; n := it.n }', "data.t.g"),
]


@pytest.mark.parametrize(("name", "body", "query"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_safe_shape_passes_and_both_engines_agree(name: str, body: str, query: str) -> None:
    assert lint(body) == [], name
    for doc in INPUTS:
        assert rvm(body, query, doc, hardened=True) == interpreter(body, query, doc), (name, doc)


# -- hardening: `x := e` that is undefined must fail the body ------------------------------------------

UNDEFINED_ASSIGNMENTS = [
    ("allow if { x := input.nope }", "data.t.allow"),
    ("allow if { x := input.nope; not x }", "data.t.allow"),
    ('allow if { x := input.nope; not startswith(x, "a") }', "data.t.allow"),
    ("default allow := false\nallow if { some r in input.xs; x := input.nope }", "data.t.allow"),
    ("allow if { every r in input.xs { x := input.nope } }", "data.t.allow"),
    ("x := 1 if { y := input.nope } else := 2", "data.t.x"),
    ("f(a) := 1 if { y := input.nope }\nx := f(1)", "data.t.x"),
    ("g contains 1 if { x := input.nope; y := x }", "data.t.g"),
    ("x := [1 | y := input.nope]", "data.t.x"),
    ('g contains {"a": x} if { x := input.nope }', "data.t.g"),
    ('grants contains {"r": r} if { some r in input.xs; c := input.categories[r] }', "data.t.grants"),
]


@pytest.mark.parametrize(("body", "query"), UNDEFINED_ASSIGNMENTS)
def test_attack_undefined_assignment_does_not_pass_a_body(body: str, query: str) -> None:
    doc = {"xs": ["a"], "categories": {}}
    assert lint(body) == []
    expected = interpreter(body, query, doc)
    assert rvm(body, query, doc, hardened=False) != expected  # the regorus RVM bug the hardening is for
    assert rvm(body, query, doc, hardened=True) == expected


def test_hardening_keeps_every_line_and_column() -> None:
    bundle = load_bundle(POLICIES)
    for (name, before), (hname, after) in zip(bundle.modules, harden(bundle.modules), strict=True):
        assert name == hname and len(before) == len(after)
        assert [len(line) for line in before.splitlines()] == [len(line) for line in after.splitlines()]
    assert any(":=" in text for _, text in bundle.modules)


def test_attack_local_named_like_a_rule_is_rejected() -> None:
    problems = lint("route := 5\nx := y if { route := input.r; y := route }")
    assert any("rename the variable" in p.message for p in problems), [str(p) for p in problems]


# -- the shipped policies ---------------------------------------------------------------------------


def test_shipped_policies_pass_the_lint() -> None:
    assert lint_engine(compile_bundle(load_bundle(POLICIES))) == []


# -- at load, at reload, end to end ---------------------------------------------------------------------

# A deny that silently does not fire on the raw RVM: two definitions of `role` conflict for a user who
# is both; the interpreter reports the conflict (a fail-closed deny), the RVM makes role undefined.
ROLE_CONFLICT = """package par

import rego.v1

default role := "none"

role := "admin" if input.admin
role := "guest" if input.guest

deny contains "guests may not deploy" if role == "guest"

decision := {"allow": true, "reasons": ["ok"]} if {
	input.admin
	count(deny) == 0
} else := {"allow": false, "reasons": ["denied"]}
"""


def test_attack_deny_that_would_silently_not_fire_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": ROLE_CONFLICT})
    both = {"admin": True, "guest": True}
    interp = open_engine(PolicyConfig(path=root, watch=False, embedded_mode="interpreter"))
    try:
        assert not interp.decide(both).allow  # the conflict is an error: fail closed
    finally:
        interp.close()
    with pytest.raises(PolicyError, match=r"par\.rego:7: data\.par\.role: defined more than once"):
        open_engine(PolicyConfig(path=root, watch=False, embedded_mode="compiled"))
    # What the lint prevents: without it the compiled engine allows.
    monkeypatch.setattr(policy_embedded, "check_engine", lambda engine: None)
    unsafe = open_engine(PolicyConfig(path=root, watch=False, embedded_mode="compiled"))
    try:
        assert unsafe.decide(both).allow
    finally:
        unsafe.close()


def test_attack_reload_to_an_unsafe_policy_keeps_the_old_one(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = EmbeddedEngine(root, on_reload=lambda e, err: events.append((e, err)), mode="compiled")
    try:
        before = eng.revision
        assert eng.decide({"ok": True}).allow
        (root / "par.rego").write_text(ROLE_CONFLICT)
        assert eng.reload() is False
        assert events[-1][0] == "policy_reload_failed"
        assert events[-1][1] is not None and "par.rego:7: data.par.role" in events[-1][1]
        assert eng.revision == before
        assert eng.decide({"ok": True}).allow and not eng.decide({"ok": False}).allow
    finally:
        eng.close()


def test_interpreter_mode_does_not_lint(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": ROLE_CONFLICT})
    eng = EmbeddedEngine(root, mode="interpreter")
    try:
        assert eng.decide({"admin": True}).allow
    finally:
        eng.close()


# -- par policy test in compiled mode -------------------------------------------------------------------

ROLE_TEST = """package par_test

import rego.v1

test_admin_allowed if data.par.decision.allow with input as {"admin": true}

test_guest_admin_denied if not data.par.decision.allow with input as {"admin": true, "guest": true}
"""


def test_policy_test_compiled_mode_reports_the_lint_as_a_load_error(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": ROLE_CONFLICT, "par_test.rego": ROLE_TEST})
    with pytest.raises(PolicyError, match="not safe for compiled mode"):
        run_tests([root], mode="compiled")
    report = run_tests([root], mode="interpreter")
    assert {r.case.name: r.status for r in report.results}["test_admin_allowed"] == PASS


def test_attack_policy_test_fails_a_test_the_rvm_answers_differently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the lint to miss a shape, the replay of each test's inputs on the RVM still catches it."""
    monkeypatch.setattr(policy_embedded, "check_engine", lambda engine: None)
    root = write_policy(tmp_path / "p", {"par.rego": ROLE_CONFLICT, "par_test.rego": ROLE_TEST})
    report = run_tests([root], mode="compiled")
    by_name = {r.case.name: r for r in report.results}
    assert by_name["test_admin_allowed"].status == PASS
    bad = by_name["test_guest_admin_denied"]
    assert bad.status == FAIL
    assert "differs in compiled mode: data.par.decision at par_test.rego:7" in bad.message
    assert "interpreter an error (conflict)" in bad.message and '"allow": true' in bad.message


def test_policy_test_compiled_mode_replays_the_shipped_tests() -> None:
    report = run_tests([POLICIES], mode="compiled")
    assert report.results and all(r.status == PASS for r in report.results), [
        (r.display, r.message) for r in report.results if r.status != PASS
    ]
