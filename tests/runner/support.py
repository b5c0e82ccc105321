"""A complete, throw-away runner installation for tests: config, keys, catalog, control plane, runner.

Layout (why it is split): the compose file lives in a world-readable dir because the jail's uid must
read it; keys, config and audit live in 0700 dirs like a real install; the proxy socket lives in its
own dir so parallel tests never share one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox import keys, logs
from sandbox._internal.audit_segments import list_segments
from sandbox._internal.runner_stack import open_runner
from sandbox.config import RunnerConfig, load_config
from sandbox.controlplane import ControlPlane, Submission
from sandbox.runner import run_until_stopped

REPO = Path(__file__).resolve().parents[2]
PRINCIPALS = REPO / "examples" / "principals"
VENV_PAR = REPO / ".venv" / "bin" / "par"


def principal(name: str) -> dict[str, Any]:
    return json.loads((PRINCIPALS / f"{name}.json").read_text())


RESTART = ("restart_transaction_service", "workflow-auto-restart", "trigger-pix-latency")
SCALE_TRIGGER = ("workflow-auto-scale", "trigger-kafka-lag")


@dataclass
class Install:
    root: Path
    config_path: Path
    project: str
    compose_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> RunnerConfig:
        return load_config(self.config_path)

    def rewrite(self, **sections: dict[str, Any]) -> None:
        doc = yaml.safe_load(self.config_path.read_text())
        for name, values in sections.items():
            doc.setdefault(name, {}).update(values)
        self.config_path.write_text(yaml.safe_dump(doc))


#: Test-only actions (a catalog entry plus the policy data naming them, like a team would add them).
TEST_ACTIONS: dict[str, Any] = {
    "check_sleep": {
        "description": "test only: sleep some seconds",
        "category": "diagnostic",
        "timeout": 120,
        "services": [],
        "command": ["sleep", "{{ parameters.seconds }}"],
        "parameterSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
        "allowedEnvVars": [],
    },
    "check_true": {
        "description": "test only: /bin/true, for the pipeline benchmark",
        "category": "diagnostic",
        "timeout": 10,
        "services": [],
        "command": ["/bin/true"],
        "parameterSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        "allowedEnvVars": [],
    },
}


def make_install(
    project: str, compose_file: Path, *, test_actions: bool = False, **overrides: dict[str, Any]
) -> Install:
    """Write runner.yaml + keys (0600 in a 0700 dir) + a catalog copy; returns the install.

    ``test_actions`` adds :data:`TEST_ACTIONS` to a copy of the catalog and of the policy data.
    """
    root = Path(tempfile.mkdtemp(prefix="par-rt-", dir="/tmp"))
    root.chmod(0o755)  # the proxy socket dir below must be traversable by the jail uid
    conf = root / "config"
    conf.mkdir(mode=0o700)
    (conf / "credentials").mkdir(mode=0o700)
    catalog_doc = yaml.safe_load((REPO / "config" / "credentials" / "script.yaml").read_text())
    policies = REPO / "policies"
    if test_actions:
        catalog_doc["runPredefinedScript"].update(TEST_ACTIONS)
        policies = root / "policies"
        shutil.copytree(REPO / "policies", policies)
        data = json.loads((policies / "data.json").read_text())
        data["dogbank"]["actions"].update({name: a["category"] for name, a in TEST_ACTIONS.items()})
        (policies / "data.json").write_text(json.dumps(data, indent=2))
    (conf / "credentials" / "script.yaml").write_text(yaml.safe_dump(catalog_doc, sort_keys=False))
    keys.save_key_pair(keys.generate("runner"), conf / "private_key.pem")
    keys.save_key_pair(keys.generate("audit"), conf / "audit_key.pem")
    keys.save_key_pair(keys.generate("controlplane"), conf / "controlplane_key.pem")
    sock_dir = root / "run"
    sock_dir.mkdir(mode=0o755)
    doc: dict[str, Any] = {
        "runner": {"runner_id": "test-runner", "org_id": "dogbank", "poll_interval_s": 0.05,
                   "heartbeat_interval_s": 0.5, "drain_timeout_s": 5.0},
        "control_plane": {
            "url": "http://127.0.0.1:1",  # replaced once the control plane has a port
            "task_signing_keys": [{"key_id": "local-controlplane", "public_key": "controlplane_key.pub"}],
            "database": str(root / "cp" / "controlplane.sqlite3"),
            "backoff_min_s": 0.05, "backoff_max_s": 0.5, "circuit_breaker_failures": 50,
            "circuit_breaker_open_s": 0.5, "request_timeout_s": 5.0,
        },
        "catalog": "credentials/script.yaml",
        "policy": {"engine": "embedded", "path": str(policies), "watch": False},
        "audit": {"dir": str(root / "audit"), "signing_key": "audit_key.pem", "public_key": "audit_key.pub",
                  "checkpoint_every_s": 3600},
        "docker": {"project": project, "compose_file": str(compose_file)},
        "proxy": {"socket_path": str(sock_dir / "docker-proxy.sock"), "in_process": True},
        "jail": {"default_timeout_s": 120},
        "logging": {"format": "json", "level": "warning"},
    }
    for name, values in overrides.items():
        doc.setdefault(name, {}).update(values)
    (root / "cp").mkdir(mode=0o700)
    cfg_path = conf / "runner.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    return Install(root=root, config_path=cfg_path, project=project, compose_file=compose_file)


def remove_install(inst: Install) -> None:
    shutil.rmtree(inst.root, ignore_errors=True)


class InProcessRunner:
    """`open_runner` + `run_until_stopped` in a thread: what `par run` does, minus signals."""

    def __init__(self, cfg: RunnerConfig) -> None:
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.runner: Any = None

        def main() -> None:
            try:
                with open_runner(cfg) as runner:
                    self.runner = runner
                    self._ready.set()
                    run_until_stopped(runner)
            except BaseException as exc:
                self.error = exc
                self._ready.set()

        self.thread = threading.Thread(target=main, name="test-runner", daemon=True)
        self.thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 30) -> None:
        if self.runner is not None:
            self.runner.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "runner did not stop"


class Harness:
    """Control plane (in-process, real HTTP) + runner for one install."""

    def __init__(self, inst: Install, *, port: int = 0) -> None:
        self.inst = inst
        cfg = inst.cfg
        logs.configure(cfg.logging)
        self.plane = ControlPlane(cfg, port=port)
        self.plane.start()
        inst.rewrite(control_plane={"url": self.plane.url})
        self.runner: InProcessRunner | None = None

    @property
    def cfg(self) -> RunnerConfig:
        return self.inst.cfg

    def start_runner(self) -> InProcessRunner:
        self.runner = InProcessRunner(self.cfg)
        return self.runner

    def stop_runner(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None

    def submit(self, action: str, principal_doc: dict[str, Any], trigger: dict[str, Any] | None = None,
               **params: Any) -> str:
        return self.plane.submit(Submission(action=action, parameters=params, principal=principal_doc,
                                            trigger=trigger or {"type": "manual"}))

    def wait_result(self, task_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.plane.show(task_id)
            if shown and shown.get("result") is not None:
                return dict(shown["result"])
            if shown and shown.get("updates"):  # raw deliveries have no task row
                return dict(shown["updates"][-1])
            time.sleep(0.05)
        raise AssertionError(f"no result for {task_id} within {timeout} s")

    def wait_updates(self, task_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.plane.show(task_id)
            if shown and len(shown["updates"]) >= count:
                return list(shown["updates"])
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} updates for {task_id} within {timeout} s")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_runner()
        self.plane.stop()


def audit_records(inst: Install) -> list[dict[str, Any]]:
    """Every record written so far, read straight from the JSONL segments (works while the runner runs)."""
    out = []
    for seg in list_segments(inst.cfg.audit.dir):
        for line in seg.read_bytes().splitlines():
            with contextlib.suppress(ValueError):  # a torn last line (disk full, kill -9) is not a record
                out.append(json.loads(line))
    return out


def records_for(inst: Install, task_id: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(inst) if r["data"].get("task_id") == task_id]


def audit_verify(inst: Install) -> subprocess.CompletedProcess[str]:
    cfg = inst.cfg
    return subprocess.run(
        [str(VENV_PAR), "audit", "verify", str(cfg.audit.dir), "--pubkey", str(cfg.audit.public_key)],
        capture_output=True, text=True, check=False, timeout=60,
    )


def started_at(project: str, service: str) -> list[str]:
    """StartedAt of every container of a service, straight from the engine (not through the proxy)."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", *ids],
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(out)


def running_replicas(project: str, service: str) -> int:
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
         "--filter", f"label=com.docker.compose.service={service}", "--filter", "status=running"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return len(ids)


def python() -> str:
    return sys.executable


class SubprocessRunner:
    """`par run` as a real process (for kill -9 and SIGTERM); its output goes to a log file."""

    def __init__(self, inst: Install) -> None:
        self.inst = inst
        self.log_path = inst.root / f"par-run-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(VENV_PAR), "--config", str(inst.config_path), "run"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO),
        )
        started = len([r for r in audit_records_safe(inst) if r["kind"] == "runner_started"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"par run exited {self.proc.returncode}: {self.output()}")
            if len([r for r in audit_records_safe(inst) if r["kind"] == "runner_started"]) > started:
                return
            time.sleep(0.05)
        raise AssertionError(f"par run did not start: {self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def audit_records_safe(inst: Install) -> list[dict[str, Any]]:
    if not inst.cfg.audit.dir.exists():
        return []
    return audit_records(inst)


def wait_for_record(inst: Install, task_id: str, kind: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in records_for(inst, task_id):
            if r["kind"] == kind:
                return r
        time.sleep(0.05)
    raise AssertionError(f"no {kind} record for {task_id} within {timeout} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
