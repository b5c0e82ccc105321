"""``par policy test`` (opa test on the embedded engine) and ``par check`` (would this be allowed?)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox._internal.cli.common import catalog_from, config_from, json_arg, key_value_params, print_json
from sandbox._internal.policy_testing import ERROR, FAIL, PASS, TestReport, run_tests
from sandbox.config import PolicyConfig
from sandbox.errors import Error, PolicyError, UnknownActionError
from sandbox.policy import build_task_input, open_engine

# opa test's exit codes.
EXIT_OK, EXIT_LOAD_ERROR, EXIT_FAILED = 0, 1, 2
# par check's exit codes.
EXIT_ALLOW, EXIT_DENY, EXIT_CHECK_ERROR = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="work with the Rego policies")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    psub.required = True
    t = psub.add_parser(
        "test",
        help="run the test_* rules of *_test.rego files on the embedded engine (like `opa test`)",
        description="Exit codes: 0 all tests passed, 2 a test failed or errored, 1 the policies did not load.",
    )
    t.add_argument("paths", nargs="*", default=["policies"], help="policy directories or files (default: policies)")
    t.add_argument("--run", "-r", metavar="REGEX", help="only run tests whose data.<package>.<rule> matches")
    t.add_argument("--format", choices=("pretty", "json"), default="pretty")
    t.add_argument("--coverage", action="store_true", help="report line coverage of the non-test policy files")
    t.add_argument("--fail-on-empty", action="store_true", help="exit 1 if no test was found")
    t.add_argument("-v", "--verbose", action="store_true", help="list every test, not only failures")
    t.add_argument(
        "--mode",
        choices=("interpreter", "compiled"),
        help="the embedded mode to test for (default: policy.embedded_mode from --config). compiled: the "
        "policies must pass the compiled-mode lint (else exit 1), and a test whose inputs get a different "
        "answer from the compiled engine FAILs",
    )
    t.set_defaults(func=run_policy_test)

    c = sub.add_parser(
        "check",
        help="ask the policy whether an action would be allowed now, and why not",
        description="Exit codes: 0 allowed, 1 denied, 2 error (bad input, policy does not load).",
    )
    c.add_argument("action")
    c.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help="action parameter (repeatable)")
    c.add_argument("--principal", required=True, metavar="JSON|@FILE", help="who asks: {type, id, name, roles}")
    c.add_argument("--trigger", metavar="JSON|@FILE", help="what triggered it (default: manual)")
    c.add_argument("--history", metavar="JSON|@FILE", help="recent executions (list of history entries)")
    c.add_argument("--json", action="store_true", help="print the decision and the input as JSON")
    c.set_defaults(func=run_check)


# -- par policy test ------------------------------------------------------------------------------


def run_policy_test(ns: argparse.Namespace) -> int:
    paths = [Path(p) for p in ns.paths]
    try:
        report = run_tests(paths, pattern=ns.run, coverage=ns.coverage, mode=_test_mode(ns))
    except PolicyError as exc:
        if ns.format == "json":
            print_json({"error": exc.message})
        else:
            print(exc.diagnostics(), file=sys.stderr)
        return EXIT_LOAD_ERROR
    counts = report.counts
    if ns.format == "json":
        doc: dict[str, Any] = {"results": [r.to_dict() for r in report.results], "summary": counts}
        if report.coverage is not None:
            doc["coverage"] = report.coverage
        if report.notes:
            doc["notes"] = report.notes
        print_json(doc)
    else:
        _print_pretty(report, verbose=ns.verbose)
    if not report.results and ns.fail_on_empty:
        if ns.format != "json":
            print("no tests found", file=sys.stderr)
        return EXIT_LOAD_ERROR
    return EXIT_FAILED if counts[FAIL] or counts[ERROR] else EXIT_OK


def _test_mode(ns: argparse.Namespace) -> str:
    """--mode, else the configured policy.embedded_mode; the built-in default if there is no config file.

    A config that exists but does not load is an error (exit 1): testing for the wrong mode would be
    worse than not testing.
    """
    if ns.mode is not None:
        return str(ns.mode)
    if not Path(ns.config).exists():
        return PolicyConfig().embedded_mode
    try:
        return config_from(ns).policy.embedded_mode
    except Error as exc:
        raise PolicyError(
            f"cannot read policy.embedded_mode from {ns.config}: {exc.message}",
            hint="Fix the config, or choose the mode with --mode interpreter|compiled.",
        ) from exc


def _print_pretty(report: TestReport, *, verbose: bool) -> None:
    by_file: dict[str, list[Any]] = {}
    for r in report.results:
        by_file.setdefault(r.case.file, []).append(r)
    for file, results in by_file.items():
        shown = [r for r in results if verbose or r.status != PASS]
        if not shown:
            continue
        print(f"{file}:")
        for r in shown:
            line = f"{r.display}: {r.status} ({r.duration_ms:.3f}ms)"
            if r.message and r.status != PASS:
                line += f"\n    {r.message}"
            print(line)
            if r.status != PASS or verbose:
                for text in r.prints:
                    print(f"    print: {text}")
        print()
    if report.coverage is not None:
        print("coverage (line-level; a line is covered when any expression on it was evaluated):")
        for f in report.coverage["files"]:
            missing = _ranges(f["not_covered_lines"])
            print(f"  {f['file']}: {f['coverage']:.1f}%" + (f"  not covered: {missing}" if missing else ""))
        print(f"  total: {report.coverage['coverage']:.1f}%\n")
    for note in report.notes:
        print(f"note: {note}")
    counts = report.counts
    total = sum(counts.values())
    print("-" * 80)
    print(f"PASS: {counts[PASS]}/{total}")
    if counts[FAIL]:
        print(f"FAIL: {counts[FAIL]}/{total}")
    if counts[ERROR]:
        print(f"ERROR: {counts[ERROR]}/{total}")


def _ranges(lines: list[int]) -> str:
    out: list[str] = []
    for n in sorted(lines):
        if out and "-" not in out[-1] and int(out[-1]) == n - 1:
            out[-1] = f"{out[-1]}-{n}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


# -- par check ------------------------------------------------------------------------------------


def run_check(ns: argparse.Namespace) -> int:
    try:
        return _check(ns)
    except Error as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return EXIT_CHECK_ERROR


def _check(ns: argparse.Namespace) -> int:
    cfg = config_from(ns)
    catalog = catalog_from(cfg)
    principal = json_arg(ns.principal, "--principal", PolicyError)
    trigger = json_arg(ns.trigger, "--trigger", PolicyError) if ns.trigger else None
    history = json_arg(ns.history, "--history", PolicyError) if ns.history else []
    if not isinstance(history, list):
        raise PolicyError("--history must be a JSON list of history entries (see docs/policy-input.md)")
    try:
        action = catalog.get(ns.action)
    except UnknownActionError:
        action = None  # the policy decides (and denies) unknown actions, and says so
    raw_params = key_value_params(ns.param, PolicyError)
    params = catalog.validate_parameters(ns.action, raw_params) if action is not None else raw_params
    now = datetime.now(UTC)
    doc = build_task_input(
        action=ns.action,
        parameters=params,
        principal=principal,
        trigger=trigger,
        task={"id": "par-check", "client": "par check", "expires_at": None},
        history=history,
        runner_id=cfg.runner.runner_id,
        now=now,
        catalog_action=action,
        history_window_s=cfg.policy.history_window_s,
    )
    engine = open_engine(_no_watch(cfg.policy))
    try:
        decision = engine.decide(doc, query=cfg.policy.decision)
    finally:
        engine.close()
    if ns.json:
        print_json({"decision": decision.to_dict(), "input": doc})
    else:
        verdict = "ALLOW" if decision.allow else "DENY"
        print(f"{verdict} {ns.action} for {principal.get('type')} {principal.get('id')!r}")
        for reason in decision.reasons:
            print(f"  - {reason}")
        if decision.allow and decision.limits:
            print(f"  limits: {json.dumps(dict(decision.limits), sort_keys=True)}")
        print(f"  policy revision {decision.revision[:16]} ({cfg.policy.engine})")
    if any(r == "policy_error" for r in decision.rule_ids):
        return EXIT_CHECK_ERROR
    return EXIT_ALLOW if decision.allow else EXIT_DENY


def _no_watch(policy: PolicyConfig) -> PolicyConfig:
    return dataclasses.replace(policy, watch=False)

