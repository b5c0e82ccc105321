"""Capability checks for tests: skip locally when missing, fail under CI=true."""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@functools.cache
def _docker() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, check=False)
    if r.returncode != 0:
        return f"no Docker engine answers: {r.stderr.decode(errors='replace').strip()[:200]}"
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if r.returncode != 0:
        return "the docker compose v2 plugin is missing"
    return None


@functools.cache
def _landlock() -> str | None:
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    return None if abi >= 1 else "the kernel has no Landlock"


@functools.cache
def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (to drop to the jail uid and create namespaces)"


@functools.cache
def _seccomp() -> str | None:
    try:
        importlib.import_module("pyseccomp")
    except Exception as exc:  # libseccomp missing
        return f"pyseccomp/libseccomp unavailable: {exc}"
    return None


CHECKS = {"docker": _docker, "landlock": _landlock, "root": _root, "seccomp": _seccomp}


def require(*capabilities: str) -> None:
    """Skip (locally) or fail (CI=true) unless every capability is present."""
    for cap in capabilities:
        reason = CHECKS[cap]()
        if reason is not None:
            if IN_CI:
                pytest.fail(f"CI=true and {cap} is required: {reason}")
            pytest.skip(f"{cap}: {reason}")
