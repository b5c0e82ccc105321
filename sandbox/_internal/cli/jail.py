"""``par jail run``: run a command in exactly the jail the runner uses, to try escapes by hand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sandbox._internal.cli.common import config_from, print_json
from sandbox.errors import JailError
from sandbox.jail import Jail, protect_runner_process

EXIT_TIMEOUT = 124  # as timeout(1)


def register(sub: Any) -> None:
    p = sub.add_parser("jail", help="the restricted child process that runs actions")
    jsub = p.add_subparsers(dest="jail_command", metavar="SUBCOMMAND")
    jsub.required = True
    r = jsub.add_parser(
        "run",
        help="run ARGV in the runner's jail (same uid, netns, Landlock, seccomp, rlimits, proxy socket)",
        description="Runs ARGV exactly as the runner runs an action; use it to test escapes.",
    )
    r.add_argument("--timeout", type=float, default=None, metavar="S", help="wall-clock seconds (default: config)")
    r.add_argument("--output-limit", type=int, default=None, metavar="BYTES", help="cap per stream (default: config)")
    r.add_argument("--json", action="store_true", help="print a JSON result document instead of the output")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- ARGV...", help="the command to run")
    r.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    argv = list(ns.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise JailError("no command given", hint="Usage: par jail run [--json] -- ARGV...")
    if ns.timeout is not None and ns.timeout <= 0:
        raise JailError("--timeout must be positive", hint="Give a number of seconds, e.g. --timeout 30.")
    if ns.output_limit is not None and ns.output_limit < 0:
        raise JailError("--output-limit must not be negative", hint="Give a byte count, e.g. --output-limit 65536.")
    protect_runner_process()
    cfg = config_from(ns)
    jail = Jail(
        cfg.jail,
        proxy_socket=cfg.proxy.socket_path,
        project=cfg.docker.project,
        read_paths=[cfg.docker.compose_file.parent],
    )
    try:
        result = jail.run(argv, timeout_s=ns.timeout, output_limit=ns.output_limit)
    finally:
        jail.close()
    if ns.json:
        print_json(result.to_dict())
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        for stream, dropped in result.truncated.items():
            if dropped:
                print(f"[par jail: {stream} truncated, {dropped} bytes dropped]", file=sys.stderr)
        if result.timed_out:
            print("[par jail: timed out; process group killed]", file=sys.stderr)
        sys.stderr.flush()
    if result.timed_out:
        return EXIT_TIMEOUT
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code or 0
