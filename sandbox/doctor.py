"""``par doctor``: the seed README's troubleshooting section as one command.

Each check is a small function that looks at one precondition the way the runner itself would (it
loads the same config, keys, catalog and policies through the same modules, asks the proxy and the
engine over their sockets, runs ``/bin/true`` in the real jail) and returns OK or FAIL with the fix.
A check never raises: a failure to even try is itself a FAIL that says why, so one broken piece never
hides the state of the others. Checks that need the config report FAIL "config did not load" rather
than guessing paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox._internal import doctor_probe
from sandbox._internal.doctor_http import unix_get
from sandbox.config import RunnerConfig, load_config
from sandbox.errors import Error

PROJECT_LABEL = "com.docker.compose.project"
#: Controls the doctor insists on even when the config does not require them: the security layers.
ESSENTIAL_CONTROLS = ("netns", "seccomp", "landlock")


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: ``fix`` is what to do, set only when ``ok`` is False."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": "OK" if self.ok else "FAIL",
            "detail": self.detail,
            "fix": self.fix,
            "duration_ms": round(self.duration_ms, 1),
        }


class CheckFailed(Exception):
    """Raised inside a check to end it with FAIL; carries the fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass
class Context:
    """What the checks share: the config (if it loaded) and the answers of earlier checks."""

    config_path: Path
    cfg: RunnerConfig | None = None
    config_error: Error | None = None
    timeout_s: float = 5.0
    notes: dict[str, Any] = field(default_factory=dict)

    def config(self) -> RunnerConfig:
        if self.cfg is None:
            raise CheckFailed(
                f"skipped: the config {self.config_path} did not load",
                "Fix the `config` check first (par --config FILE doctor).",
            )
        return self.cfg


Check = Callable[[Context], str]


# -- the checks ---------------------------------------------------------------------------------------


def check_config(ctx: Context) -> str:
    if ctx.config_error is not None:
        raise CheckFailed(ctx.config_error.message, ctx.config_error.hint)
    cfg = ctx.config()
    return f"{cfg.source} loaded (runner {cfg.runner.urn})"


def check_key_file(ctx: Context) -> str:
    from sandbox.keys import load_runner_key  # noqa: PLC0415 - keep the import cost off `par --help`

    path = ctx.config().runner.private_key
    _private_file_mode(path, "runner key", keygen="par keygen")
    try:
        load_runner_key(path)
    except Error as exc:
        raise CheckFailed(exc.message, exc.hint) from None
    return f"{path} is mode 0600 and holds an ECDSA P-256 key"


def check_catalog(ctx: Context) -> str:
    from sandbox.catalog import load_catalog  # noqa: PLC0415

    cfg = ctx.config()
    try:
        catalog = load_catalog(cfg.catalog)
    except Error as exc:
        raise CheckFailed(exc.message, exc.hint) from None
    return f"{cfg.catalog}: {len(catalog.actions)} actions"


def check_policy(ctx: Context) -> str:
    from sandbox._internal.policy_testing import ERROR, FAIL, run_tests  # noqa: PLC0415
    from sandbox.policy import open_engine  # noqa: PLC0415

    pcfg = dataclasses.replace(ctx.config().policy, watch=False)
    try:
        engine = open_engine(pcfg)
    except Error as exc:
        raise CheckFailed(f"policies do not load: {exc.message}", exc.hint) from None
    try:
        revision = engine.revision
        if pcfg.engine == "opa":
            probe = engine.decide({"action": "__par_doctor_probe__"}, query=pcfg.decision)
            if "policy_error" in probe.rule_ids:
                raise CheckFailed(
                    f"the OPA server at {pcfg.opa_url} did not answer a decision: {'; '.join(probe.reasons)[:300]}",
                    "Start it (docker compose --profile opa up -d opa) and check policy.opa_url.",
                )
    finally:
        engine.close()
    try:
        report = run_tests([pcfg.path], mode=pcfg.embedded_mode)
    except Error as exc:
        raise CheckFailed(f"policy tests do not load: {exc.message}", exc.hint) from None
    counts = report.counts
    bad = [r.display for r in report.results if r.status in (FAIL, ERROR)]
    if bad:
        raise CheckFailed(
            f"{len(bad)} of {len(report.results)} policy tests fail: {', '.join(bad[:5])}",
            f"Run `par policy test {pcfg.path}` and fix the policy (or the test) before deploying it.",
        )
    return f"{pcfg.engine} engine, revision {revision[:12]}, {sum(counts.values())} policy tests pass"


def check_proxy_socket(ctx: Context) -> str:
    path = ctx.config().proxy.socket_path
    try:
        reply = unix_get(path, "/_ping", timeout_s=ctx.timeout_s)
    except FileNotFoundError:
        raise CheckFailed(
            f"the proxy socket {path} does not exist",
            "Start the proxy: `docker compose up -d par-docker-proxy`, or `par proxy` (proxy.in_process "
            "runs it inside `par run`).",
        ) from None
    except (OSError, ValueError) as exc:  # h11's errors are ValueErrors
        raise CheckFailed(
            f"the proxy socket {path} does not answer: {exc}",
            "Check the proxy's logs (docker logs dogbank-par-par-docker-proxy-1) and restart it.",
        ) from None
    if reply.status != 200 or reply.body.strip() != b"OK":
        raise CheckFailed(
            f"GET /_ping through {path} answered HTTP {reply.status} {reply.body[:100]!r}",
            "The proxy is up but the Docker engine behind it is not: check docker.upstream_socket and dockerd.",
        )
    ctx.notes["engine_socket"] = path
    return f"GET /_ping through {path}: 200 OK"


def check_jail_docker_socket(ctx: Context) -> str:
    from sandbox.jail import jail_ids  # noqa: PLC0415

    cfg = ctx.config()
    sock = cfg.docker.upstream_socket
    if os.geteuid() == 0:
        try:
            uid, gid = jail_ids(cfg.jail)
        except Error as exc:
            raise CheckFailed(exc.message, exc.hint) from None
        ids: tuple[int, int] | None = (uid, gid)
        who = f"jail user {cfg.jail.user} (uid {uid}, gid {gid}, no supplementary groups)"
    else:
        ids = None
        who = f"uid {os.geteuid()} (the runner is not root, so actions run as its own uid)"
    code = doctor_probe.connect_as(sock, ids, timeout_s=ctx.timeout_s)
    if code == doctor_probe.CONNECTED:
        raise CheckFailed(
            f"{who} CAN connect to the Docker socket {sock}: a jailed action would be root on the host",
            f"Keep {sock} mode 0660 root:docker and the jail user out of the docker group "
            "(`id par-jail`); in the compose stack the runner container must not mount it at all.",
        )
    if code == doctor_probe.DROP_FAILED:
        raise CheckFailed(f"could not switch to {who} to try", "Run `par doctor` as the runner's user (root).")
    if code not in (doctor_probe.REFUSED, doctor_probe.ABSENT):
        raise CheckFailed(f"the probe child failed (status {code})", "Run `par jail run -- true` for details.")
    how = "permission denied" if code == doctor_probe.REFUSED else "no such socket here"
    return f"{who} cannot connect to {sock} ({how})"


def _engine(ctx: Context) -> tuple[Path, str]:
    """The engine socket to ask: the real one where this process can reach it, else the proxy's."""
    upstream = ctx.config().docker.upstream_socket
    if doctor_probe.connect_as(upstream, None, timeout_s=ctx.timeout_s) == doctor_probe.CONNECTED:
        return upstream, "engine"
    return ctx.config().proxy.socket_path, "proxy"


def _engine_get(ctx: Context, target: str) -> tuple[int, Any, str]:
    sock, via = _engine(ctx)
    try:
        reply = unix_get(sock, "/v1.41" + target, timeout_s=ctx.timeout_s)
    except (OSError, ValueError) as exc:
        raise CheckFailed(
            f"cannot ask the Docker engine (via {via} socket {sock}): {exc}",
            "Start dockerd, and the proxy if this runs in the runner container (see the proxy_socket check).",
        ) from None
    try:
        doc = reply.json() if reply.body else None
    except ValueError:
        doc = None
    return reply.status, doc, f"{via} socket {sock}"


def check_docker_network(ctx: Context) -> str:
    project = ctx.config().docker.project
    network = f"{project}_default"
    status, doc, via = _engine_get(ctx, "/networks/" + urllib.parse.quote(network, safe=""))
    if status == 404:
        raise CheckFailed(
            f"the network {network} does not exist (asked via {via})",
            f"Start the DogBank stack first: docker compose -p {project} -f docker-compose.full.yml up -d "
            f"(it creates {network}), then start the runner.",
        )
    if status != 200 or not isinstance(doc, dict):
        raise CheckFailed(
            f"GET /networks/{network} answered HTTP {status} (via {via})",
            "A 403 from the proxy means the network is not labelled as part of the project; "
            "let compose create it.",
        )
    return f"network {network} exists (driver {doc.get('Driver', '?')}, via {via})"


def check_docker_project(ctx: Context) -> str:
    project = ctx.config().docker.project
    filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
    status, doc, via = _engine_get(ctx, "/containers/json?all=1&filters=" + urllib.parse.quote(filters, safe=""))
    if status != 200 or not isinstance(doc, list):
        raise CheckFailed(f"listing the containers of {project} answered HTTP {status} (via {via})",
                          "Check the proxy and the engine (see proxy_socket).")
    mine = [c for c in doc if isinstance(c, dict) and (c.get("Labels") or {}).get(PROJECT_LABEL) == project]
    if not mine:
        raise CheckFailed(
            f"the compose project {project} has no containers (via {via})",
            f"Start it: docker compose -p {project} -f {ctx.config().docker.compose_file} up -d",
        )
    running = sum(1 for c in mine if c.get("State") == "running")
    return f"project {project}: {len(mine)} containers, {running} running (via {via})"


def check_control_plane(ctx: Context) -> str:
    from sandbox._internal.runner_http import HttpPeer  # noqa: PLC0415
    from sandbox.keys import load_runner_key  # noqa: PLC0415
    from sandbox.protocol import read_cap_bytes  # noqa: PLC0415

    cfg = ctx.config()
    try:
        key = load_runner_key(cfg.runner.private_key)
    except Error as exc:
        raise CheckFailed(f"skipped: the health check needs the runner key ({exc.message})", exc.hint) from None
    try:
        peer = HttpPeer(
            cfg.control_plane.url,
            key=key,
            org_id=cfg.runner.org_id,
            runner_id=cfg.runner.runner_id,
            timeout_s=min(cfg.control_plane.request_timeout_s, ctx.timeout_s),
            max_body_bytes=read_cap_bytes(cfg.runner.max_task_bytes),
        )
    except Error as exc:
        raise CheckFailed(exc.message, exc.hint) from None
    try:
        peer.health_check()
    except Error as exc:
        raise CheckFailed(
            f"{cfg.control_plane.url}: {exc.message}",
            "Check control_plane.url, that the control plane is up, and that it knows this runner's public "
            "key (HTTP 401 = not enrolled).",
        ) from None
    finally:
        peer.close()
    return f"{cfg.control_plane.url} health-check: 200 (authenticated as {cfg.runner.runner_id})"


def check_jail(ctx: Context) -> str:
    from sandbox.jail import Jail  # noqa: PLC0415

    cfg = ctx.config()
    try:
        jail = Jail(cfg.jail, proxy_socket=cfg.proxy.socket_path, project=cfg.docker.project)
        result = jail.run(["/bin/true"], timeout_s=max(ctx.timeout_s, 10.0))
    except Error as exc:
        raise CheckFailed(exc.message, exc.hint) from None
    missing = [c for c in ESSENTIAL_CONTROLS if c not in result.controls]
    if missing:
        why = "; ".join(f"{c}: {jail.missing_controls.get(c, 'not applied')}" for c in missing)
        raise CheckFailed(
            f"the jail ran without {', '.join(missing)} ({why})",
            "Run the runner as root on a kernel with Landlock, seccomp and network namespaces "
            "(in the compose stack: the caps and seccomp profile in docker-compose.yml).",
        )
    if result.exit_code != 0:
        raise CheckFailed(f"/bin/true in the jail exited {result.exit_code} (signal {result.signal})",
                          "Run `par jail run -- /bin/true` to see the child's error.")
    return f"controls {', '.join(result.controls)}; Landlock ABI {result.landlock_abi}"


def check_audit_log(ctx: Context) -> str:
    from sandbox.audit import verify_log  # noqa: PLC0415
    from sandbox.keys import load_ed25519_private_key, load_ed25519_public_key  # noqa: PLC0415

    acfg = ctx.config().audit
    _private_file_mode(acfg.signing_key, "audit signing key", keygen="par keygen")
    try:
        load_ed25519_private_key(acfg.signing_key)
        public = load_ed25519_public_key(acfg.public_key)
    except Error as exc:
        raise CheckFailed(exc.message, exc.hint) from None
    directory = acfg.dir
    if not directory.is_dir():
        raise CheckFailed(f"the audit directory {directory} does not exist or is not a directory",
                          f"Create it (mkdir -p {directory}; chmod 700 {directory}) or fix audit.dir.")
    probe = directory / f".par-doctor-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"probe")
        os.fsync(fd)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise CheckFailed(
            f"the audit directory {directory} is not writable: {exc.strerror}",
            "Free space or fix ownership/permissions: nothing runs while the audit log cannot be written.",
        ) from None
    if not any(directory.glob("audit-*.jsonl")):
        return f"{directory} is writable; no records yet"
    result = verify_log([directory], public_key=public, origin=acfg.origin)
    if not result.ok:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        raise CheckFailed(
            f"the audit log does not verify{where} ({result.category}): {result.error}",
            f"Treat it as tampered: keep a copy, run `par audit verify {directory}`, compare with an exported bundle.",
        )
    return f"{directory} is writable; {result.records} records verify, {result.signed_size} under a signed checkpoint"


def _private_file_mode(path: Path, what: str, *, keygen: str) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise CheckFailed(f"the {what} {path} does not exist",
                          f"Create it with `{keygen}` (or save the key you registered there), then chmod 600 {path}.",
                          ) from None
    except OSError as exc:
        raise CheckFailed(f"cannot stat the {what} {path}: {exc.strerror}", "Fix the path in the config.") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckFailed(f"the {what} {path} is not a regular file", "Replace it with the key file itself.")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CheckFailed(f"the {what} {path} is mode {mode:04o}: readable beyond its owner", f"chmod 600 {path}")


#: Name -> check, in the order they print (dependencies first, like the seed's troubleshooting steps).
CHECKS: dict[str, Check] = {
    "config": check_config,
    "key_file": check_key_file,
    "catalog": check_catalog,
    "policy": check_policy,
    "proxy_socket": check_proxy_socket,
    "jail_docker_socket": check_jail_docker_socket,
    "docker_network": check_docker_network,
    "docker_project": check_docker_project,
    "control_plane": check_control_plane,
    "jail": check_jail,
    "audit_log": check_audit_log,
}


def run_checks(
    config_path: Path | str, *, only: Iterable[str] | None = None, timeout_s: float = 5.0
) -> list[CheckResult]:
    """Run the named checks (default all) and return their results; never raises for a failing check."""
    names = list(CHECKS) if only is None else list(only)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        from sandbox.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"unknown doctor check(s): {', '.join(unknown)}", hint=f"Known: {', '.join(CHECKS)}.")
    ctx = Context(config_path=Path(config_path), timeout_s=timeout_s)
    try:
        ctx.cfg = load_config(ctx.config_path)
    except Error as exc:
        ctx.config_error = exc
    return [_run_one(name, CHECKS[name], ctx) for name in names]


def _run_one(name: str, check: Check, ctx: Context) -> CheckResult:
    started = time.monotonic()
    try:
        detail = check(ctx)
        ok, fix = True, ""
    except CheckFailed as failed:
        ok, detail, fix = False, failed.detail, failed.fix
    except ModuleNotFoundError as exc:
        ok, detail = False, f"component not installed: {exc.name}"
        fix = "Install the complete dogbank-par package and its dependencies (pip install .) in this environment."
    except Exception as exc:  # noqa: BLE001 - a doctor reports every failure; it must not stop at one
        ok, detail, fix = False, f"the check itself failed: {type(exc).__name__}: {exc}", "Please report this."
    return CheckResult(name, ok, detail, fix, (time.monotonic() - started) * 1000)


def render(results: Sequence[CheckResult]) -> str:
    """The human report: one line per check, the fix under each FAIL, a summary line."""
    width = max(len(r.name) for r in results) if results else 0
    lines = []
    for r in results:
        lines.append(f"{'OK  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}")
        if not r.ok:
            lines.append(f"      {'':<{width}}  fix: {r.fix}")
    failed = sum(1 for r in results if not r.ok)
    lines.append(f"\n{len(results) - failed}/{len(results)} checks OK" + (f", {failed} FAIL" if failed else ""))
    return "\n".join(lines)
