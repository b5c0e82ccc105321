"""Structured logs follow Datadog's conventions in JSON mode."""

from __future__ import annotations

import io
import json
import threading

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


def test_exception_carries_datadog_error_attributes() -> None:
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json"), stream=out)
    try:
        raise ValueError("bad policy input")
    except ValueError:
        logs.get_logger("sandbox.runner").exception("internal error", task_id="t9")
    doc = json.loads(out.getvalue())
    assert doc["status"] == "error" and doc["task_id"] == "t9"
    assert doc["error.kind"] == "ValueError" and doc["error.message"] == "bad policy input"
    assert "Traceback" in doc["error.stack"] and "raise ValueError" in doc["error.stack"]


def test_values_json_cannot_encode_are_logged_not_fatal() -> None:
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json"), stream=out)
    logs.get_logger("x").info("odd value", path=object(), raw=b"\xff", nan=float("nan"))
    doc = json.loads(out.getvalue())
    assert doc["path"].startswith("<object object") and doc["raw"] == "b'\\xff'"


def test_a_broken_stdout_never_raises() -> None:
    """A closed pipe on stdout must not turn a log call into a crash of the runner."""
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json"), stream=out)
    out.close()
    logs.get_logger("x").error("still running")  # would raise ValueError on a closed stream


def test_log_lines_from_many_threads_never_interleave() -> None:
    out = io.StringIO()
    logs.configure(LoggingConfig(format="json"), stream=out)
    log = logs.get_logger("x")

    def burst(n: int) -> None:
        for i in range(200):
            log.info("line", thread=n, i=i, pad="p" * 300)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1600
    assert all(json.loads(line)["message"] == "line" for line in lines)
