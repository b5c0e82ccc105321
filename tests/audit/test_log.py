"""AuditLog: appending, concurrency, rotation, checkpoints, reopening and torn-tail recovery."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandbox._cli import main
from sandbox.audit import AuditLog, read_checkpoint, verify_log
from sandbox.errors import AuditError, AuditVerificationError
from tests.audit.conftest import LogEnv, sample_data


def ok(env: LogEnv) -> Any:
    return verify_log([env.dir], public_key=env.key.public_key())


def test_records_survive_reopen_and_the_log_verifies(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(25, every=10)
    result = ok(env)
    assert result.ok, result
    with env.open() as log:
        recs = list(log.records())
        assert [r.seq for r in recs] == list(range(len(recs)))
        decisions = [r for r in recs if r.kind == "decision"]
        assert [r.data["task_id"] for r in decisions] == [f"task-{i}" for i in range(25)]
        assert decisions[0].time.year >= 2024
        seq = log.append("runner_started", {"runner_id": "r1"})
        assert seq == len(recs)
    assert ok(env).ok


def test_checkpoints_every_n_records_and_at_close(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(25, every=10)
    kinds = [r["kind"] for r in env.records()]
    assert kinds.count("checkpoint") == 3  # after 10 and 20 decisions, and the final one at close
    assert kinds[-1] == "checkpoint"
    latest = read_checkpoint(env.dir / "checkpoints" / "latest.note")
    assert latest.size == len(kinds) - 1  # covers everything before the final checkpoint record
    assert (env.dir / "checkpoints" / f"{latest.size}.note").read_text() == latest.note
    latest.verify_signature(env.key.public_key())


def test_time_based_checkpoint(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    with env.open(checkpoint_every_s=0.2, checkpoint_every_records=0) as log:
        log.append("runner_started", {})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (log.last_checkpoint is None or log.last_checkpoint.size < 1):
            time.sleep(0.05)
        assert log.last_checkpoint is not None and log.last_checkpoint.size >= 1


def test_segments_rotate_and_continue_the_chain(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(60, every=25, segment_max_bytes=2000)
    segs = env.segments()
    assert len(segs) > 5
    firsts = [int(s.name[6:18]) for s in segs]
    recs = env.records()
    assert firsts == sorted(firsts) and firsts[0] == 0
    for seg, first in zip(segs, firsts, strict=True):
        assert json.loads(seg.read_bytes().splitlines()[0])["seq"] == first
    assert all(b["prev"] == a["hash"] for a, b in zip(recs, recs[1:], strict=False))
    assert ok(env).ok


def test_concurrent_appenders_get_unique_consecutive_seqs(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    seqs: list[int] = []
    lock = threading.Lock()
    with env.open(checkpoint_every_records=50) as log:

        def work(t: int) -> None:
            for i in range(60):
                s = log.append("proxy_allowed", {"method": "GET", "path": f"/t{t}/{i}"}, durable=i % 2 == 0)
                with lock:
                    seqs.append(s)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(set(seqs)) == 480
    recs = env.records()
    assert sum(r["kind"] == "proxy_allowed" for r in recs) == 480
    assert ok(env).ok


def test_unknown_and_reserved_kinds_and_bad_data_are_refused(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    with env.open() as log:
        with pytest.raises(AuditError, match="unknown audit record kind"):
            log.append("made_up", {})
        with pytest.raises(AuditError, match="written by the audit log itself"):
            log.append("checkpoint", {})
        with pytest.raises(AuditError, match="not a JSON value"):
            log.append("execution_finished", {"stdout": b"raw bytes"})
        assert log.append("runner_started", {"ok": True}) == 0  # the log stays usable


def test_second_writer_is_refused(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(1)
    with env.open(), pytest.raises(AuditError, match="another process"):
        env.open()


def test_without_signer_appends_work_and_checkpoint_is_refused(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    log = AuditLog.open(env.cfg, signer=None)
    log.append("runner_started", {})
    with pytest.raises(AuditError, match="no audit signing key"):
        log.checkpoint()
    log.close()
    assert [r["kind"] for r in env.records()] == ["runner_started"]


@pytest.mark.parametrize(
    "torn",
    [
        b'{"data":{"task_id":"t',  # partial line, no newline
        b"\x00\x00\x00\x00\x00\x00\x00\x00",  # zeroed block after power loss
        b'{"data":{},"hash":"00","kind":"decision"}\n',  # complete but bogus last line
    ],
)
def test_torn_tail_is_moved_aside_and_recorded(make_log: Callable[..., LogEnv], torn: bytes) -> None:
    env = make_log(12, every=100)
    seg = env.segments()[-1]
    before = len(env.records())
    with seg.open("ab") as f:
        f.write(torn)
    with env.open() as log:
        recs = list(log.records())
    assert len(recs) >= before + 1
    tt = [r for r in recs if r.kind == "torn_tail"]
    assert len(tt) == 1 and tt[0].seq == before and tt[0].data["bytes"] == len(torn)
    moved = env.dir / tt[0].data["moved_to"]
    assert moved.read_bytes() == torn
    assert tt[0].data["sha256"] == hashlib.sha256(torn).hexdigest()
    assert ok(env).ok


def test_damage_before_the_tail_refuses_to_open(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(12, every=100)
    lines = env.lines()
    lines[3] = lines[3].replace(b"task-3", b"task-X")
    env.write_lines(lines)
    with pytest.raises(AuditVerificationError, match="damaged"):
        env.open()


def test_log_shorter_than_its_latest_checkpoint_refuses_to_open(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(20, every=10)
    env.write_lines(env.lines()[:-5])
    with pytest.raises(AuditVerificationError, match="records were removed"):
        env.open()


def test_records_carry_the_data_given(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    with env.open() as log:
        log.append("decision", sample_data(3) | {"big": 2**63})
        rec = next(iter(log.records()))
    assert rec.data["task_id"] == "task-3" and rec.data["big"] == str(2**63)


def test_records_during_concurrent_appends_are_a_consistent_prefix(make_log: Callable[..., LogEnv]) -> None:
    env = make_log(0)
    stop = threading.Event()
    with env.open(checkpoint_every_records=20) as log:

        def writer() -> None:
            i = 0
            while not stop.is_set() and i < 5000:
                log.append("proxy_denied", {"method": "POST", "path": f"/p/{i}"}, durable=i % 3 == 0)
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(5):
                recs = list(log.records())
                assert [r.seq for r in recs] == list(range(len(recs)))
                assert all(b.prev == a.hash for a, b in zip(recs, recs[1:], strict=False))
        finally:
            stop.set()
            t.join(timeout=30)
    assert ok(env).ok


def test_cli_defaults_come_from_the_config(make_log: Callable[..., LogEnv], tmp_path: Any, capsys: Any) -> None:
    env = make_log(5, every=2)
    cfg = tmp_path / "runner.yaml"
    cfg.write_text(f"audit:\n  dir: {env.dir}\n  public_key: {env.pub}\n")
    assert main(["--config", str(cfg), "audit", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["--config", str(cfg), "audit", "tail", "-n", "1"]) == 0
    assert "checkpoint" in capsys.readouterr().out
