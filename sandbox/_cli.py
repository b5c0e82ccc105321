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

COMMAND_MODULES = (
    "actions",
    "policy",
    "jail",
    "proxy",
    "audit",
    "keygen",
    "runner",
    "controlplane",
    "demo",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"sandbox._internal.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sandbox._internal.cli.{name}":
                continue  # area not built yet
            raise
        module.register(sub)
    return parser


def main(args: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if args is None else args))
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
