"""The compiled policy built in a child process: same decisions, and every way the child can fail is fail-closed."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox._internal import policy_build
from sandbox._internal.policy_build import BuiltProgram, build_in_child
from sandbox._internal.policy_bundle import load_bundle
from sandbox._internal.policy_embedded import EmbeddedEngine, _load_program
from sandbox.config import PolicyConfig
from sandbox.errors import PolicyError
from sandbox.policy import open_engine
from tests.policy.helpers import CONFLICT, POLICIES, SIMPLE_POLICY, write_policy

QUERIES = ("data.par.decision", "data.par.docker_proxy.decision")


def test_the_child_compiles_one_program_for_both_queries() -> None:
    built = build_in_child(load_bundle(POLICIES), QUERIES)
    assert built.entry_points == frozenset(QUERIES)
    assert built.program is not None and len(built.program) > 1000


def test_isolated_engine_decides_with_the_childs_program(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    eng = EmbeddedEngine(root, mode="compiled", isolate_build=True, entry_points=("data.par.decision",))
    try:
        assert eng.decide({"ok": True}).allow
        assert not eng.decide({"ok": False}).allow
        assert not eng.decide({}, query="data.par.nowhere").allow  # not built: compiled here, still undefined
    finally:
        eng.close()


def test_attack_a_policy_the_lint_refuses_never_loads_through_the_child(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": CONFLICT})
    with pytest.raises(PolicyError, match=r"par\.rego:5: data\.par\.x: defined more than once"):
        open_engine(PolicyConfig(path=root, watch=False), isolate_build=True)


def test_a_policy_that_does_not_compile_names_the_file(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": "package par\ndecision if {"})
    with pytest.raises(PolicyError, match="par.rego"):
        open_engine(PolicyConfig(path=root, watch=False), isolate_build=True)


def test_a_child_that_dies_is_a_policy_error_and_a_reload_keeps_the_old_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    events: list[tuple[str, str | None]] = []
    eng = open_engine(PolicyConfig(path=root, watch=False), isolate_build=True,
                      on_reload=lambda e, err: events.append((e, err)))
    try:
        before = eng.revision
        (root / "par.rego").write_text(SIMPLE_POLICY.replace("input.ok == true", "input.ok == 7"))
        monkeypatch.setattr(sys, "executable", "/bin/false")  # the build process exits 1 at once
        assert eng.reload() is False
        assert events[-1][0] == "policy_reload_failed" and "build process failed (exit 1)" in str(events[-1][1])
        assert eng.revision == before and eng.decide({"ok": True}).allow and not eng.decide({"ok": 7}).allow
        monkeypatch.undo()
        assert eng.reload() is True  # the child works again: the new policy is in
        assert eng.decide({"ok": 7}).allow
    finally:
        eng.close()


def test_a_child_that_hangs_is_a_policy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    monkeypatch.setattr(policy_build, "BUILD_TIMEOUT_S", 0.01)
    with pytest.raises(PolicyError, match="did not finish"):
        open_engine(PolicyConfig(path=root, watch=False), isolate_build=True)


@pytest.mark.parametrize(("answer", "fragment"), [
    (b"not json", "malformed answer"),
    (b'{"ok": true, "revision": "other", "entry_points": [], "program": null}', "another revision"),
    (b'{"ok": true, "revision": "REV", "entry_points": ["data.x"], "program": "AAAA"}', "nobody asked"),
    (b'{"ok": true, "revision": "REV", "entry_points": ["data.par.decision"], "program": null}', "malformed"),
    (b'{"ok": true, "revision": "REV", "entry_points": [], "program": "!!"}', "malformed"),
    (b'{"ok": true, "revision": "REV", "entry_points": [], "program": null, "ok": false}', "malformed"),
    (b'{"ok": false, "revision": "REV", "error": "par.rego:3: bad"}', "par.rego:3: bad"),
])
def test_malformed_answers_are_refused(answer: bytes, fragment: str) -> None:
    bundle = load_bundle(POLICIES)
    raw = answer.replace(b"REV", bundle.revision.encode())
    with pytest.raises(PolicyError, match=fragment):
        policy_build._parse_answer(raw, bundle, QUERIES)


def test_a_corrupt_program_falls_back_to_compiling_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serialized program that does not load is never run: the engine compiles the policy itself."""
    real = policy_build.build_in_child

    def corrupt(bundle, entry_points):  # type: ignore[no-untyped-def]
        built = real(bundle, entry_points)
        assert built.program is not None
        return BuiltProgram(b"RGPRgarbage" + built.program[40:], built.entry_points)

    monkeypatch.setattr("sandbox._internal.policy_embedded.build_in_child", corrupt)
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    eng = EmbeddedEngine(root, mode="compiled", isolate_build=True, entry_points=("data.par.decision",))
    try:
        assert eng.decide({"ok": True}).allow and not eng.decide({"ok": False}).allow
    finally:
        eng.close()


def test_the_child_answers_only_on_stdout_as_json() -> None:
    """The protocol end to end at the process level: what the parent sends, what the child prints."""
    bundle = load_bundle(POLICIES)
    request = {"root": str(bundle.root), "modules": [list(m) for m in bundle.modules], "data": bundle.data,
               "revision": bundle.revision, "entry_points": list(QUERIES)}
    proc = subprocess.run([sys.executable, "-m", "sandbox._internal.policy_build"], input=json.dumps(request).encode(),
                          capture_output=True, timeout=60, check=True)
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and sorted(doc["entry_points"]) == sorted(QUERIES)
    assert _load_program(base64.b64decode(doc["program"]), bundle) is not None  # what the parent will run
    bad = subprocess.run([sys.executable, "-m", "sandbox._internal.policy_build"], input=b"[1, 2",
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode == 1 and bad.stdout == b"" and b"policy build:" in bad.stderr
