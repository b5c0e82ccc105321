"""The ``par`` command: a thin layer over the library.

Each area registers its subcommands from ``sandbox/_internal/cli/<area>.py`` (a ``register(subparsers)``
function; each command returns its exit code). ``main`` catches only :class:`sandbox.errors.Error`,
prints its diagnostics and exits with the error's ``exit_code``; anything else is a bug and shows a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sandbox import __version__
from sandbox.errors import Error

#: Subcommand -> the module under ``sandbox/_internal/cli`` that registers it. ``main`` imports only the
#: module of the command being run, so a long-lived process (``par proxy``, ``par run``) does not carry
#: every other area's imports in its resident memory.
COMMANDS = {
    "actions": "actions",
    "policy": "policy",
    "check": "policy",
    "jail": "jail",
    "proxy": "proxy",
    "audit": "audit",
    "keygen": "keygen",
    "run": "runner",
    "controlplane": "controlplane",
    "submit": "controlplane",
    "tasks": "controlplane",
    "demo": "demo",
    "doctor": "doctor",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just the module that owns that subcommand."""
    parser = argparse.ArgumentParser(
        prog="par",
        description="DogBank Private Action Runner: policy-enforced, jailed, audited remediation actions.",
    )
    parser.add_argument("--version", action="version", version=f"par {__version__}")
    parser.add_argument(
        "-c", "--config", default="config/runner.yaml", help="runner config file (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = [COMMANDS[only]] if only in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"sandbox._internal.cli.{name}").register(sub)
    return parser


def _subcommand(argv: Sequence[str]) -> str | None:
    """The first positional argument, skipping the global options (which take at most one value)."""
    it = iter(argv)
    for arg in it:
        if arg in ("-c", "--config"):
            next(it, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(args: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    ns = build_parser(_subcommand(argv)).parse_args(argv)
    try:
        code: int = ns.func(ns)
    except Error as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `par ... | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
