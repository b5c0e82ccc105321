"""The exact bytes of an audit record: RFC 8785 (JCS) canonical JSON, and a fast check that a line is it.

The writer emits every line as ``JCS(record) + "\\n"`` (``hash`` included), so a verifier can check a
record by re-canonicalizing the parsed line and comparing bytes. Pure-Python JCS is too slow for the
verify goal, so :func:`check_line` uses ``json.dumps(sort_keys=True)``, which yields the same bytes as
JCS for the values our writer produces (objects, arrays, strings, booleans, null, integers within
+-(2^53-1)); a line with a float, or with a character outside the Basic Multilingual Plane (where
UTF-16 and code point key order can differ), is re-checked with the ``rfc8785`` package instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

MAX_SAFE_INT = 2**53 - 1
ZERO_HASH = "0" * 64
KINDS = frozenset(
    {
        "decision",
        "execution_started",
        "execution_finished",
        "task_rejected",
        "proxy_allowed",
        "proxy_denied",
        "runner_started",
        "runner_stopped",
        "policy_reloaded",
        "policy_reload_failed",
        "torn_tail",
        "checkpoint",
    }
)
_RECORD_KEYS = frozenset({"v", "seq", "ts", "kind", "data", "prev", "hash"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")
_HASH_MEMBER = b',"hash":"'
_HASH_MEMBER_LEN = len(_HASH_MEMBER) + 64 + 1
_SUSPECT = re.compile(rb"[\xf0-\xf4]")  # lead bytes of 4-byte UTF-8 sequences (outside the BMP)
_fast_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class DataError(ValueError):
    """Record data that cannot be represented in the log (wrong type, non-finite float, non-string key)."""


class LineError(ValueError):
    """A line that is not a well-formed, canonical, self-consistent record; ``what`` names the defect."""

    def __init__(self, what: str, detail: str, seq: int | None = None) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail
        self.seq = seq


def normalize(value: Any, where: str = "data") -> Any:
    """A JSON value the log can store; numbers beyond +-(2^53-1) become strings (ints: decimal, floats: repr).

    JCS (and every JavaScript verifier) represents numbers as IEEE doubles, so a larger integer
    would silently change; we store it as a string *before* hashing, so the hash covers what is stored.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: non-finite number {value!r} cannot be stored in the audit log")
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else repr(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DataError(f"{where}: object keys must be strings, got {k!r}")
            out[k] = normalize(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise DataError(f"{where}: {type(value).__name__} is not a JSON value (encode bytes as text or hex first)")


def canonical_data(data: Mapping[str, Any]) -> str:
    """JCS text of a record's ``data`` (normalized first)."""
    if not isinstance(data, Mapping):
        raise DataError(f"data must be an object, got {type(data).__name__}")
    try:
        return rfc8785.dumps(normalize(data)).decode()
    except (rfc8785.CanonicalizationError, UnicodeError) as exc:
        raise DataError(f"data cannot be canonicalized: {exc}") from exc


def encode_record(seq: int, ts: str, kind: str, data_jcs: str, prev: str) -> tuple[bytes, str]:
    """The record line (without newline) and its hash, given the JCS of its data.

    JCS orders members by name: data, hash, kind, prev, seq, ts, v. ``kind`` and ``ts`` are ASCII
    without characters JSON must escape, so the envelope is assembled directly.
    """
    tail = f'"kind":"{kind}","prev":"{prev}","seq":{seq},"ts":"{ts}","v":1}}'
    digest = hashlib.sha256(f'{{"data":{data_jcs},{tail}'.encode()).hexdigest()
    return f'{{"data":{data_jcs},"hash":"{digest}",{tail}'.encode(), digest


class _Slow(Exception):
    pass


def _no_float(_: str) -> float:
    raise _Slow


def _int(s: str) -> int:
    v = int(s)
    if len(s) > 15 and not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
        raise _Slow
    return v


_fast_loads = json.JSONDecoder(parse_float=_no_float, parse_int=_int).decode


def check_line(line: bytes) -> dict[str, Any]:
    """Parse one record line (without its newline) and prove it is canonical and self-consistent.

    Raises :class:`LineError`. Chain linkage (``seq``/``prev``) is the caller's business.
    """
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        raise LineError("malformed", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    obj: Any
    try:
        if not line.isascii() and _SUSPECT.search(line):
            raise _Slow
        obj = _fast_loads(text)
        canonical = _fast_dumps(obj).encode() == line
    except _Slow:
        obj, canonical = _slow_check(text, line)
    except (ValueError, UnicodeEncodeError) as exc:
        raise LineError("malformed", f"not valid JSON ({exc})") from None
    if type(obj) is not dict or obj.keys() != _RECORD_KEYS:
        raise LineError("malformed", "not a record object with exactly v, seq, ts, kind, data, prev, hash")
    seq = obj["seq"]
    if type(seq) is not int or seq < 0:
        raise LineError("malformed", "seq must be a non-negative integer")
    if not canonical:
        raise LineError("not canonical", "the line is not the RFC 8785 canonical form of its content", seq)
    if type(obj["v"]) is not int or obj["v"] != 1:
        raise LineError("malformed", f"unsupported record version {obj['v']!r}", seq)
    ts, kind, prev, digest = obj["ts"], obj["kind"], obj["prev"], obj["hash"]
    if type(ts) is not str or not _TS.fullmatch(ts):
        raise LineError("malformed", "ts must be an RFC 3339 UTC timestamp ending in Z", seq)
    if kind not in KINDS:
        raise LineError("malformed", f"unknown kind {kind!r}", seq)
    if type(obj["data"]) is not dict:
        raise LineError("malformed", "data must be an object", seq)
    if type(prev) is not str or not _HEX64.fullmatch(prev) or type(digest) is not str or not _HEX64.fullmatch(digest):
        raise LineError("malformed", "prev and hash must be 64 lowercase hex digits", seq)
    cut = line.rfind(_HASH_MEMBER)
    if hashlib.sha256(line[:cut] + line[cut + _HASH_MEMBER_LEN :]).hexdigest() != digest:
        raise LineError("hash mismatch", "the record's content does not match its hash", seq)
    return obj


def _slow_check(text: str, line: bytes) -> tuple[Any, bool]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise LineError("malformed", f"not valid JSON ({exc})") from None
    try:
        return obj, rfc8785.dumps(obj) == line
    except (rfc8785.CanonicalizationError, UnicodeError):
        return obj, False
