"""The restricted child process ("jail") that runs approved actions.

Layered, each layer assumed to fail on its own: a dedicated unprivileged uid (file permissions are
what keep it off ``/var/run/docker.sock``), an empty network namespace, no_new_privs, Landlock
(read/exec only system dirs, the docker CLI and the compose project; write only a per-run temp
dir), a seccomp deny list, rlimits, a clean environment, a new session, and a supervisor that kills
the whole process group on timeout or cancellation and caps captured output.

Everything expensive or unsafe-after-fork is prepared in the parent (see
``sandbox/_internal/jail_child.py``); by default the child is forked by a small single-threaded
launcher process (``jail_launcher.py``), not by the big multi-threaded runner.

A control listed in ``JailConfig.require`` that cannot be applied raises
:class:`~sandbox.errors.JailError` naming it, and nothing runs (fail closed); the controls actually
applied are reported in every :class:`JailResult`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox._internal import jail_child, landlock, seccomp_filter
from sandbox._internal.jail_cgroup import RunCgroup, cgroup_available
from sandbox._internal.jail_spawn import Launcher, close_quietly, read_report
from sandbox._internal.jail_supervise import supervise
from sandbox.config import JailConfig
from sandbox.errors import JailError
from sandbox.logs import get_logger

log = get_logger(__name__)

#: Controls a config may list in ``jail.require``.
KNOWN_CONTROLS = ("identity", "netns", "seccomp", "landlock", "no_new_privs", "rlimits", "cgroup")
#: Always applied (no kernel feature needed); reported so the result lists the whole jail.
BASE_CONTROLS = ("new_session", "clean_env", "close_fds", "umask_077", "private_tmp_cwd")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
RESERVED_ENV = frozenset({"PATH", "HOME", "DOCKER_HOST", "COMPOSE_PROJECT_NAME"})
DOCKER_SOCKET = Path("/var/run/docker.sock")
#: How long a warm child may take from our request to its exec (it is already forked and unshared).
WARM_REPORT_TIMEOUT_S = 30.0

#: Read+execute: the system dirs holding libc, sh, python3 and the docker CLI with its compose
#: plugin (/usr/local/bin/docker, /usr/local/lib/docker/cli-plugins, /usr/libexec/docker).
SYSTEM_EXEC_PATHS = tuple(map(Path, ("/usr", "/bin", "/sbin", "/lib", "/lib64")))
#: /etc is narrowed to what the dynamic loader, libc name lookup and timezone need: a runner's
#: config or keys under /etc stay unreadable.
ETC_READ_PATHS = tuple(
    map(
        Path,
        (
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/localtime",
            "/etc/hosts",
            "/etc/alternatives",
            "/etc/mime.types",
        ),
    )
)
DEV_RW_PATHS = (Path("/dev/null"), Path("/dev/full"))
DEV_READ_PATHS = (Path("/dev/zero"), Path("/dev/urandom"), Path("/dev/random"))
#: Go reads the huge page size at start; failure is tolerated but costs a warning in some versions.
SYS_READ_PATHS = (Path("/sys/kernel/mm/transparent_hugepage"), Path("/sys/devices/system/cpu"))


@dataclass(frozen=True)
class JailResult:
    """Outcome of one jailed run; ``truncated`` maps stream name to bytes dropped (0 = complete)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    truncated: Mapping[str, int]
    duration_ms: float
    controls: tuple[str, ...]
    landlock_abi: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "stdout": self.stdout.decode("utf-8", errors="replace"),
            "stderr": self.stderr.decode("utf-8", errors="replace"),
            "truncated": dict(self.truncated),
            "duration_ms": round(self.duration_ms, 3),
            "controls": list(self.controls),
            "landlock_abi": self.landlock_abi,
        }


def protect_runner_process() -> None:
    """Make the runner non-dumpable so no child can read ``/proc/<runner>/environ``, ``mem`` or ptrace it."""
    try:
        jail_child.set_dumpable(False)
    except OSError as exc:
        raise JailError(f"cannot protect the runner process: {exc}") from exc


def jail_ids(cfg: JailConfig) -> tuple[int, int]:
    """The (uid, gid) jailed actions run as; the proxy gives its socket this group."""
    try:
        uid = pwd.getpwnam(cfg.user).pw_uid
    except KeyError:
        raise JailError(
            f"identity: jail user '{cfg.user}' does not exist",
            hint=f"Create it: useradd --system --no-create-home --shell /usr/sbin/nologin {cfg.user}"
            " (or set jail.user/jail.group in config/runner.yaml).",
        ) from None
    try:
        gid = grp.getgrnam(cfg.group).gr_gid
    except KeyError:
        raise JailError(
            f"identity: jail group '{cfg.group}' does not exist",
            hint="useradd --system creates a group of the same name; or set jail.group in config/runner.yaml.",
        ) from None
    if uid == 0 or gid == 0:
        raise JailError(f"identity: jail user/group '{cfg.user}:{cfg.group}' is root", hint="Use an unprivileged user.")
    return uid, gid


def _remove_tree(path: Path) -> None:
    """Remove a run's temp dir; most runs leave it empty, and one rmdir is cheaper than rmtree's walk."""
    try:
        path.rmdir()
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _docker_socket_reachable(uid: int, gid: int, sock: Path = DOCKER_SOCKET) -> bool:
    """Would file permissions let (uid, gid, no supplementary groups) connect to the engine socket?"""
    try:
        st = sock.stat()
    except OSError:
        return False
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & stat.S_IWUSR)
    if st.st_gid == gid:
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


class Jail:
    """Runs argv vectors inside the jail; thread-safe, one instance serves the whole runner."""

    def __init__(self, cfg: JailConfig, *, proxy_socket: Path, project: str, read_paths: Sequence[Path] = ()) -> None:
        unknown = sorted(set(cfg.require) - set(KNOWN_CONTROLS))
        if unknown:
            raise JailError(
                f"unknown control(s) in jail.require: {', '.join(unknown)}",
                hint=f"Known controls: {', '.join(KNOWN_CONTROLS)}.",
            )
        self.cfg = cfg
        self.proxy_socket = Path(proxy_socket)
        self.project = project
        self.read_paths = tuple(Path(p) for p in (*read_paths, *cfg.extra_read_paths))
        self._is_root = os.geteuid() == 0
        self._ids: tuple[int, int] | None = None
        missing: dict[str, str] = {}
        if self._is_root:
            self._ids = jail_ids(cfg)
            if _docker_socket_reachable(*self._ids):
                raise JailError(
                    f"identity: jail uid/gid {self._ids} could connect to {DOCKER_SOCKET} by its permissions",
                    hint="Use a jail user outside the docker group, and keep docker.sock mode 0660 root:docker.",
                )
        else:
            missing["identity"] = "the runner is not root, so it cannot switch to the jail uid"
            missing["netns"] = "creating a network namespace needs root"
        self._abi = landlock.abi_version()
        if self._abi is None:
            missing["landlock"] = "the kernel has no Landlock (or it is disabled)"
        self._seccomp_bpf: bytes | None = None
        self.seccomp_rules: tuple[str, ...] = ()
        try:
            program = seccomp_filter.build_program()
            self._seccomp_bpf, self.seccomp_rules = program.bpf, program.rules
        except (ImportError, OSError) as exc:
            missing["seccomp"] = f"libseccomp unavailable or failed: {exc}"
        if cfg.cgroup or "cgroup" in cfg.require:
            problem = cgroup_available()
            if problem is not None:
                missing["cgroup"] = problem
        else:
            missing["cgroup"] = "disabled (jail.cgroup: false)"
        for control in cfg.require:
            if control in missing:
                raise JailError(f"required control '{control}' cannot be applied: {missing[control]}")
        self._missing = missing
        self._launcher: Launcher | None = None
        self._launcher_lock = threading.Lock()
        self._rlimits = (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, cfg.cpu_s),
            (resource.RLIMIT_AS, cfg.address_space_bytes),
            (resource.RLIMIT_FSIZE, cfg.file_size_bytes),
            (resource.RLIMIT_NOFILE, cfg.open_files),
            (resource.RLIMIT_NPROC, cfg.processes),
        )

        #: What every launcher child of this jail gets (sent with "warm" and cold "spawn" requests).
        self._launcher_setup: dict[str, Any] = {
            "netns": self._ids is not None,
            "ids": list(self._ids) if self._ids else None,
            "rlimits": [list(x) for x in self._rlimits],
            "seccomp": self._seccomp_bpf.hex() if self._seccomp_bpf is not None else None,
        }

    @property
    def landlock_abi(self) -> int | None:
        return self._abi

    @property
    def missing_controls(self) -> Mapping[str, str]:
        """Controls this host cannot apply (and that the config does not require), with the reason."""
        return dict(self._missing)

    def _ruleset(self, tmpdir: Path) -> landlock.Ruleset:
        assert self._abi is not None
        rules = [landlock.PathRule(p, landlock.READ_EXEC) for p in SYSTEM_EXEC_PATHS]
        rules += [landlock.PathRule(p, landlock.READ_ONLY) for p in (*ETC_READ_PATHS, *DEV_READ_PATHS, *SYS_READ_PATHS)]
        rules += [landlock.PathRule(p, landlock.READ_WRITE_DEV) for p in DEV_RW_PATHS]
        rules += [landlock.PathRule(p, landlock.READ_EXEC) for p in self.read_paths]
        rules.append(landlock.PathRule(tmpdir, landlock.FULL_TREE))
        return landlock.build_ruleset(rules, abi=self._abi)

    def _environment(self, tmpdir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(tmpdir),
            "DOCKER_HOST": f"unix://{self.proxy_socket}",
            "COMPOSE_PROJECT_NAME": self.project,
        }
        for key, value in (extra or {}).items():
            if key in RESERVED_ENV:
                raise JailError(f"environment variable {key} is set by the jail and cannot be passed")
            if not isinstance(key, str) or not isinstance(value, str):
                raise JailError(f"environment variable {key!r} must map a string to a string")
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise JailError(f"invalid environment variable name or value: {key!r}")
            env[key] = value
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        output_limit: int | None = None,
        env: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
    ) -> JailResult:
        """Run ``argv`` jailed and wait for it; raises JailError (nothing ran) if a control fails."""
        if not argv or any(not isinstance(a, str) or "\0" in a for a in argv):
            raise JailError("argv must be a non-empty list of strings without NUL bytes")
        timeout = self.cfg.default_timeout_s if timeout_s is None else float(timeout_s)
        limit = self.cfg.output_limit_bytes if output_limit is None else int(output_limit)
        if timeout <= 0 or limit < 0:
            raise JailError(f"invalid timeout ({timeout}) or output limit ({limit})")
        started = time.monotonic()
        try:
            tmpdir = Path(tempfile.mkdtemp(prefix="par-jail-", dir=self.cfg.tmp_root))
        except OSError as exc:
            raise JailError(
                f"cannot create the per-run temp dir in {self.cfg.tmp_root}: {exc.strerror}",
                hint="Set jail.tmp_root to an existing directory the jail uid can traverse (e.g. /tmp).",
            ) from None
        ruleset: landlock.Ruleset | None = None
        cgroup: RunCgroup | None = None
        try:
            child_env = self._environment(tmpdir, env)
            if self._ids is not None:
                os.chown(tmpdir, *self._ids)
            controls = [*BASE_CONTROLS, *(c for c in KNOWN_CONTROLS if c not in self._missing)]
            if self._abi is not None:
                ruleset = self._ruleset(tmpdir)
            if "cgroup" not in self._missing:
                cgroup = RunCgroup.create(tmpdir.name, pids_max=self.cfg.processes)
            spawn = self._spawn_launcher if self.cfg.spawn == "launcher" else self._spawn_fork
            try:
                pid, out_r, err_r, reap, pidfd = spawn(list(argv), child_env, tmpdir, ruleset, cgroup)
            finally:
                if ruleset is not None:
                    ruleset.close()
            try:
                outcome = supervise(
                    pid,
                    out_r,
                    err_r,
                    limit=limit,
                    timeout_s=timeout,
                    grace_s=self.cfg.kill_grace_s,
                    cancel=cancel,
                    kill_extra=cgroup.kill_all if cgroup else (lambda: None),
                    reap=reap,
                    pidfd=pidfd,
                )
            finally:
                os.close(out_r)
                os.close(err_r)
        finally:
            if cgroup is not None:
                cgroup.destroy()
            _remove_tree(tmpdir)
        status = outcome.status
        result = JailResult(
            exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            timed_out=outcome.timed_out,
            stdout=bytes(outcome.stdout.data),
            stderr=bytes(outcome.stderr.data),
            truncated={"stdout": outcome.stdout.dropped, "stderr": outcome.stderr.dropped},
            duration_ms=(time.monotonic() - started) * 1000,
            controls=tuple(controls),
            landlock_abi=self._abi,
        )
        if outcome.cancelled:
            log.info("jail_cancelled", argv0=argv[0], signal=result.signal)
        return result

    def _plan(self, report_fd: int, ruleset: landlock.Ruleset | None, cgroup: RunCgroup | None) -> jail_child.ChildPlan:
        return jail_child.ChildPlan(
            netns=self._ids is not None,
            ids=self._ids,
            rlimits=self._rlimits,
            no_new_privs=True,
            landlock_fd=ruleset.fd if ruleset else None,
            seccomp_bpf=self._seccomp_bpf,
            report_fd=report_fd,
            cgroup_fd=cgroup.procs_fd if cgroup else None,
        )

    def _spawn_launcher(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        ruleset: landlock.Ruleset | None,
        cgroup: RunCgroup | None,
    ) -> tuple[int, int, int, Callable[[], int], int | None]:
        """Fork via the small single-threaded launcher process (default; see jail_launcher)."""
        if self._launcher is None:
            with self._launcher_lock:
                if self._launcher is None:
                    self._launcher = Launcher()
        launcher = self._launcher
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        names, fds = ["stdout", "stderr"], [out_w, err_w]
        if ruleset is not None:
            names.append("landlock")
            fds.append(ruleset.fd)
        if cgroup is not None:
            names.append("cgroup")
            fds.append(cgroup.procs_fd)
        request = {"argv": argv, "env": env, "cwd": str(cwd), "fds": names}
        try:
            pid, pidfd = self._launch(launcher, request, fds, argv)
        except BaseException:
            close_quietly(out_r, err_r)
            raise
        finally:
            close_quietly(out_w, err_w)
        setup = self._launcher_setup

        def reap() -> int:
            try:
                status = launcher.request({"op": "reap", "pid": pid}).get("status")
            except JailError:
                status = None  # the launcher died; its children were SIGKILLed by their death signal
            launcher.prewarm(setup)  # the next run's child: fork + fresh netns while we are idle
            return int(status) if status is not None else int(signal.SIGKILL)

        return pid, out_r, err_r, reap, pidfd

    def _launch(
        self, launcher: Launcher, request: dict[str, Any], fds: list[int], argv: Sequence[str]
    ) -> tuple[int, int | None]:
        """Start the child: straight through a warm child if one is ready, else via the launcher.

        Returns the pid and, on the warm path, a pidfd for it (it cannot refer to a recycled pid).
        A warm child was prepared with ``_launcher_setup``; the request carries only the run's part.
        """
        warm = launcher.take_warm(self._ids is not None)
        if warm is not None:
            try:
                socket.send_fds(warm.sock, [json.dumps(request).encode()], fds)
            except OSError:  # it died before taking the request (nothing ran): use the cold path
                launcher.discard(warm)
                warm = None
        if warm is None:
            reply = launcher.request({**self._launcher_setup, **request, "op": "spawn"}, fds)
            if "pid" not in reply:
                raise self._step_error(str(reply.get("error", "launcher")), int(reply.get("errno", 0)), argv)
            return int(reply["pid"]), None
        try:
            warm.sock.close()
            report = read_report(warm.report_r, WARM_REPORT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            launcher.discard(warm)
            raise JailError(f"the jail launcher's child did not start: {exc}") from None
        if report:
            launcher.discard(warm)
            step, _, err = report.decode(errors="replace").partition(":")
            raise self._step_error(step, int(err) if err.isdigit() else 0, argv)
        pid, pidfd = warm.pid, warm.pidfd
        warm.pidfd = -1  # handed over to supervise()
        warm.close()
        return pid, pidfd

    def _spawn_fork(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        ruleset: landlock.Ruleset | None,
        cgroup: RunCgroup | None,
    ) -> tuple[int, int, int, Callable[[], int], int | None]:
        """Fork the runner itself; the child only makes pre-bound calls (see jail_child)."""
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                umask=0o077,
                start_new_session=True,
                close_fds=True,
                preexec_fn=self._plan(report_w, ruleset, cgroup),  # noqa: PLW1509 - pre-bound calls only
            )
        except subprocess.SubprocessError:
            try:  # the child wrote its report before exiting; CPython waited for that exit
                report = os.read(report_r, 256).decode(errors="replace")
            except BlockingIOError:
                report = "child:0"
            step, _, err = report.partition(":")
            raise self._step_error(step, int(err) if err.isdigit() else 0, argv) from None
        except OSError as exc:
            raise self._step_error("exec", exc.errno or 0, argv) from None
        finally:
            close_quietly(report_r, report_w)
        assert proc.stdout is not None and proc.stderr is not None
        out_r, err_r = os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno())
        proc.stdout.close()
        proc.stderr.close()
        proc.returncode = 0  # reaped by supervise(); keep Popen from waiting again

        def reap() -> int:
            return os.waitpid(proc.pid, 0)[1]

        return proc.pid, out_r, err_r, reap, None

    @staticmethod
    def _step_error(step: str, err: int, argv: Sequence[str]) -> JailError:
        reason = os.strerror(err) if err else "failed"
        if step == "exec":
            # chdir or exec failed (not found, not executable, or Landlock denied executing it).
            return JailError(
                f"cannot execute {argv[0]!r} in the jail: {reason}",
                hint="Use an absolute path under the system dirs or the action's read paths; "
                "check `par jail run -- ARGV` for the same error.",
            )
        return JailError(f"control '{step}' could not be applied in the child: {reason}")

    def close(self) -> None:
        """Stop the launcher process (the runner calls this at shutdown; a later run restarts it)."""
        if self._launcher is not None:
            self._launcher.close()
