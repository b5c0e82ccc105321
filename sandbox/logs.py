"""Structured logging: Datadog-convention JSON lines in production, readable lines on a terminal.

Datadog's log pipeline maps ``status`` to the level, ``message`` to the text and reserved attributes
``service``/``env``/``version``/``dd.trace_id`` for correlation; emitting them directly means no custom
pipeline is needed. Logs go to stdout because the container runtime (and the Agent) collects stdout.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from sandbox import __version__
from sandbox.config import LoggingConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _datadog_fields(service: str, env: str) -> Any:
    def processor(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["message"] = event.pop("event", "")
        event["status"] = event.pop("level", method)
        event.setdefault("service", service)
        event.setdefault("env", env)
        event.setdefault("version", __version__)
        trace_id = event.pop("trace_id", None)
        if trace_id is not None:
            event["dd.trace_id"] = str(trace_id)
        return event

    return processor


def configure(cfg: LoggingConfig | None = None, *, stream: TextIO | None = None) -> None:
    """Set up structlog once per process; safe to call again (last call wins)."""
    cfg = cfg or LoggingConfig()
    stream = stream or sys.stdout
    use_json = cfg.format == "json" or (cfg.format == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    renderer: list[Any]
    if use_json:
        renderer = [
            structlog.processors.format_exc_info,
            _datadog_fields(cfg.service, cfg.env),
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[cfg.level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A lazily bound logger tagged with ``logger.name`` as Datadog expects.

    Lazy so that module-level loggers created at import time follow a ``configure()`` made later.
    """
    return structlog.get_logger(**{"logger.name": name})
