"""Shared fixtures.

Tests that need Docker, seccomp, Landlock or namespaces call :func:`tests.support.env.require`;
outside CI a missing capability skips the test, under ``CI=true`` it fails, so CI can never go green
by skipping the security tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox._internal import demo_stack
from tests.support.env import require

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A reachable Docker engine with the compose v2 plugin and the stand-in images built."""
    require("docker")
    demo_stack.ensure_images()


@pytest.fixture(scope="session")
def world_readable_dir() -> Iterator[Path]:
    """A temp dir the jail's unprivileged uid can traverse (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="par-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_compose_file(world_readable_dir: Path) -> Path:
    """The demo compose file copied where an unprivileged uid can read it."""
    dst = world_readable_dir / "dogbank"
    shutil.copytree(demo_stack.DEMO_DIR, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst / "docker-compose.full.yml"


def unique_project(prefix: str) -> str:
    """A compose project name no other test (or developer session) uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def demo_project(docker_engine: None, demo_compose_file: Path) -> Iterator[tuple[str, Path]]:
    """A running demo stack under a fresh project name; torn down afterwards."""
    project = unique_project(os.environ.get("PAR_TEST_PROJECT_PREFIX", "dogbanktest"))
    demo_stack.up(project, demo_compose_file)
    try:
        yield project, demo_compose_file
    finally:
        subprocess.run(
            [*demo_stack.compose_argv(project, demo_compose_file), "down", "--remove-orphans", "-t", "2"],
            capture_output=True,
            check=False,
        )
