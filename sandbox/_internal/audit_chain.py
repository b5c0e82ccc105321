"""Walking the hash chain and the Merkle tree of a log, and naming the first thing that is wrong.

Used by both the writer (recovery on open, ``records()``) and the auditor's verifier, so the two can
never disagree about what a valid log is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox._internal import signed_note
from sandbox._internal.audit_canon import ZERO_HASH, LineError, check_line
from sandbox._internal.audit_segments import Line
from sandbox._internal.merkle import CompactRange


class ChainFailure(Exception):
    """The first defect of a log: ``category`` is one of modified, inserted, deleted, reordered,
    truncated, signature invalid, checkpoint inconsistent."""

    def __init__(self, category: str, message: str, first_bad_seq: int | None, line: Line | None = None) -> None:
        super().__init__(f"{category}: {message}")
        self.category = category
        self.message = message
        self.first_bad_seq = first_bad_seq
        self.line = line


@dataclass
class WalkState:
    count: int = 0
    last_hash: str = ZERO_HASH
    tree: CompactRange = field(default_factory=CompactRange)
    roots: dict[int, bytes] = field(default_factory=dict)  # tree size -> root, for the sizes asked for
    checkpoint_records: int = 0
    last_checkpoint_seq: int | None = None
    last_checkpoint_ts: str | None = None
    signed_size: int = 0  # largest size covered by a verified checkpoint record


def walk(
    lines: Iterable[Line],
    *,
    want_roots: Iterable[int] = (),
    public_key: Ed25519PublicKey | None = None,
    leaves: list[bytes] | None = None,
    state: WalkState | None = None,
) -> Iterator[tuple[Line, dict[str, Any]]]:
    """Yield every record after checking it; raise :class:`ChainFailure` at the first defect.

    ``state`` is updated as records pass (so a caller can resume or inspect it after a failure);
    checkpoint records are checked against the recomputed root, and their signatures too when
    ``public_key`` is given. ``leaves`` collects the leaf hashes (for proofs).
    """
    st = state if state is not None else WalkState()
    wanted = set(want_roots)
    tree = st.tree
    sha256 = hashlib.sha256
    it = iter(lines)
    for line in it:
        expected = st.count
        if expected in wanted:
            st.roots[expected] = tree.root()
        if not line.complete:
            raise ChainFailure(
                "truncated", f"the last line (seq {expected}) is incomplete: torn or truncated write", expected, line
            )
        try:
            rec = check_line(line.data)
        except LineError as exc:
            raise ChainFailure(
                "modified", f"record at seq {expected} ({line.path.name}:{line.offset}): {exc}", expected, line
            ) from None
        seq = rec["seq"]
        if seq != expected:
            raise _misplaced(seq, expected, it, line)
        if rec["prev"] != st.last_hash:
            raise ChainFailure(
                "modified",
                f"seq {seq}: prev does not match the hash of seq {seq - 1}: a record was replaced or re-hashed",
                max(seq - 1, 0),
                line,
            )
        if rec["kind"] == "checkpoint":
            _check_checkpoint_record(rec, tree.root(), public_key, st, line)
        digest = sha256(b"\x00" + line.data).digest()
        tree.append(digest)
        if leaves is not None:
            leaves.append(digest)
        st.last_hash = rec["hash"]
        st.count = expected + 1
        yield line, rec
    if st.count in wanted:
        st.roots[st.count] = tree.root()


def _misplaced(seq: int, expected: int, rest: Iterator[Line], line: Line) -> ChainFailure:
    if seq < expected:
        return ChainFailure(
            "inserted", f"a record with seq {seq} appears again after seq {expected - 1}: it was inserted", seq, line
        )
    for later in rest:  # only on failure: find out whether the missing record is elsewhere
        try:
            later_seq = json.loads(later.data).get("seq")
        except (ValueError, AttributeError):
            continue
        if later_seq == expected:
            return ChainFailure(
                "reordered",
                f"seq {seq} appears where seq {expected} belongs; seq {expected} comes later",
                expected,
                line,
            )
    what = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
    return ChainFailure("deleted", f"{what} missing: the next record is seq {seq}", expected, line)


def _check_checkpoint_record(
    rec: dict[str, Any], root: bytes, key: Ed25519PublicKey | None, st: WalkState, line: Line
) -> None:
    seq, data = rec["seq"], rec["data"]
    start = st.signed_size
    if data.get("tree_size") != seq:
        raise ChainFailure(
            "modified", f"checkpoint record seq {seq} claims tree size {data.get('tree_size')}", seq, line
        )
    if data.get("root_hash") != base64.b64encode(root).decode():
        raise ChainFailure(
            "checkpoint inconsistent",
            f"checkpoint at seq {seq} signed a different tree: a record in seq {start}..{seq - 1} was changed",
            start,
            line,
        )
    note = data.get("note")
    if key is not None:
        if not isinstance(note, str):
            raise ChainFailure("signature invalid", f"checkpoint record seq {seq} carries no signed note", seq, line)
        try:
            body = signed_note.parse_checkpoint_text(signed_note.parse_note(note)[0])
            signed_note.open_note(note, body.origin, key)
        except signed_note.NoteError as exc:
            raise ChainFailure("signature invalid", f"checkpoint record seq {seq}: {exc}", start, line) from None
        if body.size != seq or body.root != root:
            raise ChainFailure(
                "checkpoint inconsistent",
                f"checkpoint record seq {seq}: the signed note is for another tree",
                start,
                line,
            )
        st.signed_size = seq
    st.checkpoint_records += 1
    st.last_checkpoint_seq = seq
    st.last_checkpoint_ts = rec["ts"]
