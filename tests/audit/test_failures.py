"""Fail closed: a log that cannot be written raises AuditError and accepts nothing more until reopened."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.audit import AuditLog, verify_log
from sandbox.config import AuditConfig
from sandbox.errors import AuditError
from tests.support.env import require


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_disk_full_raises_and_poisons_then_reopen_recovers(tmp_path: Path) -> None:
    require("root")
    key = Ed25519PrivateKey.generate()
    with tmpfs(tmp_path / "small", "64k") as mnt:
        cfg = AuditConfig(dir=mnt / "audit", checkpoint_every_records=0, checkpoint_every_s=0)
        log = AuditLog.open(cfg, signer=key)
        acknowledged: dict[int, int] = {}
        with pytest.raises(AuditError) as exc:
            for i in range(10_000):
                acknowledged[log.append("execution_finished", {"i": i, "stdout": "x" * 1000})] = i
        assert "No space left" in exc.value.message
        assert len(acknowledged) > 10
        with pytest.raises(AuditError, match="failed earlier"):  # nothing more is accepted: callers fail closed
            log.append("decision", {"task_id": "t"})
        log.close()
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        with AuditLog.open(cfg, signer=key) as log2:
            recs = {r.seq: r for r in log2.records()}
            log2.append("runner_started", {})
        for seq, i in acknowledged.items():
            assert recs[seq].data["i"] == i
        assert verify_log([cfg.dir], public_key=key.public_key()).ok


def test_unwritable_segment_raises(tmp_path: Path) -> None:
    require("root")
    key = Ed25519PrivateKey.generate()
    cfg = AuditConfig(dir=tmp_path / "audit", checkpoint_every_records=0, checkpoint_every_s=0)
    log = AuditLog.open(cfg, signer=key)
    log.append("runner_started", {})
    seg = next(cfg.dir.glob("audit-*.jsonl"))
    subprocess.run(["chattr", "+i", str(seg)], check=True)
    try:
        with pytest.raises(AuditError, match="Operation not permitted"):
            log.append("decision", {"task_id": "t1"})
        with pytest.raises(AuditError, match="failed earlier"):
            log.append("decision", {"task_id": "t2"}, durable=False)
    finally:
        subprocess.run(["chattr", "-i", str(seg)], check=True)
        log.close()


def test_read_only_directory_refuses_to_open(tmp_path: Path) -> None:
    require("root")
    src = tmp_path / "src"
    (src / "audit").mkdir(parents=True)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        with pytest.raises(AuditError, match="Read-only file system"):
            AuditLog.open(AuditConfig(dir=ro / "audit"), signer=None)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
