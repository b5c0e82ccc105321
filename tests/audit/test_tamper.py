"""Attacks on the log, each caught by `par audit verify`; the untouched log verifies."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox._cli import main
from sandbox._internal.audit_canon import ZERO_HASH, canonical_data, encode_record
from sandbox._internal.merkle import CompactRange, leaf_hash
from sandbox.audit import AuditLog
from tests.audit.conftest import LogEnv


def verify(env: LogEnv, capsys: pytest.CaptureFixture[str], *extra: str, paths: list[Path] | None = None) -> Any:
    args = ["audit", "verify", *map(str, paths or [env.dir]), "--pubkey", str(env.pub), "--json", *extra]
    code = main(args)
    doc = json.loads(capsys.readouterr().out)
    assert (code == 0) == doc["ok"]
    return doc


def rehash(records: list[dict[str, Any]]) -> list[bytes]:
    """What a forger without the key can do: renumber, re-chain and re-hash every record."""
    out, prev = [], ZERO_HASH
    for seq, r in enumerate(records):
        line, prev = encode_record(seq, r["ts"], r["kind"], canonical_data(r["data"]), prev)
        out.append(line + b"\n")
    return out


@pytest.fixture
def env(make_log: Callable[..., LogEnv]) -> LogEnv:
    return make_log(30, every=10)


def test_untouched_log_verifies(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    doc = verify(env, capsys)
    assert doc == doc | {"ok": True, "first_bad_seq": None, "error": None}
    assert doc["records"] == len(env.lines()) and doc["signed_size"] == doc["records"] - 1
    # segment files given one by one work too, and the human output says OK
    assert main(["audit", "verify", *map(str, env.segments()), "--pubkey", str(env.pub)]) == 0
    assert capsys.readouterr().out.startswith("OK:")


def test_edit_a_byte_inside_data(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    lines[7] = lines[7].replace(b"task-7", b"task-8", 1)  # one byte
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert doc["ok"] is False and doc["first_bad_seq"] == 7 and "modified" in doc["category"]
    assert main(["audit", "verify", str(env.dir), "--pubkey", str(env.pub)]) == 1
    assert "FAILED at seq 7: modified" in capsys.readouterr().err


def test_edit_ts(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    rec = json.loads(lines[4])
    lines[4] = lines[4].replace(rec["ts"].encode(), b"2020-01-01T00:00:00.000000Z")
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["first_bad_seq"], doc["category"]) == (False, 4, "modified")
    assert "hash" in doc["error"]


def test_delete_a_record(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    del lines[5]
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["first_bad_seq"], doc["category"]) == (False, 5, "deleted")


def test_insert_a_record(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    prev = json.loads(lines[5])
    forged, _ = encode_record(
        6, prev["ts"], "decision", canonical_data({"task_id": "evil", "allow": True}), prev["hash"]
    )
    lines.insert(6, forged + b"\n")
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["first_bad_seq"], doc["category"]) == (False, 6, "inserted")


def test_insert_a_copy_of_a_record(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    lines.insert(9, lines[2])
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "inserted")


def test_swap_two_records(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    lines[3], lines[4] = lines[4], lines[3]
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["first_bad_seq"], doc["category"]) == (False, 3, "reordered")


def test_truncate_the_tail(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    lines = env.lines()
    env.write_lines(lines[:-4])  # whole records gone: caught by the checkpoint files
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "truncated")
    assert doc["first_bad_seq"] == len(lines) - 4
    env.write_lines([*lines[:-1], lines[-1][:20]])  # cut mid-line
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"], doc["first_bad_seq"]) == (False, "truncated", len(lines) - 1)


def test_truncation_is_caught_by_a_kept_checkpoint_even_without_checkpoint_files(
    env: LogEnv, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    kept = tmp_path / "kept.note"
    shutil.copy(env.dir / "checkpoints" / "latest.note", kept)
    size = int(kept.read_text().split("\n")[1])
    shutil.rmtree(env.dir / "checkpoints")
    env.write_lines(env.lines()[: size - 3])
    assert verify(env, capsys)["ok"] is True  # the chain alone cannot tell ...
    doc = verify(env, capsys, "--checkpoint", str(kept))  # ... the kept checkpoint can
    assert (doc["ok"], doc["category"], doc["first_bad_seq"]) == (False, "truncated", size - 3)


def test_freshly_rehashed_forgery_without_the_key(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    records = env.records()
    records[2]["data"]["allow"] = not records[2]["data"]["allow"]
    env.write_lines(rehash(records))  # chain and hashes are perfect, checkpoint records unchanged
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"], doc["first_bad_seq"]) == (False, "checkpoint inconsistent", 0)
    # the forger also recomputes the roots in the checkpoint records: the signatures then fail
    lines, rng = rehash(records), CompactRange()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["kind"] == "checkpoint":
            records[i]["data"]["root_hash"] = base64.b64encode(rng.root()).decode()
            lines = rehash(records)
        rng.append(leaf_hash(lines[i].rstrip(b"\n")))
    env.write_lines(lines)
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "checkpoint inconsistent")  # the signed note names the old root
    # and with no checkpoints at all, the forgery is unauthenticated
    env.write_lines(rehash([r for r in records if r["kind"] != "checkpoint"]))
    shutil.rmtree(env.dir / "checkpoints")
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "signature invalid")
    assert "forgery" in doc["error"]


def test_resigned_with_another_key(env: LogEnv, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    records = env.records()
    shutil.rmtree(env.dir)
    forger = AuditLog.open(env.cfg, signer=Ed25519PrivateKey.generate())
    for r in records:
        if r["kind"] == "decision":
            forger.append("decision", r["data"] | {"allow": True})
    forger.close()
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "signature invalid")
    assert "expected key" in doc["error"]


def test_rollback_keeping_a_valid_chain(env: LogEnv, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    shutil.copytree(env.dir, earlier)  # the attacker's snapshot of an earlier state
    with env.open() as log:
        for i in range(15):
            log.append("execution_finished", {"task_id": f"late-{i}", "exit_code": 1})
    kept = tmp_path / "auditor-kept.note"
    shutil.copy(env.dir / "checkpoints" / "latest.note", kept)
    shutil.rmtree(env.dir)
    shutil.copytree(earlier, env.dir)  # roll back: a complete, valid, signed older log
    assert verify(env, capsys)["ok"] is True
    doc = verify(env, capsys, "--checkpoint", str(kept))
    assert (doc["ok"], doc["category"]) == (False, "truncated")
    # roll back, then write different history on top (a fork as long as the kept checkpoint)
    with env.open() as log:
        for i in range(20):
            log.append("execution_finished", {"task_id": f"rewritten-{i}", "exit_code": 0})
    doc = verify(env, capsys, "--checkpoint", str(kept))
    assert (doc["ok"], doc["category"]) == (False, "checkpoint inconsistent")
    assert "rewritten or rolled back" in doc["error"]


def test_checkpoint_file_with_bad_signature(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    latest = env.dir / "checkpoints" / "latest.note"
    text = latest.read_text()
    lines = text.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    latest.write_text("\n".join(lines))
    doc = verify(env, capsys)
    assert (doc["ok"], doc["category"]) == (False, "signature invalid")


def test_verify_needs_a_public_key_and_existing_paths(env: LogEnv, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(env.dir / "nope"), "--pubkey", str(env.pub)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["audit", "verify", str(env.dir), "--pubkey", str(env.dir / "missing.pub")]) == 2
    assert "does not exist" in capsys.readouterr().err
