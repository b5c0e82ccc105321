"""The real compose binary through the proxy: the catalog's actions work for our project, fail for another."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.proxy.conftest import Proxy, Stacks, containers
from tests.support.env import require

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def compose(
    px: Proxy, project: str, compose_file: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **px.env}
    return subprocess.run(
        ["docker", "compose", "-p", project, "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def scale(n: int) -> tuple[str, ...]:
    return ("up", "--detach", "--no-deps", "--no-recreate", "--scale", f"pix-worker={n}", "pix-worker")


def test_catalog_actions_succeed_for_our_project(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    p, f = stacks.ours, stacks.compose_file
    before = containers(p, "pix-worker")
    r = compose(proxy, p, f, "restart", "pix-worker")
    assert r.returncode == 0, r.stderr
    after = containers(p, "pix-worker")
    assert after.keys() == before.keys() and after != before  # restarted: new StartedAt

    for n in (3, 5, 1):
        r = compose(proxy, p, f, *scale(n))
        assert r.returncode == 0, r.stderr
        assert len(containers(p, "pix-worker")) == n

    r = compose(proxy, p, f, "ps", "--all")
    assert r.returncode == 0, r.stderr
    assert f"{p}-kafka-1" in r.stdout and stacks.other not in r.stdout

    r = compose(proxy, p, f, "logs", "--no-color", "--tail", "5", "kafka")
    assert r.returncode == 0, r.stderr
    assert "kafka started" in r.stdout or "kafka heartbeat" in r.stdout

    r = compose(proxy, p, f, "exec", "-T", "kafka", "kafka-topics", "--bootstrap-server", "localhost:9092", "--list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "__consumer_offsets",
        "pix-events",
        "pix-transactions",
        "transaction-events",
        "fraud-alerts",
    ]

    kinds = [d["path"] for d in proxy.audit.kinds("proxy_allowed")]
    assert any(k.endswith("/restart") for k in kinds) and any("/containers/create" in k for k in kinds)
    assert any("/exec/" in k and k.endswith("/start") for k in kinds)
    assert proxy.audit.kinds("proxy_denied") == []


def test_logs_follow_streams_until_stopped(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    env = {**os.environ, **proxy.env}
    argv = [
        "docker",
        "compose",
        "-p",
        stacks.ours,
        "-f",
        str(stacks.compose_file),
        "logs",
        "--follow",
        "--tail",
        "3",
        "kafka",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # still following
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "kafka" in out, err


def test_catalog_actions_fail_for_another_project(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    o, f = stacks.other, stacks.compose_file
    before = containers(o)
    assert len(before) == 10
    attempts = [
        ("restart", "pix-worker"),
        scale(3),
        ("ps", "--all"),
        ("logs", "--no-color", "--tail", "5", "kafka"),
        ("logs", "--follow", "--tail", "5", "kafka"),
        ("exec", "-T", "kafka", "kafka-topics", "--bootstrap-server", "localhost:9092", "--list"),
        scale(1),
    ]
    for args in attempts:
        r = compose(proxy, o, f, *args, timeout=60)
        assert r.returncode != 0, f"{args} succeeded against {o}: {r.stdout}"
        assert "filter_other_project" in r.stderr or "outside_project" in r.stderr, r.stderr
    assert containers(o) == before  # same containers, none restarted
    assert len(proxy.audit.kinds("proxy_denied")) >= len(attempts)
