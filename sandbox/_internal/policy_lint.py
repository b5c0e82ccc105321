"""A load-time lint that makes compiled (RVM) evaluation decide exactly what the interpreter decides.

regorus' RVM and its interpreter differ only where a rule could have more than one value: the
interpreter reports a conflict (an error, so the decision is a fail-closed deny), while the RVM yields
*undefined* for two disagreeing definitions and silently keeps the *last* value of a body that
produces several. Either can make a deny rule quietly not fire. So a bundle evaluated in compiled mode
must not contain a rule that could be multi-valued at all; this lint proves that, syntactically and
conservatively (when in doubt it rejects, naming file:line, the rule and how to rewrite it):

* Definitions that could both apply (several definitions of one complete rule or function, partial
  object rules whose paths may overlap, or one rule with several bodies) must all have the same
  constant value in every ``else`` branch (``allow if ...`` is ``true``); otherwise rewrite them as one
  rule with ``else``.
* Every value a rule can produce (head value and each ``else`` value) must be *determined*: fixed by
  the function's arguments, or for ``p[k] := v`` by the key ``k``, plus ``input``, ``data``, other
  rules and constants. A variable is determined when it is bound by ``:=`` (or ``=`` against a plain
  pattern) from a determined expression, or by ``some k, v in c`` with ``k`` and ``c`` determined
  (collection keys are unique). A variable bound any other way (``some x in``, ``some x``, ``x[_]``,
  an unbound index, ``walk``) may take several values, and a value that depends on it is rejected.
  Iteration the value does not depend on is harmless and allowed; comprehensions are one value;
  ``not`` and ``every`` bind nothing outside.

Partial sets (``contains``) cannot conflict and are not checked for that. Test modules
(``*_test.rego``) run on the interpreter and are not linted.

Checking regorus 0.13 against its interpreter shape by shape found one more class of difference: the
RVM keeps going with an *undefined* value where Rego says the expression, and so the body or the
element, is undefined. ``x := input.missing`` does not fail the body (``allow if { x := input.missing;
not x }`` is true), and a partial set member, partial object key or value, or comprehension term
built from something undefined is stored as the string ``"<undefined>"`` (a set of grants that should
be empty is not). Unification (``=``), comparisons, calls and complete rule values are evaluated
correctly. So, for compiled mode:

* :func:`harden` compiles every ``x := e`` statement as ``x = e``, the same thing for a fresh local in
  Rego, which the RVM gets right; a ``:=`` whose variable has the name of a rule or import (where
  ``=`` would compare with it instead) is rejected: rename the variable;
* a partial set member, partial object key/value and comprehension term must be built only from
  constants and variables bound in the body (``[r | some d in ds; r := d.reason]``, not
  ``[d.reason | some d in ds]``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import regorus

from sandbox._internal.policy_bundle import is_test_module
from sandbox._internal.policy_decision import first_line
from sandbox.errors import PolicyError

MAX_REPORTED = 20
_WILDCARD = "_"
_COMPREHENSIONS = ("ArrayCompr", "SetCompr", "ObjectCompr")
_PATTERN_KINDS = ("Var", "Array", "Object", "Number", "String", "RawString", "Bool", "Null")
_CONSTANT_KINDS = ("Number", "String", "RawString", "Bool", "Null")
_MULTI_VALUED_BUILTINS = frozenset({"walk"})  # relations: one call, several results
_TRUE: dict[str, Any] = {"Bool": {"value": True}}

_REWRITE_VALUE = (
    "Make the head value constant, compute it with a comprehension (e.g. `[x | some x in ...]`), or bind "
    "it with `:=` from values that do not iterate"
)
_REWRITE_DEFS = (
    "give every definition the same constant value (e.g. `allow if ...`), or merge them into one rule with `else`"
)
_REWRITE_TERM = (
    "build it only from constants and variables bound in the body, e.g. `[r | some d in ds; r := d.reason]` "
    "instead of `[d.reason | some d in ds]`: the compiled engine stores an undefined part as the string "
    '"<undefined>" where the interpreter leaves the element out'
)


@dataclass(frozen=True)
class LintProblem:
    file: str
    line: int
    rule: str  # data path, e.g. data.par.decision
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


def check_engine(engine: Any) -> None:
    """PolicyError listing every problem of the (non-test) modules loaded into a regorus engine."""
    problems = lint_engine(engine)
    if not problems:
        return
    shown = "\n".join(f"  {p}" for p in problems[:MAX_REPORTED])
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    raise PolicyError(
        f"policy is not safe for compiled mode ({len(problems)} problem(s) where the compiled engine would not "
        f"answer what the interpreter answers):\n{shown}{more}",
        hint="Rewrite the rules as each message says (docs/policy-input.md, 'Embedded modes'), or set "
        "policy.embedded_mode: interpreter.",
    )


def lint_engine(engine: Any) -> list[LintProblem]:
    try:
        modules = json.loads(engine.get_ast_as_json())
    except Exception as exc:
        raise PolicyError(
            f"cannot read the parsed policies for the compiled-mode lint: {first_line(str(exc))}"
        ) from exc
    return lint_modules(m for m in modules if not is_test_module(m["source"]["file"]))


def lint_modules(modules: Iterable[dict[str, Any]]) -> list[LintProblem]:
    """Problems in regorus AST modules (``engine.get_ast_as_json()`` entries), in file and line order."""
    defs: list[_Definition] = []
    rule_names: dict[tuple[str, ...], set[str]] = {}
    aliases: dict[int, set[str]] = {}
    problems: list[LintProblem] = []
    parsed = list(modules)
    for module in parsed:
        ast = module["ast"]
        package = tuple(_static_path(ast["package"]["refr"]) or ())
        names = rule_names.setdefault(package, set())
        for rule in ast.get("rules", []):
            root = _rule_root(rule)
            if root is not None:
                names.add(root)
        aliases[id(module)] = {_import_alias(i) for i in ast.get("imports", [])}
    for module in parsed:
        ast = module["ast"]
        file = module["source"]["file"]
        source = module["source"]["contents"].encode("utf-8")
        package = tuple(_static_path(ast["package"]["refr"]) or ())
        globals_ = rule_names[package] | aliases[id(module)] | {"input", "data"}
        for rule in ast.get("rules", []):
            spec = rule.get("Spec")
            if spec is None:
                continue  # default rules: a fallback, never in conflict
            d = _definition(spec, package, file, source=source, globals_=globals_, problems=problems)
            if d is not None:
                defs.append(d)
            problems.extend(_undefined_parts(spec, package, file, source, globals_))
        _, shadowing = _hardening_edits(module, globals_)
        problems.extend(shadowing)
    for d in defs:
        problems.extend(d.check_values())
    problems.extend(_overlapping(defs))
    problems.sort(key=lambda p: (p.file, p.line, p.rule))
    return problems


# -- definitions ------------------------------------------------------------------------------------


@dataclass
class _Branch:
    value: dict[str, Any]  # the AST of the value this branch produces
    stmts: list[dict[str, Any]]  # its body (empty for a body-less rule)


@dataclass
class _Definition:
    file: str
    line: int
    name: str  # data path for messages
    kind: str  # "rule" | "function" | "object"
    path: tuple[str | None, ...]  # package + head path; None for a non-constant key
    seeds: frozenset[str]  # variables fixed by the head: function arguments, object keys
    branches: list[_Branch]
    chains: int  # independent bodies (not counting else): more than one is like several definitions
    source: bytes
    globals: frozenset[str]

    def constant_values(self) -> list[str] | None:
        out = []
        for b in self.branches:
            c = _constant(b.value)
            if c is None:
                return None
            out.append(c)
        return out

    def check_values(self) -> Iterator[LintProblem]:
        if self.chains > 1 and self.constant_values() is None:
            yield LintProblem(
                self.file,
                self.line,
                self.name,
                f"has {self.chains} bodies for one non-constant value, which could disagree; {_REWRITE_DEFS}",
            )
        for b in self.branches:
            loose = _Body(b.stmts, self.seeds, self.globals, self.source).undetermined(b.value)
            if not loose:
                continue
            text = _text(self.source, b.value)
            per = {"function": "for one call", "object": "for one key"}.get(self.kind, "")
            yield LintProblem(
                self.file,
                _line(b.value, self.line),
                self.name,
                f"value `{text}` depends on {', '.join(sorted(loose))}, which can take several values "
                f"{per}{' ' if per else ''}(bound by iteration: `some`, `_`, an unbound index or walk); the "
                f"compiled engine would silently keep the last one where the interpreter reports a conflict. "
                f"{_REWRITE_VALUE}",
            )


def _definition(
    spec: dict[str, Any],
    package: tuple[str, ...],
    file: str,
    *,
    source: bytes,
    globals_: set[str],
    problems: list[LintProblem],
) -> _Definition | None:
    head = spec["head"]
    line = int(spec["span"]["line"])
    if "Set" in head:
        return None  # partial set: contributes members, cannot conflict
    if "Func" in head:
        h, kind = head["Func"], "function"
        seeds = {v for arg in h.get("args", []) for v in _vars(arg)}
        path: tuple[str | None, ...] = (*package, *(_static_path(h["refr"]) or ("?",)))
    elif "Compr" in head:
        h = head["Compr"]
        parts = _head_path(h["refr"])
        if parts is None:
            problems.append(
                LintProblem(
                    file,
                    line,
                    ".".join(package),
                    f"rule head `{_text(source, h['refr'])}` "
                    "is not a path the lint understands; write it as name, name.field or name[key]",
                )
            )
            return None
        path = (*package, *(p for p, _ in parts))
        keyed = [idx for _, idx in parts if idx is not None]
        kind = "object" if keyed else "rule"
        seeds = {v for idx in keyed if _is_pattern(idx) for v in _vars(idx)}
    else:
        problems.append(LintProblem(file, line, ".".join(package), f"unknown rule head kind {sorted(head)}"))
        return None
    name = "data." + ".".join(p if p is not None else "[_]" for p in path)
    value = h["assign"]["value"] if h.get("assign") else _TRUE
    branches: list[_Branch] = []
    chains = 0
    current = value
    bodies = spec.get("bodies", [])
    if not bodies:
        branches.append(_Branch(value, []))
        chains = 1
    for body in bodies:
        if body.get("is_else"):
            current = body["assign"]["value"] if body.get("assign") else _TRUE
        else:
            chains += 1
            current = value
        branches.append(_Branch(current, body.get("query", {}).get("stmts", [])))
    return _Definition(file, line, name, kind, path, frozenset(seeds), branches, chains, source, frozenset(globals_))


def _overlapping(defs: list[_Definition]) -> Iterator[LintProblem]:
    """Definitions that could both produce a value at one path must agree on one constant."""
    reported: set[int] = set()
    for i, a in enumerate(defs):
        if i in reported:
            continue
        others = [b for j, b in enumerate(defs) if j != i and _may_overlap(a.path, b.path)]
        if not others:
            continue
        mine = a.constant_values()
        if mine is not None and len(set(mine)) == 1:
            theirs = [b.constant_values() for b in others]
            if all(t is not None and set(t) == set(mine) for t in theirs):
                continue
        reported.update(j for j, b in enumerate(defs) if j != i and _may_overlap(a.path, b.path))
        where = ", ".join(f"{b.file}:{b.line}" for b in others[:5])
        yield LintProblem(
            a.file,
            a.line,
            a.name,
            f"defined more than once (also {where}) and the definitions can give different values: the compiled "
            f"engine makes that undefined (a deny could silently not fire) where the interpreter reports a "
            f"conflict; {_REWRITE_DEFS}",
        )


def _may_overlap(a: tuple[str | None, ...], b: tuple[str | None, ...]) -> bool:
    """True unless two paths differ in a constant segment before either ends or has a variable key."""
    for x, y in zip(a, b, strict=False):
        if x is None or y is None:
            return True
        if x != y:
            return False
    return True  # equal, or one is a prefix of the other (a value inside another rule's value)


# -- the binding analysis -----------------------------------------------------------------------------


class _Body:
    """Which variables of one body have a single value once the seeds are fixed."""

    def __init__(
        self, stmts: list[dict[str, Any]], seeds: frozenset[str], globals_: frozenset[str], source: bytes
    ) -> None:
        self.stmts = stmts
        declared = set(seeds)
        for st in stmts:
            declared |= _declared(st.get("literal", {}), source)
        self.globals = {g for g in globals_ if g not in declared}
        self.determined: set[str] = set(seeds)
        self.locals = _all_vars_of(stmts) - self.globals
        for _ in range(len(stmts) + 1):  # a fixpoint: Rego orders statements by safety, not by text
            before = len(self.determined)
            for st in stmts:
                self._bind(st.get("literal", {}))
            if len(self.determined) == before:
                break

    def undetermined(self, expr: dict[str, Any]) -> set[str]:
        free, in_compr, multi = _refs(expr)
        loose = {v for v in free if v not in self.globals and v not in self.determined}
        loose |= {v for v in in_compr if v in self.locals and v not in self.determined}
        if multi:
            loose.add("walk(...)")
        return {"_" if v == _WILDCARD else v for v in loose}

    def _det(self, expr: dict[str, Any]) -> bool:
        return not self.undetermined(expr)

    def _bind(self, literal: dict[str, Any]) -> None:
        if "SomeIn" in literal:
            s = literal["SomeIn"]
            if s.get("key") is not None and self._det(s["key"]) and self._det(s["collection"]):
                self.determined |= _vars(s["value"]) - {_WILDCARD}
            return
        expr = literal.get("Expr", {}).get("expr", {})
        assign = expr.get("AssignExpr")
        if assign is None:
            return
        lhs, rhs = assign["lhs"], assign["rhs"]
        if assign["op"] == "ColEq":
            if self._det(rhs):
                self.determined |= _vars(lhs) - {_WILDCARD}
            return
        for target, other in ((lhs, rhs), (rhs, lhs)):  # unification: a plain pattern against a single value
            if _is_pattern(target) and self._det(other):
                self.determined |= _vars(target) - {_WILDCARD}


def _declared(literal: dict[str, Any], source: bytes) -> set[str]:
    """Names a statement makes local (shadowing rules of the same name)."""
    if "SomeVars" in literal:  # the AST keeps only the spans of the names
        spans = literal["SomeVars"].get("vars", [])
        return {source[int(s["start"]) : int(s["end"])].decode("utf-8", "replace") for s in spans}
    if "SomeIn" in literal:
        s = literal["SomeIn"]
        return _vars(s["value"]) | (_vars(s["key"]) if s.get("key") is not None else set())
    assign = literal.get("Expr", {}).get("expr", {}).get("AssignExpr")
    if assign is not None and assign["op"] == "ColEq":
        return _vars(assign["lhs"])
    return set()


def _all_vars_of(stmts: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for st in stmts:
        free, in_compr, _ = _refs(st.get("literal", {}))
        out |= free | in_compr
    return out


def _refs(node: Any) -> tuple[set[str], set[str], bool]:
    """(variables outside comprehensions, variables inside them, uses a multi-valued builtin)."""
    free: set[str] = set()
    in_compr: set[str] = set()
    multi = [False]

    def walk(n: Any, sink: set[str]) -> None:
        if isinstance(n, list):
            for x in n:
                walk(x, sink)
            return
        if not isinstance(n, dict):
            return
        for kind, inner in n.items():
            if kind == "Var" and isinstance(inner, dict):
                sink.add(str(inner.get("value")))
            elif kind in _COMPREHENSIONS:
                walk(inner, in_compr)
            elif kind == "Call" and isinstance(inner, dict):
                fcn = _static_path(inner.get("fcn", {}))
                if fcn is not None and ".".join(fcn) in _MULTI_VALUED_BUILTINS:
                    multi[0] = True
                walk(inner.get("params", []), sink)
            elif kind in ("Every", "NotExpr"):
                # binds nothing outside; its own variables are local to it
                walk(inner, in_compr)
            elif kind != "span":
                walk(inner, sink)

    walk(node, free)
    return free, in_compr, multi[0]


def _vars(node: Any) -> set[str]:
    free, in_compr, _ = _refs(node)
    return free | in_compr


def _is_pattern(node: dict[str, Any]) -> bool:
    """Vars, constants and arrays/objects of them: unifying one with a value binds at most one way."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    kind, inner = next(iter(node.items()))
    if kind not in _PATTERN_KINDS:
        return False
    if kind == "Array":
        return all(_is_pattern(x) for x in inner.get("items", []))
    if kind == "Object":
        fields = inner.get("fields", [])
        return all(
            isinstance(f, list) and len(f) == 3 and _constant(f[1]) is not None and _is_pattern(f[2]) for f in fields
        )
    return True


def _constant(node: dict[str, Any]) -> str | None:
    """Canonical text of a constant term, None if the term is not constant."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, inner = next(iter(node.items()))
    if kind in _CONSTANT_KINDS:
        return json.dumps([kind if kind != "RawString" else "String", inner.get("value")], sort_keys=True)
    if kind in ("Array", "Set"):
        items = [_constant(x) for x in inner.get("items", [])]
        if any(i is None for i in items):
            return None
        if kind == "Set":
            items = sorted(set(items))  # type: ignore[type-var]
        return f"{kind}[{','.join(items)}]"  # type: ignore[arg-type]
    if kind == "Object":
        pairs = []
        for f in inner.get("fields", []):
            if not (isinstance(f, list) and len(f) == 3):
                return None
            k, v = _constant(f[1]), _constant(f[2])
            if k is None or v is None:
                return None
            pairs.append(f"{k}:{v}")
        return "Object{" + ",".join(sorted(pairs)) + "}"
    return None


# -- paths and text -----------------------------------------------------------------------------------


def _static_path(ref: dict[str, Any]) -> list[str] | None:
    """``a.b["c"]`` as ["a", "b", "c"]; None if any part is not constant."""
    if "Var" in ref:
        return [str(ref["Var"]["value"])]
    if "RefDot" in ref:
        inner = _static_path(ref["RefDot"]["refr"])
        return None if inner is None else [*inner, str(ref["RefDot"]["field"][1])]
    if "RefBrack" in ref:
        inner = _static_path(ref["RefBrack"]["refr"])
        idx = ref["RefBrack"]["index"]
        key = idx.get("String") or idx.get("RawString")
        if inner is None or key is None:
            return None
        return [*inner, str(key["value"])]
    return None


def _head_path(ref: dict[str, Any]) -> list[tuple[str | None, dict[str, Any] | None]] | None:
    """A rule head as (constant segment, None) or (None, key expression) parts; None if unreadable."""
    if "Var" in ref:
        return [(str(ref["Var"]["value"]), None)]
    if "RefDot" in ref:
        inner = _head_path(ref["RefDot"]["refr"])
        return None if inner is None else [*inner, (str(ref["RefDot"]["field"][1]), None)]
    if "RefBrack" in ref:
        inner = _head_path(ref["RefBrack"]["refr"])
        if inner is None:
            return None
        idx = ref["RefBrack"]["index"]
        key = idx.get("String") or idx.get("RawString")
        return [*inner, (str(key["value"]), None) if key is not None else (None, idx)]
    return None


def _rule_root(rule: dict[str, Any]) -> str | None:
    if "Default" in rule:
        ref = rule["Default"]["refr"]
    else:
        head = rule.get("Spec", {}).get("head", {})
        inner: dict[str, Any] = next(iter(head.values()), {}) if head else {}
        ref = inner.get("refr", {})
    while isinstance(ref, dict) and ("RefDot" in ref or "RefBrack" in ref):
        ref = ref["RefDot"]["refr"] if "RefDot" in ref else ref["RefBrack"]["refr"]
    if isinstance(ref, dict) and "Var" in ref:
        return str(ref["Var"]["value"])
    return None


def _import_alias(imp: dict[str, Any]) -> str:
    alias = imp.get("as")
    if isinstance(alias, list) and len(alias) == 2:
        return str(alias[1])
    if isinstance(alias, str):
        return alias
    path = _static_path(imp.get("refr", {})) or [""]
    return path[-1]


def _span(node: Any) -> dict[str, Any] | None:
    if isinstance(node, dict):
        span = node.get("span")
        if isinstance(span, dict):
            return span
        for inner in node.values():
            if isinstance(inner, dict) and isinstance(inner.get("span"), dict):
                found: dict[str, Any] = inner["span"]
                return found
    return None


def _text(source: bytes, node: Any) -> str:
    """The source of ``node`` for a message: from its line and column to the end of that line.

    (regorus' byte offsets are unreliable for some terms, e.g. object literals; line and column are not.)
    """
    if isinstance(node, dict) and "Var" in node:
        return str(node["Var"].get("value"))
    span = _first_span(node)
    if span is None:
        return "true"
    lines = source.decode("utf-8", "replace").splitlines()
    line, col = int(span["line"]), int(span["col"])
    if not 1 <= line <= len(lines):
        return "?"
    text = " ".join(lines[line - 1][max(0, col - 1) :].split()).split(" if ")[0]
    return text if len(text) <= 80 else text[:77] + "..."


def _first_span(node: Any) -> dict[str, Any] | None:
    """The earliest span inside ``node`` (a reference's own span starts at its last field)."""
    best: dict[str, Any] | None = None

    def walk(n: Any) -> None:
        nonlocal best
        if isinstance(n, list):
            for x in n:
                walk(x)
        elif isinstance(n, dict):
            span = n.get("span")
            if (
                isinstance(span, dict)
                and "line" in span
                and "col" in span
                and (best is None or (span["line"], span["col"]) < (best["line"], best["col"]))
            ):
                best = span
            for k, v in n.items():
                if k != "span":
                    walk(v)

    walk(node)
    return best


def _line(node: Any, default: int) -> int:
    span = _span(node)
    return int(span["line"]) if span is not None else default


# -- undefined values: what the RVM stores instead of failing ------------------------------------------


def _undefined_parts(
    spec: dict[str, Any], package: tuple[str, ...], file: str, source: bytes, globals_: set[str]
) -> Iterator[LintProblem]:
    """Partial set members, partial object keys/values and comprehension terms that could be undefined."""
    head = spec["head"]
    name = "data." + ".".join(package)
    local = _declared_anywhere(spec, source)
    terms: list[tuple[str, dict[str, Any]]] = []
    if "Set" in head:
        h = head["Set"]
        name += "." + ".".join(_static_path(h["refr"]) or ["?"])
        if h.get("key") is not None:
            terms.append(("the member", h["key"]))
    elif "Compr" in head:
        h = head["Compr"]
        parts = _head_path(h["refr"]) or []
        name += "." + ".".join(p if p is not None else "[_]" for p, _ in parts)
        keys = [idx for _, idx in parts if idx is not None]
        terms.extend(("the key", k) for k in keys)
        if keys and h.get("assign"):
            terms.append(("the value", h["assign"]["value"]))
    for kind, node in _comprehensions(spec):
        if kind == "ObjectCompr":
            terms.append(("a comprehension key", node["key"]))
            terms.append(("a comprehension value", node["value"]))
        else:
            terms.append(("a comprehension term", node["term"]))
    for what, term in terms:
        bad = _not_simple(term, globals_ - local)
        if bad is not None:
            yield LintProblem(
                file,
                _line(term, int(spec["span"]["line"])),
                name,
                f"{what} `{_text(source, term)}` uses {bad}, which can be undefined; {_REWRITE_TERM}",
            )


def _comprehensions(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        for x in node:
            yield from _comprehensions(x)
    elif isinstance(node, dict):
        for kind, inner in node.items():
            if kind in _COMPREHENSIONS and isinstance(inner, dict):
                yield kind, inner
            if kind != "span":
                yield from _comprehensions(inner)


def _not_simple(term: dict[str, Any], globals_: set[str]) -> str | None:
    """None if ``term`` is constants, local variables and collection literals of them; else what is not."""
    if not isinstance(term, dict) or len(term) != 1:
        return "an expression"
    kind, inner = next(iter(term.items()))
    if kind in _CONSTANT_KINDS:
        return None
    if kind == "Var":
        value = str(inner.get("value"))
        return f"rule or global `{value}` (bind it to a local first)" if value in globals_ else None
    if kind in ("Array", "Set"):
        for item in inner.get("items", []):
            bad = _not_simple(item, globals_)
            if bad is not None:
                return bad
        return None
    if kind == "Object":
        for f in inner.get("fields", []):
            if not (isinstance(f, list) and len(f) == 3):
                return "an object the lint cannot read"
            for part in (f[1], f[2]):
                bad = _not_simple(part, globals_)
                if bad is not None:
                    return bad
        return None
    readable = {"RefDot": "a reference", "RefBrack": "a reference", "Call": "a function call"}
    return readable.get(kind, f"an expression ({kind})")


def _declared_anywhere(spec: dict[str, Any], source: bytes) -> set[str]:
    """Every name a statement of this rule (or of a comprehension in it) declares as local."""
    out: set[str] = set()

    def walk(n: Any) -> None:
        if isinstance(n, list):
            for x in n:
                walk(x)
        elif isinstance(n, dict):
            if "literal" in n and isinstance(n["literal"], dict):
                out.update(_declared(n["literal"], source))
            for k, v in n.items():
                if k != "span":
                    walk(v)

    walk(spec.get("bodies", []))
    walk(spec.get("head", {}))
    head = spec.get("head", {})
    if "Func" in head:
        for arg in head["Func"].get("args", []):
            out |= _vars(arg)
    return out


# -- hardening: `x := e` compiled as `x = e` ----------------------------------------------------------


def harden(modules: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The module texts the RVM compiles: each ``x := e`` statement as ``x = e`` (see the docstring).

    Same length edits, so every line and column (and so every error location) stays where it was.
    PolicyError if a module cannot be hardened; the lint reports the same problems at load.
    """
    return list(_harden_cached(tuple(modules)))


@functools.lru_cache(maxsize=16)
def _harden_cached(modules: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    engine = regorus.Engine()
    try:
        for name, text in modules:
            engine.add_policy(name, text)
        asts = json.loads(engine.get_ast_as_json())
    except Exception as exc:
        raise PolicyError(f"policy does not compile: {first_line(str(exc))}") from exc
    rule_names: dict[tuple[str, ...], set[str]] = {}
    for module in asts:
        package = tuple(_static_path(module["ast"]["package"]["refr"]) or ())
        names = rule_names.setdefault(package, set())
        for rule in module["ast"].get("rules", []):
            root = _rule_root(rule)
            if root is not None:
                names.add(root)
    out: list[tuple[str, str]] = []
    for module in asts:
        package = tuple(_static_path(module["ast"]["package"]["refr"]) or ())
        globals_ = (
            rule_names[package] | {_import_alias(i) for i in module["ast"].get("imports", [])} | {"input", "data"}
        )
        edits, problems = _hardening_edits(module, globals_)
        if problems:
            raise PolicyError("; ".join(str(p) for p in problems[:5]))
        source = bytearray(module["source"]["contents"].encode("utf-8"))
        for at in edits:
            source[at : at + 2] = b" ="
        out.append((module["source"]["file"], source.decode("utf-8")))
    return tuple(out)


def _hardening_edits(module: dict[str, Any], globals_: set[str]) -> tuple[list[int], list[LintProblem]]:
    """Byte offsets of the ``:=`` of every local assignment statement, and the ones that cannot change."""
    file = module["source"]["file"]
    source = module["source"]["contents"].encode("utf-8")
    edits: list[int] = []
    problems: list[LintProblem] = []

    def visit(n: Any) -> None:
        if isinstance(n, list):
            for x in n:
                visit(x)
            return
        if not isinstance(n, dict):
            return
        assign = n.get("AssignExpr")
        if isinstance(assign, dict) and assign.get("op") == "ColEq" and "Var" in assign["lhs"]:
            var = assign["lhs"]["Var"]
            name = str(var["value"])
            span = var["span"]
            line = int(span["line"])
            start, end = int(span["start"]), int(span["end"])
            rest = source[end:]
            gap = len(rest) - len(rest.lstrip(b" \t"))
            if name != _WILDCARD and name in globals_:
                problems.append(
                    LintProblem(
                        file,
                        line,
                        name,
                        f"local `{name} := ...` has the name of a rule or import; rename the variable (compiled "
                        f"mode evaluates `:=` as `=`, which would compare with `{name}` instead of shadowing it)",
                    )
                )
            elif name != _WILDCARD and source[start:end] == name.encode() and rest[gap : gap + 2] == b":=":
                edits.append(end + gap)
            elif name != _WILDCARD:
                problems.append(LintProblem(file, line, name, f"cannot locate the `:=` of `{name}` in the source"))
        for k, v in n.items():
            if k != "span":
                visit(v)

    visit(module["ast"].get("rules", []))
    return edits, problems
