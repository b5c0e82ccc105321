"""The record bytes: JCS (RFC 8785) exactly, and the fast verifier path agrees with rfc8785."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox._internal.audit_canon import (
    MAX_SAFE_INT,
    ZERO_HASH,
    DataError,
    LineError,
    canonical_data,
    check_line,
    encode_record,
)

TS = "2026-12-04T20:05:27.123456Z"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def line_for(data: Any, seq: int = 3) -> tuple[bytes, str]:
    return encode_record(seq, TS, "decision", canonical_data(data), ZERO_HASH)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_writer_emits_jcs_and_verifier_accepts_it(data: dict[str, Any]) -> None:
    line, digest = line_for(data)
    rec = json.loads(line)
    assert line == rfc8785.dumps(rec)  # the whole line is the JCS of the record
    without = {k: v for k, v in rec.items() if k != "hash"}
    assert digest == rec["hash"]
    assert hashlib.sha256(rfc8785.dumps(without)).hexdigest() == digest
    assert check_line(line)["hash"] == digest


def test_large_integers_are_stored_as_strings_before_hashing() -> None:
    line, _ = line_for({"big": 2**53, "neg": -(2**60), "ok": MAX_SAFE_INT, "nested": [{"x": 2**64}]})
    data = check_line(line)["data"]
    assert data == {"big": str(2**53), "neg": str(-(2**60)), "ok": MAX_SAFE_INT, "nested": [{"x": str(2**64)}]}


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": b"bytes"}, {"x": {1: "int key"}}, {"x": object()}])
def test_unrepresentable_data_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(DataError):
        canonical_data(bad)


def test_key_order_outside_the_bmp_follows_utf16() -> None:
    # U+1F600 sorts before U+FB01 in UTF-16 (surrogate 0xD83D < 0xFB01) but after it by code point.
    line, _ = line_for({"\U0001f600": 1, "\ufb01": 2})
    assert check_line(line)["data"] == {"\U0001f600": 1, "\ufb01": 2}
    swapped = line.replace("\U0001f600".encode(), b"TMP").replace("\ufb01".encode(), "\U0001f600".encode())
    swapped = swapped.replace(b"TMP", "\ufb01".encode())
    with pytest.raises(LineError):
        check_line(swapped)


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda s: s.replace(b'{"data":', b'{ "data":'), "not canonical"),  # whitespace
        (lambda s: s.replace(b'"allow":true', b'"allow":true,"allow":true'), "not canonical"),  # duplicate key
        (lambda s: s.replace("é".encode(), b"\\u00e9"), "not canonical"),  # escaped character
        (lambda s: s.replace(b'"replicas":3', b'"replicas":3.0'), "not canonical"),  # float spelling
        (lambda s: s.replace(b'"replicas":3', b'"replicas":4'), "hash mismatch"),
        (lambda s: s.replace(b'"seq":3', b'"seq":-3'), "malformed"),
        (lambda s: s.replace(b'"kind":"decision"', b'"kind":"decisiom"'), "malformed"),
        (lambda s: s[:-1], "malformed"),
        (lambda s: s.replace("é".encode(), b"\xff"), "malformed"),
    ],
)
def test_any_deviation_is_caught(mutate: Any, what: str) -> None:
    line, _ = line_for({"allow": True, "replicas": 3, "who": "é"})
    check_line(line)
    with pytest.raises(LineError) as exc:
        check_line(mutate(line))
    assert exc.value.what == what


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_every_single_byte_change_is_caught(pos: int, delta: int) -> None:
    line, _ = line_for({"task_id": "t-1", "allow": True, "argv": ["docker", "compose", "ps"], "who": "é"})
    i = pos % len(line)
    mutated = line[:i] + bytes([(line[i] + delta) % 256]) + line[i + 1 :]
    with pytest.raises(LineError):
        check_line(mutated)
