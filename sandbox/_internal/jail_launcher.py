"""A small single-threaded launcher process that forks the jailed children for the runner.

Why: the runner is multi-threaded and large. Forking it per action is (a) only conditionally safe
(another thread may hold a lock the child then needs) and (b) slow in proportion to its memory (the
page tables are copied; 25 ms at a 256 MiB heap in ``bench/bench_jail.py``). This launcher is a
fresh ``python -I -S`` that imports only the standard library and ``jail_child``, never starts a
thread, and stays small, so its ``fork()`` is cheap and safe. The runner talks to it over a
SOCK_SEQPACKET socketpair: one JSON request per spawn with the pipe and Landlock ruleset fds passed
by SCM_RIGHTS, one JSON reply. The launcher reaps a child only when the runner asks (after the
runner has killed the child's process group), so the group id cannot be recycled in between.

Runs as root like the runner (it must create the netns and switch uid); it dies with the runner
(EOF on the socket) and its children die with it (their PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from sandbox._internal.jail_child import ChildPlan, ChildStepFailed, set_dumpable

MAX_MSG = 1 << 20
MAX_FDS = 8
DEVNULL = "/dev/null"


def _spawn(req: dict[str, Any], fds: dict[str, int]) -> dict[str, Any]:
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    plan = ChildPlan(
        netns=req["netns"],
        ids=(int(req["ids"][0]), int(req["ids"][1])) if req["ids"] else None,
        rlimits=[(int(res), int(val)) for res, val in req["rlimits"]],
        no_new_privs=True,
        landlock_fd=fds.get("landlock"),
        seccomp_bpf=bytes.fromhex(req["seccomp"]) if req["seccomp"] else None,
        report_fd=report_w,
        cgroup_fd=fds.get("cgroup"),
    )
    argv, env, cwd = req["argv"], req["env"], req["cwd"]
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 127
        try:
            os.setsid()
            os.chdir(cwd)
            os.umask(0o077)
            devnull = os.open(DEVNULL, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(fds["stdout"], 1)
            os.dup2(fds["stderr"], 2)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; ignored survives exec
                signal.signal(sig, signal.SIG_DFL)
            plan()
            os.closerange(3, report_w)
            os.closerange(report_w + 1, 1 << 20)
            os.execvpe(argv[0], argv, env)  # noqa: S606 - argv vector from the catalog, no shell
        except ChildStepFailed:
            code = 126
        except OSError as exc:
            os.write(report_w, f"exec:{exc.errno or 0}".encode())
        finally:
            os._exit(code)
    os.close(report_w)
    try:
        report = b""
        while chunk := os.read(report_r, 256):
            report += chunk
    finally:
        os.close(report_r)
    if report:
        os.waitpid(pid, 0)
        step, _, err = report.decode(errors="replace").partition(":")
        return {"error": step, "errno": int(err) if err.isdigit() else 0}
    return {"pid": pid}


def serve(sock: socket.socket) -> None:
    while True:
        msg, fdlist, _flags, _addr = socket.recv_fds(sock, MAX_MSG, MAX_FDS)
        if not msg:
            return  # the runner went away
        try:
            req = json.loads(msg)
            fds = dict(zip(req.get("fds", []), fdlist, strict=True))
            if req["op"] == "spawn":
                reply = _spawn(req, fds)
            elif req["op"] == "reap":
                _, status = os.waitpid(int(req["pid"]), 0)
                reply = {"status": status}
            else:
                reply = {"error": "protocol", "errno": 0}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            reply = {"error": "launcher", "errno": getattr(exc, "errno", 0) or 0, "detail": str(exc)[:200]}
        finally:
            for fd in fdlist:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def main() -> None:
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us exits, and the runner starts
    # us from whichever worker thread runs first. EOF on the socket (the runner's end closes when it
    # dies) ends serve(); our children's own death signal then takes them down with us.
    set_dumpable(False)  # like the runner: no /proc/<launcher>/mem or environ for anyone but root
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when we stop (Ctrl-C hits the group)
    sock = socket.socket(fileno=int(sys.argv[1]))
    serve(sock)


if __name__ == "__main__":
    main()
