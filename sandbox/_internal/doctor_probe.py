"""Probes `par doctor` runs in a forked child, so a dropped uid never leaks back into the doctor.

The question "can the jail's uid reach the real Docker socket?" is only answered honestly by trying:
permissions, ACLs, group membership and LSMs all take part, and a stat()-based guess misses some.
The child makes only async-signal-safe-enough calls (setgroups/setresgid/setresuid/socket/connect)
and reports through its exit status.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

CONNECTED, REFUSED, ABSENT, DROP_FAILED, OTHER = 10, 11, 12, 13, 14
_ABSENT_ERRNOS = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR}
_REFUSED_ERRNOS = {errno.EACCES, errno.EPERM}


def connect_as(sock_path: Path, ids: tuple[int, int] | None, *, timeout_s: float = 5.0) -> int:
    """Fork, drop to ``ids`` (uid, gid; None = stay as we are), try to connect; returns a status code above."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = OTHER
        try:
            if ids is not None:
                try:
                    os.setgroups([])
                    os.setresgid(ids[1], ids[1], ids[1])
                    os.setresuid(ids[0], ids[0], ids[0])
                except OSError:
                    os._exit(DROP_FAILED)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout_s)
            try:
                s.connect(str(sock_path))
                code = CONNECTED
            except OSError as exc:
                if exc.errno in _REFUSED_ERRNOS:
                    code = REFUSED
                elif exc.errno in _ABSENT_ERRNOS:
                    code = ABSENT
            finally:
                s.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
