"""Runner metrics as DogStatsD datagrams over UDP to the Datadog Agent.

Why DogStatsD and not an OpenMetrics endpoint: the runner then opens no listening port at all (a
scrape endpoint would be one more thing reachable on the runner's network), and the Agent that already
collects the containers' logs receives them with no extra check configuration. The wire format is one
line per datagram (``name:value|type|#tag:value,...``), so no client library is needed.

Metrics must never hurt the runner: sending is fire-and-forget on a non-blocking socket, every error is
swallowed and only counted (``Metrics.dropped``). Tag values are sanitized, because a rule id or an action
name comes from policy or task data and must not be able to forge another metric or tag.

Destination follows Datadog's conventions: ``DD_AGENT_HOST`` (default 127.0.0.1), ``DD_DOGSTATSD_PORT``
(default 8125); ``DD_ENV``/``DD_SERVICE``/``DD_VERSION`` become the ``env``/``service``/``version`` tags;
``DD_DOGSTATSD_DISABLE=true`` turns sending off.

| metric | type | tags |
|---|---|---|
| ``dogbank.par.tasks`` | count | ``outcome`` (success, failure, timeout, interrupted, error, rejected), ``action`` |
| ``dogbank.par.action.duration`` | distribution (seconds) | ``outcome``, ``action`` |
| ``dogbank.par.decisions`` | count | ``decision`` (allow, deny), ``rule``, ``action`` |
| ``dogbank.par.tasks.rejected`` | count | ``code`` (protocol error code) |
| ``dogbank.par.proxy.denials`` | count | ``rule``, ``method`` |
| ``dogbank.par.audit.checkpoint_age`` | gauge (seconds) | |
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PREFIX = "dogbank.par."
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8125
MAX_DATAGRAM_BYTES = 8192  # the Agent's default dogstatsd_buffer_size
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")
_NAME_OK = re.compile(r"^[a-z][a-z0-9_.]*$")
_MAX_TAG_LEN = 200


def sanitize_tag(value: str) -> str:
    """A tag component that cannot contain DogStatsD syntax (``|``, ``,``, ``#``, newlines)."""
    cleaned = _TAG_UNSAFE.sub("_", str(value))[:_MAX_TAG_LEN]
    return cleaned or "_"


class Metrics:
    """A DogStatsD client; thread-safe (one ``sendto`` per metric), never raises from a send."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        constant_tags: Mapping[str, str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.address = (host, int(port))
        self.enabled = enabled
        self.constant_tags = tuple(f"{sanitize_tag(k)}:{sanitize_tag(v)}" for k, v in (constant_tags or {}).items())
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Metrics:
        env = os.environ if environ is None else environ
        try:
            port = int(env.get("DD_DOGSTATSD_PORT", DEFAULT_PORT))
        except ValueError:
            port = DEFAULT_PORT
        tags = {k: env[v] for k, v in (("env", "DD_ENV"), ("service", "DD_SERVICE"), ("version", "DD_VERSION"))
                if env.get(v)}
        disabled = env.get("DD_DOGSTATSD_DISABLE", "").lower() in ("1", "true", "yes")
        return cls(env.get("DD_AGENT_HOST") or DEFAULT_HOST, port, constant_tags=tags, enabled=not disabled)

    # -- primitives --------------------------------------------------------------------------------

    def count(self, name: str, value: float = 1, tags: Mapping[str, str] | None = None) -> None:
        self._send(name, value, "c", tags)

    def gauge(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._send(name, value, "g", tags)

    def distribution(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._send(name, value, "d", tags)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def format(self, name: str, value: float, kind: str, tags: Mapping[str, str] | None = None) -> bytes:
        """One datagram; ``name`` is a fixed identifier from this module, tags are sanitized."""
        if not _NAME_OK.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        number = repr(int(value)) if float(value).is_integer() else repr(float(value))
        all_tags = [*self.constant_tags, *(f"{sanitize_tag(k)}:{sanitize_tag(v)}" for k, v in (tags or {}).items())]
        line = f"{PREFIX}{name}:{number}|{kind}"
        if all_tags:
            line += "|#" + ",".join(all_tags)
        return line.encode("ascii")[:MAX_DATAGRAM_BYTES]

    def _send(self, name: str, value: float, kind: str, tags: Mapping[str, str] | None) -> None:
        if not self.enabled or not math.isfinite(value):
            return
        data = self.format(name, value, kind, tags)
        try:
            with self._lock:
                if self._sock is None:
                    family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
                    self._sock = socket.socket(family, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                sock = self._sock
            sock.sendto(data, self.address)
        except OSError:  # agent absent, buffer full, DNS failure: metrics are best-effort by design
            self.dropped += 1


_client: Metrics | None = None
_client_lock = threading.Lock()


def client() -> Metrics:
    """The process-wide client, configured from the environment on first use."""
    global _client  # noqa: PLW0603 - one socket per process, created lazily
    with _client_lock:
        if _client is None:
            _client = Metrics.from_env()
        return _client


def set_client(metrics: Metrics | None) -> None:
    """Replace the process-wide client (tests, or an explicit configuration); None = from env again."""
    global _client
    with _client_lock:
        old, _client = _client, metrics
    if old is not None and old is not metrics:
        old.close()


# -- what the runner and the proxy report --------------------------------------------------------


def task_finished(outcome: str, duration_s: float, *, action: str = "") -> None:
    """An action ran (or was stopped): count it by outcome and record how long it took."""
    tags = {"outcome": outcome, "action": action or "unknown"}
    m = client()
    m.count("tasks", 1, tags)
    m.distribution("action.duration", duration_s, tags)


def task_rejected(code: str, *, action: str = "") -> None:
    """A task refused before execution, by protocol error code (POLICY_DENIED, REPLAYED_TASK...)."""
    m = client()
    m.count("tasks", 1, {"outcome": "rejected", "action": action or "unknown"})
    m.count("tasks.rejected", 1, {"code": code})


def decision(allow: bool, rule_ids: Sequence[str], *, action: str = "") -> None:
    """A policy decision, once per rule that produced it (a deny names at least one)."""
    m = client()
    verdict = "allow" if allow else "deny"
    for rule in rule_ids or ("none",):
        m.count("decisions", 1, {"decision": verdict, "rule": rule, "action": action or "unknown"})


def proxy_denied(rule: str, method: str = "") -> None:
    """The Docker proxy refused a request, by the rule that refused it."""
    client().count("proxy.denials", 1, {"rule": rule, "method": method or "unknown"})


def audit_checkpoint_age(seconds: float) -> None:
    """Seconds since the last signed audit checkpoint; a growing value means checkpoints stopped."""
    client().gauge("audit.checkpoint_age", seconds)


def checkpoint_age_s(audit_dir: Path, *, now: float | None = None) -> float | None:
    """Age of the newest checkpoint file in ``<audit dir>/checkpoints``; None when there is none yet."""
    import time  # noqa: PLC0415 - only this helper needs it

    try:
        mtimes = [p.stat().st_mtime for p in (Path(audit_dir) / "checkpoints").glob("*.note")]
    except OSError:
        return None
    if not mtimes:
        return None
    return max(0.0, (time.time() if now is None else now) - max(mtimes))


class CheckpointAgeReporter:
    """A daemon thread that reports :func:`checkpoint_age_s` every ``interval_s`` until stopped."""

    def __init__(self, audit_dir: Path, *, interval_s: float = 30.0) -> None:
        self.audit_dir = Path(audit_dir)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-checkpoint-age", daemon=True)

    def start(self) -> CheckpointAgeReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            age = checkpoint_age_s(self.audit_dir)
            if age is not None:
                audit_checkpoint_age(age)
            if self._stop.wait(self.interval_s):
                return


def names() -> Iterable[str]:
    """Every metric this module emits (for dashboards and monitors in workflows/)."""
    return tuple(PREFIX + n for n in (
        "tasks", "tasks.rejected", "action.duration", "decisions", "proxy.denials", "audit.checkpoint_age"))
