"""Audit log benchmark: durable appends/s (with and without group commit), verify records/s, proofs at 1M.

Run: .venv/bin/python bench/bench_audit.py [--quick]
Baselines measured in the same run: a bare write+fsync loop (the disk's fsync rate) for appends, and
pure-Python rfc8785 canonicalization of the same records for verification.
Writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rfc8785  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from sandbox._internal import merkle  # noqa: E402
from sandbox.audit import AuditLog, verify_log  # noqa: E402
from sandbox.config import AuditConfig  # noqa: E402

DATA = {
    "task_id": "0b7f6a3e-2f0c-4b8e-9a59-2f0d0b0f5f1a",
    "action": "restart-service",
    "parameters": {"service": "web", "replicas": 2},
    "principal": {"id": "alice@dogbank", "roles": ["sre"]},
    "trigger": "manual",
    "allow": True,
    "reasons": ["allowed by sre_restart"],
    "rule_ids": ["sre_restart"],
    "policy_revision": "ab" * 32,
}


def bare_fsync_rate(d: Path, n: int) -> float:
    fd = os.open(d / "bare", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = json.dumps(DATA).encode() + b"\n"
    t = time.perf_counter()
    for _ in range(n):
        os.write(fd, line)
        os.fsync(fd)
    el = time.perf_counter() - t
    os.close(fd)
    return n / el


def durable_rate(d: Path, threads: int, per_thread: int, key: Ed25519PrivateKey, batch: int = 256) -> float:
    """batch=1 turns group commit off: every record gets its own write+fsync."""
    cfg = AuditConfig(dir=d, checkpoint_every_records=1000, checkpoint_every_s=0, group_commit_max_records=batch)
    log = AuditLog.open(cfg, signer=key)

    def work() -> None:
        for i in range(per_thread):
            log.append("decision", DATA | {"i": i}, durable=True)

    ths = [threading.Thread(target=work) for _ in range(threads)]
    t = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    el = time.perf_counter() - t
    log.close()
    return threads * per_thread / el


def build_log(d: Path, n: int, key: Ed25519PrivateKey) -> None:
    cfg = AuditConfig(dir=d, checkpoint_every_records=1000, checkpoint_every_s=0)
    log = AuditLog.open(cfg, signer=key)
    for i in range(n):
        log.append("decision", DATA | {"i": i}, durable=False)
    log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = ap.parse_args()
    n_verify = 20_000 if args.quick else 100_000
    n_tree = 100_000 if args.quick else 1_000_000
    key = Ed25519PrivateKey.generate()
    base = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=str(Path(__file__).resolve().parent)))
    res: dict[str, float | int | str] = {}
    try:
        res["bare_write_fsync_per_s"] = bare_fsync_rate(base, 300)
        res["durable_appends_per_s_1_thread"] = durable_rate(base / "one", 1, 300, key)
        res["durable_appends_per_s_8_threads_no_group_commit"] = durable_rate(base / "eight1", 8, 150, key, batch=1)
        res["durable_appends_per_s_8_threads_group_commit"] = durable_rate(base / "eight", 8, 600, key)

        build_log(base / "v", n_verify, key)
        lines = [json.loads(x) for x in (base / "v").glob("audit-*.jsonl").__next__().read_bytes().splitlines()]
        sample = lines[: min(len(lines), 50_000)]
        # CPU time of this process (one core): the machine may be shared, wall time is reported too.
        t = time.process_time()
        for rec in sample:
            rfc8785.dumps(rec)
        res["baseline_rfc8785_records_per_s"] = len(sample) / (time.process_time() - t)
        t, w = time.process_time(), time.perf_counter()
        r = verify_log([base / "v"], public_key=key.public_key())
        el, wall = time.process_time() - t, time.perf_counter() - w
        assert r.ok, r
        res["verify_records"] = r.records
        res["verify_records_per_s"] = r.records / el
        res["verify_records_per_s_wall"] = r.records / wall

        leaves = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(n_tree)]
        t = time.perf_counter()
        tree = merkle.MerkleTree(leaves)
        res["tree_leaves"] = n_tree
        res["tree_build_s"] = time.perf_counter() - t
        root = tree.root()
        idx = n_tree * 2 // 3 + 7
        t = time.perf_counter()
        reps = 200
        for k in range(reps):
            proof = tree.inclusion_proof((idx + k * 4099) % n_tree)
        res["inclusion_proof_ms"] = (time.perf_counter() - t) / reps * 1000
        proof = tree.inclusion_proof(idx)
        res["inclusion_proof_hashes"] = len(proof)
        res["inclusion_proof_bytes"] = 32 * len(proof)
        t = time.perf_counter()
        for _ in range(reps):
            assert merkle.verify_inclusion(leaves[idx], idx, n_tree, proof, root)
        res["inclusion_verify_ms"] = (time.perf_counter() - t) / reps * 1000
        old = n_tree // 3 + 5
        t = time.perf_counter()
        cproof = tree.consistency_proof(old)
        res["consistency_proof_ms"] = (time.perf_counter() - t) * 1000
        res["consistency_proof_hashes"] = len(cproof)
        assert merkle.verify_consistency(old, n_tree, tree.root(old), root, cproof)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    fs = res["bare_write_fsync_per_s"]
    print(f"{'metric':<48}{'value':>14}  ratio")
    for k, v in res.items():
        ratio = ""
        if k.startswith("durable_appends"):
            ratio = f"{float(v) / float(fs):.2f}x bare fsync"
        if k == "verify_records_per_s":
            ratio = f"{float(v) / float(res['baseline_rfc8785_records_per_s']):.2f}x rfc8785 alone"
        print(f"{k:<48}{v:>14.3f}  {ratio}" if isinstance(v, float) else f"{k:<48}{v:>14}  {ratio}")
    res["note"] = (
        "appends: fsync'd records of ~400 bytes; verify: full verify_log of an on-disk log on one core; "
        "proofs: in-memory tree of synthetic leaves (not a 1M-record log)"
    )
    out = Path(__file__).resolve().parent / "results" / "audit.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
