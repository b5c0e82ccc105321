"""Run inside a hardened test container: try each privileged operation, print {name: errno} as JSON.

0 means the call succeeded. Each attempt happens in a forked child so a success (a new namespace)
never leaks into the next attempt.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
from collections.abc import Callable

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x40000000, 0x00020000, 0x10000000, 0x20000000
NR_IO_URING_SETUP, NR_LANDLOCK_CREATE_RULESET, NR_BPF = 425, 444, 321


def in_child(fn: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(fn())
        except BaseException:
            os._exit(255)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def libc_call(name: str, *args: object) -> Callable[[], int]:
    def call() -> int:
        return 0 if getattr(libc, name)(*args) >= 0 else ctypes.get_errno()

    return call


def raw(nr: int, *args: object) -> Callable[[], int]:
    def call() -> int:
        return 0 if libc.syscall(nr, *args) >= 0 else ctypes.get_errno()

    return call


def sock(family: int, kind: int = socket.SOCK_STREAM) -> Callable[[], int]:
    def call() -> int:
        try:
            socket.socket(family, kind).close()
        except OSError as exc:
            return exc.errno or -1
        return 0

    return call


PROBES = {
    "unshare_net": libc_call("unshare", CLONE_NEWNET),
    "unshare_mnt": libc_call("unshare", CLONE_NEWNS),
    "unshare_user": libc_call("unshare", CLONE_NEWUSER),
    "unshare_net_pid": libc_call("unshare", CLONE_NEWNET | CLONE_NEWPID),
    "mount_tmpfs": libc_call("mount", b"none", b"/tmp", b"tmpfs", 0, None),
    "setns": libc_call("setns", 0, 0),
    "ptrace_parent": libc_call("ptrace", 16, os.getppid(), None, None),
    "io_uring_setup": raw(NR_IO_URING_SETUP, 1, None),
    "bpf": raw(NR_BPF, 0, None, 0),
    "landlock_create_ruleset": raw(NR_LANDLOCK_CREATE_RULESET, None, 0, 1),
    "af_unix": sock(socket.AF_UNIX),
    "af_inet": sock(socket.AF_INET),
    "af_inet6": sock(socket.AF_INET6),
    "af_netlink": sock(socket.AF_NETLINK, socket.SOCK_RAW),
    "af_packet": sock(socket.AF_PACKET, socket.SOCK_RAW),
    "af_vsock": sock(40),
}

if __name__ == "__main__":
    print(json.dumps({name: in_child(fn) for name, fn in PROBES.items()}))
