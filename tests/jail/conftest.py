"""Fixtures for the jail tests: the dedicated jail user, a world-readable attack dir, a jail factory."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from sandbox.config import JailConfig
from sandbox.errors import JailError
from sandbox.jail import Jail, JailResult
from tests.support.env import require

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
JAIL_USER = "par-jail"


@pytest.fixture(scope="session")
def jail_user() -> str:
    """The dedicated jail uid (.ci/run creates it too); created here if a developer machine lacks it."""
    require("root", "seccomp", "landlock")
    if subprocess.run(["id", JAIL_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", JAIL_USER],
            check=True,
            capture_output=True,
        )
    return JAIL_USER


@pytest.fixture(scope="session")
def attack_dir(world_readable_dir: Path) -> Path:
    """Where the attack helper lives: readable by the jail uid (and allowed by Landlock via read_paths)."""
    d = world_readable_dir / "jail-attacks"
    d.mkdir(mode=0o755, exist_ok=True)
    d.chmod(0o755)
    dst = d / "attack_helper.py"
    shutil.copyfile(HERE / "attack_helper.py", dst)
    dst.chmod(0o644)
    return d


JailFactory = Callable[..., Jail]


@pytest.fixture(params=["launcher", "warm", "fork"])
def make_jail(
    request: pytest.FixtureRequest, jail_user: str, attack_dir: Path, tmp_path: Path
) -> Iterator[JailFactory]:
    """Jails in every spawn path: a fresh launcher (its cold ``spawn``), a launcher after one run (so
    the test's runs go through a pre-forked warm child), and forking the runner itself."""
    made: list[Jail] = []
    spawn: Literal["launcher", "fork"] = "fork" if request.param == "fork" else "launcher"

    def factory(*, read_paths: tuple[Path, ...] = (), proxy_socket: Path | None = None, **overrides: Any) -> Jail:
        base = JailConfig(user=jail_user, group=jail_user, kill_grace_s=0.5, default_timeout_s=30.0, spawn=spawn)
        cfg = dataclasses.replace(base, **overrides)
        jail = Jail(
            cfg,
            proxy_socket=proxy_socket or tmp_path / "no-proxy.sock",
            project="jailtest",
            read_paths=(attack_dir, *read_paths),
        )
        made.append(jail)
        if request.param == "warm":
            with contextlib.suppress(JailError):  # a config meant to fail leaves no warm child: cold path
                jail.run(["/bin/true"])
        return jail

    yield factory
    for jail in made:
        jail.close()


def attack(jail: Jail, attack_dir: Path, name: str, *args: str, **run: Any) -> tuple[JailResult, dict[str, str]]:
    """Run one attack_helper attack in the jail; returns the result and {attempt: BLOCKED-errno|SUCCEEDED}."""
    result = jail.run([SYSTEM_PYTHON, "-I", "-S", str(attack_dir / "attack_helper.py"), name, *args], **run)
    outcomes: dict[str, str] = {}
    for line in result.stdout.decode().splitlines():
        parts = line.split()
        if parts and parts[0] in ("BLOCKED", "SUCCEEDED") and len(parts) >= 2:
            err = parts[2] if len(parts) > 2 else ""
            outcomes[parts[1]] = parts[0] if parts[0] == "SUCCEEDED" else f"BLOCKED-{err}"
    return result, outcomes


@pytest.fixture
def run_attack(make_jail: JailFactory, attack_dir: Path) -> Iterator[Callable[..., tuple[JailResult, dict[str, str]]]]:
    jail = make_jail()

    def go(name: str, *args: str, jail_: Jail | None = None, **run: Any) -> tuple[JailResult, dict[str, str]]:
        return attack(jail_ or jail, attack_dir, name, *args, **run)

    yield go
