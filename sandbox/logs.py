"""Structured logging: Datadog-convention JSON lines in production, readable lines on a terminal.

Datadog's log pipeline maps ``status`` to the level, ``message`` to the text and reserved attributes
``service``/``env``/``version``/``dd.trace_id``/``error.*`` for correlation; emitting them directly
means no custom pipeline is needed. Logs go to stdout because the container runtime (and the Agent)
collects stdout.

This is a small structured logger on the standard library rather than structlog: structlog's package
init imports asyncio, ssl and inspect, which cost 5 MB resident in the proxy process and 3.5 MB in the
runner (bench/bench_proxy.py, bench/bench_pipeline.py), a tenth of their memory budgets (50 and 60 MB),
for a feature set we use a sliver of: one event name plus key/value fields, four levels, one sink.
The call shape is structlog's (``log.info("event", key=value)``), so a move back is a one-file change.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from sandbox import __version__
from sandbox.config import LoggingConfig

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


@dataclass
class _Sink:
    """Where and how lines are written; replaced as a whole by :func:`configure`."""

    level: int = _LEVELS["info"]
    json: bool = False
    service: str = "par"
    env: str = "local"
    stream: TextIO | None = None  # None: sys.stdout at write time (pytest and daemons swap it)
    lock: threading.Lock = field(default_factory=threading.Lock)


_sink = _Sink()


def configure(cfg: LoggingConfig | None = None, *, stream: TextIO | None = None) -> None:
    """Set the level, format and stream for every logger of the process; safe to call again (last call wins)."""
    global _sink  # noqa: PLW0603 - one sink per process, swapped atomically
    cfg = cfg or LoggingConfig()
    out = stream or sys.stdout
    use_json = cfg.format == "json" or (cfg.format == "auto" and not _isatty(out))
    _sink = _Sink(level=_LEVELS[cfg.level], json=use_json, service=cfg.service, env=cfg.env, stream=stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or minimal stream is not a terminal
        return False


class Logger:
    """A named logger; it reads the sink at every call, so one created at import follows a later configure."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at error level with the exception being handled (Datadog's ``error.*`` attributes)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            fields["error.kind"] = type(exc).__name__
            fields["error.message"] = str(exc)
            fields["error.stack"] = "".join(traceback.format_exception(exc))
        self._emit("error", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        sink = _sink
        if _LEVELS[level] < sink.level:
            return
        line = (_json_line if sink.json else _console_line)(sink, level, self.name, event, fields)
        stream = sink.stream or sys.stdout
        with sink.lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stdout must never take the runner down
                pass


def _json_line(sink: _Sink, level: str, name: str, event: str, fields: dict[str, Any]) -> str:
    doc: dict[str, Any] = {
        "timestamp": _now(), "status": level, "message": event,
        "service": sink.service, "env": sink.env, "version": __version__, "logger.name": name,
    }
    for key, value in fields.items():
        if key == "trace_id":
            doc["dd.trace_id"] = str(value)
        else:
            doc[key] = value
    return json.dumps(doc, default=repr, ensure_ascii=False)


def _console_line(sink: _Sink, level: str, name: str, event: str, fields: dict[str, Any]) -> str:
    stack = fields.pop("error.stack", None)
    pairs = " ".join(f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in sorted(fields.items()))
    line = f"{_now()} [{level:<7}] {event:<30} {pairs} logger.name={name}"
    return f"{line}\n{stack.rstrip()}" if stack else line


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def get_logger(name: str) -> Logger:
    """A logger tagged with ``logger.name`` as Datadog expects."""
    return Logger(name)
