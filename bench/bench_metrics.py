"""Cost of reporting one finished task via sandbox.metrics (2 DogStatsD datagrams on loopback UDP),
against the structured log line the runner already writes for the same event, in the same run.

    python bench/bench_metrics.py [--n 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import statistics
import time
from pathlib import Path

from sandbox import logs, metrics
from sandbox.config import LoggingConfig


def per_call_us(fn, n: int, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    agent.bind(("127.0.0.1", 0))
    agent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    metrics.set_client(metrics.Metrics("127.0.0.1", agent.getsockname()[1], constant_tags={"env": "bench"}))
    logs.configure(LoggingConfig(format="json"), stream=io.StringIO())
    log = logs.get_logger("bench")

    def log_line() -> None:
        log.info("execution_finished", task_id="task-1", action="restart_transaction_service", outcome="success")

    def report() -> None:
        metrics.task_finished("success", 1.25, action="restart_transaction_service")

    def drain() -> None:
        agent.setblocking(False)
        try:
            while True:
                agent.recv(65536)
        except BlockingIOError:
            pass

    base = per_call_us(log_line, args.n)
    drain()
    cost = per_call_us(report, args.n)
    drain()
    dropped = metrics.client().dropped
    rows = [("JSON log line (baseline)", base, 1.0), ("metrics.task_finished (2 datagrams)", cost, cost / base)]
    print(f"{'operation':<40} {'us/call':>9} {'ratio':>7}")
    for name, us, ratio in rows:
        print(f"{name:<40} {us:>9.2f} {ratio:>6.2f}x")
    print(f"dropped datagrams: {dropped}")
    out = Path(__file__).parent / "results" / "bench_metrics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "n": args.n, "baseline_log_us": base, "task_finished_us": cost, "ratio": cost / base, "dropped": dropped,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
