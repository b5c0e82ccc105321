"""Fixtures for the runner's end-to-end tests: a temp install + control plane + runner per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runner.support import Harness, Install, make_install, remove_install
from tests.support.env import require


@pytest.fixture
def install(demo_project: tuple[str, Path]) -> Iterator[Install]:
    require("docker", "root", "seccomp", "landlock")
    project, compose_file = demo_project
    inst = make_install(project, compose_file)
    try:
        yield inst
    finally:
        remove_install(inst)


@pytest.fixture
def harness(install: Install) -> Iterator[Harness]:
    h = Harness(install)
    try:
        h.start_runner()
        yield h
    finally:
        h.close()
