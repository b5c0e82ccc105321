"""``par demo``: the two seed workflows, played for real against the demo DogBank stack.

Everything is started here and stopped at the end: the stand-in images and stack (dockerd must run), a
throw-away installation (keys, config, audit log) in a work directory, the local control plane and the
runner (both in this process, over real HTTP on loopback), with the same proxy, jail and policy as
``par run``. The workflows play the role Datadog Workflow Automation has in production: a monitor
fires, the workflow submits a task, the runner decides and acts.

The rate limit is never bent for the demo. The scale workflow's follow-up comes too early on purpose,
is refused (the reason is printed), and the demo then waits out the policy's interval honestly before
the follow-up goes through (``--skip-follow-up`` stops after showing the refusal).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from sandbox import keys, logs
from sandbox._internal import demo_stack
from sandbox._internal.runner_stack import open_runner
from sandbox.config import RunnerConfig, load_config
from sandbox.controlplane import ControlPlane, Submission
from sandbox.errors import Error
from sandbox.runner import Runner, run_until_stopped

REPO = Path(__file__).resolve().parents[2]
PRINCIPALS = REPO / "examples" / "principals"
RESTART_MONITOR = "[DogBank] PIX - Alta Latencia P99"
LAG_MONITOR = "[DogBank] Kafka - Consumer Lag Alto"
NEXT_IN = re.compile(r"\(in (\d+) s\)")


class DemoError(Error):
    default_hint = "Start dockerd, run `python -m sandbox._internal.demo_stack images`, then retry `par demo`."


@dataclass(frozen=True)
class DemoOptions:
    project: str
    workdir: Path | None
    lag_after: int  # simulated consumer lag after the first scale
    lag_alert: int  # lag that fires the monitor
    workflow_wait_s: float  # the workflow's wait step between the scale and the lag check
    skip_follow_up: bool
    webhook: str | None
    keep_stack: bool


def _say(msg: str) -> None:
    print(msg, flush=True)


def _principal(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((PRINCIPALS / f"{name}.json").read_text())
    return doc


def make_workdir(base: RunnerConfig, opts: DemoOptions) -> Path:
    """A complete installation for the demo: config, keys (0600, in a 0700 dir), catalog, compose copy."""
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="par-demo-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the jail uid must reach the compose copy and the proxy socket below
    conf = root / "config"
    conf.mkdir(mode=0o700, exist_ok=True)
    for kind, name in (("runner", "private_key.pem"), ("audit", "audit_key.pem"),
                       ("controlplane", "controlplane_key.pem")):
        if not (conf / name).exists():
            keys.save_key_pair(keys.generate(kind), conf / name)  # type: ignore[arg-type]
    shutil.copy(base.catalog, conf / "script.yaml")
    stack_dir = root / "dogbank"
    if not stack_dir.exists():
        shutil.copytree(base.docker.compose_file.parent, stack_dir)
        for p in [stack_dir, *stack_dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    (root / "run").mkdir(mode=0o755, exist_ok=True)
    doc = {
        "runner": {"org_id": base.runner.org_id, "runner_id": base.runner.runner_id, "poll_interval_s": 0.2},
        "control_plane": {
            "url": "http://127.0.0.1:0",
            "task_signing_keys": [{"key_id": base.control_plane.signing_key_id, "public_key": "controlplane_key.pub"}],
            "signing_key_id": base.control_plane.signing_key_id,
            "database": str(root / "controlplane.sqlite3"),
        },
        "catalog": "script.yaml",
        "policy": {"engine": base.policy.engine, "path": str(base.policy.path), "opa_url": base.policy.opa_url},
        "audit": {"dir": str(root / "audit")},
        "docker": {"project": opts.project, "compose_file": str(stack_dir / base.docker.compose_file.name),
                   "upstream_socket": str(base.docker.upstream_socket)},
        "proxy": {"socket_path": str(root / "run" / "docker-proxy.sock"), "in_process": True},
        "jail": {"user": base.jail.user, "group": base.jail.group},
        "logging": {"format": "console", "level": "warning"},
    }
    (conf / "runner.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return conf / "runner.yaml"


@contextlib.contextmanager
def running(cfg_path: Path) -> Iterator[tuple[ControlPlane, Runner, RunnerConfig]]:
    cfg = load_config(cfg_path)
    plane = ControlPlane(cfg)
    plane.start()
    try:
        text = cfg_path.read_text().replace("http://127.0.0.1:0", plane.url)
        cfg_path.write_text(text)
        cfg = load_config(cfg_path)
        logs.configure(cfg.logging)
        box: dict[str, Any] = {}
        ready = threading.Event()

        def main() -> None:
            try:
                with open_runner(cfg) as runner:
                    box["runner"] = runner
                    ready.set()
                    run_until_stopped(runner)
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread and re-raised there
                box["error"] = exc
                ready.set()

        thread = threading.Thread(target=main, name="par-demo-runner", daemon=True)
        thread.start()
        ready.wait(60)
        if "error" in box:
            raise box["error"]
        runner: Runner = box["runner"]
        try:
            yield plane, runner, cfg
        finally:
            runner.stop_event.set()
            thread.join(60)
    finally:
        plane.stop()


def _wait(plane: ControlPlane, task_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shown = plane.show(task_id)
        if shown and shown.get("result"):
            result: dict[str, Any] = shown["result"]
            return result
        time.sleep(0.2)
    raise DemoError(f"no result for {task_id} within {timeout_s:g} s")


def _inspect(project: str, service: str, fmt: str, *, running_only: bool = False) -> list[str]:
    filters = ["--filter", f"label=com.docker.compose.project={project}",
               "--filter", f"label=com.docker.compose.service={service}"]
    if running_only:
        filters += ["--filter", "status=running"]
    ids = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=False).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", "--format", fmt, *ids], capture_output=True, text=True, check=False)
    return sorted(out.stdout.split())


def _notify(webhook: str | None, text: str, doc: dict[str, Any]) -> None:
    if webhook is None:
        _say(f"  [notify] {text}")
        return
    host = urlsplit(webhook).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError(f"--webhook must point at loopback, not {host!r}")
    try:
        httpx.post(webhook, json={"text": text, **doc}, timeout=5, trust_env=False)
        _say(f"  [notify] posted to {webhook}: {text}")
    except httpx.HTTPError as exc:
        _say(f"  [notify] webhook failed ({exc}); message was: {text}")


def _outcome(result: dict[str, Any]) -> str:
    if result.get("success"):
        out = result["outputs"]
        return f"success (exit {out['exitCode']}, {out['durationMillis']:.0f} ms, audit seq {out['auditSeq']})"
    err = result.get("error", {})
    verb = "FAILED" if result.get("outputs", {}).get("executedCommand") else "REFUSED"
    text = f"{verb} {err.get('errorCode')}: {err.get('message')}"
    stderr = str(result.get("outputs", {}).get("stderr", "")).strip()
    return text + (f"\n    stderr: {stderr[-600:]}" if stderr else "")


def play_restart(plane: ControlPlane, project: str, check: Callable[[bool, str], None], webhook: str | None) -> None:
    _say(f"\n== Workflow 1: monitor '{RESTART_MONITOR}' is in ALERT")
    before = _inspect(project, "transaction-service", "{{.State.StartedAt}}")
    _say("  workflow '[DogBank] Auto-Restart Transaction Service' submits restart_transaction_service")
    tid = plane.submit(Submission(action="restart_transaction_service", parameters={},
                                  principal=_principal("workflow-auto-restart"),
                                  trigger=_principal("trigger-pix-latency"), client="par-demo"))
    result = _wait(plane, tid)
    _say(f"  task {tid}: {_outcome(result)}")
    after = _inspect(project, "transaction-service", "{{.State.StartedAt}}")
    restarted = bool(result.get("success")) and bool(after) and after != before
    _say(f"  transaction-service StartedAt: {before} -> {after}")
    check(restarted, "transaction-service was really restarted")
    if restarted:
        _notify(webhook, "transaction-service restarted by the DogBank PAR after PIX P99 latency alert",
                {"task_id": tid, "audit_seq": result["outputs"]["auditSeq"]})


def play_scale(plane: ControlPlane, project: str, opts: DemoOptions, check: Callable[[bool, str], None]) -> None:
    wf, trig = _principal("workflow-auto-scale"), _principal("trigger-kafka-lag")
    _say(f"\n== Workflow 2: monitor '{LAG_MONITOR}': consumer lag {opts.lag_alert} > 1000")
    _say("  workflow '[DogBank] Auto-Scale PIX Worker' submits scale_pix_worker_3")
    tid = plane.submit(Submission(action="scale_pix_worker_3", parameters={}, principal=wf, trigger=trig,
                                  client="par-demo"))
    result = _wait(plane, tid)
    _say(f"  task {tid}: {_outcome(result)}")
    replicas = len(_inspect(project, "pix-worker", "{{.Id}}", running_only=True))
    _say(f"  pix-worker running replicas: {replicas}")
    check(bool(result.get("success")) and replicas == 3, "pix-worker scaled to 3 replicas")
    _say(f"  workflow waits {opts.workflow_wait_s:g} s, then reads the lag again: {opts.lag_after}")
    time.sleep(opts.workflow_wait_s)
    follow = "scale_pix_worker_1" if opts.lag_after < 500 else "scale_pix_worker_5"
    _say(f"  lag {'<' if opts.lag_after < 500 else '>='} 500 -> workflow submits {follow}")
    early = plane.submit(Submission(action=follow, parameters={}, principal=wf, trigger=trig, client="par-demo"))
    refused = _wait(plane, early)
    _say(f"  task {early}: {_outcome(refused)}")
    code = refused.get("error", {}).get("errorCode")
    check(code == "RATE_LIMITED", "the too-early second scale was refused by the rate limit")
    check(len(_inspect(project, "pix-worker", "{{.Id}}", running_only=True)) == 3, "the refusal changed nothing")
    if opts.skip_follow_up:
        _say("  (--skip-follow-up: not waiting for the rate limit to allow the follow-up)")
        return
    m = NEXT_IN.search(refused.get("error", {}).get("message", ""))
    wait_s = min(float(m.group(1)) + 1 if m else 61.0, 120.0)
    _say(f"  the policy is not bent for a demo: the workflow retries when it allows, in {wait_s:g} s ...")
    time.sleep(wait_s)
    retry = plane.submit(Submission(action=follow, parameters={}, principal=wf, trigger=trig, client="par-demo"))
    result = _wait(plane, retry)
    _say(f"  task {retry}: {_outcome(result)}")
    want = 1 if follow.endswith("_1") else 5
    replicas = len(_inspect(project, "pix-worker", "{{.Id}}", running_only=True))
    _say(f"  pix-worker running replicas: {replicas}")
    check(bool(result.get("success")) and replicas == want, f"pix-worker scaled to {want} after the interval")


def run_demo(base: RunnerConfig, opts: DemoOptions) -> int:
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        _say(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            failures.append(what)

    _say("== Preparing: images, demo stack, keys, control plane, proxy, runner")
    demo_stack.ensure_images()
    cfg_path = make_workdir(base, opts)
    compose_file = load_config(cfg_path).docker.compose_file
    _say(f"  work dir: {cfg_path.parent.parent} (config, keys, audit log)")
    demo_stack.up(opts.project, compose_file)
    _say(f"  demo stack '{opts.project}' is up")
    try:
        with running(cfg_path) as (plane, runner, cfg):
            _say(f"  control plane {plane.url}; runner {cfg.runner.urn}")
            play_restart(plane, opts.project, check, opts.webhook)
            play_scale(plane, opts.project, opts, check)
            _say(f"\n== Stopping (runner: {runner.stats.executed} executed, {runner.stats.refused} refused)")
    finally:
        if not opts.keep_stack:
            with contextlib.suppress(Error):
                demo_stack.down(opts.project, compose_file)
            _say(f"  demo stack '{opts.project}' is down")
    _say("\n== par audit verify")
    verify = subprocess.run([sys.executable, "-m", "sandbox", "--config", str(cfg_path), "audit", "verify"],
                            capture_output=True, text=True, check=False, cwd=str(REPO))
    _say("  " + (verify.stdout + verify.stderr).strip().replace("\n", "\n  "))
    check(verify.returncode == 0, "the audit log verifies")
    if failures:
        _say(f"\nDEMO FAILED: {'; '.join(failures)}")
        return 1
    _say("\nDEMO OK: both workflows ran end to end and the audit log verifies.")
    return 0
