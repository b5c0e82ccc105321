"""Segment files of the audit log: naming, listing and reading lines with their offsets.

A segment is named after the ``seq`` of its first record (``audit-000000001000.jsonl``), so the
order of segments is unambiguous and the segment holding a given record is found by name alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

SEGMENT_RE = re.compile(r"audit-(\d{12})\.jsonl")
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.note"


def segment_name(first_seq: int) -> str:
    return f"audit-{first_seq:012d}.jsonl"


def segment_first_seq(path: Path) -> int:
    m = SEGMENT_RE.fullmatch(path.name)
    if m is None:
        raise ValueError(f"{path} is not an audit segment name (audit-<12 digits>.jsonl)")
    return int(m.group(1))


def list_segments(directory: Path) -> list[Path]:
    found = [p for p in directory.iterdir() if SEGMENT_RE.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=segment_first_seq)


def resolve_paths(paths: Iterable[Path]) -> tuple[list[Path], Path | None]:
    """Segments named by the user (a directory means all its segments) and the checkpoint dir, if any."""
    segments: list[Path] = []
    ckpt_dir: Path | None = None
    for p in paths:
        if p.is_dir():
            segments.extend(list_segments(p))
            if (p / CHECKPOINT_DIR).is_dir():
                ckpt_dir = p / CHECKPOINT_DIR
        else:
            segments.append(p)
    return sorted(set(segments), key=lambda s: (segment_first_seq(s) if SEGMENT_RE.fullmatch(s.name) else -1, s)), (
        ckpt_dir
    )


class Line(NamedTuple):
    """One line of a segment (a tuple: the verifier creates one per record)."""

    path: Path
    offset: int  # byte offset of the line in its segment
    data: bytes  # without the newline
    complete: bool  # False: the segment ends without a newline (torn or truncated write)


def iter_lines(segments: Iterable[Path]) -> Iterator[Line]:
    for path in segments:
        with path.open("rb") as f:
            buf = f.read()
        pos, end = 0, len(buf)
        find = buf.find
        while pos < end:
            nl = find(b"\n", pos)
            if nl < 0:
                yield Line(path, pos, buf[pos:], False)
                break
            yield Line(path, pos, buf[pos:nl], True)
            pos = nl + 1
