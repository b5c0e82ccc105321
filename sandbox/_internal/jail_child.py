"""What the forked child does between fork and exec: only pre-bound calls on prebuilt data.

Used by both spawn modes: in the single-threaded launcher (default) and as ``preexec_fn`` when the
runner forks itself (``jail.spawn: fork``). A forked copy of a threaded process may only safely do
async-signal-safe work, so everything that allocates, parses or walks paths (the seccomp BPF, the
Landlock ruleset, uid lookup, rlimit values) is prepared beforehand; the child just calls
``unshare``/``setresuid``/``prctl``/``landlock_restrict_self``/``setrlimit`` on ready arguments.

The order is fixed by the kernel's rules: create the network namespace while still root, set
rlimits while we may still raise hard limits, drop groups/gid/uid (gid first: afterwards we would
lack the right), set no_new_privs (required for unprivileged Landlock and seccomp), then Landlock,
then seccomp last, because the filter forbids some calls (``unshare``) the earlier steps need.
A failing step writes its name and errno to ``report_fd`` and raises, so the parent can name the
control it could not apply and refuse the action.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from typing import TYPE_CHECKING

from sandbox._internal import landlock

if TYPE_CHECKING:
    from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_unshare = _libc.unshare
_unshare.restype = ctypes.c_int


class SockFprog(ctypes.Structure):
    """``struct sock_fprog`` for PR_SET_SECCOMP."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class ChildStepFailed(Exception):
    """Raised inside the child; CPython turns it into SubprocessError in the parent."""


def set_dumpable(value: bool) -> None:
    """PR_SET_DUMPABLE for the calling process (the runner sets 0 to protect /proc/<pid>/*)."""
    if _prctl(PR_SET_DUMPABLE, int(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE): {os.strerror(err)}")


def unshare_net() -> int:
    """Move the caller into a new, empty network namespace; 0 or an errno. Safe in a forked child."""
    return 0 if _unshare(CLONE_NEWNET) == 0 else (ctypes.get_errno() or 1)


def set_parent_death_signal() -> None:
    """SIGKILL the caller when its parent thread exits (cleared by credential changes: re-arm after)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class ChildPlan:
    """Prepared in the parent; ``__call__`` runs in the child as ``preexec_fn``.

    A plain class, not a dataclass: the launcher imports this module, and ``dataclasses`` pulls in
    ``inspect``/``ast``, megabytes that every forked child would copy-on-write and exec would unmap.
    """

    def __init__(
        self,
        *,
        netns: bool,
        ids: tuple[int, int] | None,
        rlimits: Sequence[tuple[int, int]],
        no_new_privs: bool,
        landlock_fd: int | None,
        seccomp_bpf: bytes | None,
        report_fd: int,
        cgroup_fd: int | None = None,
    ) -> None:
        self.netns = netns
        self.ids = ids
        self.rlimits = rlimits
        self.no_new_privs = no_new_privs
        self.landlock_fd = landlock_fd
        self.seccomp_bpf = seccomp_bpf
        self.report_fd = report_fd
        self.cgroup_fd = cgroup_fd
        # Build the ctypes objects now: the child must not allocate structures it then points to.
        self._bpf_buf = ctypes.create_string_buffer(self.seccomp_bpf or b"\0", len(self.seccomp_bpf or b"\0"))
        self._fprog = SockFprog(len(self.seccomp_bpf or b"") // 8, ctypes.addressof(self._bpf_buf))
        self._fprog_ref = ctypes.byref(self._fprog)
        self._limits = [(res, (val, val)) for res, val in self.rlimits]

    def _fail(self, step: str, err: int) -> None:
        try:
            os.write(self.report_fd, f"{step}:{err}".encode())
        finally:
            raise ChildStepFailed(step)

    def __call__(self) -> None:
        if self.cgroup_fd is not None:
            try:
                os.write(self.cgroup_fd, b"0")  # "0" = the writer: join the run's cgroup before anything runs
            except OSError as exc:
                self._fail("cgroup", exc.errno or 0)
        if self.netns:
            err = unshare_net()
            if err:
                self._fail("netns", err)
        for res, lim in self._limits:
            try:
                resource.setrlimit(res, lim)
            except (OSError, ValueError) as exc:
                self._fail("rlimits", getattr(exc, "errno", 0) or 0)
        if self.ids is not None:
            uid, gid = self.ids
            try:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            except OSError as exc:
                self._fail("identity", exc.errno or 0)
            # Credential changes clear the parent-death signal, so arm it afterwards. "Parent" is the
            # forking *thread*: run() blocks in that thread for the child's whole life, so that is fine.
            set_parent_death_signal()
        if self.no_new_privs and _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            self._fail("no_new_privs", ctypes.get_errno())
        if self.landlock_fd is not None:
            err = landlock.restrict_self(self.landlock_fd)
            if err:
                self._fail("landlock", err)
        if self.seccomp_bpf is not None and _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._fprog_ref, 0, 0) != 0:
            self._fail("seccomp", ctypes.get_errno())
