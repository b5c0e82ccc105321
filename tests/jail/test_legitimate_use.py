"""What actions need must keep working inside the jail: sh, docker compose through the proxy socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import JailConfig
from sandbox.jail import BASE_CONTROLS, Jail, jail_ids
from tests.jail.conftest import JailFactory

pytestmark = pytest.mark.kernel
ALL_CONTROLS = {*BASE_CONTROLS, "identity", "netns", "seccomp", "landlock", "no_new_privs", "rlimits"}


def test_sh_echo_hi(make_jail: JailFactory) -> None:
    result = make_jail().run(["sh", "-c", "echo hi"])
    assert result.exit_code == 0 and result.signal is None and not result.timed_out
    assert result.stdout == b"hi\n" and result.stderr == b""
    assert result.truncated == {"stdout": 0, "stderr": 0}
    assert set(result.controls) >= ALL_CONTROLS
    assert result.landlock_abi is not None and result.landlock_abi >= 1
    doc = result.to_dict()
    assert doc["stdout"] == "hi\n" and doc["controls"] == list(result.controls)


def test_identity_environment_cwd_umask(make_jail: JailFactory) -> None:
    jail = make_jail()
    uid, gid = jail_ids(jail.cfg)
    script = "id -u; id -g; id -G; pwd; umask; env | sort; echo x > f; stat -c %a f"
    result = jail.run(["sh", "-c", script], env={"ACTION_VAR": "v1"})
    lines = result.stdout.decode().splitlines()
    assert lines[0:3] == [str(uid), str(gid), str(gid)]  # no supplementary groups
    cwd = lines[3]
    assert cwd.startswith("/tmp/par-jail-")
    assert lines[4] == "0077"
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env.pop("PWD") == cwd
    assert env.pop("SHLVL", None) in (None, "1")
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "DOCKER_HOST": f"unix://{jail.proxy_socket}",
        "COMPOSE_PROJECT_NAME": "jailtest",
        "ACTION_VAR": "v1",
    }
    assert lines[-1] == "600"
    assert not Path(cwd).exists()  # the per-run temp dir is removed afterwards


def test_only_stdio_fds_inherited(make_jail: JailFactory) -> None:
    leak = os.open("/etc/hostname", os.O_RDONLY)  # an inheritable fd in the runner must not reach the child
    os.set_inheritable(leak, True)
    code = (
        f"import os\nfor fd in (0, 1, 2, {leak}):\n"
        " try:\n  os.fstat(fd); print(fd, 'open')\n except OSError: print(fd, 'closed')"
    )
    try:
        result = make_jail().run(["/usr/bin/python3", "-I", "-S", "-c", code])
    finally:
        os.close(leak)
    assert result.stdout.decode().splitlines() == ["0 open", "1 open", "2 open", f"{leak} closed"]


def test_docker_compose_version(make_jail: JailFactory, docker_engine: None) -> None:
    result = make_jail().run(["docker", "compose", "version"], timeout_s=60)
    assert result.exit_code == 0, result.stderr
    assert b"Docker Compose version" in result.stdout


@contextlib.contextmanager
def passthrough_proxy(path: Path, gid: int, upstream: str = "/var/run/docker.sock") -> Iterator[Path]:
    """A dumb unix-socket relay standing in for sandbox/proxy.py: socket group = jail gid, mode 0660."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    os.chown(path, 0, gid)
    path.chmod(0o660)
    srv.listen(16)
    stop = threading.Event()

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := a.recv(65536):
                b.sendall(chunk)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = srv.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(upstream)
            threading.Thread(target=pump, args=(client, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, client), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        srv.close()
        path.unlink(missing_ok=True)


def test_docker_compose_ps_through_proxy_socket(
    make_jail: JailFactory, demo_project: tuple[str, Path], world_readable_dir: Path
) -> None:
    project, compose_file = demo_project
    sock_dir = world_readable_dir / "proxy"
    sock_dir.mkdir(mode=0o755, exist_ok=True)
    probe = make_jail()
    _, gid = jail_ids(probe.cfg)
    with passthrough_proxy(sock_dir / f"{project}.sock", gid) as sock:
        jail = Jail(probe.cfg, proxy_socket=sock, project=project, read_paths=(compose_file.parent,))
        result = jail.run(["docker", "compose", "-f", str(compose_file), "ps", "--format", "json"], timeout_s=60)
    assert result.exit_code == 0, result.stderr
    text = result.stdout.decode().strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    assert rows and all(r["Project"] == project for r in rows)


def test_concurrent_runs_from_threads(make_jail: JailFactory) -> None:
    jail = make_jail()
    results: list[bytes] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = jail.run(["sh", "-c", f"echo run{i}; echo $HOME"])
        with lock:
            results.append(r.stdout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.split(b"\n")[0] for r in results) == [f"run{i}".encode() for i in range(6)]
    assert len({r.split(b"\n")[1] for r in results}) == 6  # each run had its own temp dir


def test_launcher_holds_no_runner_secrets_and_restarts(
    jail_user: str, attack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAR_TEST_SECRET", "s3cr3t")
    cfg = JailConfig(user=jail_user, group=jail_user, spawn="launcher")
    jail = Jail(cfg, proxy_socket=attack_dir / "none.sock", project="jailtest")
    try:
        assert jail.run(["true"]).exit_code == 0
        launcher = jail._launcher
        assert launcher is not None and launcher.pid is not None
        pid = launcher.pid
        assert b"s3cr3t" not in Path(f"/proc/{pid}/environ").read_bytes()
        os.kill(pid, 9)
        assert launcher._proc is not None
        launcher._proc.wait(10)  # dead for sure, so the next run sees it and starts a new one
        result = jail.run(["sh", "-c", "echo again"])  # a dead launcher is replaced transparently
        assert result.stdout == b"again\n"
        assert launcher.pid not in (None, pid)
    finally:
        jail.close()


def test_jailed_processes_die_with_the_runner(jail_user: str, world_readable_dir: Path) -> None:
    """A runner killed with SIGKILL leaves no jailed process behind (launcher EOF -> death signal)."""
    tmp_root = world_readable_dir / "killed-runner"
    tmp_root.mkdir(mode=0o755, exist_ok=True)
    code = (
        "from pathlib import Path\n"
        "from sandbox.config import JailConfig\n"
        "from sandbox.jail import Jail\n"
        f"cfg = JailConfig(user={jail_user!r}, group={jail_user!r}, tmp_root=Path({str(tmp_root)!r}))\n"
        "j = Jail(cfg, proxy_socket=Path('/nonexistent.sock'), project='p')\n"
        "j.run(['sleep', '61.789'], timeout_s=120)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=repo)
    try:
        deadline = time.monotonic() + 20
        victim = None
        while victim is None and time.monotonic() < deadline:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if b"61.789" in (entry / "cmdline").read_bytes():
                            victim = int(entry.name)
                    except OSError:
                        continue
            time.sleep(0.05)
        assert victim is not None, "jailed sleep never started"
    finally:
        runner.kill()
        runner.wait(10)
    deadline = time.monotonic() + 10
    while _alive(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(victim)
    shutil.rmtree(tmp_root)  # a SIGKILLed runner cannot remove its run's temp dir


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
