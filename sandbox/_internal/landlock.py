"""Minimal ctypes bindings for Landlock (no Python binding is packaged for Debian or PyPI that we trust).

Only what the jail needs: query the ABI, build a ruleset in the *parent* (open the allowed paths,
add one ``path_beneath`` rule per path) and hand its fd to the child, which only calls
``landlock_restrict_self`` (after ``no_new_privs``). Building in the parent keeps the forked child
free of path walking and allocation; the fd is inherited through fork and closed by exec (O_CLOEXEC).

Access rights are masked by the running kernel's ABI, and the ABI used is reported, so an older
kernel gives a weaker but *recorded* sandbox (and ``require: [landlock]`` still demands ABI >= 1).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # not at run time: the jail launcher imports this module and must stay small
    from collections.abc import Iterable
    from pathlib import Path

# Syscall numbers are the same on every architecture (asm-generic numbering, added in 5.13).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

# linux/landlock.h filesystem rights, with the ABI that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # rights valid on a non-directory

READ_EXEC = EXECUTE | READ_FILE | READ_DIR
READ_ONLY = READ_FILE | READ_DIR
READ_WRITE_DEV = READ_FILE | WRITE_FILE | TRUNCATE  # /dev/null and friends
FULL_TREE = (1 << 16) - 1  # everything, masked down to the ABI

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class LandlockUnavailable(OSError):
    """The kernel has no Landlock (or it is disabled); the caller decides whether that is fatal."""


def abi_version() -> int | None:
    """Landlock ABI of the running kernel, or None when Landlock is absent/disabled."""
    res = _syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION)
    )
    return int(res) if res > 0 else None


class PathRule(NamedTuple):
    """Allow ``access`` (Landlock fs rights) beneath ``path`` (a directory, or a single file)."""

    path: Path
    access: int


class Ruleset:
    """An open Landlock ruleset fd, ready for ``restrict_self`` in a child."""

    def __init__(self, fd: int, abi: int, skipped: tuple[Path, ...]) -> None:
        self.fd = fd
        self.abi = abi
        self.skipped = skipped  # rule paths that did not exist, for diagnostics

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def build_ruleset(rules: Iterable[PathRule], *, abi: int) -> Ruleset:
    """Create a ruleset handling every right this ABI knows; only ``rules`` are allowed."""
    fs = FS_BY_ABI.get(abi, FS_BY_ABI[5])
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs, net)
    else:
        attr = struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = int(_syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)))
    if fd < 0:
        err = ctypes.get_errno()
        raise LandlockUnavailable(err, f"landlock_create_ruleset: {os.strerror(err)}")
    skipped: list[Path] = []
    # One attribute buffer and pre-built ctypes arguments for all rules: this runs once per jailed
    # run on the runner's critical path, where per-rule ctypes object creation was most of its cost.
    rattr = ctypes.create_string_buffer(12)
    add_rule = (ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(RULE_PATH_BENEATH))
    no_flags = ctypes.c_uint32(0)
    try:
        for rule in rules:
            try:
                pfd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                skipped.append(rule.path)
                continue
            try:
                access = rule.access & fs
                if not stat.S_ISDIR(os.fstat(pfd).st_mode):
                    access &= FILE_ONLY
                struct.pack_into("=Qi", rattr, 0, access, pfd)
                if _syscall(*add_rule, rattr, no_flags) < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({rule.path}): {os.strerror(err)}")
            finally:
                os.close(pfd)
    except BaseException:
        os.close(fd)
        raise
    return Ruleset(fd, abi, tuple(skipped))


def restrict_self(ruleset_fd: int) -> int:
    """Enforce the ruleset on the calling thread; returns 0 or an errno. Safe in a forked child."""
    res = _syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
    return 0 if res == 0 else (ctypes.get_errno() or errno.EINVAL)
