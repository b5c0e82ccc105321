"""``par run``: pull tasks from the control plane and execute them under policy, jail and audit."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from sandbox import logs
from sandbox._internal import memory
from sandbox._internal.cli.common import config_from
from sandbox.jail import protect_runner_process
from sandbox.logs import get_logger
from sandbox.policy import install_sighup_reload
from sandbox.runner import run_until_stopped

log = get_logger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the pull-mode runner until SIGTERM/SIGINT")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from sandbox._internal.runner_stack import open_runner  # noqa: PLC0415 - heavy imports only for `par run`

    cfg = config_from(ns)
    logs.configure(cfg.logging)
    protect_runner_process()
    memory.limit_malloc_arenas()  # before any thread starts (see sandbox/_internal/memory.py)
    with open_runner(cfg) as runner:
        memory.release_free_memory()

        def stop(signum: int, _frame: Any) -> None:
            log.info("signal received: draining", signal=signal.Signals(signum).name)
            runner.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        restore = install_sighup_reload(runner.policy)
        try:
            run_until_stopped(runner)
        finally:
            restore()
    return 0
