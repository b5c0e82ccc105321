"""Helpers shared by the CLI modules: loading config and catalog from the global ``--config``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.config import RunnerConfig, load_config
from sandbox.errors import Error

if TYPE_CHECKING:
    from sandbox.catalog import Catalog


def config_from(ns: argparse.Namespace) -> RunnerConfig:
    return load_config(Path(ns.config))


def catalog_from(cfg: RunnerConfig) -> Catalog:
    # Imported on use: the catalog brings jsonschema (~18 MB resident), which `par proxy` never needs.
    from sandbox.catalog import load_catalog  # noqa: PLC0415

    return load_catalog(cfg.catalog)


def runner_vars(cfg: RunnerConfig) -> dict[str, str]:
    """Values for ``{{ runner.* }}`` templates in the catalog."""
    return {"project": cfg.docker.project, "compose_file": str(cfg.docker.compose_file)}


def print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


MAX_ARG_FILE_BYTES = 1024 * 1024  # an @file argument (principal, trigger, history) larger than this is refused
_INT_VALUE = re.compile(r"^-?[0-9]{1,18}$")


def json_arg(value: str, flag: str, error: type[Error] = Error) -> Any:
    """A JSON document given inline or as ``@file`` (``par check``, ``par submit``); ``error`` names the area."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            if path.stat().st_size > MAX_ARG_FILE_BYTES:
                raise error(f"{flag}: {path} is larger than {MAX_ARG_FILE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise error(f"{flag}: cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise error(f"{flag}: {path} is not UTF-8") from exc
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{flag}: not valid JSON: {exc}", hint="Pass inline JSON or @path/to/file.json.") from exc


def key_value_params(items: list[str], error: type[Error] = Error) -> dict[str, Any]:
    """``--param K=V`` values; integers become integers so integer schema parameters validate."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise error(f"--param {item!r}: expected KEY=VALUE")
        if key in params:
            raise error(f"--param {key} given twice")
        params[key] = int(value) if _INT_VALUE.match(value) else value
    return params
