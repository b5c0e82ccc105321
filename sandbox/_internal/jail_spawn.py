"""Runner side of the jail launcher (``jail_launcher.py``): start it once, send spawn/reap requests.

One launcher per :class:`~sandbox.jail.Jail`; requests are serialised by a lock (a spawn takes about a
millisecond, a reap of a zombie microseconds), so concurrent runner threads simply queue. A launcher
that died is restarted on the next request; a request it cannot answer is a JailError (fail closed).

After each run the runner asks for the next run's "warm" child (:meth:`Launcher.prewarm`) without
waiting for the answer; the answer is collected by the next request (replies come in order) and
:meth:`Launcher.take_warm` hands it to one spawn, which talks to the child directly. The child's
pidfd is opened while the launcher - its parent, which reaps only on our request - is known to be
alive, so the pid can never be a recycled one.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.errors import JailError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
REPLY_TIMEOUT_S = 30.0
_BOOT = "import sys; sys.path.insert(0, sys.argv[2]); from sandbox._internal.jail_launcher import main; main()"


@dataclass
class WarmChild:
    """A launcher child waiting, in its own fresh netns, for one spawn request on ``sock``."""

    pid: int
    pidfd: int
    sock: socket.socket
    report_r: int
    netns: bool

    def close(self) -> None:
        """Close our ends (the child then exits on EOF); ``pidfd`` only if nobody took it over."""
        self.sock.close()
        close_quietly(self.report_r, self.pidfd)
        self.report_r = self.pidfd = -1


class Launcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._warm: WarmChild | None = None
        self._warm_pending = False  # a "warm" request was sent; its reply is next in the socket

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, str(theirs.fileno()), str(PACKAGE_ROOT)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                env={},  # the runner's environment (tokens, keys) has no business in the launcher
            )
        except OSError as exc:
            ours.close()
            raise JailError(f"cannot start the jail launcher: {exc}") from None
        finally:
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT_S)
        self._sock = ours
        return ours

    def _reset(self) -> None:
        if self._warm is not None:
            self._warm.close()
            self._warm = None
        self._warm_pending = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _alive(self) -> bool:
        return self._sock is not None and self._proc is not None and self._proc.poll() is None

    def _recv(self, sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
        data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 2, socket.MSG_CMSG_CLOEXEC)
        if not data:
            close_quietly(*fds)
            raise EOFError("the jail launcher exited")
        reply: dict[str, Any] = json.loads(data)
        return reply, fds

    def _collect_warm(self, sock: socket.socket) -> None:
        """Read the pending "warm" reply (it precedes any later reply) and keep the child if usable."""
        if not self._warm_pending:
            return
        self._warm_pending = False
        reply, fds = self._recv(sock)
        if "pid" not in reply or len(fds) != 2:
            close_quietly(*fds)
            return
        pid = int(reply["pid"])
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            close_quietly(*fds)
            return
        warm = WarmChild(pid, pidfd, socket.socket(fileno=fds[0]), fds[1], bool(reply.get("netns")))
        if not self._alive():  # the launcher may have died (and init reaped the child) before pidfd_open
            warm.close()
            return
        self._warm = warm

    def request(self, doc: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self._lock:
            sock = self._sock
            if sock is None or not self._alive():
                self._reset()
                sock = self._start()
            try:
                socket.send_fds(sock, [json.dumps(doc).encode()], list(fds))
                self._collect_warm(sock)
                reply, extra = self._recv(sock)
            except (OSError, EOFError, ValueError) as exc:
                self._reset()
                raise JailError(f"the jail launcher did not answer: {exc}") from None
            close_quietly(*extra)
            return reply

    def prewarm(self, setup: dict[str, Any]) -> None:
        """Ask for the next run's child now; the reply is read by the next request or take_warm().

        ``setup`` is the static part of a spawn request (netns, ids, rlimits, seccomp).
        """
        with self._lock:
            if self._warm is not None or self._warm_pending or self._sock is None or not self._alive():
                return
            try:
                self._sock.send(json.dumps({**setup, "op": "warm"}).encode())
            except OSError:
                self._reset()
                return
            self._warm_pending = True

    def take_warm(self, netns: bool) -> WarmChild | None:
        """The warm child for one spawn (the caller owns it), or None: then use a "spawn" request."""
        with self._lock:
            if self._sock is None or not self._alive():
                return None  # the next request() restarts the launcher
            try:
                self._collect_warm(self._sock)
            except (OSError, EOFError, ValueError):
                self._reset()
                return None
            warm, self._warm = self._warm, None
        if warm is not None and warm.netns != netns:
            self.discard(warm)
            return None
        return warm

    def discard(self, warm: WarmChild) -> None:
        """Drop an unused or failed warm child: it exits on EOF (or is killed) and is reaped."""
        with contextlib.suppress(OSError):
            signal_pidfd(warm.pidfd)
        warm.close()
        with contextlib.suppress(JailError):
            self.request({"op": "reap", "pid": warm.pid})

    def close(self) -> None:
        with self._lock:
            self._reset()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def signal_pidfd(pidfd: int, sig: int = 9) -> None:
    """SIGKILL through a pidfd: reaches exactly that process, never a recycled pid."""
    signal.pidfd_send_signal(pidfd, sig)


def read_report(fd: int, timeout_s: float) -> bytes:
    """Read a child's failure report until EOF (its exec closed the CLOEXEC pipe, or it exited)."""
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    report = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError(f"no exec after {timeout_s:g} s")
        chunk = os.read(fd, 256)
        if not chunk:
            return report
        report += chunk


def close_quietly(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
