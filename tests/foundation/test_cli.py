"""The thin CLI: `par actions` lists the seed commands; user errors print diagnostics, not tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox._cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "config" / "runner.yaml")


def test_actions_lists_every_seed_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", CONFIG, "actions"]) == 0
    out = capsys.readouterr().out
    for name in ("restart_transaction_service", "scale_pix_worker_5", "restart_messaging",
                 "check_service_logs_pix_worker", "check_kafka_topics", "check_services_status"):
        assert name in out
    assert "tail? (integer, 1..1000, default 100)" in out


def test_actions_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", CONFIG, "actions", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {a["name"] for a in doc["actions"]}
    assert "check_service_logs" in names and len(names) == len(doc["actions"])


def test_bad_config_is_a_diagnostic_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "runner.yaml"
    bad.write_text("catalog: [oops]\n")
    proc = subprocess.run([sys.executable, "-m", "sandbox", "--config", str(bad), "actions"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr and "'catalog'" in proc.stderr and "hint:" in proc.stderr


def test_only_the_module_of_the_command_is_imported() -> None:
    code = ("import sys; from sandbox._cli import main; main(['actions', '--json']); "
            "print('LOADED', ' '.join(sorted(m for m in sys.modules if m.startswith('sandbox._internal.cli.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = proc.stdout.rsplit("LOADED", 1)[1].split()
    assert "sandbox._internal.cli.actions" in loaded
    assert "sandbox._internal.cli.runner" not in loaded and "sandbox._internal.cli.proxy" not in loaded


def test_every_command_is_registered() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text
