"""``par actions``: list the allowlisted actions with descriptions and parameters."""

from __future__ import annotations

import argparse
from typing import Any

from sandbox._internal.cli.common import catalog_from, config_from, print_json, runner_vars


def register(sub: Any) -> None:
    p = sub.add_parser("actions", help="list the actions this runner may execute")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--argv", action="store_true", help="also show the rendered argv of each action")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    cfg = config_from(ns)
    catalog = catalog_from(cfg)
    rows = []
    for action in catalog.actions.values():
        row: dict[str, Any] = {
            "name": action.name,
            "description": action.description,
            "category": action.category,
            "timeout_s": action.timeout_s,
            "services": list(action.services),
            "parameters": action.parameters_summary(),
            "command": list(action.command),
        }
        rows.append(row)
    if ns.json:
        print_json({"catalog": str(catalog.source), "actions": rows})
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        params = ", ".join(_param_text(p) for p in r["parameters"]) or "-"
        print(f"{r['name']:<{width}}  {r['category']:<13} {r['description']}")
        print(f"{'':<{width}}  parameters: {params}")
        if ns.argv:
            print(f"{'':<{width}}  argv: {' '.join(r['command'])}")
    print(f"\n{len(rows)} actions from {catalog.source} (project {runner_vars(cfg)['project']})")
    return 0


def _param_text(p: dict[str, Any]) -> str:
    bits = [p["type"]]
    if "enum" in p:
        bits.append("one of " + "|".join(map(str, p["enum"])))
    if "minimum" in p:
        bits.append(f"{p['minimum']}..{p['maximum']}")
    if "default" in p:
        bits.append(f"default {p['default']}")
    req = "" if p["required"] else "?"
    return f"{p['name']}{req} ({', '.join(bits)})"
