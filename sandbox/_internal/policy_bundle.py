"""Reading a policy directory the way OPA reads a bundle.

The same ``policies/`` directory must mean the same thing to the embedded engine and to an OPA server
it is mounted into, or a security team's tests would prove something about a different policy than the
one enforced. So the layout rules are OPA's: every ``*.rego`` file is a module, and a ``data.json`` or
``data.yaml`` is placed at the data path of its directory (``policies/data.json`` is the data root,
``policies/docker_proxy/data.json`` is ``data.docker_proxy``). Anything ambiguous (a data file that is not
an object, two files defining the same key) is a load error rather than a silent "last one wins".

The revision is a sha256 over the sorted relative file names and their contents, so an audit record
can say exactly which policy text made a decision.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox._internal import strictjson
from sandbox._internal.yamlsafe import load_yaml_text
from sandbox.errors import ConfigError, PolicyError

MAX_FILE_BYTES = 1024 * 1024  # a single policy or data file
MAX_TOTAL_BYTES = 8 * 1024 * 1024  # the whole directory
DATA_FILES = ("data.json", "data.yaml")


@dataclass(frozen=True)
class PolicyBundle:
    """The loaded text of a policy directory; immutable so a reload can swap it atomically."""

    root: Path
    modules: tuple[tuple[str, str], ...]  # (relative path, rego text), sorted by path
    data: dict[str, Any]
    revision: str
    files: tuple[str, ...]  # every file that went into the revision

    @property
    def data_json(self) -> str:
        return json.dumps(self.data, sort_keys=True)


def is_test_module(name: str) -> bool:
    return name.endswith("_test.rego")


def load_bundle(root: Path, *, include_tests: bool = False) -> PolicyBundle:
    """Read ``root`` (a directory, or a single .rego file); raise PolicyError naming the file."""
    root = Path(root)
    if root.is_file():
        files = [(root.name, root)] if root.suffix == ".rego" or root.name in DATA_FILES else []
        base = root.parent
    elif root.is_dir():
        files = _walk(root)
        base = root
    else:
        raise PolicyError(f"policy path {root} does not exist", hint="Set policy.path in config/runner.yaml.")
    modules: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    digest = hashlib.sha256()
    used: list[str] = []
    total = 0
    for rel, path in files:
        is_rego = rel.endswith(".rego")
        if is_rego and is_test_module(rel) and not include_tests:
            continue
        raw = _read(path)
        total += len(raw)
        if total > MAX_TOTAL_BYTES:
            raise PolicyError(f"policy directory {root} is larger than {MAX_TOTAL_BYTES} bytes")
        digest.update(rel.encode() + b"\0" + hashlib.sha256(raw).hexdigest().encode() + b"\n")
        used.append(rel)
        if is_rego:
            try:
                modules.append((rel, raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise PolicyError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from exc
        else:
            doc = _parse_data(path, raw)
            prefix = tuple(p for p in Path(rel).parent.parts if p not in ("", "."))
            _merge(data, prefix, doc, rel, owners)
    if not modules:
        raise PolicyError(f"no .rego policy files found under {root}")
    return PolicyBundle(root=base, modules=tuple(modules), data=data, revision=digest.hexdigest(), files=tuple(used))


def merge_bundles(bundles: list[PolicyBundle]) -> PolicyBundle:
    """Several paths given to ``par policy test``: one module set, one data tree, conflicts refused."""
    if len(bundles) == 1:
        return bundles[0]
    modules: list[tuple[str, str]] = []
    names: set[str] = set()
    data: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    digest = hashlib.sha256()
    files: list[str] = []
    for b in bundles:
        for name, text in b.modules:
            shown = name if name not in names else f"{b.root.name}/{name}"
            names.add(shown)
            modules.append((shown, text))
        _merge_object(data, json.loads(b.data_json), (), str(b.root), owners)
        digest.update(b.revision.encode() + b"\n")
        files.extend(b.files)
    return PolicyBundle(
        root=bundles[0].root, modules=tuple(modules), data=data, revision=digest.hexdigest(), files=tuple(files)
    )


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector for the file watcher: names, sizes and mtimes, no reading."""
    root = Path(root)
    if root.is_file():
        st = root.stat()
        return ((root.name, st.st_size, st.st_mtime_ns),)
    out = []
    for rel, path in _walk(root):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _walk(root: Path) -> list[tuple[str, Path]]:
    """Policy and data files under root, sorted; hidden entries are skipped like OPA does."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            if name.endswith(".rego") or name in DATA_FILES:
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return found


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PolicyError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit for a policy file")
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from exc


def _parse_data(path: Path, raw: bytes) -> dict[str, Any]:
    if path.name == "data.json":
        try:
            doc = strictjson.loads(raw)
        except ValueError as exc:
            raise PolicyError(f"{path}: invalid JSON: {exc}") from exc
    else:
        try:
            doc = load_yaml_text(raw, source=str(path))
        except ConfigError as exc:
            raise PolicyError(exc.message) from exc
    if not isinstance(doc, dict):
        raise PolicyError(
            f"{path}: a data file must hold an object (it is placed at its directory's data path), "
            f"got {type(doc).__name__}"
        )
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{path}: data must be plain JSON values: {exc}") from exc
    return doc


def _merge(
    data: dict[str, Any], prefix: tuple[str, ...], doc: dict[str, Any], rel: str, owners: dict[tuple[str, ...], str]
) -> None:
    """Place ``doc`` at ``prefix``; objects merge, any other overlap is a conflict naming both files."""
    node = data
    for i, part in enumerate(prefix):
        here = prefix[: i + 1]
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise PolicyError(
                f"policy data conflict: {rel} is placed at data.{'.'.join(here)}, "
                f"which {owners.get(here, 'another file')} already sets to a non-object"
            )
        node = child
    _merge_object(node, doc, prefix, rel, owners)


def _merge_object(
    node: dict[str, Any], doc: dict[str, Any], at: tuple[str, ...], rel: str, owners: dict[tuple[str, ...], str]
) -> None:
    for key, value in doc.items():
        here = (*at, key)
        if key not in node:
            node[key] = value
            owners[here] = rel
        elif isinstance(node[key], dict) and isinstance(value, dict):
            _merge_object(node[key], value, here, rel, owners)
        else:
            raise PolicyError(
                f"policy data conflict: data.{'.'.join(here)} is set by both "
                f"{owners.get(here, 'another file')} and {rel}"
            )
