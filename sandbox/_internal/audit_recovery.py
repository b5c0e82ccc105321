"""Reopening a log after a crash: find the committed state, move a torn tail aside.

A crash (kill -9, power loss) can leave the last line of the last segment incomplete or garbled.
Everything before it was committed; the torn bytes are copied to ``<segment>.<offset>.torn`` and cut
off, and the caller appends a ``torn_tail`` record naming them, so nothing disappears silently. A
defect anywhere else is not a crash artefact but tampering: the log refuses to open (fail closed).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox._internal.audit_chain import ChainFailure, WalkState, walk
from sandbox._internal.audit_segments import iter_lines, list_segments
from sandbox._internal.durable import fsync_dir
from sandbox.errors import AuditVerificationError


@dataclass(frozen=True)
class TornTail:
    segment: str
    offset: int
    bytes: int
    sha256: str
    moved_to: str
    reason: str

    def to_data(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "offset": self.offset,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "moved_to": self.moved_to,
            "reason": self.reason,
        }


@dataclass
class Recovered:
    state: WalkState
    segments: list[Path]
    torn: TornTail | None


def recover(directory: Path, want_roots: tuple[int, ...] = ()) -> Recovered:
    segments = list_segments(directory)
    state = WalkState()
    try:
        for _ in walk(iter_lines(segments), want_roots=want_roots, state=state):
            pass
    except ChainFailure as failure:
        torn = _cut_torn_tail(failure, segments)
        return Recovered(state, segments, torn)
    return Recovered(state, segments, None)


def _cut_torn_tail(failure: ChainFailure, segments: list[Path]) -> TornTail:
    line = failure.line
    if line is None or not segments or line.path != segments[-1]:
        raise AuditVerificationError(f"audit log is damaged before its last segment: {failure}")
    with line.path.open("rb") as f:
        f.seek(line.offset)
        tail = f.read()
    if b"\n" in tail[:-1] or failure.category not in ("truncated", "modified"):
        raise AuditVerificationError(
            f"audit log is damaged, not just torn at its end ({line.path.name} offset {line.offset}): {failure}"
        )
    moved = line.path.with_name(f"{line.path.name}.{line.offset}.{time.time_ns()}.torn")
    fd = os.open(moved, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, tail)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(line.path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, line.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(line.path.parent)
    return TornTail(
        segment=line.path.name,
        offset=line.offset,
        bytes=len(tail),
        sha256=hashlib.sha256(tail).hexdigest(),
        moved_to=moved.name,
        reason=failure.message,
    )
