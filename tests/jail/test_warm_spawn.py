"""The launcher's pre-forked ("warm") children: a fresh netns per run, fail closed, unreachable while waiting.

A warm child is forked and moved into a new network namespace after a run, while the runner is idle,
and then takes exactly one request straight from the runner. These tests show that this shortcut
keeps every guarantee of the cold path (the attack tests also run through it: ``make_jail``'s
"warm" parameter).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sandbox._internal.jail_spawn import Launcher, WarmChild
from sandbox.config import JailConfig
from sandbox.errors import JailError
from sandbox.jail import Jail, jail_ids
from tests.jail.conftest import JailFactory

pytestmark = pytest.mark.kernel


def _launcher_jail(jail_user: str, tmp_path: Path, **overrides: object) -> Jail:
    cfg = JailConfig(user=jail_user, group=jail_user, spawn="launcher", kill_grace_s=0.5, **overrides)  # type: ignore[arg-type]
    return Jail(cfg, proxy_socket=tmp_path / "none.sock", project="jailtest")


def _spy_take_warm(monkeypatch: pytest.MonkeyPatch) -> list[WarmChild | None]:
    taken: list[WarmChild | None] = []
    original = Launcher.take_warm

    def spy(self: Launcher, netns: bool) -> WarmChild | None:
        warm = original(self, netns)
        taken.append(warm)
        return warm

    monkeypatch.setattr(Launcher, "take_warm", spy)
    return taken


def _warm_children(launcher_pid: int, timeout_s: float = 5.0) -> list[int]:
    """The launcher's children (warm ones wait there); polled because it forks them asynchronously."""
    deadline = time.monotonic() + timeout_s
    while True:
        kids = [
            int(p)
            for task in Path(f"/proc/{launcher_pid}/task").iterdir()
            for p in (task / "children").read_text().split()
        ]
        if kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_every_run_gets_its_own_fresh_network_namespace(make_jail: JailFactory) -> None:
    jail = make_jail()
    seen = set()
    for _ in range(4):
        result = jail.run(["readlink", "/proc/self/ns/net"])
        assert result.exit_code == 0, result
        seen.add(result.stdout.strip())
    assert len(seen) == 4  # never shared between runs, however the child was forked
    assert os.readlink("/proc/self/ns/net").encode() not in seen


def test_later_runs_go_through_a_warm_child(jail_user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _spy_take_warm(monkeypatch)
    jail = _launcher_jail(jail_user, tmp_path)
    try:
        outputs = [jail.run(["sh", "-c", "id -u; echo hi"]).stdout for _ in range(3)]
    finally:
        jail.close()
    uid = jail_ids(jail.cfg)[0]
    assert outputs == [f"{uid}\nhi\n".encode()] * 3
    assert taken[0] is None  # the first run: the launcher forks on request (cold)
    assert all(w is not None for w in taken[1:]), taken  # then each run uses the child prepared after the last


def test_control_failing_in_a_warm_child_refuses_and_runs_nothing(
    jail_user: str, tmp_path: Path, world_readable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _spy_take_warm(monkeypatch)
    marker = world_readable_dir / "warm-must-not-exist"
    jail = _launcher_jail(jail_user, tmp_path, open_files=10**9)  # above fs.nr_open: setrlimit fails
    try:
        with pytest.raises(JailError, match="'rlimits'"):
            jail.run(["/usr/bin/touch", str(marker)])  # cold: fails, and a failed run asks for no warm child
        launcher = jail._launcher
        assert launcher is not None
        launcher.prewarm(jail._launcher_setup)  # so force one: it carries the same unappliable rlimits
        with pytest.raises(JailError, match="'rlimits'"):
            jail.run(["/usr/bin/touch", str(marker)])
        assert taken[-1] is not None  # the second refusal came from the warm child
        assert not marker.exists()
        assert _warm_children(launcher.pid or 0, 0.2) == []  # the failed child was reaped, not leaked
    finally:
        jail.close()


def test_waiting_warm_child_cannot_be_signalled_or_read_by_a_jailed_process(
    jail_user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _spy_take_warm(monkeypatch)
    victim_jail = _launcher_jail(jail_user, tmp_path)
    attacker_jail = _launcher_jail(jail_user, tmp_path, extra_read_paths=(Path("/proc"),))
    try:
        assert victim_jail.run(["true"]).exit_code == 0  # now a warm child waits in victim_jail's launcher
        launcher = victim_jail._launcher
        assert launcher is not None and launcher.pid is not None
        (warm_pid,) = _warm_children(launcher.pid)
        attack = (
            f"kill -9 {warm_pid}; echo kill=$?; kill -STOP {warm_pid}; echo stop=$?; "
            f"cat /proc/{warm_pid}/environ; echo cat=$?"
        )
        result = attacker_jail.run(["sh", "-c", attack])
        assert b"kill=1" in result.stdout and b"stop=1" in result.stdout, result
        assert b"cat=1" in result.stdout, result
        assert _alive(warm_pid)
        after = victim_jail.run(["sh", "-c", "echo still-works"])  # and it still serves its run
        assert after.stdout == b"still-works\n" and after.exit_code == 0
        assert taken[-1] is not None and taken[-1].pid == warm_pid
    finally:
        victim_jail.close()
        attacker_jail.close()


def test_warm_child_dies_with_its_launcher(jail_user: str, tmp_path: Path) -> None:
    jail = _launcher_jail(jail_user, tmp_path)
    try:
        assert jail.run(["true"]).exit_code == 0
        launcher = jail._launcher
        assert launcher is not None and launcher.pid is not None
        (warm_pid,) = _warm_children(launcher.pid)
        os.kill(launcher.pid, 9)
        deadline = time.monotonic() + 10
        while _alive(warm_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(warm_pid)  # no idle root process outlives the launcher
        result = jail.run(["sh", "-c", "echo again"])  # the stale warm child is dropped, a new launcher used
        assert result.stdout == b"again\n"
    finally:
        jail.close()
