"""Runner side of the jail launcher (``jail_launcher.py``): start it once, send spawn/reap requests.

One launcher per :class:`~sandbox.jail.Jail`; requests are serialised by a lock (a spawn takes about a
millisecond, a reap of a zombie microseconds), so concurrent runner threads simply queue. A launcher
that died is restarted on the next request; a request it cannot answer is a JailError (fail closed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.errors import JailError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
REPLY_TIMEOUT_S = 30.0
_BOOT = "import sys; sys.path.insert(0, sys.argv[2]); from sandbox._internal.jail_launcher import main; main()"


class Launcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

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
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def request(self, doc: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self._lock:
            sock = self._sock
            if sock is None or self._proc is None or self._proc.poll() is not None:
                self._reset()
                sock = self._start()
            try:
                socket.send_fds(sock, [json.dumps(doc).encode()], list(fds))
                data = sock.recv(65536)
            except OSError as exc:
                self._reset()
                raise JailError(f"the jail launcher did not answer: {exc}") from None
            if not data:
                self._reset()
                raise JailError("the jail launcher exited")
            reply: dict[str, Any] = json.loads(data)
            return reply

    def close(self) -> None:
        with self._lock:
            self._reset()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def close_quietly(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
