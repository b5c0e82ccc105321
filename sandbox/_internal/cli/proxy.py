"""``par proxy``: run the project-scoped Docker socket proxy in the foreground.

The runner normally starts the proxy in-process (``proxy.in_process``); this command is for running it
on its own (a separate service, or debugging a compose command by hand with
``DOCKER_HOST=unix://PATH docker compose -p dogbank ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

from sandbox._internal import memory
from sandbox._internal.cli.common import config_from
from sandbox.config import ProxyConfig
from sandbox.errors import ProxyError
from sandbox.logs import configure


def register(sub: Any) -> None:
    p = sub.add_parser("proxy", help="run the Docker socket proxy scoped to the compose project")
    p.add_argument("--listen", type=Path, help="unix socket to create (default: proxy.socket_path)")
    p.add_argument("--upstream", type=Path, help="the real Docker socket (default: docker.upstream_socket)")
    p.add_argument("--project", help="the only compose project to serve (default: docker.project)")
    p.add_argument("--socket-group", help="group owning the socket (default: proxy.socket_group; '' = none)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--audit-dir", type=Path, help="audit log directory (default: audit.dir)")
    g.add_argument("--no-audit", action="store_true", help="structured log only (no audit records)")
    p.set_defaults(func=run)


def socket_gid(group: str) -> int | None:
    """The gid the socket is handed to; an unknown group is an error, never a silent 'owner only'."""
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ProxyError(
            f"socket group {group!r} does not exist",
            hint="Create it (groupadd), or set proxy.socket_group to '' for an owner-only socket.",
        ) from None


def run(ns: argparse.Namespace) -> int:
    cfg = config_from(ns)
    configure(cfg.logging)  # before importing the proxy: its module logger binds the configuration in force

    from sandbox.policy import install_sighup_reload, open_engine  # noqa: PLC0415 - keep `par --help` fast
    from sandbox.proxy import DockerProxy  # noqa: PLC0415

    pcfg: ProxyConfig = cfg.proxy
    listen = ns.listen or pcfg.socket_path
    upstream = ns.upstream or cfg.docker.upstream_socket
    project = ns.project or cfg.docker.project
    gid = socket_gid(pcfg.socket_group if ns.socket_group is None else ns.socket_group)
    memory.limit_malloc_arenas()  # before any thread starts: one thread per connection (see _internal/memory.py)
    # The proxy's one policy thread opens the engine, so the compiled copy made at load is the one that
    # decides (a copy per thread costs ~8 MB resident).
    decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-policy")
    engine = decider.submit(open_engine, cfg.policy, isolate_build=True).result()
    audit: Any = None
    if not ns.no_audit:
        from sandbox.audit import AuditLog  # noqa: PLC0415
        from sandbox.keys import load_ed25519_private_key  # noqa: PLC0415

        acfg = dataclasses.replace(cfg.audit, dir=ns.audit_dir) if ns.audit_dir else cfg.audit
        # No key, no proxy: an unsigned log could be rewritten without trace (fail closed; --no-audit is explicit).
        audit = AuditLog.open(acfg, signer=load_ed25519_private_key(acfg.signing_key))
    proxy = DockerProxy(
        listen=listen,
        upstream=upstream,
        project=project,
        policy=engine,
        audit=audit,
        cfg=pcfg,
        socket_gid=gid,
        decision_query=cfg.policy.proxy_decision,
        decider=decider,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        proxy.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    install_sighup_reload(engine)  # operators upgrade the proxy's Rego rules without a restart
    memory.release_free_memory()
    try:
        proxy.serve_forever()
    finally:
        decider.shutdown(wait=True)
        engine.close()
        if audit is not None:
            audit.close()
    return 0
