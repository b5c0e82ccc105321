"""Pipeline overhead per task, tasks/s with a trivial action, and idle RSS of `par run`.

Everything real: the local control plane over HTTP on 127.0.0.1, signed tasks, JWT per request, the
embedded policy, the durable audit log (fsync), the in-process proxy and the jail. The action is a
test-only catalog entry ``check_true`` (``/bin/true``, category diagnostic), added to a copy of the
catalog and of the policy data, as a team would add an action.

* overhead = (publish of the result) - (dequeue returned the task) - (the jail's own run time): what the
  checks, the policy, the audit records and the bookkeeping add to an action. Baselines in the same
  run: plain ``subprocess.run(/bin/true)`` and ``Jail.run(/bin/true)`` called directly.
* tasks/s: a burst of tasks queued at once, concurrency from the config (5), first dequeue -> last publish.
* idle RSS of a real ``par run`` process a few seconds after start, vs an idle bare Python interpreter.

Goals (issue 7): overhead <= 30 ms median, idle RSS <= 60 MB.

    python bench/bench_pipeline.py [--tasks 40] [--burst 150]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox import protocol  # noqa: E402
from sandbox._internal import demo_stack  # noqa: E402
from sandbox._internal.runner_http import ControlPlanePeer, HttpPeer  # noqa: E402
from sandbox._internal.runner_stack import open_runner  # noqa: E402
from sandbox.jail import Jail  # noqa: E402
from sandbox.keys import load_runner_key  # noqa: E402
from sandbox.runner import run_until_stopped  # noqa: E402
from tests.runner.support import Harness, SubprocessRunner, make_install, principal, remove_install  # noqa: E402

RESULTS = REPO / "bench" / "results" / "bench_pipeline.json"


class TimingPeer:
    """The real HTTP peer, timestamping when a task arrived and when its result left."""

    def __init__(self, inner: ControlPlanePeer) -> None:
        self.inner = inner
        self.dequeued: dict[str, float] = {}
        self.published: dict[str, float] = {}
        self.lock = threading.Lock()

    def health_check(self) -> None:
        self.inner.health_check()

    def dequeue(self) -> bytes | None:
        body = self.inner.dequeue()
        if body is not None:
            t = time.perf_counter()
            with self.lock:
                self.dequeued[json.loads(body)["task_id"]] = t
        return body

    def heartbeat(self, task_id: str) -> None:
        self.inner.heartbeat(task_id)

    def publish(self, result: protocol.TaskResult) -> None:
        t = time.perf_counter()
        with self.lock:
            self.published.setdefault(result.task_id, t)
        self.inner.publish(result)

    def close(self) -> None:
        """Kept open across the two runners of this benchmark; closed at the end."""


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": statistics.median(xs), "p90_ms": xs[max(int(len(xs) * 0.9) - 1, 0)], "min_ms": xs[0],
            "runs": len(xs)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40, help="sequential tasks for the overhead")
    ap.add_argument("--burst", type=int, default=150, help="tasks queued at once for tasks/s")
    args = ap.parse_args()
    if args.tasks + args.burst > 900:
        print("keep --tasks + --burst under 900: the policy sees at most 1000 executions per hour", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("needs root (the jail switches uid), Landlock, libseccomp and dockerd", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="par-bench-", dir="/tmp"))
    base.chmod(0o755)
    stack = base / "dogbank"
    shutil.copytree(demo_stack.DEMO_DIR, stack)
    for p in [stack, *stack.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    inst = make_install("dogbankbench", stack / "docker-compose.full.yml", test_actions=True,
                        runner={"poll_interval_s": 0.01})
    h = Harness(inst)
    cfg = h.cfg
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "python": platform.python_version()}}
    peer: TimingPeer | None = None
    try:
        # --- baselines in the same run ---
        plain = []
        jail = Jail(cfg.jail, proxy_socket=cfg.proxy.socket_path, project=cfg.docker.project,
                    read_paths=[cfg.docker.compose_file.parent])
        jailed = []
        for i in range(args.tasks + 5):
            t0 = time.perf_counter()
            subprocess.run(["/bin/true"], check=True)
            t1 = time.perf_counter()
            jail.run(["/bin/true"], timeout_s=10)
            t2 = time.perf_counter()
            if i >= 5:
                plain.append((t1 - t0) * 1000)
                jailed.append((t2 - t1) * 1000)
        results["plain_subprocess"] = stats(plain)
        results["jail_direct"] = stats(jailed)

        # --- the pipeline, in-process runner with a timing peer ---
        peer = TimingPeer(HttpPeer(cfg.control_plane.url, key=load_runner_key(cfg.runner.private_key),
                                   org_id=cfg.runner.org_id, runner_id=cfg.runner.runner_id, timeout_s=10,
                                   max_body_bytes=protocol.read_cap_bytes(cfg.runner.max_task_bytes)))
        def start_runner() -> tuple[threading.Thread, dict[str, Any]]:
            box: dict[str, Any] = {}
            ready = threading.Event()

            def run() -> None:
                with open_runner(cfg, peer=peer) as runner:
                    box["runner"] = runner
                    ready.set()
                    run_until_stopped(runner)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            ready.wait(60)
            return thread, box

        thread, box = start_runner()
        sre = principal("user-sre")
        overhead, end_to_end, action = [], [], []
        for i in range(args.tasks + 3):
            tid = h.submit("check_true", sre)
            result = h.wait_result(tid, timeout=30)
            assert result["success"], result
            while tid not in peer.published:
                time.sleep(0.001)
            total = (peer.published[tid] - peer.dequeued[tid]) * 1000
            if i >= 3:
                end_to_end.append(total)
                action.append(result["outputs"]["durationMillis"])
                overhead.append(total - result["outputs"]["durationMillis"])
        results["pipeline_dequeue_to_publish"] = stats(end_to_end)
        results["action_in_jail"] = stats(action)
        results["pipeline_overhead"] = stats(overhead)

        box["runner"].stop_event.set()
        thread.join(60)
        # Queue the whole burst first, then start a runner: the span measures the runner, not submission.
        ids = [h.submit("check_true", sre) for _ in range(args.burst)]
        thread, box = start_runner()
        deadline = time.monotonic() + 300
        while not all(t in peer.published for t in ids):  # cheap: no queries competing with the runner
            assert time.monotonic() < deadline, "burst did not finish"
            time.sleep(0.01)
        assert all(h.plane.show(t)["result"]["success"] for t in ids)
        span = max(peer.published[t] for t in ids) - min(peer.dequeued[t] for t in ids)
        deq = sorted(peer.dequeued[t] for t in ids)
        per_task = sorted((peer.published[t] - peer.dequeued[t]) * 1000 for t in ids)
        results["throughput"] = {"tasks": args.burst, "seconds": span, "tasks_per_s": args.burst / span,
                                 "concurrency": cfg.runner.concurrency,
                                 "dequeue_gap_median_ms": statistics.median(
                                     (b - a) * 1000 for a, b in zip(deq, deq[1:], strict=False)),
                                 "task_latency_median_ms": statistics.median(per_task)}
        box["runner"].stop_event.set()
        thread.join(60)

        # --- idle RSS of a real `par run` ---
        proc = SubprocessRunner(inst)
        time.sleep(3.0)
        idle = rss_mb(proc.proc.pid)
        proc.proc.terminate()
        proc.wait(30)
        # The compose deployment runs the proxy as its own service (proxy.in_process: false).
        inst.rewrite(proxy={"in_process": False})
        proc = SubprocessRunner(inst)
        time.sleep(3.0)
        idle_no_proxy = rss_mb(proc.proc.pid)
        proc.proc.terminate()
        proc.wait(30)
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
        time.sleep(1.0)
        bare_rss = rss_mb(bare.pid)
        bare.wait()
        results["idle_rss"] = {"par_run_mb": idle, "par_run_proxy_out_of_process_mb": idle_no_proxy,
                               "bare_python_mb": bare_rss}
    finally:
        h.close()
        if peer is not None:
            peer.inner.close()
        remove_install(inst)
        shutil.rmtree(base, ignore_errors=True)

    o, j, p = results["pipeline_overhead"], results["jail_direct"], results["plain_subprocess"]
    rows = [
        ("plain subprocess.run(/bin/true)", p["median_ms"], "baseline", ""),
        ("Jail.run(/bin/true) direct", j["median_ms"], f"{j['median_ms'] / p['median_ms']:.2f}x plain", ""),
        ("pipeline dequeue -> publish", results["pipeline_dequeue_to_publish"]["median_ms"],
         f"{results['pipeline_dequeue_to_publish']['median_ms'] / j['median_ms']:.2f}x jail", ""),
        ("pipeline overhead (minus action)", o["median_ms"], f"p90 {o['p90_ms']:.1f} ms",
         "goal <= 30 ms: " + ("OK" if o["median_ms"] <= 30 else "MISSED")),
    ]
    print(f"{'measure':<36} {'median ms':>10}  {'ratio':<16} goal")
    for name, ms, ratio, goal in rows:
        print(f"{name:<36} {ms:>10.2f}  {ratio:<16} {goal}")
    t = results["throughput"]
    print(f"{'throughput (concurrency ' + str(t['concurrency']) + ')':<36} {t['tasks_per_s']:>10.1f}  tasks/s")
    r = results["idle_rss"]
    for label, key in (("idle RSS par run", "par_run_mb"),
                       ("  same, proxy out of process", "par_run_proxy_out_of_process_mb")):
        mb = r[key]
        print(f"{label:<36} {mb:>10.1f}  MB ({mb / r['bare_python_mb']:.1f}x bare python {r['bare_python_mb']:.1f} MB)"
              f"  goal <= 60 MB: {'OK' if mb <= 60 else 'MISSED'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
