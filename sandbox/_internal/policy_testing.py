"""``par policy test``: what ``opa test`` does, on the embedded engine the runner itself uses.

A security team must be able to trust that a test result says something about production, so tests
run on regorus with the very loader production uses (OPA bundle layout, data files at their paths),
plus the ``*_test.rego`` files production leaves out.

Tests are the rules named ``test_*`` in ``*_test.rego`` files. A plain test passes when it evaluates to
``true``. A table-driven test ``test_x[note] if { some note, tc in cases; ... }`` reports one result per
case: the passing notes are the keys the rule produces; the full list of notes comes from evaluating
the collection of the body's first ``some note ... in <collection>`` (found in the parsed AST), so a
failing case is reported by name instead of silently missing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox._internal.policy_bundle import PolicyBundle, is_test_module, load_bundle, merge_bundles
from sandbox._internal.policy_decision import first_line
from sandbox._internal.policy_embedded import UNDEFINED, compile_bundle
from sandbox.errors import PolicyError

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
_CASES_PREFIX = "__par_cases_"


@dataclass
class TestCase:
    package: str  # e.g. par.ratelimit_test
    name: str  # rule name, e.g. test_scale_limit
    file: str
    line: int
    table_key: str | None = None  # the head variable of test_x[note]
    cases_expr: str | None = None  # source text of the collection the notes come from
    some_form: str = "key"  # "key": some note, _ in C;  "value": some note in C


@dataclass
class TestResult:
    case: TestCase
    status: str
    note: Any = None
    message: str = ""
    duration_ms: float = 0.0
    prints: list[str] = field(default_factory=list)

    @property
    def display(self) -> str:
        base = f"data.{self.case.package}.{self.case.name}"
        if self.case.table_key is None:
            return base
        note = self.note if isinstance(self.note, str) else json.dumps(self.note)
        return f"{base}[{note}]" if self.note is not None else base

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "package": self.case.package,
            "name": self.case.name,
            "file": self.case.file,
            "line": self.case.line,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "test": self.display,
        }
        if self.case.table_key is not None:
            out["note"] = self.note
        if self.message:
            out["message"] = self.message
        if self.prints:
            out["prints"] = self.prints
        return out


@dataclass
class TestReport:
    results: list[TestResult]
    coverage: dict[str, Any] | None = None
    bundle: PolicyBundle | None = None

    @property
    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, ERROR: 0}
        for r in self.results:
            out[r.status] += 1
        return out


def load_for_tests(paths: Sequence[Path]) -> PolicyBundle:
    bundles = [load_bundle(Path(p), include_tests=True) for p in paths]
    return merge_bundles(bundles)


def discover(engine: Any, bundle: PolicyBundle) -> list[TestCase]:
    """Every test_* rule of every *_test.rego module, in file and line order."""
    try:
        asts = json.loads(engine.get_ast_as_json())
    except Exception as exc:
        raise PolicyError(f"cannot read the parsed policies: {first_line(str(exc))}") from exc
    found: list[TestCase] = []
    seen: set[tuple[str, str]] = set()
    for module in asts:
        name = module["source"]["file"]
        if not is_test_module(name):
            continue
        source = module["source"]["contents"].encode("utf-8")
        ast = module["ast"]
        package = _ref_text(ast["package"]["refr"])
        for rule in ast.get("rules", []):
            case = _test_case(rule, package, name, source)
            if case is not None and (package, case.name) not in seen:
                seen.add((package, case.name))
                found.append(case)
    return found


def run_tests(paths: Sequence[Path], *, pattern: str | None = None, coverage: bool = False) -> TestReport:
    """Load, compile and run; PolicyError (exit 1) if anything does not load or compile."""
    bundle = load_for_tests(paths)
    engine = compile_bundle(bundle, coverage=coverage)
    cases = discover(engine, bundle)
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"--run {pattern!r} is not a valid regular expression: {exc}") from exc
        cases = [c for c in cases if regex.search(f"data.{c.package}.{c.name}")]
    _add_case_helpers(engine, cases, bundle)
    engine.set_gather_prints(True)
    results: list[TestResult] = []
    for case in cases:
        results.extend(_run_one(engine, case))
    report = TestReport(results=results, bundle=bundle)
    if coverage:
        report.coverage = _coverage(engine)
    return report


# -- internals ------------------------------------------------------------------------------------


def _ref_text(ref: dict[str, Any]) -> str:
    if "Var" in ref:
        return str(ref["Var"]["value"])
    if "RefDot" in ref:
        inner = ref["RefDot"]
        return f"{_ref_text(inner['refr'])}.{inner['field'][1]}"
    raise PolicyError(f"unsupported package reference in the AST: {list(ref)}")


def _test_case(rule: dict[str, Any], package: str, file: str, source: bytes) -> TestCase | None:
    spec = rule.get("Spec")
    if spec is None:
        return None
    head = spec.get("head", {})
    line = int(spec["span"]["line"])
    partial_set = head.get("Set")
    if partial_set is not None:  # test_x contains note if { ... }
        name = partial_set.get("refr", {}).get("Var", {}).get("value", "")
        key_var = (partial_set.get("key") or {}).get("Var", {}).get("value")
        if not name.startswith("test_"):
            return None
        if key_var is None:
            return TestCase(package, name, file, line, table_key="")
        expr, form = _cases_collection(spec, key_var, source)
        return TestCase(package, name, file, line, table_key=key_var, cases_expr=expr, some_form=form)
    compr = head.get("Compr")
    if compr is None:
        return None
    ref = compr.get("refr", {})
    if "Var" in ref:
        name = ref["Var"]["value"]
        return TestCase(package, name, file, line) if name.startswith("test_") else None
    brack = ref.get("RefBrack")
    if brack is None or "Var" not in brack.get("refr", {}):
        return None
    name = brack["refr"]["Var"]["value"]
    if not name.startswith("test_"):
        return None
    key_var = brack.get("index", {}).get("Var", {}).get("value")
    if key_var is None:
        return TestCase(package, name, file, line, table_key="")
    expr, form = _cases_collection(spec, key_var, source)
    return TestCase(package, name, file, line, table_key=key_var, cases_expr=expr, some_form=form)


def _cases_collection(spec: dict[str, Any], key_var: str, source: bytes) -> tuple[str | None, str]:
    for body in spec.get("bodies", []):
        for stmt in body.get("query", {}).get("stmts", []):
            some_in = stmt.get("literal", {}).get("SomeIn")
            if some_in is None:
                continue
            key = (some_in.get("key") or {}).get("Var", {}).get("value")
            value = (some_in.get("value") or {}).get("Var", {}).get("value")
            span = _span_of(some_in.get("collection", {}))
            if span is None:
                continue
            text = source[span[0] : span[1]].decode("utf-8", "replace")
            if key == key_var and value is not None:
                return text, "key"
            if value == key_var and key is None:
                return text, "value"
            if key == key_var:
                return text, "value"  # "some note in C": the parser puts the single var in key
    return None, "key"


def _span_of(node: dict[str, Any]) -> tuple[int, int] | None:
    for inner in node.values():
        if isinstance(inner, dict) and "span" in inner:
            return int(inner["span"]["start"]), int(inner["span"]["end"])
    return None


def _add_case_helpers(engine: Any, cases: list[TestCase], bundle: PolicyBundle) -> None:
    """For table tests, add rules listing every note, in the test's own package and imports."""
    by_file: dict[str, list[TestCase]] = {}
    for c in cases:
        if c.cases_expr is not None:
            by_file.setdefault(c.file, []).append(c)
    sources = dict(bundle.modules)
    for file, file_cases in by_file.items():
        imports = _imports_of(sources.get(file, ""))
        lines = [f"package {file_cases[0].package}", "", *imports, ""]
        for c in file_cases:
            binding = "some __k, _ in" if c.some_form == "key" else "some __k in"
            lines.append(f"{_CASES_PREFIX}{c.name} contains __k if {{ {binding} ({c.cases_expr}) }}")
        try:
            engine.add_policy(f"{_CASES_PREFIX}{file}", "\n".join(lines) + "\n")
        except Exception:  # noqa: BLE001 - an unusual collection expression: fall back to reporting passes only
            for c in file_cases:
                c.cases_expr = None


def _imports_of(source: str) -> list[str]:
    return [ln.strip() for ln in source.splitlines() if re.match(r"^\s*import\s+\S", ln)]


def _run_one(engine: Any, case: TestCase) -> list[TestResult]:
    rule = f"data.{case.package}.{case.name}"
    start = time.perf_counter()
    try:
        value = json.loads(engine.eval_rule_as_json(rule))
        if value == UNDEFINED:
            value = None
    except Exception as exc:  # noqa: BLE001 - any evaluation error is the test's ERROR, not ours
        prints = engine.take_prints()
        ms = (time.perf_counter() - start) * 1000
        return [TestResult(case, ERROR, message=first_line(str(exc)), duration_ms=ms, prints=prints)]
    ms = (time.perf_counter() - start) * 1000
    prints = engine.take_prints()
    if case.table_key is None:
        if value is True:
            return [TestResult(case, PASS, duration_ms=ms, prints=prints)]
        message = "undefined (the test body did not succeed)" if value is None else f"evaluated to {value!r}"
        return [TestResult(case, FAIL, message=message, duration_ms=ms, prints=prints)]
    passed = _passing_notes(value)
    expected = _expected_notes(engine, case)
    results = []
    notes = expected if expected is not None else passed
    share = ms / max(1, len(notes))  # one evaluation ran every case: split its time
    for note in notes:
        status = PASS if _canon(note) in {_canon(p) for p in passed} else FAIL
        msg = "" if status == PASS else "this case did not succeed"
        results.append(
            TestResult(case, status, note=note, message=msg, duration_ms=share, prints=prints)
        )
    if not results:
        results.append(
            TestResult(case, FAIL, message="no case of this table test succeeded", duration_ms=ms, prints=prints)
        )
    return results


def _passing_notes(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [k for k, v in value.items() if v is not False]
    if isinstance(value, list):
        return list(value)
    return []


def _expected_notes(engine: Any, case: TestCase) -> list[Any] | None:
    if case.cases_expr is None:
        return None
    try:
        value = json.loads(engine.eval_rule_as_json(f"data.{case.package}.{_CASES_PREFIX}{case.name}"))
    except Exception:  # noqa: BLE001 - the helper did not evaluate: report the passing cases only
        return None
    if not isinstance(value, list):
        return None
    return sorted(value, key=_canon)


def _canon(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _coverage(engine: Any) -> dict[str, Any]:
    raw = json.loads(engine.get_coverage_report_as_json())
    files = []
    total_cov = total_all = 0
    for f in raw.get("files", []):
        path = f["path"]
        if path.startswith(_CASES_PREFIX) or is_test_module(path):
            continue
        covered, missed = len(f.get("covered", [])), len(f.get("not_covered", []))
        total_cov += covered
        total_all += covered + missed
        files.append(
            {
                "file": path,
                "covered_lines": f.get("covered", []),
                "not_covered_lines": f.get("not_covered", []),
                "coverage": round(100.0 * covered / (covered + missed), 2) if covered + missed else 100.0,
            }
        )
    return {
        "granularity": "line",
        "note": "line-level coverage from regorus: a line counts as covered when any expression on it was evaluated",
        "files": files,
        "coverage": round(100.0 * total_cov / total_all, 2) if total_all else 100.0,
    }
