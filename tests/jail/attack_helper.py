"""Escape attempts run INSIDE the jail by the system python (/usr/bin/python3 -I -S attack_helper.py NAME ARGS).

Each attack prints one line per attempt, ``BLOCKED <what> <errno name>`` or ``SUCCEEDED <what>``,
so the tests can assert on exact outcomes. Only the standard library: the jail uid cannot reach a venv.
"""

import ctypes
import errno
import os
import signal
import socket
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SYS_CLONE = 56
SYS_CLONE3 = 435
SYS_PTRACE = 101
SYS_MOUNT = 165
SYS_UNSHARE = 272
SYS_PERSONALITY = 135
SYS_IOCTL = 16
TIOCSTI = 0x5412


def report(what, ok, err=0):
    if ok:
        print("SUCCEEDED", what, flush=True)
    else:
        print("BLOCKED", what, errno.errorcode.get(err, str(err)), flush=True)


def raw(what, nr, *args):
    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) if isinstance(a, int) else a for a in args])
    err = ctypes.get_errno()
    if res == 0 and nr == SYS_CLONE:
        os._exit(0)  # we are the new child: leave quietly
    if res > 0 and nr == SYS_CLONE:
        os.waitpid(res, 0)
    report(what, res >= 0, err)


def sockets(port):
    for name, fam, typ in (
        ("AF_INET", socket.AF_INET, socket.SOCK_STREAM),
        ("AF_INET6", socket.AF_INET6, socket.SOCK_STREAM),
        ("AF_NETLINK", socket.AF_NETLINK, socket.SOCK_RAW),
        ("AF_PACKET", socket.AF_PACKET, socket.SOCK_RAW),
    ):
        try:
            socket.socket(fam, typ).close()
            report(f"socket:{name}", True)
        except OSError as exc:
            report(f"socket:{name}", False, exc.errno)
    try:
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=2)
        s.close()
        report("connect:loopback", True)
    except OSError as exc:
        report("connect:loopback", False, exc.errno or 0)


def unix_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        report(f"connect:{path}", True)
    except OSError as exc:
        report(f"connect:{path}", False, exc.errno)
    finally:
        s.close()


def read(*paths):
    for p in paths:
        try:
            if os.path.isdir(p):
                os.listdir(p)
            else:
                with open(p, "rb") as f:
                    f.read(16)
            report(f"read:{p}", True)
        except OSError as exc:
            report(f"read:{p}", False, exc.errno)


def write(*paths):
    for p in paths:
        try:
            with open(p, "wb") as f:
                f.write(b"pwned")
            report(f"write:{p}", True)
        except OSError as exc:
            report(f"write:{p}", False, exc.errno)


def namespaces():
    raw("clone:CLONE_NEWUSER", SYS_CLONE, CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
    raw("clone:CLONE_NEWNET", SYS_CLONE, CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0)
    raw("clone3", SYS_CLONE3, 0, 0)
    raw("unshare:CLONE_NEWUSER", SYS_UNSHARE, CLONE_NEWUSER)
    raw("unshare:CLONE_NEWNET", SYS_UNSHARE, CLONE_NEWNET)
    raw("ptrace:ATTACH_parent", SYS_PTRACE, 16, os.getppid(), 0, 0)
    raw("ptrace:TRACEME", SYS_PTRACE, 0, 0, 0, 0)
    raw("mount:tmpfs", SYS_MOUNT, b"none", os.getcwd().encode(), b"tmpfs", 0, 0)
    raw("personality:ADDR_NO_RANDOMIZE", SYS_PERSONALITY, 0x0040000)
    buf = ctypes.create_string_buffer(b"x")
    raw("ioctl:TIOCSTI", SYS_IOCTL, 0, TIOCSTI, buf)
    raw("ioctl:TIOCSTI_highbits", SYS_IOCTL, 0, (1 << 32) | TIOCSTI, buf)


def x32():
    """An x32-ABI syscall (getpid | __X32_SYSCALL_BIT) must kill the process (libseccomp arch check)."""
    print("TRYING x32", flush=True)
    res = libc.syscall(ctypes.c_long(0x40000000 | 39))
    report("x32:getpid", res >= 0, ctypes.get_errno())


def legit():
    """Calls ordinary programs need must still work under the filter."""
    raw("personality:query", SYS_PERSONALITY, 0xFFFFFFFF)
    pid = os.fork()  # glibc fork -> clone without namespace flags
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    report("fork", os.WEXITSTATUS(status) == 7)
    a, b = socket.socketpair()
    a.close()
    b.close()
    report("socket:AF_UNIX", True)


def fork_bomb(cap):
    children, err = [], 0
    for _ in range(int(cap)):
        try:
            pid = os.fork()
        except OSError as exc:
            err = exc.errno
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    print("FORKED", len(children), errno.errorcode.get(err, str(err)), flush=True)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def memory_bomb():
    held, chunk = [], 64 * 1024 * 1024
    try:
        for _ in range(1024):  # up to 64 GiB
            b = bytearray(chunk)
            b[::4096] = b"\1" * (chunk // 4096)  # touch every page
            held.append(b)
        print("SUCCEEDED memory", len(held) * 64, "MiB", flush=True)
    except MemoryError:
        print("BLOCKED memory after", len(held) * 64, "MiB", flush=True)


def ignore_term(escape):
    """Ignore SIGTERM, fork a grandchild (optionally escaping the process group), print both pids, wait."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        if escape == "setsid":
            try:
                os.setsid()
                print("SUCCEEDED setsid", flush=True)
            except OSError as exc:
                print("BLOCKED setsid", errno.errorcode.get(exc.errno, exc.errno), flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    print("PIDS", os.getpid(), pid, flush=True)
    while True:
        time.sleep(1)


def setuid(path):
    os.execv(path, [path, "-u"])


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
