"""A small single-threaded launcher process that forks the jailed children for the runner.

Why: the runner is multi-threaded and large. Forking it per action is (a) only conditionally safe
(another thread may hold a lock the child then needs) and (b) slow in proportion to its memory (the
page tables are copied; 25 ms at a 256 MiB heap in ``bench/bench_jail.py``). This launcher is a
fresh ``python -I -S`` that imports only the standard library and ``jail_child``, never starts a
thread, and stays small, so its ``fork()`` is cheap and safe. The runner talks to it over a
SOCK_SEQPACKET socketpair: one JSON request per spawn with the pipe and Landlock ruleset fds passed
by SCM_RIGHTS, one JSON reply. The launcher reaps a child only when the runner asks (after the
runner has killed the child's process group), so the group id cannot be recycled in between.

Latency: the request-independent part of a spawn - ``fork``, ``setsid`` and creating the child's
*own, fresh* network namespace (about half a millisecond of kernel work) - is done ahead of time:
after each run the runner asks for a "warm" child (``op: warm``), which waits, already in its empty
netns, for exactly one request (a netns is never shared between runs). The runner receives the
child's socket and failure-report pipe and sends the next spawn request straight to it, so the
critical path has one process hop instead of three. Everything that depends on the run (cwd, fds,
rlimits, uid drop, no_new_privs, Landlock, seccomp) still happens after the request arrives, in the
same order as before. A warm child holds no run data and has not dropped root yet, so no jailed
process can signal or inspect it; it dies with the launcher (PR_SET_PDEATHSIG, EOF on its socket).
Without a warm child (first run, concurrent runs) ``op: spawn`` forks one and uses it at once.

Runs as root like the runner (it must create the netns and switch uid); it dies with the runner
(EOF on the socket) and its children die with it (their PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
from typing import Any, NamedTuple

from sandbox._internal.jail_child import ChildPlan, ChildStepFailed, set_dumpable, set_parent_death_signal, unshare_net

MAX_MSG = 1 << 20
MAX_FDS = 8
DEVNULL = "/dev/null"
#: Dispositions the launcher changed (Python ignores SIGPIPE/SIGXFSZ, we ignore SIGINT); ignored
#: signals survive exec, so the child restores the defaults.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)


class Warm(NamedTuple):
    """A pre-forked child waiting on ``sock`` for its one request; failures arrive on ``report_r``."""

    pid: int
    sock: socket.socket
    report_r: int
    netns: bool


#: A request shaped like a real one, parsed once by each warm child while it waits.
_SAMPLE_DIR = "/run/par-jail-sample"  # never opened: only its length matters
_SAMPLE_REQUEST = json.dumps(
    {
        "argv": ["/usr/bin/docker", "compose", "ps"],
        "env": {"PATH": "/usr/bin", "HOME": _SAMPLE_DIR},
        "cwd": _SAMPLE_DIR,
        "fds": ["stdout", "stderr", "landlock"],
    }
).encode()


def _prime() -> None:
    """Do the request's Python-level work once on sample data before the request arrives.

    A forked child shares the launcher's memory copy-on-write: the first write to each page (object
    allocation, reference counts) faults and copies it. Taking those faults on a dry run, while idle,
    halves the time from request to exec (about 0.15 ms measured) without touching any control.
    """
    req = json.loads(_SAMPLE_REQUEST)
    dict(zip(req["fds"], range(3), strict=True))


def _fork_warm(setup: dict[str, Any], runner_sock: socket.socket) -> Warm:
    """Fork a child that creates its netns now and then waits for one request (argv, env, cwd, fds).

    ``setup`` holds what is the same for every run of a Jail (netns, ids, rlimits, seccomp); the
    child inherits its ChildPlan ready-made, so its critical path parses only the small request.
    """
    netns = bool(setup["netns"])
    plan = _plan_for(setup)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        os.close(report_r)
        os.close(report_w)
        raise
    if pid == 0:  # child: never returns
        code = 127
        stage = "launcher"  # what an OSError means: our own setup failed, or (later) chdir/exec did
        try:
            gc.disable()  # a collection would touch (copy-on-write) every object the launcher has
            runner_sock.close()
            ours.close()
            os.close(report_r)
            set_parent_death_signal()  # the launcher is single-threaded: "parent" is the launcher
            os.setsid()
            for sig in RESET_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            if netns:
                err = unshare_net()
                if err:
                    os.write(report_w, f"netns:{err}".encode())
                    raise ChildStepFailed("netns")
            _prime()
            msg, fdlist, _flags, _addr = socket.recv_fds(theirs, MAX_MSG, MAX_FDS)
            if not msg:
                code = 0  # discarded by the launcher
            else:
                theirs.close()
                req = json.loads(msg)
                stage = "exec"
                _become_action(plan, req, dict(zip(req["fds"], fdlist, strict=True)), report_w)
        except ChildStepFailed:
            code = 126
        except OSError as exc:
            os.write(report_w, f"{stage}:{exc.errno or 0}".encode())
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            os.write(report_w, b"launcher:0")
        finally:
            os._exit(code)
    theirs.close()
    os.close(report_w)
    return Warm(pid, ours, report_r, netns)


#: ChildPlans by their static part (ids, rlimits, seccomp), built in the launcher so that children
#: inherit them ready-made instead of decoding BPF and building ctypes structures after fork.
_PLANS: dict[str, ChildPlan] = {}


def _plan_for(setup: dict[str, Any]) -> ChildPlan:
    key = json.dumps([setup["ids"], setup["rlimits"], setup["seccomp"]])
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = ChildPlan(
            netns=False,  # the warm child creates it before its request arrives
            ids=(int(setup["ids"][0]), int(setup["ids"][1])) if setup["ids"] else None,
            rlimits=[(int(res), int(val)) for res, val in setup["rlimits"]],
            no_new_privs=True,
            landlock_fd=None,
            seccomp_bpf=bytes.fromhex(setup["seccomp"]) if setup["seccomp"] else None,
            report_fd=-1,
        )
        while len(_PLANS) > 4:  # one Jail per launcher: more keys only if a config changed
            del _PLANS[next(iter(_PLANS))]
    return plan


def _become_action(plan: ChildPlan, req: dict[str, Any], fds: dict[str, int], report_w: int) -> None:
    """In the warm child: apply the run's controls (netns is already done) and exec; raises on failure."""
    plan.landlock_fd = fds.get("landlock")  # our own copy after fork: this touches no one else's
    plan.cgroup_fd = fds.get("cgroup")
    plan.report_fd = report_w
    argv, env = req["argv"], req["env"]
    os.chdir(req["cwd"])
    os.umask(0o077)
    devnull = os.open(DEVNULL, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds["stdout"], 1)
    os.dup2(fds["stderr"], 2)
    plan()
    os.closerange(3, report_w)
    os.closerange(report_w + 1, 1 << 20)
    os.execvpe(argv[0], argv, env)  # noqa: S606 - argv vector from the catalog, no shell


def _spawn(req: dict[str, Any], fdlist: list[int], msg: bytes, runner_sock: socket.socket) -> dict[str, Any]:
    """Cold path (no warm child at hand): fork one now and hand it the request at once."""
    warm = _fork_warm(req, runner_sock)
    try:
        socket.send_fds(warm.sock, [msg], fdlist)
    except OSError:
        pass  # the child already failed: its report says why
    finally:
        warm.sock.close()
    try:
        report = b""
        while chunk := os.read(warm.report_r, 256):  # EOF: exec succeeded (CLOEXEC) or the child exited
            report += chunk
    finally:
        os.close(warm.report_r)
    if report:
        os.waitpid(warm.pid, 0)
        step, _, err = report.decode(errors="replace").partition(":")
        return {"error": step, "errno": int(err) if err.isdigit() else 0}
    return {"pid": warm.pid}


def serve(sock: socket.socket) -> None:
    while True:
        try:
            msg, fdlist, _flags, _addr = socket.recv_fds(sock, MAX_MSG, MAX_FDS)
        except ConnectionResetError:
            return  # the runner closed its end with a reply still unread (an unused warm child)
        if not msg:
            return  # the runner went away
        give: list[int] = []  # fds to pass back with the reply (a warm child's socket and report pipe)
        try:
            req = json.loads(msg)
            if len(req.get("fds", [])) != len(fdlist):
                raise ValueError("fd count does not match the request")
            if req["op"] == "spawn":
                reply = _spawn(req, fdlist, msg, sock)
            elif req["op"] == "warm":
                # The runner sends the next request straight to this child, saving two hops on the
                # critical path; we stay its parent, so it is reaped (and its pid reserved) via "reap".
                warm = _fork_warm(req, sock)
                reply = {"pid": warm.pid, "netns": warm.netns}
                give = [warm.sock.detach(), warm.report_r]
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
        try:
            socket.send_fds(sock, [json.dumps(reply).encode()], give)
        finally:
            for fd in give:
                os.close(fd)


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
