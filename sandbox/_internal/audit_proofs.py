"""Inclusion and consistency proofs as self-contained JSON documents an auditor checks without the log.

An inclusion proof carries the record line itself, the RFC 6962 audit path and the signed checkpoint
it leads to; a consistency proof carries both signed checkpoints and the RFC 6962 consistency path.
Hashes are lowercase hex. The verifier needs only the audit public key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox._internal import merkle, signed_note
from sandbox._internal.audit_canon import LineError, check_line
from sandbox._internal.audit_chain import ChainFailure, walk
from sandbox._internal.audit_segments import iter_lines, list_segments
from sandbox.errors import AuditError, AuditVerificationError

INCLUSION_TYPE = "dogbank-par/audit-inclusion-proof/v1"
CONSISTENCY_TYPE = "dogbank-par/audit-consistency-proof/v1"


def _open(note: str, key: Ed25519PublicKey, what: str) -> signed_note.CheckpointBody:
    try:
        body = signed_note.parse_checkpoint_text(signed_note.parse_note(note)[0])
        signed_note.open_note(note, body.origin, key)
    except signed_note.NoteError as exc:
        raise AuditVerificationError(f"{what}: {exc}") from None
    return body


def _read_log(directory: Path, size: int, want: int | None = None) -> tuple[list[bytes], bytes | None]:
    """Leaf hashes of the first ``size`` records (chain checked on the way) and the line of seq ``want``."""
    leaves: list[bytes] = []
    wanted: bytes | None = None
    try:
        for line, _ in walk(iter_lines(list_segments(directory)), leaves=leaves):
            if len(leaves) - 1 == want:
                wanted = line.data
            if len(leaves) >= size:
                break
    except ChainFailure as exc:
        raise AuditVerificationError(f"audit log {directory}: {exc}") from None
    if len(leaves) < size:
        raise AuditVerificationError(f"audit log {directory} has {len(leaves)} records, the checkpoint covers {size}")
    return leaves, wanted


def build_inclusion_proof(directory: Path, seq: int, checkpoint_note: str, key: Ed25519PublicKey) -> dict[str, Any]:
    body = _open(checkpoint_note, key, "checkpoint")
    if not 0 <= seq < body.size:
        raise AuditError(
            f"seq {seq} is not covered by the checkpoint (tree size {body.size})",
            hint="Prove a record below the checkpoint's tree size, or wait for the next checkpoint.",
        )
    leaves, line = _read_log(directory, body.size, seq)
    assert line is not None
    tree = merkle.MerkleTree(leaves[: body.size])
    if tree.root() != body.root:
        raise AuditVerificationError("the log does not match the checkpoint: it was rewritten")
    return {
        "type": INCLUSION_TYPE,
        "seq": seq,
        "tree_size": body.size,
        "record": line.decode(),
        "leaf_hash": leaves[seq].hex(),
        "proof": [h.hex() for h in tree.inclusion_proof(seq)],
        "checkpoint": checkpoint_note,
    }


def _hashes(doc: dict[str, Any], key: str) -> list[bytes]:
    raw = doc.get(key)
    if not isinstance(raw, list) or not all(isinstance(h, str) and len(h) == 64 for h in raw):
        raise AuditVerificationError(f"proof: '{key}' must be a list of 64-hex-digit hashes")
    try:
        return [bytes.fromhex(h) for h in raw]
    except ValueError:
        raise AuditVerificationError(f"proof: '{key}' holds a hash that is not hex") from None


def verify_inclusion_proof(doc: Any, key: Ed25519PublicKey) -> dict[str, Any]:
    """Check an inclusion proof; returns the record it proves. Raises AuditVerificationError."""
    if not isinstance(doc, dict) or doc.get("type") != INCLUSION_TYPE:
        raise AuditVerificationError(f"not an inclusion proof (type must be {INCLUSION_TYPE})")
    note, record, seq = doc.get("checkpoint"), doc.get("record"), doc.get("seq")
    if not isinstance(note, str) or not isinstance(record, str) or type(seq) is not int:
        raise AuditVerificationError("proof: needs 'checkpoint' (text), 'record' (text) and 'seq' (integer)")
    body = _open(note, key, "proof checkpoint")
    if doc.get("tree_size") != body.size:
        raise AuditVerificationError("proof: tree_size differs from the signed checkpoint")
    line = record.encode()
    try:
        rec = check_line(line)
    except LineError as exc:
        raise AuditVerificationError(f"proof: the record is not a valid record: {exc}") from None
    if rec["seq"] != seq:
        raise AuditVerificationError(f"proof: the record has seq {rec['seq']}, the proof is for seq {seq}")
    leaf = hashlib.sha256(b"\x00" + line).digest()
    if not merkle.verify_inclusion(leaf, seq, body.size, _hashes(doc, "proof"), body.root):
        raise AuditVerificationError(f"inclusion proof for seq {seq} does not lead to the signed root")
    return rec


def build_consistency_proof(directory: Path, old_note: str, new_note: str, key: Ed25519PublicKey) -> dict[str, Any]:
    old, new = _open(old_note, key, "old checkpoint"), _open(new_note, key, "new checkpoint")
    if old.size > new.size:
        raise AuditError(f"the old checkpoint (size {old.size}) is larger than the new one (size {new.size})")
    leaves, _ = _read_log(directory, new.size)
    tree = merkle.MerkleTree(leaves[: new.size])
    if tree.root() != new.root:
        raise AuditVerificationError("the log does not match the new checkpoint: it was rewritten")
    return {
        "type": CONSISTENCY_TYPE,
        "old_size": old.size,
        "new_size": new.size,
        "proof": [h.hex() for h in tree.consistency_proof(old.size)],
        "old_checkpoint": old_note,
        "new_checkpoint": new_note,
    }


def verify_consistency_proof(doc: Any, key: Ed25519PublicKey) -> tuple[int, int]:
    if not isinstance(doc, dict) or doc.get("type") != CONSISTENCY_TYPE:
        raise AuditVerificationError(f"not a consistency proof (type must be {CONSISTENCY_TYPE})")
    old_note, new_note = doc.get("old_checkpoint"), doc.get("new_checkpoint")
    if not isinstance(old_note, str) or not isinstance(new_note, str):
        raise AuditVerificationError("proof: needs 'old_checkpoint' and 'new_checkpoint' (signed notes)")
    old, new = _open(old_note, key, "old checkpoint"), _open(new_note, key, "new checkpoint")
    if old.origin != new.origin:
        raise AuditVerificationError(f"the checkpoints are of different logs ({old.origin!r}, {new.origin!r})")
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, _hashes(doc, "proof")):
        raise AuditVerificationError(
            f"checkpoint of size {old.size} is NOT a prefix of the checkpoint of size {new.size}: the log was rewritten"
        )
    return old.size, new.size
