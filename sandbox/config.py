"""Typed runner configuration (``config/runner.yaml``).

Every tunable of the runner lives in one dataclass tree so that limits are reviewed in one place
(units are in the field comments). Loading is strict: an unknown key, a wrong type or an
out-of-range value is a :class:`~sandbox.errors.ConfigError` naming the file and the dotted key,
because a typo in a security tool's config must never silently fall back to a default.

Relative paths are resolved against the directory that holds the config file, so
``private_key: private_key.pem`` in ``config/runner.yaml`` means ``config/private_key.pem``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sandbox._internal.yamlsafe import load_yaml_file
from sandbox.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/runner.yaml")


@dataclass(frozen=True)
class RunnerIdentity:
    """Who this runner is towards the control plane (Datadog-style URN parts)."""

    region: str = "local"
    org_id: str = "dogbank"
    runner_id: str = "dogbank-par"
    private_key: Path = Path("private_key.pem")  # ECDSA P-256 PEM, mode 0600
    concurrency: int = 5  # actions running at once
    poll_interval_s: float = 1.0  # sleep after an empty dequeue
    heartbeat_interval_s: float = 20.0  # heartbeat period for a running task
    drain_timeout_s: float = 30.0  # SIGTERM: wait this long for running actions, then kill
    max_task_bytes: int = 65536  # a dequeued task larger than this is rejected

    @property
    def urn(self) -> str:
        return f"urn:dd:apps:on-prem-runner:{self.region}:{self.org_id}:{self.runner_id}"


@dataclass(frozen=True)
class ControlPlaneKey:
    key_id: str
    public_key: Path  # Ed25519 public key PEM used to verify task envelopes


@dataclass(frozen=True)
class ControlPlaneConfig:
    url: str = "http://127.0.0.1:8790"
    task_signing_keys: tuple[ControlPlaneKey, ...] = ()
    max_clock_skew_s: float = 30.0  # tolerated difference between our clock and expires_at
    request_timeout_s: float = 10.0  # per HTTP request to the control plane
    backoff_min_s: float = 1.0
    backoff_max_s: float = 180.0
    circuit_breaker_failures: int = 10  # consecutive failures before the breaker opens
    circuit_breaker_open_s: float = 60.0  # how long an open breaker stops all requests
    # The local control plane (`par controlplane serve`); ignored when the runner talks to Datadog.
    signing_key: Path = Path("controlplane_key.pem")  # Ed25519 private key that signs tasks, mode 0600
    signing_key_id: str = "local-controlplane"
    runner_public_key: Path = Path("private_key.pub")  # enrolled public key of runner.runner_id (ES256 JWTs)
    database: Path = Path("../var/controlplane.sqlite3")  # queue and results (admin token beside it)
    task_ttl_s: float = 300.0  # expires_at of submitted tasks = submission time + this


@dataclass(frozen=True)
class PolicyConfig:
    engine: Literal["embedded", "opa"] = "embedded"
    path: Path = Path("../policies")  # directory of *.rego and data.json/yaml
    opa_url: str = "http://127.0.0.1:8181"
    opa_timeout_s: float = 0.5  # per decision, OPA backend only
    decision: str = "data.par.decision"  # task admission decision
    proxy_decision: str = "data.par.docker_proxy.decision"  # docker proxy decision
    history_window_s: int = 3600  # how much execution history the policy sees
    watch: bool = True  # reload when policy files change (SIGHUP always reloads)
    # embedded only: "compiled" (regorus RVM, 2-4x faster; the policy must pass the load-time lint of
    # docs/policy-input.md, "Embedded modes") or "interpreter"
    embedded_mode: Literal["interpreter", "compiled"] = "compiled"


@dataclass(frozen=True)
class AuditConfig:
    dir: Path = Path("../var/audit")
    signing_key: Path = Path("audit_key.pem")  # Ed25519 private key PEM, mode 0600
    public_key: Path = Path("audit_key.pub")  # Ed25519 public key PEM, given to auditors
    origin: str = "dogbank-par/audit"  # checkpoint origin line (C2SP tlog-checkpoint)
    segment_max_bytes: int = 16 * 1024 * 1024  # rotate a segment file past this size
    checkpoint_every_records: int = 1000
    checkpoint_every_s: float = 300.0
    group_commit_max_records: int = 256  # max records per write+fsync batch (appends during an fsync share the next)


@dataclass(frozen=True)
class DockerConfig:
    project: str = "dogbank"  # the only compose project actions may touch
    compose_file: Path = Path("../examples/dogbank/docker-compose.full.yml")
    upstream_socket: Path = Path("/var/run/docker.sock")  # the real engine, proxy side only


@dataclass(frozen=True)
class ProxyConfig:
    socket_path: Path = Path("/run/par/docker-proxy.sock")  # what the jail's DOCKER_HOST points at
    socket_mode: int = 0o660
    socket_group: str = "par-jail"  # group of the jail uid; "" = owner only
    in_process: bool = True  # the runner starts the proxy itself
    max_header_bytes: int = 16384
    max_body_bytes: int = 1048576
    client_timeout_s: float = 30.0  # idle/slow client cutoff (streaming responses excepted)
    upstream_timeout_s: float = 60.0
    max_connections: int = 128  # concurrent client connections; more are refused with 503


@dataclass(frozen=True)
class JailConfig:
    user: str = "par-jail"  # dedicated system user (RLIMIT_NPROC is per uid); used when the runner is root
    group: str = "par-jail"  # its own group: the proxy socket's group, never the docker group
    require: tuple[str, ...] = ("identity", "netns", "seccomp", "landlock", "no_new_privs", "rlimits")
    cpu_s: int = 60  # RLIMIT_CPU, seconds of CPU
    address_space_bytes: int = 4 * 1024**3  # RLIMIT_AS; Go reserves ~1 GiB up front
    file_size_bytes: int = 64 * 1024**2  # RLIMIT_FSIZE
    open_files: int = 256  # RLIMIT_NOFILE
    processes: int = 256  # RLIMIT_NPROC (per uid: threads count too)
    output_limit_bytes: int = 1024**2  # per stream; the rest is dropped and counted
    default_timeout_s: float = 120.0  # wall clock, when neither action nor policy sets one
    kill_grace_s: float = 3.0  # SIGTERM -> SIGKILL
    tmp_root: Path = Path("/tmp")  # noqa: S108 - per-run dirs are mkdtemp 0700 inside it
    extra_read_paths: tuple[Path, ...] = ()  # more read-only paths for Landlock
    cgroup: bool = False  # per-run cgroup v1 pids cgroup (pids.max = processes); joining costs ~10 ms on v1
    spawn: Literal["launcher", "fork"] = "launcher"  # fork children from a small launcher process, or the runner


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    service: str = "dogbank-par"
    env: str = "dev"


@dataclass(frozen=True)
class RunnerConfig:
    source: Path = Path("<defaults>")  # file this was loaded from (not a YAML key)
    runner: RunnerIdentity = field(default_factory=RunnerIdentity)
    control_plane: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    catalog: Path = Path("credentials/script.yaml")
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    jail: JailConfig = field(default_factory=JailConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> RunnerConfig:
    """Load and validate ``runner.yaml``; every problem names the file and the dotted key."""
    path = Path(path)
    raw = load_yaml_file(path, what="runner config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if "source" in raw:
        raise ConfigError(f"{path}: key 'source' is reserved")
    cfg: RunnerConfig = _build(RunnerConfig, raw, path, "", path.resolve().parent)
    return dataclasses.replace(cfg, source=path)


def _build(cls: type[Any], raw: dict[str, Any], path: Path, prefix: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if not isinstance(key, str) or key not in names:
            where = f"{prefix}{key}"
            raise ConfigError(f"{path}: unknown key '{where}' (allowed here: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(hints[f.name], raw[f.name], path, f"{prefix}{f.name}", base)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required key '{prefix}{f.name}'")
        elif dataclasses.is_dataclass(hints[f.name]) or _is_path(hints[f.name]):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kwargs[f.name] = _resolve_defaults(default, base)
    return cls(**kwargs)


def _is_path(tp: Any) -> bool:
    return tp is Path


def _resolve_defaults(value: Any, base: Path) -> Any:
    """Apply relative-path resolution to defaults too, so defaults mean the same as written keys."""
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value).resolve()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if isinstance(v, Path) or (dataclasses.is_dataclass(v) and not isinstance(v, type)):
                changes[f.name] = _resolve_defaults(v, base)
            elif isinstance(v, tuple) and v and all(isinstance(x, Path) for x in v):
                changes[f.name] = tuple(_resolve_defaults(x, base) for x in v)
        return dataclasses.replace(value, **changes)
    return value


def _coerce(tp: Any, value: Any, path: Path, key: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, path, f"{key}.", base)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: '{key}' must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
        return tuple(_coerce(item_tp, v, path, f"{key}[{i}]", base) for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(f"{path}: '{key}': unsupported union type")  # pragma: no cover - none declared
    if tp is Path:
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(f"{path}: '{key}' must be a non-empty path string, got {value!r}")
        p = Path(value)
        return p if p.is_absolute() else (base / p).resolve()
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: '{key}' must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{path}: '{key}' must not be negative, got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: '{key}' must be a number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{path}: '{key}' must not be negative, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: '{key}' must be a string, got {type(value).__name__}")
        return value
    raise ConfigError(f"{path}: '{key}': unsupported type {tp!r}")  # pragma: no cover
