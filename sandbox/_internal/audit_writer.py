"""The one file writer of an audit log: appends batches of lines, rotates segments, fsyncs.

Only one thread at a time calls into it (the group-commit leader in :mod:`sandbox.audit`). Before a
new segment is created the previous one is fsync'd, and the directory is fsync'd after the creation,
so after a crash a later segment never survives while an earlier one lost its tail.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sandbox._internal.audit_segments import segment_name
from sandbox._internal.durable import fsync_dir


class SegmentWriter:
    def __init__(self, directory: Path, max_bytes: int, current: Path | None) -> None:
        self.directory = directory
        self.max_bytes = max(max_bytes, 1)
        self.path: Path | None = None
        self.size = 0
        self._fd: int | None = None
        if current is not None:
            self._open(current, create=False)

    def _open(self, path: Path, *, create: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(path, flags, 0o640)
        self.path = path
        self.size = os.fstat(self._fd).st_size
        if create:
            fsync_dir(self.directory)

    def write(self, batch: Sequence[tuple[int, bytes]], *, sync: bool) -> None:
        """Append ``(seq, line)`` pairs in order; rotate before a line that would overflow the segment."""
        chunk: list[bytes] = []
        chunk_len = 0
        for seq, line in batch:
            if self._fd is None or (self.size + chunk_len > 0 and self.size + chunk_len + len(line) > self.max_bytes):
                if chunk:
                    self._write_all(b"".join(chunk))
                    chunk, chunk_len = [], 0
                self._rotate(seq)
            chunk.append(line)
            chunk_len += len(line)
        if chunk:
            self._write_all(b"".join(chunk))
        if sync and self._fd is not None:
            os.fsync(self._fd)

    def _rotate(self, first_seq: int) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._open(self.directory / segment_name(first_seq), create=True)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.size += n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
