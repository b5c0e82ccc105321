"""Helpers for the deployment tests: the compose file as data, and short-lived hardened containers.

Nothing can be pulled or built here, so a hardened container is the local busybox image with the host's
Python bind-mounted read-only: the seccomp profile, capabilities and no-new-privileges under test are
exactly the ones docker-compose.yml declares, applied by the real dockerd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
HARDENING = REPO / "hardening"
PROFILES = {p.stem: p for p in sorted(HARDENING.glob("*.json"))}
IMAGE = "dogbank/busybox:local"


@cache
def compose_model() -> dict[str, Any]:
    """The compose file as `docker compose config` normalises it (all profiles enabled)."""
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "opa", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    model: dict[str, Any] = json.loads(proc.stdout)
    return model


def host_python_mounts() -> list[str]:
    """Bind mounts that make the host interpreter, its libraries and this repository usable inside busybox."""
    mounts = ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", f"{REPO}:{REPO}:ro"]
    base = Path(sys.base_prefix).resolve()
    if not str(base).startswith("/usr"):
        mounts.append(f"{base}:{base}:ro")
    return mounts


def run_hardened(
    service: str,
    argv: list[str],
    *,
    seccomp: Path | str | None = None,
    caps: list[str] | None = None,
    extra: list[str] = (),  # type: ignore[assignment]
    timeout: float = 120,
    detach_as: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv in a throwaway container hardened like `service` in docker-compose.yml (no network).

    ``seccomp="docker-default"`` uses Docker's built-in profile instead, as a baseline. With ``detach_as``
    the container runs in the background under that name (the caller removes it).
    """
    svc = compose_model()["services"][service]
    caps = list(svc.get("cap_add", [])) if caps is None else caps
    profile = PROFILES[service] if seccomp is None else seccomp
    cmd = [
        "docker", "run", "--rm", "--name", detach_as or f"par-deploytest-{uuid.uuid4().hex[:10]}",
        *(["--detach"] if detach_as else []),
        "--network", "none", "--read-only", "--tmpfs", "/tmp:mode=1777",
        "--cap-drop", "ALL", *[f"--cap-add={c}" for c in caps],
        "--security-opt", "no-new-privileges:true",
        "--pids-limit", "256", "--memory", "512m",
        "-e", f"PYTHONPATH={REPO}", "-e", "PYTHONDONTWRITEBYTECODE=1", "-w", str(REPO),
    ]
    if profile != "docker-default":
        cmd += ["--security-opt", f"seccomp={profile}"]
    for m in host_python_mounts():
        cmd += ["-v", m]
    cmd += [*extra, IMAGE, sys.executable, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
