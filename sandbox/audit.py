"""The audit log: every decision and output, hash-chained, in an RFC 6962 Merkle tree, with signed checkpoints.

Format: ``docs/audit-format.md`` (written so an auditor can build an independent verifier).

Guarantees the runner relies on:

- ``append(..., durable=True)`` returns only after the record is on disk (fsync'd); concurrent
  appenders share one fsync (group commit), so durability costs one fsync per batch, not per record.
- Any write or fsync failure raises :class:`~sandbox.errors.AuditError` to the caller and *poisons*
  the log: every later append raises too, until the log is reopened (which re-verifies the files
  and moves a torn tail aside). After a failed fsync the page cache state is unknown, so carrying on
  would risk acknowledging records that are not on disk; callers then refuse to execute (fail closed).
- ``open`` verifies the whole chain; a torn last line (crash) is moved to a ``.torn`` file and a
  ``torn_tail`` record says so; any other defect refuses to open.

Use::

    log = AuditLog.open(cfg.audit, signer=keys.load_audit_key(cfg.audit.signing_key))
    seen = {r.data.get("task_id") for r in log.records() if r.kind == "decision"}
    log.append("decision", {...})                            # fsync'd before the action runs
    log.append("proxy_allowed", {...}, durable=False)        # high-volume, written with the next batch
    log.close()                                              # final signed checkpoint

``data`` must be JSON-compatible (dict/list/tuple/str/int/float/bool/None; bytes are refused: store
text or hex); integers beyond +-(2^53-1) are stored as strings.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox._internal import signed_note
from sandbox._internal.audit_canon import KINDS, DataError, canonical_data, encode_record
from sandbox._internal.audit_chain import ChainFailure, WalkState, walk
from sandbox._internal.audit_recovery import recover
from sandbox._internal.audit_segments import (
    CHECKPOINT_DIR,
    LATEST,
    iter_lines,
    list_segments,
    resolve_paths,
)
from sandbox._internal.audit_writer import SegmentWriter
from sandbox._internal.durable import write_file_atomic
from sandbox.config import AuditConfig
from sandbox.errors import AuditError, AuditVerificationError
from sandbox.logs import get_logger

__all__ = [
    "KINDS",
    "AuditLog",
    "AuditSink",
    "Checkpoint",
    "Record",
    "VerifyResult",
    "read_checkpoint",
    "verify_log",
]

_log = get_logger(__name__)
_INTERNAL_KINDS = frozenset({"checkpoint", "torn_tail"})


class AuditSink(Protocol):
    def append(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> int: ...


@dataclass(frozen=True)
class Record:
    seq: int
    ts: str  # RFC 3339 UTC, e.g. 2026-12-04T20:05:27.123456Z
    kind: str
    data: dict[str, Any]
    prev: str
    hash: str

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.ts.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: the first ``size`` records have Merkle root ``root``."""

    origin: str
    size: int
    root: bytes
    note: str  # the C2SP signed note, as written to checkpoints/<size>.note
    seq: int | None = None  # seq of the `checkpoint` record that carries it, if known
    path: Path | None = None

    @classmethod
    def from_note(cls, note: str, *, path: Path | None = None) -> Checkpoint:
        try:
            body = signed_note.parse_checkpoint_text(signed_note.parse_note(note)[0])
        except signed_note.NoteError as exc:
            raise AuditVerificationError(f"{path or 'checkpoint'}: not a signed checkpoint: {exc}") from None
        return cls(body.origin, body.size, body.root, note, None, path)

    def verify_signature(self, key: Ed25519PublicKey) -> None:
        try:
            signed_note.open_note(self.note, self.origin, key)
        except signed_note.NoteError as exc:
            raise AuditVerificationError(f"{self.path or 'checkpoint'} (size {self.size}): {exc}") from None


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read checkpoint {path}: {exc}") from None
    return Checkpoint.from_note(text, path=Path(path))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _State:
    next_seq: int
    last_hash: str
    written: int  # highest seq handed to the OS
    durable: int  # highest seq fsync'd
    want_durable: int = -1
    flushing: bool = False
    failed: str | None = None
    closed: bool = False
    pending: list[tuple[int, bytes]] = field(default_factory=list)


class AuditLog:
    """The runner's audit log (one writer per directory, enforced with a lock file)."""

    def __init__(self, cfg: AuditConfig, signer: Ed25519PrivateKey | None, lock_fd: int) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self._signer = signer
        self._lock_fd = lock_fd
        self._cond = threading.Condition(threading.Lock())
        self._ckpt_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._writer: SegmentWriter
        self._st: _State
        self._tree = WalkState().tree
        self._last_ckpt_size = 0
        self._last_ckpt_time = time.monotonic()
        self.last_checkpoint: Checkpoint | None = None

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, cfg: AuditConfig, *, signer: Ed25519PrivateKey | None) -> AuditLog:
        """Open (or create) the log in ``cfg.dir``, verify it and recover a torn tail."""
        directory = Path(cfg.dir)
        try:
            signed_note.key_id(cfg.origin, Ed25519PrivateKey.generate().public_key())
        except signed_note.NoteError as exc:
            raise AuditError(f"audit.origin: {exc}") from None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            (directory / CHECKPOINT_DIR).mkdir(exist_ok=True, mode=0o750)
            lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditError(f"cannot open the audit directory {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise AuditError(
                f"audit log {directory} is open in another process", hint="Stop the other runner first."
            ) from None
        log = cls(cfg, signer, lock_fd)
        try:
            log._load()
        except BaseException:
            log._release()
            raise
        return log

    def _load(self) -> None:
        latest_path = self.dir / CHECKPOINT_DIR / LATEST
        latest = read_checkpoint(latest_path) if latest_path.exists() else None
        try:
            rec = recover(self.dir, (latest.size,) if latest else ())
        except OSError as exc:
            raise AuditError(f"cannot read the audit log in {self.dir}: {exc.strerror}") from exc
        st = rec.state
        if latest is not None:
            if latest.size > st.count:
                raise AuditVerificationError(
                    f"audit log {self.dir} has {st.count} records but its latest checkpoint covers {latest.size}: "
                    "records were removed"
                )
            if st.roots.get(latest.size) != latest.root:
                raise AuditVerificationError(
                    f"audit log {self.dir} does not match its latest checkpoint (size {latest.size}): it was rewritten"
                )
            self.last_checkpoint = latest
        self._tree = st.tree
        # records up to and including the last checkpoint record need no new checkpoint
        self._last_ckpt_size = st.last_checkpoint_seq + 1 if st.last_checkpoint_seq is not None else 0
        self._st = _State(next_seq=st.count, last_hash=st.last_hash, written=st.count - 1, durable=st.count - 1)
        segments = list_segments(self.dir)
        try:
            self._writer = SegmentWriter(self.dir, self.cfg.segment_max_bytes, segments[-1] if segments else None)
        except OSError as exc:
            raise AuditError(f"cannot open the audit segment for writing: {exc.strerror}") from exc
        if rec.torn is not None:
            _log.warning("audit_torn_tail", **rec.torn.to_data())
            self._append_internal("torn_tail", rec.torn.to_data())
        if self._signer is not None:
            if st.count and self._st.next_seq > self._last_ckpt_size:
                self.checkpoint()  # sign what the previous run left unsigned
            if self.cfg.checkpoint_every_s > 0:
                self._ticker = threading.Thread(target=self._tick, name="audit-checkpoint", daemon=True)
                self._ticker.start()

    # --- appending --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of records appended (including ones not yet written)."""
        with self._cond:
            return self._st.next_seq

    def append(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> int:
        """Append one record; with ``durable`` return only once it is fsync'd. Returns its seq."""
        if kind in _INTERNAL_KINDS:
            raise AuditError(f"record kind {kind!r} is written by the audit log itself")
        seq = self._append_internal(kind, data, durable=durable)
        every = self.cfg.checkpoint_every_records
        if self._signer is not None and every and seq + 1 - self._last_ckpt_size >= every:
            self._maybe_checkpoint(lambda: self._st.next_seq - self._last_ckpt_size >= every)
        return seq

    def _append_internal(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> int:
        if kind not in KINDS:
            raise AuditError(
                f"unknown audit record kind {kind!r}",
                hint=f"Use one of: {', '.join(sorted(KINDS))} (docs/audit-format.md).",
            )
        try:
            data_jcs = canonical_data(data)
        except DataError as exc:
            raise AuditError(f"audit record {kind!r}: {exc}", hint="Pass JSON-compatible data.") from None
        with self._cond:
            seq = self._add(kind, data_jcs)
            if durable:
                self._st.want_durable = max(self._st.want_durable, seq)
            self._commit(seq, durable)
        return seq

    def _add(self, kind: str, data_jcs: str) -> int:
        st = self._st
        self._check_usable()
        seq = st.next_seq
        line, digest = encode_record(seq, _now(), kind, data_jcs, st.last_hash)
        self._tree.append(_leaf(line))
        st.pending.append((seq, line + b"\n"))
        st.last_hash = digest
        st.next_seq = seq + 1
        return seq

    def _check_usable(self) -> None:
        if self._st.failed is not None:
            raise AuditError(
                f"the audit log failed earlier and accepts no more records: {self._st.failed}",
                hint="Fix the disk problem, then restart the runner (reopening recovers the log).",
            )
        if self._st.closed:
            raise AuditError("the audit log is closed")

    def _commit(self, seq: int, durable: bool) -> None:
        """Group commit, called with the lock held: become the flushing leader or wait for one."""
        st = self._st
        while True:
            if (st.durable if durable else st.written) >= seq:
                return
            if st.failed is not None:
                self._check_usable()
            if not st.flushing:
                self._lead()
                continue
            if not durable:
                return  # the current leader writes everything pending before it stops
            self._cond.wait()

    def _lead(self) -> None:
        st = self._st
        st.flushing = True
        try:
            while st.pending or st.want_durable > st.durable:
                cap = max(self.cfg.group_commit_max_records, 1)
                batch, st.pending = st.pending[:cap], st.pending[cap:]
                last = batch[-1][0] if batch else st.written
                sync = st.want_durable > st.durable
                self._cond.release()
                try:
                    self._writer.write(batch, sync=sync)
                except OSError as exc:
                    st.failed = f"{exc.strerror or exc} (writing seq {batch[0][0] if batch else last})"
                    _log.error("audit_write_failed", error=st.failed, dir=str(self.dir))
                finally:
                    self._cond.acquire()
                if st.failed is not None:
                    break
                st.written = last
                if sync:
                    st.durable = last
                self._cond.notify_all()
        finally:
            st.flushing = False
            self._cond.notify_all()
        self._check_usable()

    # --- checkpoints ------------------------------------------------------------------------------

    def _maybe_checkpoint(self, due: Any) -> None:
        if not self._ckpt_lock.acquire(blocking=False):
            return  # another thread is checkpointing right now
        try:
            if due():
                self._checkpoint_locked()
        finally:
            self._ckpt_lock.release()

    def checkpoint(self) -> Checkpoint:
        """Sign the current tree: a ``checkpoint`` record (durable), then checkpoints/<size>.note and latest."""
        with self._ckpt_lock:
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> Checkpoint:
        if self._signer is None:
            raise AuditError(
                "no audit signing key: checkpoints cannot be signed", hint="Run `par keygen --only audit`."
            )
        with self._cond:
            self._check_usable()
            size, root = self._st.next_seq, self._tree.root()
            body = signed_note.CheckpointBody(self.cfg.origin, size, root)
            note = signed_note.sign_note(body.text(), self.cfg.origin, self._signer)
            data = {
                "origin": self.cfg.origin,
                "tree_size": size,
                "root_hash": base64.b64encode(root).decode(),
                "note": note,
            }
            seq = self._add("checkpoint", canonical_data(data))
            self._st.want_durable = max(self._st.want_durable, seq)
            self._commit(seq, True)
            self._last_ckpt_size = seq + 1
            self._last_ckpt_time = time.monotonic()
        ckdir = self.dir / CHECKPOINT_DIR
        path = ckdir / f"{size}.note"
        try:
            write_file_atomic(path, note.encode())
            write_file_atomic(ckdir / LATEST, note.encode())
        except OSError as exc:
            with self._cond:
                self._st.failed = f"cannot write checkpoint file {path}: {exc.strerror}"
            raise AuditError(self._st.failed) from exc
        cp = Checkpoint(self.cfg.origin, size, root, note, seq, path)
        self.last_checkpoint = cp
        return cp

    def _tick(self) -> None:
        period = self.cfg.checkpoint_every_s
        while not self._stop.wait(min(period, 1.0)):
            if time.monotonic() - self._last_ckpt_time < period:
                continue
            try:
                self._maybe_checkpoint(lambda: self._st.next_seq > self._last_ckpt_size)
            except AuditError as exc:
                _log.error("audit_checkpoint_failed", error=exc.message)
                return

    # --- reading and closing ----------------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Committed records in order (pending ones are written first), read back from the segments."""
        with self._cond:
            if self._st.pending:
                self._commit(self._st.next_seq - 1, False)
            count = self._st.written + 1
        if count <= 0:
            return
        state = WalkState()
        try:
            for _, rec in walk(iter_lines(list_segments(self.dir)), state=state):
                yield Record(rec["seq"], rec["ts"], rec["kind"], rec["data"], rec["prev"], rec["hash"])
                if state.count >= count:
                    return
        except ChainFailure as exc:
            raise AuditVerificationError(f"audit log {self.dir}: {exc}") from None
        except OSError as exc:
            raise AuditError(f"cannot read the audit log: {exc.strerror}") from exc

    def close(self) -> None:
        """Write a final checkpoint (when there is something new to sign) and release the log."""
        if self._st.closed:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        try:
            if self._st.failed is None:
                if self._signer is not None and self._st.next_seq > self._last_ckpt_size:
                    self.checkpoint()
                else:
                    with self._cond:
                        self._st.want_durable = self._st.next_seq - 1
                        self._commit(self._st.next_seq - 1, True)
        finally:
            with self._cond:
                self._st.closed = True
            self._writer.close()
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


# --- verification (auditor side) ------------------------------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    error: str | None = None
    category: str | None = None  # modified | inserted | deleted | reordered | truncated | signature invalid | ...
    signed_size: int = 0  # records covered by a verified signed checkpoint
    checkpoints_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_bad_seq": self.first_bad_seq,
            "error": self.error,
            "category": self.category,
            "signed_size": self.signed_size,
            "unsigned_tail": max(self.records - self.signed_size, 0),
            "checkpoints_checked": self.checkpoints_checked,
        }


def verify_log(
    paths: Iterable[Path],
    *,
    public_key: Ed25519PublicKey,
    checkpoints: Sequence[Checkpoint] = (),
    origin: str | None = None,
) -> VerifyResult:
    """Verify segments (or audit directories) offline: chain, canonical form, tree, signed checkpoints.

    ``checkpoints`` are ones the auditor kept: a log rolled back, truncated or rewritten since then
    fails. Checkpoint files found in an audit directory's ``checkpoints/`` are checked as well.
    """
    segments, ckpt_dir = resolve_paths([Path(p) for p in paths])
    if not segments:
        return VerifyResult(False, 0, None, "no audit segments (audit-*.jsonl) found", "truncated")
    cps = list(checkpoints)
    if ckpt_dir is not None:
        cps.extend(read_checkpoint(p) for p in sorted(ckpt_dir.glob("*.note")))
    for cp in cps:
        if origin is not None and cp.origin != origin:
            return VerifyResult(
                False, 0, None, f"{cp.path}: origin {cp.origin!r} is not {origin!r}", "signature invalid"
            )
        try:
            cp.verify_signature(public_key)
        except AuditVerificationError as exc:
            return VerifyResult(False, 0, None, exc.message, "signature invalid")
    state = WalkState()
    try:
        for _ in walk(iter_lines(segments), want_roots={cp.size for cp in cps}, public_key=public_key, state=state):
            pass
    except ChainFailure as f:
        return VerifyResult(False, state.count, f.first_bad_seq, f.message, f.category, state.signed_size)
    except OSError as exc:
        return VerifyResult(False, state.count, None, f"cannot read the log: {exc}", "truncated")
    signed = state.signed_size
    for cp in sorted(cps, key=lambda c: c.size):
        where = cp.path or "the given checkpoint"
        if cp.size > state.count:
            return VerifyResult(
                False,
                state.count,
                state.count,
                f"the log has {state.count} records but {where} covers {cp.size}: the log was truncated or rolled back",
                "truncated",
                signed,
                len(cps),
            )
        if state.roots.get(cp.size) != cp.root:
            return VerifyResult(
                False,
                state.count,
                None,
                f"the first {cp.size} records do not match {where}: the log was rewritten or rolled back since",
                "checkpoint inconsistent",
                signed,
                len(cps),
            )
        signed = max(signed, cp.size)
    if state.count and signed == 0:
        return VerifyResult(
            False,
            state.count,
            0,
            "no valid signed checkpoint covers any record: the log cannot be told apart from a forgery",
            "signature invalid",
            0,
            len(cps),
        )
    return VerifyResult(True, state.count, None, None, None, signed, len(cps) + state.checkpoint_records)
