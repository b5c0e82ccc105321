"""Structured logs follow Datadog's conventions in JSON mode."""

from __future__ import annotations

import io
import json

from sandbox import __version__, logs
from sandbox.config import LoggingConfig


def test_json_lines_with_datadog_reserved_attributes() -> None:
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json", level="info", service="par-test", env="ci"), stream=out)
    log = logs.get_logger("sandbox.test")
    log.info("task finished", task_id="t1", trace_id=1234)
    log.debug("hidden at info level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["message"] == "task finished"
    assert doc["status"] == "info"
    assert doc["service"] == "par-test" and doc["env"] == "ci" and doc["version"] == __version__
    assert doc["dd.trace_id"] == "1234" and doc["task_id"] == "t1"
    assert doc["logger.name"] == "sandbox.test"
    assert doc["timestamp"].endswith("Z")


def test_console_mode_is_human_readable() -> None:
    out = io.StringIO()
    logs.configure(LoggingConfig(format="console"), stream=out)
    logs.get_logger("x").warning("disk almost full", free_mb=12)
    text = out.getvalue()
    assert "disk almost full" in text and "free_mb=12" in text
    assert not text.lstrip().startswith("{")


def test_module_level_logger_follows_a_later_configure() -> None:
    early = logs.get_logger("sandbox.early")  # as a module would at import time
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json", level="warning"), stream=out)
    early.info("filtered out")
    early.warning("kept")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "kept"
