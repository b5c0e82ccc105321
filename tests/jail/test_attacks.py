"""Each test runs a real escape attempt inside the jail and shows it fails (issue 4, "Done when")."""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sandbox._internal.jail_cgroup import PARENT, PIDS_ROOT
from sandbox.jail import jail_ids, protect_runner_process
from tests.jail.conftest import JailFactory, attack
from tests.support.env import require

pytestmark = pytest.mark.kernel


def test_non_unix_sockets_and_loopback_tcp_fail(run_attack) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        result, out = run_attack("sockets", str(listener.getsockname()[1]))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody got through
    finally:
        listener.close()
    assert result.exit_code == 0, result.stderr
    for fam in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
        assert out[f"socket:{fam}"] == "BLOCKED-EAFNOSUPPORT"
    assert out["connect:loopback"].startswith("BLOCKED")


def test_docker_socket_unreachable(run_attack) -> None:
    sock = Path("/var/run/docker.sock")
    require("docker")  # skip locally, fail under CI=true: the attack needs the real socket
    _, out = run_attack("unix_connect", str(sock))
    assert out[f"connect:{sock}"] == "BLOCKED-EACCES"


def test_runner_private_key_and_config_unreadable(
    make_jail: JailFactory, attack_dir: Path, world_readable_dir: Path
) -> None:
    # A root-only dir (DAC stops it) and a world-readable one (only Landlock stops it).
    private = world_readable_dir / "runner-private"
    private.mkdir(mode=0o700, exist_ok=True)
    (private / "private_key.pem").write_text("-----BEGIN PRIVATE KEY-----\nfake\n")
    open_cfg = world_readable_dir / "runner-config"
    open_cfg.mkdir(mode=0o755, exist_ok=True)
    open_cfg.chmod(0o755)
    key = open_cfg / "private_key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nfake\n")
    key.chmod(0o644)
    (open_cfg / "runner.yaml").write_text("runner: {}\n")
    (open_cfg / "runner.yaml").chmod(0o644)
    repo_cfg = Path(__file__).resolve().parents[2] / "config" / "runner.yaml"
    targets = [str(private / "private_key.pem"), str(key), str(open_cfg / "runner.yaml"), str(open_cfg)]
    if repo_cfg.exists():
        targets.append(str(repo_cfg))
    _, out = attack(make_jail(), attack_dir, "read", *targets)
    assert set(out) == {f"read:{t}" for t in targets}
    assert all(v == "BLOCKED-EACCES" for v in out.values()), out


def test_runner_proc_environ_and_mem_unreadable(make_jail: JailFactory, attack_dir: Path) -> None:
    protect_runner_process()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE: the runner is not dumpable
    me = os.getpid()
    paths = [f"/proc/{me}/environ", f"/proc/{me}/mem", f"/proc/{me}/maps"]
    # Default jail: Landlock gives no /proc at all. Then with /proc readable, dumpable=0 + uid still stop it.
    _, out = attack(make_jail(), attack_dir, "read", *paths)
    assert all(v.startswith("BLOCKED") for v in out.values()) and len(out) == 3, out
    _, out = attack(make_jail(read_paths=(Path("/proc"),)), attack_dir, "read", *paths)
    assert all(v.startswith("BLOCKED") for v in out.values()) and len(out) == 3, out


def test_writes_outside_temp_dir_fail(make_jail: JailFactory, attack_dir: Path, world_readable_dir: Path) -> None:
    open_dir = world_readable_dir / "world-writable"
    open_dir.mkdir(exist_ok=True)
    open_dir.chmod(0o1777)  # file modes would allow it: only Landlock refuses
    targets = [str(open_dir / "pwned"), "/tmp/par-jail-pwned", "/var/tmp/par-jail-pwned", "/dev/shm/par-jail-pwned"]
    result, out = attack(make_jail(), attack_dir, "write", *targets, "inside-cwd")
    for t in targets:
        assert out[f"write:{t}"].startswith("BLOCKED"), out
        assert not Path(t).exists()
    assert out["write:inside-cwd"] == "SUCCEEDED"
    assert result.exit_code == 0


def test_namespaces_ptrace_mount_tiocsti_personality_blocked(run_attack) -> None:
    result, out = run_attack("namespaces")
    assert result.exit_code == 0, result.stderr
    assert out == {
        "clone:CLONE_NEWUSER": "BLOCKED-EPERM",
        "clone:CLONE_NEWNET": "BLOCKED-EPERM",
        "clone3": "BLOCKED-ENOSYS",
        "unshare:CLONE_NEWUSER": "BLOCKED-EPERM",
        "unshare:CLONE_NEWNET": "BLOCKED-EPERM",
        "ptrace:ATTACH_parent": "BLOCKED-EPERM",
        "ptrace:TRACEME": "BLOCKED-EPERM",
        "mount:tmpfs": "BLOCKED-EPERM",
        "personality:ADDR_NO_RANDOMIZE": "BLOCKED-EPERM",
        "ioctl:TIOCSTI": "BLOCKED-EPERM",
        "ioctl:TIOCSTI_highbits": "BLOCKED-EPERM",
    }


def test_x32_syscall_kills_the_process(run_attack) -> None:
    result, out = run_attack("x32")
    assert result.stdout.startswith(b"TRYING x32")
    assert out == {}  # never got to report
    assert result.signal == 31  # SIGSYS: libseccomp's bad-arch action is KILL_PROCESS


def test_legitimate_syscalls_still_allowed(run_attack) -> None:
    result, out = run_attack("legit")
    assert result.exit_code == 0, result.stderr
    assert out == {"personality:query": "SUCCEEDED", "fork": "SUCCEEDED", "socket:AF_UNIX": "SUCCEEDED"}


def test_unshare_command_fails(make_jail: JailFactory) -> None:
    assert shutil.which("unshare"), "util-linux (unshare) is part of every Debian install"
    result = make_jail().run(["unshare", "--user", "--map-root-user", "id", "-u"])
    assert result.exit_code != 0
    assert result.stdout != b"0\n"


def test_setuid_binary_does_not_escalate(make_jail: JailFactory, attack_dir: Path, world_readable_dir: Path) -> None:
    suid_dir = world_readable_dir / "suid"
    suid_dir.mkdir(mode=0o755, exist_ok=True)
    helper = suid_dir / "id-suid"
    shutil.copyfile("/usr/bin/id", helper)
    os.chown(helper, 0, 0)
    helper.chmod(0o4755)
    assert helper.stat().st_mode & stat.S_ISUID
    jail = make_jail(read_paths=(suid_dir,))
    # Proof the helper escalates when nothing stops it: same uid, no jail.
    uid = jail.cfg.user
    plain = subprocess.run([str(helper), "-u"], user=uid, capture_output=True, check=True, timeout=10)
    assert plain.stdout.strip() == b"0"
    result = jail.run([str(helper), "-u"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() not in (b"0", b"")


def test_fork_bomb_contained(make_jail: JailFactory, attack_dir: Path) -> None:
    jail = make_jail(processes=48)
    result, _ = attack(jail, attack_dir, "fork_bomb", "5000", timeout_s=30)
    assert result.exit_code == 0, result.stderr
    forked, err = result.stdout.split()[1:3]
    assert int(forked) < 48
    assert err == b"EAGAIN"


def test_shell_fork_bomb_killed_by_timeout(make_jail: JailFactory) -> None:
    jail = make_jail(processes=48)
    t0 = time.monotonic()
    result = jail.run(["/bin/sh", "-c", "f() { f | f & }; f; sleep 60"], timeout_s=2)
    assert time.monotonic() - t0 < 10
    assert result.timed_out


def test_memory_bomb_contained(make_jail: JailFactory, attack_dir: Path) -> None:
    jail = make_jail(address_space_bytes=1024**3)
    result, out = attack(jail, attack_dir, "memory_bomb", timeout_s=60)
    assert out.get("memory") == "BLOCKED-after", (result.stdout, result.stderr)
    mib = int(result.stdout.split()[3])
    assert mib < 1024


def test_output_flood_truncated_runner_unharmed(make_jail: JailFactory) -> None:
    jail = make_jail()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 100 * 1024 * 1024
    result = jail.run(
        ["/bin/sh", "-c", f"head -c {total} /dev/zero; head -c {total // 2} /dev/zero >&2; echo done >&2"],
        output_limit=65536,
        timeout_s=60,
    )
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert result.exit_code == 0
    assert len(result.stdout) == 65536 and len(result.stderr) == 65536
    assert result.truncated == {"stdout": total - 65536, "stderr": total // 2 + 5 - 65536}
    assert rss_growth_kib < 32 * 1024  # the 150 MB never sat in the runner's memory
    assert result.to_dict()["truncated"]["stdout"] == total - 65536


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("escape", ["stay", "setsid"])
def test_sigterm_ignoring_process_and_grandchild_gone_after_timeout(run_attack, escape: str) -> None:
    t0 = time.monotonic()
    result, out = run_attack("ignore_term", escape, timeout_s=1.5)
    elapsed = time.monotonic() - t0
    assert result.timed_out
    assert result.signal == 9  # SIGTERM ignored, SIGKILL after the grace period
    if escape == "setsid":
        assert out["setsid"] == "BLOCKED-EPERM"  # cannot leave the process group the supervisor kills
    pids_line = next(line for line in result.stdout.decode().splitlines() if line.startswith("PIDS"))
    pids = [int(p) for p in pids_line.split()[1:]]
    assert len(pids) == 2
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids), pids
    assert elapsed < 1.5 + 0.5 + 3  # timeout + grace + slack


def test_cancel_kills_process_group(make_jail: JailFactory) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    result = make_jail().run(["/bin/sh", "-c", "sleep 30 & sleep 30"], timeout_s=30, cancel=cancel)
    assert time.monotonic() - t0 < 5
    assert not result.timed_out
    assert result.signal is not None


def test_per_run_cgroup_caps_processes_and_kills_members(make_jail: JailFactory, attack_dir: Path) -> None:
    jail = make_jail(cgroup=True, processes=24)  # RLIMIT_NPROC and pids.max both 24
    if "cgroup" in jail.missing_controls:
        pytest.fail(f"cgroup v1 pids hierarchy unavailable: {jail.missing_controls['cgroup']}")
    result, _ = attack(jail, attack_dir, "fork_bomb", "5000", timeout_s=30)
    assert "cgroup" in result.controls
    forked, err = result.stdout.split()[1:3]
    assert int(forked) < 24 and err == b"EAGAIN"
    assert not any(p.name.startswith("par-jail-") for p in (PIDS_ROOT / PARENT).iterdir())  # removed after the run


def _find_jailed(marker: str, uid: int, deadline_s: float = 10.0) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid == uid and marker.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"jailed process {marker} not found")


def test_concurrent_run_of_same_uid_cannot_be_signalled_or_inspected(make_jail: JailFactory) -> None:
    jail = make_jail(read_paths=(Path("/proc"),))
    uid = jail_ids(jail.cfg)[0]
    victim_result: list[object] = []
    victim = threading.Thread(target=lambda: victim_result.append(jail.run(["sleep", "7.123"], timeout_s=15)))
    victim.start()
    pid = _find_jailed("7.123", uid)
    try:
        # Same uid, so only Landlock's domain scoping (signals, ptrace-mode /proc access) stops this.
        attacker = jail.run(["sh", "-c", f"kill -9 {pid}; echo kill=$?; cat /proc/{pid}/environ; echo cat=$?"])
        assert b"kill=1" in attacker.stdout, attacker
        assert b"cat=1" in attacker.stdout, attacker
        assert b"Operation not permitted" in attacker.stderr and b"Permission denied" in attacker.stderr
        assert _find_jailed("7.123", uid, 1.0) == pid  # victim still alive
    finally:
        os.kill(pid, 9)
        victim.join(20)
    assert victim_result and victim_result[0].signal == 9  # type: ignore[attr-defined]
