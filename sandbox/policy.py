"""Policy decisions: one interface over the embedded regorus engine and an OPA server.

Task admission asks ``data.par.decision``; the Docker proxy asks ``data.par.docker_proxy.decision``;
both get a :class:`Decision`. ``decide`` never raises: an engine that is down, slow, broken or returns
something malformed produces a deny whose reason starts with ``policy_error:`` and whose rule id is
``policy_error``, so every caller fails closed without its own error handling.

The policy directory follows OPA's bundle layout, so the same ``policies/`` works in both backends,
under ``par policy test`` and in production. The input document for task admission is described in
docs/policy-input.md and built by :func:`build_task_input`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from sandbox._internal.policy_decision import POLICY_ERROR, Decision
from sandbox._internal.policy_embedded import EmbeddedEngine
from sandbox._internal.policy_input import (
    INPUT_SCHEMA,
    MAX_HISTORY,
    MAX_INPUT_BYTES,
    OUTCOMES,
    build_task_input,
    history_entries,
    validate_task_input,
)
from sandbox.config import PolicyConfig
from sandbox.errors import PolicyError

__all__ = [
    "INPUT_SCHEMA",
    "MAX_HISTORY",
    "MAX_INPUT_BYTES",
    "OUTCOMES",
    "POLICY_ERROR",
    "Decision",
    "PolicyEngine",
    "build_task_input",
    "history_entries",
    "install_sighup_reload",
    "open_engine",
    "validate_task_input",
]

#: on_reload(event, error): event is "policy_reloaded" (error None) or "policy_reload_failed".
ReloadCallback = Callable[[str, "str | None"], None]


@runtime_checkable
class PolicyEngine(Protocol):
    @property
    def revision(self) -> str:
        """sha256 of the loaded policy set (see docs/policy-input.md)."""
        ...

    def decide(self, input_doc: Mapping[str, Any], *, query: str = "data.par.decision") -> Decision:
        """Never raises: any engine failure is a deny with reason 'policy_error: ...' and rule id 'policy_error'."""
        ...

    def reload(self) -> bool:
        """Re-read the policy; True if the (possibly unchanged) policy is in force, False if it failed."""
        ...

    def close(self) -> None: ...


def open_engine(
    cfg: PolicyConfig, *, on_reload: ReloadCallback | None = None, isolate_build: bool = False
) -> PolicyEngine:
    """The configured backend, ready to decide; PolicyError if the embedded policy does not load.

    The embedded engine compiles ``cfg.path`` now (a broken policy stops the runner from starting,
    rather than denying everything later) and, with ``cfg.watch``, polls the files for changes.
    ``isolate_build`` (the long-lived runner and proxy) validates and compiles in a child process, whose
    memory goes away with it (sandbox/_internal/policy_build.py); the compiled mode only.
    The OPA backend does not contact the server here: OPA may start after the runner, and until it
    answers every decision is a deny.
    """
    if cfg.engine == "embedded":
        return EmbeddedEngine(cfg.path, on_reload=on_reload, watch=cfg.watch, mode=cfg.embedded_mode,
                              entry_points=(cfg.decision, cfg.proxy_decision), isolate_build=isolate_build)
    if cfg.engine == "opa":
        # Imported here: the OPA client pulls in requests/aiohttp (~25 MB resident), which the embedded
        # default (and the long-lived proxy process) should not carry.
        from sandbox._internal.policy_opa import OpaEngine  # noqa: PLC0415

        return OpaEngine(cfg.opa_url, cfg.opa_timeout_s, local_path=cfg.path)
    raise PolicyError(f"unknown policy engine {cfg.engine!r}; use 'embedded' or 'opa'")


def install_sighup_reload(engine: PolicyEngine) -> Callable[[], None]:
    """Reload ``engine`` on SIGHUP (main thread only); returns a function that restores the old handler.

    The handler only starts a thread: compiling inside a signal handler could deadlock against a
    reload already holding the engine's lock in the interrupted code.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=engine.reload, name="policy-sighup-reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
