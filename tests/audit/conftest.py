"""Helpers for the audit tests: a small signed log on disk and line-level tampering tools."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.audit import AuditLog
from sandbox.config import AuditConfig
from sandbox.keys import save_key_pair


@dataclasses.dataclass
class LogEnv:
    dir: Path
    key: Ed25519PrivateKey
    pub: Path
    cfg: AuditConfig

    def open(self, **changes: Any) -> AuditLog:
        return AuditLog.open(dataclasses.replace(self.cfg, **changes), signer=self.key)

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("audit-*.jsonl"))

    def lines(self) -> list[bytes]:
        out: list[bytes] = []
        for seg in self.segments():
            out.extend(seg.read_bytes().splitlines(keepends=True))
        return out

    def write_lines(self, lines: list[bytes]) -> None:
        """Rewrite the log as one segment holding ``lines``."""
        for seg in self.segments():
            seg.unlink()
        (self.dir / "audit-000000000000.jsonl").write_bytes(b"".join(lines))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def sample_data(i: int) -> dict[str, Any]:
    return {
        "task_id": f"task-{i}",
        "action": "restart-service",
        "parameters": {"service": "web", "replicas": i % 5},
        "principal": {"id": "alice@dogbank", "roles": ["sre"]},
        "trigger": "manual",
        "allow": i % 7 != 0,
        "reasons": ["allowed by rule sre_restart"],
        "rule_ids": ["sre_restart"],
        "policy_revision": "ab" * 32,
        "note": "é ü — 日本",
    }


@pytest.fixture
def make_log(tmp_path: Path) -> Callable[..., LogEnv]:
    def make(n: int = 30, *, every: int = 10, segment_max_bytes: int = 1 << 24, name: str = "audit") -> LogEnv:
        key = Ed25519PrivateKey.generate()
        keydir = tmp_path / f"{name}-keys"
        save_key_pair(key, keydir / "audit_key.pem", keydir / "audit_key.pub")
        cfg = AuditConfig(
            dir=tmp_path / name,
            segment_max_bytes=segment_max_bytes,
            checkpoint_every_records=every,
            checkpoint_every_s=0,
        )
        env = LogEnv(tmp_path / name, key, keydir / "audit_key.pub", cfg)
        log = env.open()
        for i in range(n):
            log.append("decision", sample_data(i), durable=i % 4 == 0)
        log.close()
        return env

    return make
