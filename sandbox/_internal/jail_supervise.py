"""Watching a jailed process: bounded output capture, wall-clock timeout, cancellation, group kill.

One poll loop per run (in the caller's worker thread) over stdout, stderr and a pidfd of the leader,
so no extra threads are needed and memory stays bounded however much the child writes: each stream
keeps at most ``limit`` bytes and only counts the rest. Signals go to the whole process group
(``start_new_session`` made the leader its own group), and are sent while the leader is still an
unreaped zombie so its pid - the group id - cannot have been recycled. Once the leader has exited,
any process still in its group is killed: an action is over when its main process is.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 65536
POLL_SLICE_S = 0.1  # how often cancellation is noticed
DRAIN_AFTER_EXIT_S = 2.0  # after the group is killed, read what is left for at most this long


@dataclass
class Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))


@dataclass
class Outcome:
    status: int  # waitpid status
    stdout: Capture
    stderr: Capture
    timed_out: bool
    cancelled: bool


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def supervise(
    pid: int,
    stdout_fd: int,
    stderr_fd: int,
    *,
    limit: int,
    timeout_s: float,
    grace_s: float,
    cancel: threading.Event | None,
    kill_extra: Callable[[], None] = lambda: None,
    reap: Callable[[], int] | None = None,
    pidfd: int | None = None,
) -> Outcome:
    """Run until the leader exits (or is killed) and the pipes are drained; always reaps ``pid``.

    ``reap`` returns the wait status; by default ``waitpid`` (the leader is our child), with the
    launcher it asks the launcher, whose child it is. Either way only after the group kill.
    ``pidfd`` (if given, closed here) is a pidfd the caller already holds for ``pid``.
    """
    if pidfd is None:
        pidfd = os.pidfd_open(pid)
    out, err = Capture(limit), Capture(limit)
    streams = {stdout_fd: out, stderr_fd: err}
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    now = time.monotonic()
    deadline = now + timeout_s
    kill_at: float | None = None
    timed_out = cancelled = False
    exited = False
    drain_until = float("inf")
    try:
        while streams or not exited:
            now = time.monotonic()
            if not exited:
                if kill_at is None and (now >= deadline or (cancel is not None and cancel.is_set())):
                    timed_out = now >= deadline
                    cancelled = not timed_out
                    kill_group(pid, signal.SIGTERM)
                    kill_at = now + grace_s
                elif kill_at is not None and now >= kill_at:
                    kill_group(pid, signal.SIGKILL)
                    kill_extra()
                    kill_at = float("inf")
            elif now >= drain_until:
                break
            next_event = drain_until if exited else deadline if kill_at is None else kill_at
            wait = min(POLL_SLICE_S, max(0.0, next_event - now))
            for fd, _ev in poller.poll(wait * 1000):
                if fd == pidfd:
                    # Leader exited (zombie, pid still reserved): take down the rest of its group.
                    poller.unregister(pidfd)
                    exited = True
                    kill_group(pid, signal.SIGKILL)
                    kill_extra()
                    drain_until = time.monotonic() + DRAIN_AFTER_EXIT_S
                    continue
                chunk = os.read(fd, CHUNK)
                if chunk:
                    streams[fd].feed(chunk)
                else:
                    poller.unregister(fd)
                    del streams[fd]
    finally:
        if not exited:
            kill_group(pid, signal.SIGKILL)
            kill_extra()
        os.close(pidfd)
        status = reap() if reap is not None else os.waitpid(pid, 0)[1]
    return Outcome(status, out, err, timed_out, cancelled)
