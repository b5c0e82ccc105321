"""A control that cannot be applied refuses the run and names the control; nothing executes."""

from __future__ import annotations

import dataclasses
import grp
from pathlib import Path

import pytest

from sandbox._internal import landlock, seccomp_filter
from sandbox.config import JailConfig
from sandbox.errors import JailError
from sandbox.jail import Jail
from tests.jail.conftest import JailFactory
from tests.support.env import require

pytestmark = pytest.mark.kernel


def test_required_landlock_missing_refuses(make_jail: JailFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "abi_version", lambda: None)
    with pytest.raises(JailError, match="'landlock'"):
        make_jail()


def test_optional_landlock_missing_is_recorded(make_jail: JailFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "abi_version", lambda: None)
    jail = make_jail(require=("identity", "netns", "seccomp", "no_new_privs", "rlimits"))
    result = jail.run(["sh", "-c", "echo hi"])
    assert result.stdout == b"hi\n"
    assert "landlock" not in result.controls and result.landlock_abi is None
    assert "landlock" in jail.missing_controls


def test_required_seccomp_missing_refuses(make_jail: JailFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> seccomp_filter.SeccompProgram:
        raise OSError(38, "libseccomp missing")

    monkeypatch.setattr(seccomp_filter, "build_program", broken)
    with pytest.raises(JailError, match="'seccomp'"):
        make_jail()


def test_control_failing_in_child_refuses_and_runs_nothing(make_jail: JailFactory, world_readable_dir: Path) -> None:
    marker = world_readable_dir / "must-not-exist"
    jail = make_jail(open_files=10**9)  # above fs.nr_open: setrlimit fails in the child
    with pytest.raises(JailError, match="'rlimits'"):
        jail.run(["/usr/bin/touch", str(marker)])
    assert not marker.exists()


def test_missing_jail_user_refuses(jail_user: str) -> None:
    cfg = dataclasses.replace(JailConfig(), user="par-no-such-user", group=jail_user)
    with pytest.raises(JailError, match="identity") as exc:
        Jail(cfg, proxy_socket=Path("/nonexistent.sock"), project="p")
    assert "useradd" in exc.value.hint


def test_jail_group_that_can_reach_docker_refuses(jail_user: str) -> None:
    sock = Path("/var/run/docker.sock")
    require("docker")  # skip locally, fail under CI=true: the attack needs the real socket
    group = grp.getgrgid(sock.stat().st_gid).gr_name
    cfg = dataclasses.replace(JailConfig(), user=jail_user, group=group)
    with pytest.raises(JailError, match="docker.sock"):
        Jail(cfg, proxy_socket=Path("/nonexistent.sock"), project="p")


def test_unknown_control_and_bad_input_rejected(make_jail: JailFactory) -> None:
    with pytest.raises(JailError, match="unknown control"):
        make_jail(require=("landlok",))
    jail = make_jail()
    with pytest.raises(JailError, match="DOCKER_HOST"):
        jail.run(["true"], env={"DOCKER_HOST": "unix:///var/run/docker.sock"})
    with pytest.raises(JailError, match="argv"):
        jail.run([])
    with pytest.raises(JailError, match="cannot execute"):
        jail.run(["/nonexistent/binary"])
