"""Spawn-to-exit latency of /bin/true: plain subprocess.run vs the jail vs bwrap, in one run.

Goal (issue 4): jail <= 4x plain and faster than bwrap with comparable isolation. bwrap gets a new
net/pid/ipc/uts namespace, a read-only root, a fresh /dev, /proc and /tmp, dropped capabilities, a
clean environment, a new session and the *same* seccomp BPF as the jail (``--seccomp FD``).
"jail" is the default spawn mode (children forked by a small launcher process, which prepares the
next run's child - fork + fresh netns - while the runner is idle); "spawn=fork" forks the runner
itself. "jail, back-to-back" runs the jail with nothing in between, so the next child is still being
prepared when the next run starts (the worst case for that head start). Both spawn modes are also
measured with a 256 MiB heap in the runner, because fork cost grows with the forking process's
page tables. Needs root, Landlock, libseccomp and the par-jail user.

    python bench/bench_jail.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox._internal import seccomp_filter  # noqa: E402
from sandbox.config import JailConfig  # noqa: E402
from sandbox.jail import Jail  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_jail.json"
TRUE = "/bin/true"


def timed(cases: dict[str, object], runs: int) -> dict[str, dict[str, float]]:
    """Round-robin the cases so background load on a shared machine hits them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(runs + 10):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            if i >= 10:  # warm-up rounds
                samples[name].append((time.perf_counter() - t0) * 1000)
    out = {}
    for name, xs in samples.items():
        xs.sort()
        out[name] = {
            "median_ms": statistics.median(xs),
            "p90_ms": xs[int(len(xs) * 0.9) - 1],
            "min_ms": xs[0],
            "runs": len(xs),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (the jail switches to the par-jail uid)", file=sys.stderr)
        return 2
    jail = Jail(JailConfig(spawn="launcher"), proxy_socket=Path("/run/par/docker-proxy.sock"), project="bench")
    fork_jail = Jail(JailConfig(spawn="fork"), proxy_socket=Path("/run/par/docker-proxy.sock"), project="bench")
    check = jail.run([TRUE])
    assert check.exit_code == 0 and fork_jail.run([TRUE]).exit_code == 0, check

    def plain() -> None:
        subprocess.run([TRUE], check=True)

    def jailed() -> None:
        r = jail.run([TRUE])
        assert r.exit_code == 0

    def fork_jailed() -> None:
        r = fork_jail.run([TRUE])
        assert r.exit_code == 0

    cases: dict[str, object] = {"plain subprocess.run": plain, "jail": jailed, "jail, spawn=fork": fork_jailed}

    bwrap = shutil.which("bwrap")
    if bwrap:
        bpf = seccomp_filter.build_program().bpf
        fd = os.memfd_create("bench-bpf", 0)

        def bwrapped() -> None:
            os.pwrite(fd, bpf, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            # fmt: off
            subprocess.run(
                [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                 "--new-session", "--cap-drop", "ALL", "--clearenv", "--ro-bind", "/", "/", "--dev", "/dev",
                 "--proc", "/proc", "--tmpfs", "/tmp", "--chdir", "/tmp", "--seccomp", str(fd), TRUE],
                check=True, pass_fds=(fd,),
            )
            # fmt: on

        cases["bwrap"] = bwrapped
    results = timed(cases, args.runs)
    if bwrap:
        os.close(fd)
    back_to_back = timed({"plain": plain}, max(30, args.runs // 4))
    results["plain, back-to-back"] = back_to_back["plain"]
    results["jail, back-to-back"] = timed({"jail": jailed}, max(30, args.runs // 4))["jail"]

    ballast = bytearray(256 * 1024 * 1024)
    ballast[::4096] = b"\1" * (len(ballast) // 4096)  # touch: real page tables to copy at fork
    heavy = timed({"plain": plain, "jail": jailed, "fork": fork_jailed}, max(30, args.runs // 5))
    results["plain, runner with 256 MiB heap"] = heavy["plain"]
    results["jail, runner with 256 MiB heap"] = heavy["jail"]
    results["jail spawn=fork, 256 MiB heap"] = heavy["fork"]
    del ballast
    jail.close()

    base = results["plain subprocess.run"]["median_ms"]
    print(f"{'case':34} {'median ms':>10} {'p90 ms':>8} {'x plain':>8}")
    for name, r in results.items():
        print(f"{name:34} {r['median_ms']:10.3f} {r['p90_ms']:8.3f} {r['median_ms'] / base:8.2f}")
    ratio = results["jail"]["median_ms"] / base
    vs_bwrap = results["jail"]["median_ms"] / results["bwrap"]["median_ms"] if "bwrap" in results else None
    print(f"\njail/plain = {ratio:.2f} (goal <= 4)", end="")
    print(f", jail/bwrap = {vs_bwrap:.2f} (goal < 1)" if vs_bwrap is not None else ", bwrap not installed")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "jail spawn-to-exit of /bin/true",
        "results": results,
        "jail_over_plain": ratio,
        "jail_over_bwrap": vs_bwrap,
        "controls": list(check.controls),
        "landlock_abi": check.landlock_abi,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
