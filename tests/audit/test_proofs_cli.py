"""`par audit prove / verify-proof / consistency / export / show / tail`."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox._cli import main
from sandbox._internal import signed_note
from tests.audit.conftest import LogEnv


def test_inclusion_proof_round_trip_and_tampering(
    make_log: Callable[..., LogEnv], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_log(37, every=10)
    proof = tmp_path / "p.json"
    assert main(["audit", "prove", "13", "--dir", str(env.dir), "--pubkey", str(env.pub), "--out", str(proof)]) == 0
    capsys.readouterr()
    doc = json.loads(proof.read_text())
    assert doc["seq"] == 13 and doc["tree_size"] > 13 and len(doc["proof"]) >= 5
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(env.pub), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["record"]["data"]["task_id"] == "task-12"  # seq 13 (ckpt at 10)
    # attacks on the proof document: changed record, wrong path, another key
    for change in (
        lambda d: d.update(record=d["record"].replace("task-12", "task-99")),
        lambda d: d.update(proof=[d["proof"][1], d["proof"][0], *d["proof"][2:]]),
        lambda d: d.update(seq=14),
    ):
        bad = json.loads(proof.read_text())
        change(bad)
        proof.write_text(json.dumps(bad))
        assert main(["audit", "verify-proof", str(proof), "--pubkey", str(env.pub)]) == 1
        assert "FAILED" in capsys.readouterr().err
    other = make_log(1, name="other")
    proof.write_text(json.dumps(doc))
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(other.pub)]) == 1
    assert "expected key" in capsys.readouterr().err
    # seq beyond the checkpoint is an error with a hint
    assert main(["audit", "prove", "9999", "--dir", str(env.dir), "--pubkey", str(env.pub)]) == 2


def test_consistency_between_checkpoints(
    make_log: Callable[..., LogEnv], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_log(35, every=10)
    notes = sorted((env.dir / "checkpoints").glob("[0-9]*.note"), key=lambda p: int(p.stem))
    old, new = notes[0], notes[-1]
    out = tmp_path / "c.json"
    args = ["audit", "consistency", str(old), str(new), "--log", str(env.dir), "--pubkey", str(env.pub)]
    assert main([*args, "--out", str(out)]) == 0
    assert "is a prefix" in capsys.readouterr().err
    assert main(["audit", "consistency", "--proof", str(out), "--pubkey", str(env.pub)]) == 0
    capsys.readouterr()
    # a checkpoint of a rewritten history is not consistent with the old one
    doc = json.loads(out.read_text())
    forked = make_log(40, every=100, name="fork")
    fork_key = forked.key
    body = signed_note.parse_checkpoint_text(signed_note.parse_note(doc["new_checkpoint"])[0])
    lying = signed_note.CheckpointBody(body.origin, body.size, bytes(32))
    doc["new_checkpoint"] = signed_note.sign_note(lying.text(), body.origin, env.key)
    out.write_text(json.dumps(doc))
    assert main(["audit", "consistency", "--proof", str(out), "--pubkey", str(env.pub)]) == 1
    assert "NOT a prefix" in capsys.readouterr().err
    doc["new_checkpoint"] = signed_note.sign_note(body.text(), body.origin, fork_key)
    out.write_text(json.dumps(doc))
    assert main(["audit", "consistency", "--proof", str(out), "--pubkey", str(env.pub)]) == 1
    assert "expected key" in capsys.readouterr().err


def test_export_bundle_verifies_offline(
    make_log: Callable[..., LogEnv], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_log(30, every=10, segment_max_bytes=3000)
    bundle = tmp_path / "bundle"
    assert main(["audit", "export", "--out", str(bundle), "--dir", str(env.dir), "--pubkey", str(env.pub)]) == 0
    assert (bundle / "README.md").exists() and (bundle / "checkpoints" / "latest.note").exists()
    assert main(["audit", "verify", str(bundle), "--pubkey", str(env.pub)]) == 0
    # the verifier key text form works as --pubkey too
    assert main(["audit", "verify", str(bundle), "--pubkey", str(bundle / "audit_key.vkey")]) == 0
    tgz = tmp_path / "bundle.tar.gz"
    assert main(["audit", "export", "--out", str(tgz), "--dir", str(env.dir), "--pubkey", str(env.pub)]) == 0
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert main(["audit", "verify", str(tmp_path / "x" / "audit-bundle"), "--pubkey", str(env.pub)]) == 0
    assert main(["audit", "export", "--out", str(tgz), "--dir", str(env.dir), "--pubkey", str(env.pub)]) == 2
    shutil.rmtree(bundle)


def test_show_and_tail_filter(make_log: Callable[..., LogEnv], capsys: pytest.CaptureFixture[str]) -> None:
    env = make_log(12, every=5)
    assert main(["audit", "show", str(env.dir), "--kind", "decision", "--task", "task-3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["data"]["task_id"] == "task-3"
    assert main(["audit", "tail", str(env.dir), "-n", "3", "--kind", "decision"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "task-11" in out[-1]
    assert main(["audit", "show", str(env.dir), "--since", "1h", "--kind", "checkpoint"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["audit", "show", str(env.dir), "--since", "2999-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["audit", "show", str(env.dir), "--since", "yesterday"]) == 2
