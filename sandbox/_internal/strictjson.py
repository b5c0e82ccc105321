"""JSON parsing that refuses what ``json.loads`` silently accepts.

Python keeps the *last* of two duplicate keys and accepts NaN/Infinity; another parser may keep the
first or refuse, so a signed task or a policy data file could mean different things to different readers.
Task envelopes and policy data are parsed with these hooks. (The Docker proxy has its own stricter
parser in ``proxy_json``, which also refuses non-ASCII keys and reports HTTP-level rule names.)
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads(data: str | bytes) -> Any:
    """``json.loads`` that raises ValueError on duplicate keys and on NaN/Infinity."""
    return json.loads(data, object_pairs_hook=reject_duplicate_keys, parse_constant=reject_constant)
