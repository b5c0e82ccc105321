"""A per-run ``pids`` cgroup (v1 hierarchy): a hard process cap and a complete kill list.

The process group catches what the action starts, but a child may ``setsid()`` out of it; cgroup
membership cannot be left without privileges, so killing every pid listed in the run's cgroup also
reaches escaped descendants, and ``pids.max`` caps a fork bomb per run (RLIMIT_NPROC is per uid,
shared by concurrent runs). Used when ``/sys/fs/cgroup/pids`` is a writable v1 hierarchy; otherwise
reported missing (it is a bonus control, only fatal when listed in ``jail.require``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PIDS_ROOT = Path("/sys/fs/cgroup/pids")
PARENT = "par-jail"
KILL_ROUNDS = 50


def cgroup_available(root: Path = PIDS_ROOT) -> str | None:
    """None if per-run pids cgroups can be created here, else why not."""
    if os.geteuid() != 0:
        return "creating cgroups needs root"
    if not (root / "cgroup.procs").exists():
        return f"no cgroup v1 pids hierarchy at {root}"
    try:
        (root / PARENT).mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        return f"cannot create {root / PARENT}: {exc.strerror}"
    return None


class RunCgroup:
    """One run's cgroup; the child joins it by writing "0" to ``procs_fd`` (opened here, by root)."""

    def __init__(self, path: Path, procs_fd: int) -> None:
        self.path = path
        self.procs_fd = procs_fd

    @classmethod
    def create(cls, name: str, *, pids_max: int, root: Path = PIDS_ROOT) -> RunCgroup:
        path = root / PARENT / name
        path.mkdir(mode=0o755)
        try:
            (path / "pids.max").write_text(str(pids_max) if pids_max else "max")
            fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except BaseException:
            path.rmdir()
            raise
        return cls(path, fd)

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        """SIGKILL every member, repeating while a racing fork adds new ones (bounded by pids.max)."""
        for _ in range(KILL_ROUNDS):
            members = self.pids()
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)

    def destroy(self) -> None:
        if self.procs_fd >= 0:
            os.close(self.procs_fd)
            self.procs_fd = -1
        self.kill_all()
        for _ in range(100):  # members that were just killed leave the cgroup asynchronously
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
