"""``par doctor [--json] [--only CHECK,...]``: check every precondition of a working runner."""

from __future__ import annotations

import argparse
from typing import Any

from sandbox._internal.cli.common import print_json
from sandbox.doctor import CHECKS, render, run_checks

EXIT_OK, EXIT_FAIL = 0, 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check keys, config, policies, proxy, Docker, control plane, kernel features and the audit log",
        description=f"Checks, in order: {', '.join(CHECKS)}. Exit 0 when all are OK, 1 when any FAILs.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--only", metavar="CHECK,...", help="run only these checks (comma-separated)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per network probe (default: 5)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    only = [n.strip() for n in ns.only.split(",") if n.strip()] if ns.only else None
    results = run_checks(ns.config, only=only, timeout_s=ns.timeout)
    ok = all(r.ok for r in results)
    if ns.json:
        print_json({"ok": ok, "config": str(ns.config), "checks": [r.to_dict() for r in results]})
    else:
        print(render(results))
    return EXIT_OK if ok else EXIT_FAIL
