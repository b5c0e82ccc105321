"""Policy decision throughput and latency: embedded regorus (compiled, the default, and the
interpreter) vs the OPA Data API backend, same run.

    python bench/bench_policy.py [--seconds 5] [--opa-decisions 500]

Workload: the shipped policies (policies/), task-admission inputs built by build_task_input for a mix
of the seed workflows, SRE/developer requests, allows and denies (rate limits, authz, unknown action),
with 0-12 history entries. Single thread (one core). Each decision is timed individually with
perf_counter_ns for p50/p99; throughput is decisions / wall time of the timed loop, and also
decisions per CPU-second of the thread (meaningful when other work shares the machine, which the
report flags with the load average). Per-case numbers are CPU time, best of 3 rounds.

The OPA baseline is `opa run --server` if an `opa` binary is on PATH; otherwise (no registry here) a
local Python HTTP server on 127.0.0.1 that speaks the Data API and evaluates with regorus, which the
report says. Both go through the real OPA backend (opa-python-client over HTTP/1.1 keep-alive).

A second baseline, also in the same run: the first, unoptimised version of the par policies
(tests/policy/reference_v1, same data, same interpreter), which tests/policy/test_rewrite_equivalence.py
proves decides identically; the ratio shows what the restructuring for the interpreter's cost model
bought, independent of how busy the machine is.
Results: a table on stdout and bench/results/bench_policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox.catalog import load_catalog  # noqa: E402
from sandbox.config import PolicyConfig  # noqa: E402
from sandbox.policy import PolicyEngine, build_task_input, open_engine  # noqa: E402
from tests.policy.helpers import par_bundle  # noqa: E402
from tests.policy.opa_server import data_api_server  # noqa: E402

POLICIES = REPO / "policies"
RESULTS = REPO / "bench" / "results" / "bench_policy.json"
NOW_S = 1_800_000_000


def workload() -> list[tuple[str, dict[str, Any]]]:
    cat = load_catalog(REPO / "config" / "credentials" / "script.yaml")
    now = datetime.fromtimestamp(NOW_S, tz=UTC)
    now_ns = NOW_S * 1_000_000_000
    restart_wf = {"type": "workflow", "id": "wf-1", "name": "[DogBank] Auto-Restart Transaction Service", "roles": []}
    scale_wf = {"type": "workflow", "id": "wf-2", "name": "[DogBank] Auto-Scale PIX Worker", "roles": []}
    sre = {"type": "user", "id": "alice", "name": "Alice", "roles": ["sre"]}
    dev = {"type": "user", "id": "bob", "name": "Bob", "roles": ["developer"]}
    pix = {"type": "monitor", "monitor_id": "m-1", "monitor_name": "[DogBank] PIX - Alta Latencia P99"}
    lag = {"type": "monitor", "monitor_id": "m-2", "monitor_name": "[DogBank] Kafka - Consumer Lag Alto"}

    def ran(action: str, ago_s: int, service: str) -> dict[str, Any]:
        return {
            "action": action,
            "ts_ns": now_ns - ago_s * 10**9,
            "outcome": "success",
            "principal_id": "p",
            "service": service,
        }

    mixed = [ran("check_services_status", 30 * i, "kafka") for i in range(6)] + [
        ran("restart_pix_worker", 700, "pix-worker"),
        ran("scale_pix_worker_3", 900, "pix-worker"),
        ran("restart_transaction_service", 1300, "transaction-service"),
        ran("scale_pix_worker_1", 1500, "pix-worker"),
        ran("restart_auth_service", 2000, "auth-service"),
        ran("scale_pix_worker_5", 2500, "pix-worker"),
    ]
    cases = [
        ("restart workflow, allow, no history", "restart_transaction_service", restart_wf, pix, []),
        ("scale workflow, allow, 12 history", "scale_pix_worker_3", scale_wf, lag, mixed),
        (
            "scale workflow, rate-limited",
            "scale_pix_worker_5",
            scale_wf,
            lag,
            [ran("scale_pix_worker_3", 20, "pix-worker")],
        ),
        ("sre restart, allow, 12 history", "restart_pix_worker", sre, None, mixed),
        ("developer restart, deny", "restart_pix_worker", dev, None, []),
        ("developer check, allow", "check_kafka_topics", dev, None, mixed[:3]),
        ("unknown action, deny", "format_disk", sre, None, []),
    ]
    out = []
    for name, action, principal, trigger, history in cases:
        doc = build_task_input(
            action=action,
            parameters={},
            principal=principal,
            trigger=trigger,
            task={"id": "t-1", "client": "bench", "expires_at": None},
            history=history,
            runner_id="bench",
            now=now,
            catalog_action=cat.actions.get(action),
        )
        out.append((name, doc))
    return out


def measure(engine: PolicyEngine, docs: list[dict[str, Any]], *, seconds: float, max_decisions: int) -> dict[str, Any]:
    for doc in docs:  # warm up (per-thread compile, connections)
        engine.decide(doc)
    lat: list[int] = []
    n = 0
    cpu0 = time.thread_time()
    start = time.perf_counter()
    deadline = start + seconds
    while n < max_decisions and time.perf_counter() < deadline:
        doc = docs[n % len(docs)]
        t0 = time.perf_counter_ns()
        engine.decide(doc)
        lat.append(time.perf_counter_ns() - t0)
        n += 1
    wall = time.perf_counter() - start
    cpu = time.thread_time() - cpu0
    lat.sort()
    return {
        "decisions": n,
        "decisions_per_s": n / wall,
        "decisions_per_cpu_s": n / cpu if cpu > 0 else float("nan"),
        "p50_us": lat[len(lat) // 2] / 1000,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000,
        "mean_us": statistics.fmean(lat) / 1000,
    }


def per_case(engine: PolicyEngine, cases: list[tuple[str, dict[str, Any]]], reps: int) -> dict[str, float]:
    """CPU microseconds per decision for each case (best of 3 rounds: robust on a shared machine)."""
    out = {}
    for name, doc in cases:
        engine.decide(doc)
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time_ns()
            for _ in range(reps):
                engine.decide(doc)
            best = min(best, (time.thread_time_ns() - t0) / reps / 1000)
        out[name] = best
    return out


def opa_binary_server() -> tuple[subprocess.Popen[bytes], str] | None:
    opa = shutil.which("opa")
    if opa is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [opa, "run", "--server", "--addr", f"127.0.0.1:{port}", "--bundle", str(POLICIES)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="time budget per backend (default 5)")
    ap.add_argument("--opa-decisions", type=int, default=2000, help="max decisions against the OPA backend")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    cases = workload()
    docs = [doc for _, doc in cases]

    # The default mode (compiled, RVM) first, then the interpreter, then the interpreter on the
    # reference_v1 policies; every engine must decide the workload identically or nothing is compared.
    compiled_engine = open_engine(PolicyConfig(path=POLICIES, watch=False))
    interpreter = open_engine(PolicyConfig(path=POLICIES, watch=False, embedded_mode="interpreter"))
    for doc in docs:
        if compiled_engine.decide(doc) != interpreter.decide(doc):
            raise SystemExit(f"compiled and interpreter decisions differ for {doc['action']}")
    comp = measure(compiled_engine, docs, seconds=args.seconds, max_decisions=10**9)
    comp_cases = per_case(compiled_engine, cases, 500)
    compiled_engine.close()
    emb = measure(interpreter, docs, seconds=args.seconds, max_decisions=10**9)
    emb_cases = per_case(interpreter, cases, 500)
    with tempfile.TemporaryDirectory() as tmp:
        ref_root = par_bundle(Path(tmp) / "p", reference=True, data=json.loads((POLICIES / "data.json").read_text()))
        reference_engine = open_engine(PolicyConfig(path=ref_root, watch=False, embedded_mode="interpreter"))
        for doc in docs:  # same decisions, or the comparison is meaningless
            a, b = reference_engine.decide(doc), interpreter.decide(doc)
            if (a.allow, a.reasons, a.rule_ids) != (b.allow, b.reasons, b.rule_ids):
                raise SystemExit(f"reference_v1 and shipped policies decide differently for {doc['action']}")
        ref = measure(reference_engine, docs, seconds=args.seconds, max_decisions=10**9)
        ref_cases = per_case(reference_engine, cases, 500)
        reference_engine.close()
    interpreter.close()

    started = opa_binary_server()
    if started is not None:
        proc, url = started
        baseline = "opa binary (opa run --server)"
        try:
            opa_engine = open_engine(PolicyConfig(engine="opa", path=POLICIES, opa_url=url, opa_timeout_s=2.0))
            opa = measure(opa_engine, docs, seconds=args.seconds, max_decisions=args.opa_decisions)
            opa_engine.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    else:
        baseline = "local Python Data-API server evaluating with regorus (no opa binary on this machine)"
        with data_api_server(POLICIES) as srv:
            opa_engine = open_engine(PolicyConfig(engine="opa", path=POLICIES, opa_url=srv.url, opa_timeout_s=2.0))
            opa = measure(opa_engine, docs, seconds=args.seconds, max_decisions=args.opa_decisions)
            opa_engine.close()

    goal = {"decisions_per_s": 20000, "p99_us": 1000}
    report: dict[str, Any] = {
        "benchmark": "policy decisions (data.par.decision, shipped policies)",
        "command": "python bench/bench_policy.py",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "pinned_to_one_core": hasattr(os, "sched_setaffinity"),
        },
        "workload": [name for name, _ in cases],
        "load_average": os.getloadavg(),
        "default_mode": "compiled",
        "embedded_compiled": comp,
        "embedded_compiled_per_case_us": comp_cases,
        "embedded": emb,
        "embedded_per_case_us": emb_cases,
        "embedded_reference_v1_policies": ref,
        "embedded_reference_v1_per_case_us": ref_cases,
        "opa_data_api": opa,
        "opa_baseline": baseline,
        "ratios": {
            "throughput_embedded_over_opa": emb["decisions_per_s"] / opa["decisions_per_s"],
            "p50_opa_over_embedded": opa["p50_us"] / emb["p50_us"],
            "p99_opa_over_embedded": opa["p99_us"] / emb["p99_us"],
            "throughput_compiled_over_opa": comp["decisions_per_s"] / opa["decisions_per_s"],
            "throughput_compiled_over_interpreter": comp["decisions_per_s"] / emb["decisions_per_s"],
            "cpu_throughput_shipped_over_reference_v1": emb["decisions_per_cpu_s"] / ref["decisions_per_cpu_s"],
        },
        "goal": goal,
        "goal_met": {
            "compiled": {
                "decisions_per_s": comp["decisions_per_cpu_s"] >= goal["decisions_per_s"],
                "p99_us": comp["p99_us"] <= goal["p99_us"],
            },
            "interpreter": {
                "decisions_per_s": emb["decisions_per_cpu_s"] >= goal["decisions_per_s"],
                "p99_us": emb["p99_us"] <= goal["p99_us"],
            },
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"policy decisions, shipped policy set, one core ({platform.machine()}, Python {platform.python_version()})")
    print(f"OPA baseline: {baseline}; load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'backend':<29}{'decisions/s':>12}{'per CPU-s':>11}{'p50 us':>9}{'p99 us':>9}{'mean us':>9}")
    rows = (
        ("embedded compiled (default)", comp),
        ("embedded interpreter", emb),
        ("  reference_v1 policies", ref),
        ("opa data api", opa),
    )
    for name, r in rows:
        print(
            f"{name:<29}{r['decisions_per_s']:>12,.0f}{r['decisions_per_cpu_s']:>11,.0f}"
            f"{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['mean_us']:>9.1f}"
        )
    ra = report["ratios"]
    print(
        f"\ncompiled (default) vs OPA: {ra['throughput_compiled_over_opa']:.1f}x throughput; "
        f"compiled vs interpreter: {ra['throughput_compiled_over_interpreter']:.1f}x"
    )
    print(
        f"interpreter vs OPA: {ra['throughput_embedded_over_opa']:.1f}x throughput, "
        f"p50 {ra['p50_opa_over_embedded']:.1f}x lower, p99 {ra['p99_opa_over_embedded']:.1f}x lower"
    )
    print(
        f"shipped vs reference_v1 policies (interpreter, same decisions): "
        f"{ra['cpu_throughput_shipped_over_reference_v1']:.2f}x decisions per CPU-second"
    )
    for mode, met in report["goal_met"].items():
        print(
            f"goal ({mode}) >= 20,000 decisions per CPU-second: {'met' if met['decisions_per_s'] else 'NOT met'}; "
            f"p99 <= 1 ms: {'met' if met['p99_us'] else 'NOT met'}"
        )
    print("\nper case, CPU us/decision, best of 3 (compiled / interpreter / reference_v1 policies):")
    for name, us in comp_cases.items():
        print(f"  {us:8.1f} {emb_cases[name]:8.1f} {ref_cases[name]:8.1f}  {name}")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
