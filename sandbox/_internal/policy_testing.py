"""``par policy test``: what ``opa test`` does, on the embedded engine the runner itself uses.

A security team must be able to trust that a test result says something about production, so tests
run on regorus with the very loader production uses (OPA bundle layout, data files at their paths),
plus the ``*_test.rego`` files production leaves out.

Tests are the rules named ``test_*`` in ``*_test.rego`` files. A plain test passes when it evaluates to
``true``. A table-driven test ``test_x[note] if { some note, tc in cases; ... }`` reports one result per
case: the passing notes are the keys the rule produces; the full list of notes comes from evaluating
the collection of the body's first ``some note ... in <collection>`` (found in the parsed AST), so a
failing case is reported by name instead of silently missing.

In compiled mode (``--mode compiled``, the default policy.embedded_mode) the production modules must
also pass the compiled-mode lint (a failure is a load error), and every test is cross-checked against
the RVM: regorus cannot compile ``with``, so instead every input a test feeds to a production rule
(``<stmt> with input as <expr>``, captured with a ``print`` inserted before the statement) is replayed
on both engines for each production rule that statement refers to. A test for which the two engines
disagree FAILs, naming the rule, the statement and both results, because its PASS would say nothing
about what production decides.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regorus

from sandbox._internal.policy_bundle import PolicyBundle, is_test_module, load_bundle, merge_bundles
from sandbox._internal.policy_decision import first_line
from sandbox._internal.policy_embedded import UNDEFINED, compile_bundle, compile_vm
from sandbox.errors import PolicyError

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
MODES = ("interpreter", "compiled")
_CASES_PREFIX = "__par_cases_"
_CAPTURE = "__par_rvm_input__"
_WITH_INPUT = re.compile(rb"^with\s+input\s+as\s+")


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
    notes: list[str] = field(default_factory=list)  # e.g. a test file not cross-checked in compiled mode

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


def run_tests(
    paths: Sequence[Path], *, pattern: str | None = None, coverage: bool = False, mode: str = "interpreter"
) -> TestReport:
    """Load, compile and run; PolicyError (exit 1) if anything does not load, compile or (compiled) lint."""
    if mode not in MODES:
        raise PolicyError(f"unknown mode {mode!r}; use 'interpreter' or 'compiled'")
    bundle = load_for_tests(paths)
    engine = compile_bundle(bundle, coverage=coverage, lint=mode == "compiled")
    cases = discover(engine, bundle)
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"--run {pattern!r} is not a valid regular expression: {exc}") from exc
        cases = [c for c in cases if regex.search(f"data.{c.package}.{c.name}")]
    _add_case_helpers(engine, cases, bundle)
    engine.set_gather_prints(True)
    parity = _Parity(bundle, engine) if mode == "compiled" else None
    results: list[TestResult] = []
    try:
        for case in cases:
            outcome = _run_one(engine, case)
            if parity is not None:
                parity.check(case, outcome)
            results.extend(outcome)
    finally:
        if parity is not None:
            parity.release()
    report = TestReport(results=results, bundle=bundle)
    if parity is not None:
        report.notes = [
            f"{file}: not cross-checked against the compiled engine: {why}" for file, why in parity.unchecked.items()
        ]
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


# -- compiled mode: the same answers from the RVM ---------------------------------------------------


@dataclass
class _Statement:
    """A statement of a test module that evaluates production rules; replayed on both engines."""

    file: str
    line: int
    rules: list[str]  # production rule paths it refers to, e.g. data.par.decision
    with_input: bool  # False: evaluated without input (a test rule's own body)


class _Parity:
    """Replays what the tests feed to production rules on the interpreter and on the RVM."""

    def __init__(self, bundle: PolicyBundle, engine: Any) -> None:
        self.production = PolicyBundle(
            root=bundle.root,
            modules=tuple(m for m in bundle.modules if not is_test_module(m[0])),
            data=bundle.data,
            revision=bundle.revision,
            files=bundle.files,
        )
        asts = json.loads(engine.get_ast_as_json())
        self.rule_paths = _production_rules(asts)
        self.statements: dict[int, _Statement] = {}
        self.by_test: dict[tuple[str, str], list[int]] = {}
        self.unchecked: dict[str, str] = {}  # test file -> why its inputs could not be captured
        self.capture = self._instrument(asts)
        self.interp = compile_bundle(self.production)
        self.vms: dict[str, Any] = {}
        self.memo: dict[tuple[str, str | None], tuple[str, str] | None] = {}

    def release(self) -> None:
        """Drop the engines now, in this thread: regorus objects are unsendable, and one left in a
        reference cycle would be collected (and leaked, with a warning) by whichever thread runs the GC."""
        self.vms.clear()
        self.interp = None
        self.capture = None

    # instrumentation: print each `with input as` value just before its statement
    def _instrument(self, asts: list[dict[str, Any]]) -> Any:
        capture = regorus.Engine()
        capture.set_gather_prints(True)
        sources = dict(self.production.modules)
        for name, text in sources.items():
            capture.add_policy(name, text)
        for module in asts:
            name = module["source"]["file"]
            if not is_test_module(name) or name.startswith(_CASES_PREFIX):
                continue
            source = module["source"]["contents"].encode("utf-8")
            package = _ref_text(module["ast"]["package"]["refr"])
            edits: list[tuple[int, int, bytes]] = []
            for rule in module["ast"].get("rules", []):
                spec = rule.get("Spec")
                if spec is not None:
                    edits.extend(self._edits(spec, name, package, source))
            patched = bytearray(source)
            for start, end, replacement in sorted(edits, reverse=True):
                patched[start:end] = replacement
            try:
                capture.add_policy(name, patched.decode("utf-8"))
            except Exception as exc:  # noqa: BLE001 - keep the test run; say which file was not cross-checked
                capture.add_policy(name, source.decode("utf-8"))
                self.unchecked[name] = f"its inputs could not be captured ({first_line(str(exc))})"
        try:
            capture.add_data_json(self.production.data_json)
        except Exception as exc:
            raise PolicyError(f"policy data rejected by the engine: {first_line(str(exc))}") from exc
        return capture

    def _edits(
        self, spec: dict[str, Any], file: str, package: str, source: bytes
    ) -> list[tuple[int, int, bytes]]:
        head = spec.get("head", {})
        inner: dict[str, Any] = next(iter(head.values()), {}) if head else {}
        ref = inner.get("refr", {})
        name = ref.get("Var", {}).get("value") if "Var" in ref else None
        is_test = isinstance(name, str) and name.startswith("test_")
        edits = []
        for body in spec.get("bodies", []):
            query = body.get("query", {})
            at = int(query.get("span", {}).get("start", 0))
            braced = source[at : at + 1] == b"{"  # `if { ... }`, not `if <one statement>`
            for stmt in query.get("stmts", []):
                mods = stmt.get("with_mods") or []
                rules = self._rules_in(stmt.get("literal", {}))
                if not rules:
                    continue
                n = len(self.statements)
                line = int(stmt["span"]["line"])
                if not mods:
                    if is_test:  # a test rule runs without input
                        self.statements[n] = _Statement(file, line, rules, with_input=False)
                        self.by_test.setdefault((package, str(name)), []).append(n)
                    continue
                targets = [_ref_text(m["refr"]) if _is_plain_ref(m["refr"]) else "?" for m in mods]
                if targets != ["input"]:
                    continue  # `with data...` cannot be replayed on a production engine
                mod_span = mods[0]["span"]
                as_text = _WITH_INPUT.sub(b"", source[int(mod_span["start"]) : int(mod_span["end"])])
                self.statements[n] = _Statement(file, line, rules, with_input=True)
                start, end = int(stmt["span"]["start"]), int(stmt["span"]["end"])
                probe = b'print("' + _CAPTURE.encode() + b'", ' + str(n).encode() + b", json.marshal(" + as_text + b"))"
                original = source[start:end]
                text = probe + b"; " + original if braced else b"{ " + probe + b"; " + original + b" }"
                edits.append((start, end, text))
        return edits

    def _rules_in(self, literal: dict[str, Any]) -> list[str]:
        found: list[str] = []

        def walk(n: Any) -> None:
            if isinstance(n, list):
                for x in n:
                    walk(x)
            elif isinstance(n, dict):
                for kind, inner in n.items():
                    if kind in ("RefDot", "RefBrack", "Var") and isinstance(inner, dict):
                        path = _data_path({kind: inner})
                        if path is not None:
                            rule = self._rule_of(path)
                            if rule is not None and rule not in found:
                                found.append(rule)
                                continue
                    if kind != "span":
                        walk(inner)

        walk(literal)
        return found

    def _rule_of(self, path: list[str]) -> str | None:
        for i in range(len(path), 1, -1):
            candidate = "data." + ".".join(path[1:i])
            if candidate in self.rule_paths:
                return candidate
        return None

    # checking
    def check(self, case: TestCase, results: list[TestResult]) -> None:
        ids = list(self.by_test.get((case.package, case.name), []))
        inputs: list[tuple[int, str]] = []
        self.capture.take_prints()
        # An error is the test's own ERROR, which the interpreter run reports; its prints still count.
        with contextlib.suppress(Exception):
            self.capture.eval_rule_as_json(f"data.{case.package}.{case.name}")
        for line in self.capture.take_prints():
            marker = line.find(_CAPTURE + " ")
            if marker < 0:
                continue
            n_text, _, payload = line[marker + len(_CAPTURE) + 1 :].partition(" ")
            if n_text.isdigit() and payload != "<undefined>":
                inputs.append((int(n_text), payload))
        notes: list[str] = []
        for n in ids:
            notes.extend(self._compare(n, None))
        for n, payload in dict.fromkeys(inputs):
            notes.extend(self._compare(n, payload))
        if not notes:
            return
        note = "differs in compiled mode: " + "; ".join(dict.fromkeys(notes))
        for r in results:
            r.status = FAIL
            r.message = f"{r.message}; {note}" if r.message else note

    def _compare(self, n: int, payload: str | None) -> list[str]:
        st = self.statements[n]
        out = []
        for rule in st.rules:
            key = (rule, payload)
            if key not in self.memo:
                self.memo[key] = self._evaluate(rule, payload)
            diff = self.memo[key]
            if diff is not None:
                where = f"{st.file}:{st.line}"
                out.append(f"{rule} at {where}: interpreter {diff[0]}, compiled {diff[1]}")
        return out

    def _evaluate(self, rule: str, payload: str | None) -> tuple[str, str] | None:
        if rule not in self.vms:
            try:
                self.vms[rule] = compile_vm(self.production, rule)
            except Exception:  # noqa: BLE001 - production falls back to the interpreter for this query too
                self.vms[rule] = None
        vm = self.vms[rule]
        if vm is None:
            return None
        interp = self.interp if payload is not None else compile_bundle(self.production)
        if payload is None:
            vm = compile_vm(self.production, rule)  # a VM that never had an input
        a = _outcome(interp, interp.eval_rule_as_json, rule, payload)
        b = _outcome(vm, vm.execute_entry_point, rule, payload)
        if a == b:
            return None
        return _short(a), _short(b)


def _outcome(engine: Any, run: Any, rule: str, payload: str | None) -> str:
    try:
        if payload is not None:
            engine.set_input_json(payload)
        value = json.loads(run(rule))
    except Exception as exc:  # noqa: BLE001 - an error is an outcome to compare, not a crash
        return "error: " + first_line(str(exc)).split(" error:")[-1].strip()
    if value == UNDEFINED:
        return "undefined"
    return json.dumps(value, sort_keys=True)


def _short(text: str) -> str:
    if text.startswith("error"):
        return "an error (conflict)"
    return text if len(text) <= 200 else text[:197] + "..."


def _production_rules(asts: list[dict[str, Any]]) -> set[str]:
    paths: set[str] = set()
    for module in asts:
        if is_test_module(module["source"]["file"]) or module["source"]["file"].startswith(_CASES_PREFIX):
            continue
        package = _ref_text(module["ast"]["package"]["refr"])
        for rule in module["ast"].get("rules", []):
            if "Default" in rule:
                ref = rule["Default"]["refr"]
            else:
                head = rule.get("Spec", {}).get("head", {})
                if "Func" in head:
                    continue  # functions are reached through the rules that call them
                inner: dict[str, Any] = next(iter(head.values()), {}) if head else {}
                ref = inner.get("refr", {})
            while "RefBrack" in ref or ("RefDot" in ref and "Var" not in ref["RefDot"]["refr"]):
                ref = (ref.get("RefBrack") or ref.get("RefDot"))["refr"]
            if "Var" in ref:
                paths.add(f"data.{package}.{ref['Var']['value']}")
            elif "RefDot" in ref:
                paths.add(f"data.{package}.{_ref_text(ref)}")
    return paths


def _is_plain_ref(ref: dict[str, Any]) -> bool:
    return "Var" in ref or ("RefDot" in ref and _is_plain_ref(ref["RefDot"]["refr"]))


def _data_path(ref: dict[str, Any]) -> list[str] | None:
    """``data.a.b["c"]`` as ["data", "a", "b", "c"] up to the first non-constant part; None if not data."""
    parts: list[str] = []
    node = ref
    while True:
        if "Var" in node:
            parts.append(str(node["Var"]["value"]))
            break
        if "RefDot" in node:
            parts.append(str(node["RefDot"]["field"][1]))
            node = node["RefDot"]["refr"]
        elif "RefBrack" in node:
            idx = node["RefBrack"]["index"]
            key = idx.get("String") or idx.get("RawString")
            parts = [] if key is None else [*parts, str(key["value"])]
            node = node["RefBrack"]["refr"]
        else:
            return None
    parts.reverse()
    return parts if parts[0] == "data" and len(parts) > 1 else None
