"""Helpers shared by the CLI modules: loading config and catalog from the global ``--config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.config import RunnerConfig, load_config

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
