"""`par demo` as a user runs it: both workflows (incl. waiting out the 60 s scale interval), then audit verify."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import unique_project
from tests.runner.support import REPO, VENV_PAR
from tests.support.env import require

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.slow]


def test_par_demo(docker_engine, world_readable_dir):
    require("docker", "root", "seccomp", "landlock")
    project = unique_project(os.environ.get("PAR_TEST_PROJECT_PREFIX", "dogbanktest"))
    workdir = world_readable_dir / f"demo-{project}"  # the jail uid must read the compose copy
    proc = subprocess.run(
        [str(VENV_PAR), "demo", "--project", project, "--workdir", str(workdir), "--workflow-wait", "0.5",
         "--lag-after", "800"],  # lag stays high: the follow-up is scale_pix_worker_5
        capture_output=True, text=True, timeout=300, check=False, cwd=str(REPO),
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "[ok] transaction-service was really restarted" in out
    assert "[notify]" in out
    assert "[ok] pix-worker scaled to 3 replicas" in out
    assert "REFUSED RATE_LIMITED: rate_limit.scale_interval" in out
    assert "[ok] pix-worker scaled to 5 after the interval" in out
    assert "[ok] the audit log verifies" in out and "DEMO OK" in out
    leftover = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert leftover == [], "the demo left containers behind"
