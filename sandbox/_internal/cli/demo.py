"""``par demo``: set up and play the two seed workflows against the demo stack, then verify the audit log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sandbox._internal.cli.common import config_from


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="play the two DogBank seed workflows end to end (needs a running dockerd)")
    p.add_argument("--project", default=None, help="compose project (default: docker.project from the config)")
    p.add_argument("--workdir", type=Path, default=None, help="where config, keys and audit go (default: a temp dir)")
    p.add_argument("--lag-alert", type=int, default=1500, help="simulated consumer lag that fires the monitor")
    p.add_argument("--lag-after", type=int, default=300,
                   help="simulated lag after the first scale: < 500 scales to 1, otherwise to 5")
    p.add_argument("--workflow-wait", type=float, default=5.0,
                   help="seconds the scale workflow waits before re-reading the lag (Datadog: minutes)")
    p.add_argument("--skip-follow-up", action="store_true",
                   help="stop after showing the rate-limit refusal instead of waiting it out (~60 s)")
    p.add_argument("--webhook", default=None, help="POST notifications to this loopback URL instead of printing")
    p.add_argument("--keep-stack", action="store_true", help="leave the demo stack running at the end")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from sandbox._internal.runner_demo import DemoOptions, run_demo  # noqa: PLC0415 - heavy, demo only
    from sandbox.jail import protect_runner_process  # noqa: PLC0415

    cfg = config_from(ns)
    protect_runner_process()
    opts = DemoOptions(
        project=ns.project or cfg.docker.project,
        workdir=ns.workdir,
        lag_after=ns.lag_after,
        lag_alert=ns.lag_alert,
        workflow_wait_s=ns.workflow_wait,
        skip_follow_up=ns.skip_follow_up,
        webhook=ns.webhook,
        keep_stack=ns.keep_stack,
    )
    return run_demo(cfg, opts)
