"""Docker proxy benchmark: `docker compose ps` and 1,000 sequential GET /containers/json, proxy vs direct.

Run: .venv/bin/python bench/bench_proxy.py [--quick]
The proxy runs as `par proxy` in a subprocess (as it would beside the runner), with the real embedded
policy engine and no audit log (reads are not audited anyway). Baselines are the same requests sent
directly to /var/run/docker.sock in the same run. Also reports the proxy's peak RSS while 50 clients
hold keep-alive connections and send requests concurrently. Writes bench/results/bench_proxy.json.
Goals: compose ps <= 1.15x, per request <= 1.5x, RSS <= 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox._internal import demo_stack  # noqa: E402

UPSTREAM = "/var/run/docker.sock"


def start_proxy(sock: Path, project: str) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "sandbox",
        "-c",
        str(REPO / "config/runner.yaml"),
        "proxy",
        "--listen",
        str(sock),
        "--upstream",
        UPSTREAM,
        "--project",
        project,
        "--no-audit",
        "--socket-group",
        "",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        if sock.exists():
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"proxy did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("proxy socket did not appear")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def compose_ps(project: str, host: str | None, runs: int) -> list[float]:
    env = dict(os.environ)
    if host:
        env["DOCKER_HOST"] = host
    else:
        env.pop("DOCKER_HOST", None)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([*demo_stack.compose_argv(project), "ps", "--all"], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return times


def sequential_gets(sock: str, project: str, n: int) -> float:
    filters = json.dumps({"label": {f"com.docker.compose.project={project}": True}})
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://docker") as client:
        client.get("/v1.41/containers/json", params={"all": "1", "filters": filters}).raise_for_status()
        t = time.perf_counter()
        for _ in range(n):
            client.get("/v1.41/containers/json", params={"all": "1", "filters": filters}).raise_for_status()
        return (time.perf_counter() - t) / n


def concurrent_rss(sock: str, pid: int, clients: int, seconds: float) -> tuple[int, int, int]:
    stop = threading.Event()
    done = [0]
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://docker", timeout=30) as client:
            while not stop.is_set():
                try:
                    client.get("/v1.41/containers/json").raise_for_status()
                    with lock:
                        done[0] += 1
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_kb(pid))
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join(timeout=30)
    return peak, done[0], errors[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    ps_runs, n_gets, rss_s = (3, 200, 3.0) if args.quick else (10, 1000, 8.0)
    project = f"dogbankbench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="parbench-", dir="/tmp"))
    sock = tmp / "docker.sock"
    demo_stack.up(project)
    proxy = start_proxy(sock, project)
    try:
        idle_rss = rss_kb(proxy.pid)
        compose_ps(project, f"unix://{sock}", 1)  # warm up both paths
        compose_ps(project, None, 1)
        via, direct = [], []
        for _ in range(ps_runs):  # interleaved, so engine load drifts affect both equally
            via += compose_ps(project, f"unix://{sock}", 1)
            direct += compose_ps(project, None, 1)
        # n_gets requests each way, in 5 interleaved rounds: load from other processes hits both alike.
        rounds, per_round = 5, max(1, n_gets // 5)
        direct_rounds, via_rounds, cpu_used = [], [], 0.0
        for _ in range(rounds):
            direct_rounds.append(sequential_gets(UPSTREAM, project, per_round))
            cpu0 = cpu_s(proxy.pid)
            via_rounds.append(sequential_gets(str(sock), project, per_round))
            cpu_used += cpu_s(proxy.pid) - cpu0
        get_direct, get_via = statistics.median(direct_rounds), statistics.median(via_rounds)
        proxy_cpu_ms = cpu_used / (rounds * (per_round + 1)) * 1e3
        peak_rss, served, errors = concurrent_rss(str(sock), proxy.pid, 50, rss_s)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        demo_stack.down(project)
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    ps_direct, ps_via = statistics.median(direct), statistics.median(via)
    results = {
        "compose_ps": {
            "direct_s": ps_direct,
            "proxy_s": ps_via,
            "ratio": ps_via / ps_direct,
            "runs": ps_runs,
            "goal_ratio": 1.15,
        },
        "containers_json": {
            "n": n_gets,
            "direct_ms": get_direct * 1e3,
            "proxy_ms": get_via * 1e3,
            "ratio": get_via / get_direct,
            "goal_ratio": 1.5,
            "proxy_cpu_ms_per_request": proxy_cpu_ms,
            "load_average_1m": os.getloadavg()[0],
        },
        "rss_50_clients": {
            "idle_mb": idle_rss / 1024,
            "peak_mb": peak_rss / 1024,
            "requests": served,
            "errors": errors,
            "seconds": rss_s,
            "goal_mb": 50,
        },
    }
    print(f"{'measure':<34}{'direct':>12}{'proxy':>12}{'ratio':>8}{'goal':>8}")
    print(f"{'docker compose ps (median s)':<34}{ps_direct:>12.3f}{ps_via:>12.3f}{ps_via / ps_direct:>8.2f}{'1.15':>8}")
    print(
        f"{f'GET /containers/json x{n_gets} (ms)':<34}{get_direct * 1e3:>12.2f}{get_via * 1e3:>12.2f}"
        f"{get_via / get_direct:>8.2f}{'1.5':>8}"
    )
    print(
        f"{'proxy RSS, 50 clients (MB)':<34}{'idle ' + format(idle_rss / 1024, '.1f'):>12}{peak_rss / 1024:>12.1f}"
        f"{'':>8}{'50':>8}"
    )
    load = os.getloadavg()[0]
    print(f"  proxy CPU per request: {proxy_cpu_ms:.2f} ms; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"  {served} requests served by the proxy during the RSS run, {errors} errors")
    out = REPO / "bench" / "results" / "bench_proxy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
