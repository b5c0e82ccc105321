"""The CLI story: `par controlplane serve`, `par run`, `par submit --wait`, `par tasks show`, all as processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from tests.runner.support import PRINCIPALS, VENV_PAR, SubprocessRunner, free_port

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.slow]


def par(inst, *args, timeout=120):
    return subprocess.run([str(VENV_PAR), "--config", str(inst.config_path), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_serve_run_submit_show(install):
    port = free_port()
    install.rewrite(control_plane={"url": f"http://127.0.0.1:{port}"})
    serve = subprocess.Popen([str(VENV_PAR), "--config", str(install.config_path), "controlplane", "serve",
                              "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    runner = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        runner = SubprocessRunner(install)
        done = par(install, "submit", "check_services_status", "--principal", f"@{PRINCIPALS / 'user-sre.json'}",
                   "--wait")
        assert done.returncode == 0, done.stderr
        task_id, _, result_text = done.stdout.partition("\n")
        result = json.loads(result_text)
        assert result["success"] is True and result["outputs"]["exitCode"] == 0
        denied = par(install, "submit", "restart_all_backend", "--principal", f"@{PRINCIPALS / 'user-developer.json'}",
                     "--wait")
        assert denied.returncode == 1
        assert json.loads(denied.stdout.partition("\n")[2])["error"]["errorCode"] == "POLICY_DENIED"
        shown = par(install, "tasks", "show", task_id.strip())
        assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"
        bad = par(install, "submit", "check_service_logs", "--param", "service", "--principal", "{}")
        assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr
        missing = par(install, "tasks", "show", "task-nope")
        assert missing.returncode != 0 and "404" in missing.stderr
    finally:
        if runner is not None:
            runner.proc.send_signal(signal.SIGTERM)
            runner.wait(60)
        serve.send_signal(signal.SIGTERM)
        serve.wait(20)
