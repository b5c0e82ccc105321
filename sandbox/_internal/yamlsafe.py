"""Strict YAML loading for files that define what the runner may do.

PyYAML's SafeLoader still accepts aliases (billion-laughs bombs), silently keeps the last of two
duplicate keys, and reads any size; for an allowlist each of those is a way to make the file mean
something other than what a reviewer read. This loader refuses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from sandbox.errors import ConfigError

MAX_YAML_BYTES = 1024 * 1024  # 1 MiB: far above any real config, far below a memory problem


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConstructorError(
                None, None, "YAML aliases/anchors are not allowed in this file", event.start_mark
            )
        node: Node | None = super().compose_node(parent, index)
        if node is not None and getattr(node, "anchor", None):
            raise ConstructorError(None, None, "YAML anchors are not allowed in this file", node.start_mark)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError as exc:
                raise ConstructorError(None, None, "mapping key is not a plain value", key_node.start_mark) from exc
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(data: bytes, *, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse YAML bytes strictly; ``source`` names the file in errors."""
    if len(data) > MAX_YAML_BYTES:
        raise error(f"{source}: file is {len(data)} bytes, over the {MAX_YAML_BYTES}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not valid UTF-8 (byte offset {exc.start})") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise error(f"{source}: invalid YAML: {exc}") from exc


def load_yaml_file(path: Path, *, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """Read and parse a YAML file, with errors that say which file and why."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"{path}: file is {size} bytes, over the {MAX_YAML_BYTES}-byte limit")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} file not found") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from exc
    return load_yaml_text(data, source=str(path), error=error)
