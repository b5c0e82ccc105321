"""``par jail run``: the security team's entry point into exactly the runner's jail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox._cli import main

pytestmark = pytest.mark.kernel
CONFIG = Path(__file__).resolve().parents[2] / "config" / "runner.yaml"


def test_jail_run_json(jail_user: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(CONFIG), "jail", "run", "--json", "--", "sh", "-c", "echo hi; exit 3"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3
    assert doc["exit_code"] == 3 and doc["stdout"] == "hi\n" and doc["timed_out"] is False
    assert {"identity", "netns", "seccomp", "landlock", "no_new_privs", "rlimits"} <= set(doc["controls"])
    assert doc["landlock_abi"] >= 1
    assert set(doc) == {
        "exit_code",
        "signal",
        "timed_out",
        "stdout",
        "stderr",
        "truncated",
        "duration_ms",
        "controls",
        "landlock_abi",
    }


def test_jail_run_plain_output_timeout_and_truncation(jail_user: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(CONFIG), "jail", "run", "--output-limit", "4", "--", "sh", "-c", "echo hello"])
    out, err = capsys.readouterr()
    assert code == 0 and out == "hell" and "2 bytes dropped" in err
    code = main(["--config", str(CONFIG), "jail", "run", "--timeout", "0.5", "--", "sleep", "10"])
    assert code == 124 and "timed out" in capsys.readouterr().err


def test_jail_run_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(CONFIG), "jail", "run", "--"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert main(["--config", str(CONFIG), "jail", "run", "--timeout", "-1", "--", "true"]) == 2
    assert "--timeout" in capsys.readouterr().err
