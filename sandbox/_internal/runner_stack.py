"""Assemble a runner from its configuration: keys, audit log, policy, proxy, jail, control-plane peer.

One place builds the whole stack so ``par run``, ``par demo``, the tests and the benchmark run exactly
the same thing. Start order matters: the audit log first (nothing may happen unrecorded), then the
policy, then the proxy (in-process, its socket group set to the jail's gid so only the jail uid and
the runner can reach it), then the jail pointing at that socket. Shutdown goes the other way and ends
with ``runner_stopped`` and the audit log's final checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sandbox import protocol
from sandbox._internal.runner_http import ControlPlanePeer, HttpPeer
from sandbox._internal.runner_ledger import Ledger
from sandbox.audit import AuditLog
from sandbox.catalog import load_catalog
from sandbox.config import RunnerConfig
from sandbox.errors import ConfigError
from sandbox.jail import Jail, jail_ids
from sandbox.keys import load_ed25519_private_key, load_ed25519_public_key, load_runner_key
from sandbox.logs import get_logger
from sandbox.metrics import CheckpointAgeReporter
from sandbox.policy import open_engine
from sandbox.proxy import DockerProxy
from sandbox.runner import Runner

log = get_logger(__name__)


def task_signing_keys(cfg: RunnerConfig) -> dict[str, Any]:
    keys = {k.key_id: load_ed25519_public_key(k.public_key) for k in cfg.control_plane.task_signing_keys}
    if not keys:
        raise ConfigError(f"{cfg.source}: control_plane.task_signing_keys is empty: no task could ever verify")
    return keys


@contextlib.contextmanager
def open_runner(cfg: RunnerConfig, *, peer: ControlPlanePeer | None = None) -> Iterator[Runner]:
    """A ready :class:`Runner` (crash recovery not yet run); everything is stopped on exit."""
    runner_key = load_runner_key(cfg.runner.private_key)  # refuses a group/world-readable key
    keys = task_signing_keys(cfg)
    catalog = load_catalog(cfg.catalog)
    uid, gid = jail_ids(cfg.jail)
    with contextlib.ExitStack() as stack:
        audit = AuditLog.open(cfg.audit, signer=load_ed25519_private_key(cfg.audit.signing_key))
        stack.callback(audit.close)
        stack.callback(CheckpointAgeReporter(cfg.audit.dir).start().stop)
        ledger = Ledger.from_records(audit.records())

        def on_reload(event: str, error: str | None) -> None:
            with contextlib.suppress(Exception):
                audit.append(event, {"error": error} if error else {}, durable=False)

        # One policy thread for the runner and the in-process proxy: the embedded engine keeps a compiled
        # copy per thread (~8 MB each), and decisions take ~0.1 ms, so sharing costs no throughput. The
        # engine is opened in that thread, so the copy it compiles at load is the one that decides.
        decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="par-policy")
        stack.callback(decider.shutdown, wait=True)
        policy = decider.submit(open_engine, cfg.policy, on_reload=on_reload, isolate_build=True).result()
        stack.callback(policy.close)
        if cfg.proxy.in_process:
            try:
                cfg.proxy.socket_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"proxy.socket_path {cfg.proxy.socket_path}: cannot create its directory: "
                                  f"{exc.strerror}") from exc
            proxy = DockerProxy(
                listen=cfg.proxy.socket_path, upstream=cfg.docker.upstream_socket, project=cfg.docker.project,
                policy=policy, audit=audit, cfg=cfg.proxy, socket_gid=gid,
                decision_query=cfg.policy.proxy_decision, decider=decider,
            )
            proxy.start()
            stack.callback(proxy.stop)
        jail = Jail(cfg.jail, proxy_socket=cfg.proxy.socket_path, project=cfg.docker.project,
                    read_paths=[cfg.docker.compose_file.parent])
        if peer is None:
            peer = HttpPeer(
                cfg.control_plane.url, key=runner_key, org_id=cfg.runner.org_id, runner_id=cfg.runner.runner_id,
                timeout_s=cfg.control_plane.request_timeout_s,
                max_body_bytes=protocol.read_cap_bytes(cfg.runner.max_task_bytes),
            )
        stack.callback(peer.close)
        runner = Runner(cfg, peer=peer, audit=audit, ledger=ledger, policy=policy, catalog=catalog, jail=jail,
                        task_keys=keys, audit_records=audit.records, decider=decider)
        audit.append("runner_started", {
            "runner": cfg.runner.urn, "pid": os.getpid(), "policy_revision": policy.revision,
            "jail_uid": uid, "jail_gid": gid, "concurrency": cfg.runner.concurrency,
        })
        log.info("runner started", urn=cfg.runner.urn, control_plane=cfg.control_plane.url)
        try:
            yield runner
        finally:
            unacknowledged = runner.close(publish_timeout_s=min(cfg.runner.drain_timeout_s, 10.0))
            with contextlib.suppress(Exception):
                audit.append("runner_stopped", {
                    "runner": cfg.runner.urn, "dequeued": runner.stats.dequeued, "executed": runner.stats.executed,
                    "refused": runner.stats.refused, "unacknowledged": unacknowledged[:1000],
                })
            log.info("runner stopped", **runner.stats.__dict__)
