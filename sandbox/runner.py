"""The pull-mode runner: the poll loop and the per-task pipeline.

Pipeline for one dequeued message, in this order (each refusal is audited and reported with its code):

1. shape and size (:func:`sandbox.protocol.parse_delivery` / :func:`~sandbox.protocol.verify_task`),
   signatures (every signature by a known key is tried), expiry with bounded skew, org and runner ids;
2. replay check against the task ids in the audit log (:class:`~sandbox._internal.runner_ledger.Ledger`);
3. action lookup, parameter validation and argv rendering (the catalog);
4. the policy decision, with execution history from the audit log, audited as ``decision`` (fsync);
5. ``execution_started`` (fsync), the jail runs the argv (its only door to Docker is the proxy),
   ``execution_finished``; then the result goes to the outbox, which retries until acknowledged.

If the audit log cannot be written, nothing runs: an action without its record would be an action nobody
can account for. The checks themselves live in :mod:`sandbox._internal.runner_pipeline` (pure); this
module does the I/O and the threading.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox import metrics, protocol
from sandbox._internal.runner_backoff import Backoff, CircuitBreaker
from sandbox._internal.runner_http import ControlPlanePeer
from sandbox._internal.runner_ledger import Ledger
from sandbox._internal.runner_outbox import Heartbeats, Outbox
from sandbox._internal.runner_pipeline import (
    Resolved,
    effective_timeout,
    finished_record,
    outcome_of,
    refusal_code,
    resolve,
    result_from_records,
)
from sandbox.audit import AuditSink
from sandbox.catalog import Catalog
from sandbox.config import RunnerConfig
from sandbox.errors import AuditError, Error, JailError, PolicyError, ProtocolError, TaskRejected
from sandbox.logs import get_logger
from sandbox.policy import PolicyEngine, build_task_input
from sandbox.protocol import ErrorCode, Task, TaskResult

log = get_logger(__name__)


class JailLike(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        output_limit: int | None = None,
        env: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Any: ...


@dataclass
class RunnerStats:
    dequeued: int = 0
    executed: int = 0
    refused: int = 0
    poll_errors: int = 0


class Runner:
    """Wires the pipeline to its peers; every dependency is injected so tests can use the real ones."""

    def __init__(
        self,
        cfg: RunnerConfig,
        *,
        peer: ControlPlanePeer,
        audit: AuditSink,
        ledger: Ledger,
        policy: PolicyEngine,
        catalog: Catalog,
        jail: JailLike,
        task_keys: Mapping[str, Ed25519PublicKey],
        audit_records: Callable[[], Iterable[Any]] | None = None,
        decider: Executor | None = None,
    ) -> None:
        self.cfg = cfg
        self.audit_records = audit_records
        self.peer = peer
        self.audit = audit
        self.ledger = ledger
        self.policy = policy
        self.catalog = catalog
        self.jail = jail
        self.task_keys = dict(task_keys)
        self.runner_vars = {"project": cfg.docker.project, "compose_file": str(cfg.docker.compose_file)}
        self.stats = RunnerStats()
        self.outbox = Outbox(peer, backoff_min_s=cfg.control_plane.backoff_min_s,
                             backoff_max_s=cfg.control_plane.backoff_max_s)
        self.heartbeats = Heartbeats(peer, cfg.runner.heartbeat_interval_s)
        self._slots = threading.BoundedSemaphore(max(cfg.runner.concurrency, 1))
        self._admission = threading.Lock()  # decide + record as one step, so rate limits see every start
        # All decisions on one long-lived thread: the embedded engine is compiled per thread (regorus engines
        # cannot cross threads), so deciding on short-lived task threads would recompile for every task.
        # A caller may pass the thread (to share it with the in-process proxy: one compiled copy, not two).
        self._own_decider = decider is None
        self._decider: Executor = decider or ThreadPoolExecutor(max_workers=1, thread_name_prefix="par-policy")
        self._workers: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._workers_lock = threading.Lock()
        self.stop_event = threading.Event()
        self._closed = False

    # --- start / stop ---------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Report executions the previous run left unfinished as interrupted (never re-run them), and
        re-send results it may not have delivered (found by reading the audit log again)."""
        if self.audit_records is not None:
            self._resend(self.audit_records())
        reported = []
        for ex in self.ledger.unfinished():
            data = finished_record(ex.task_id, ex.action, "interrupted", None, duration_ms=0.0)
            seq = self.audit.append("execution_finished", data)
            self.ledger.observe("execution_finished", data, ts_ns=time.time_ns())
            metrics.task_finished("interrupted", 0.0, action=ex.action)
            self.outbox.put(protocol.failure_result(
                ex.task_id, self.cfg.runner.runner_id, ErrorCode.INTERRUPTED,
                "interrupted: the runner stopped while the action ran; it was not re-run",
                outputs={"auditSeq": seq},
            ))
            log.warning("interrupted execution reported", task_id=ex.task_id, action=ex.action)
            reported.append(ex.task_id)
        return reported

    def _resend(self, records: Iterable[Any]) -> None:
        wanted = self.ledger.results_to_resend()
        if not wanted:
            return
        seqs = set(wanted.values())
        argv: dict[str, list[str]] = {}
        count = 0
        for rec in records:
            task_id = rec.data.get("task_id")
            if rec.kind == "execution_started" and task_id in wanted:
                argv[task_id] = list(rec.data.get("argv") or [])
            elif rec.seq in seqs:
                result = result_from_records(self.cfg.runner.runner_id, rec.kind, rec.seq, rec.data,
                                             argv.get(task_id))
                if result is not None:
                    self.outbox.put(result)
                    count += 1
        log.warning("re-sending results the previous run may not have delivered", count=count,
                       previous_run_clean=self.ledger.previous_clean)

    def run(self) -> None:
        """Poll until :attr:`stop_event` is set, then drain. Call :meth:`recover` first."""
        cp = self.cfg.control_plane
        backoff = Backoff(cp.backoff_min_s, cp.backoff_max_s)
        breaker = CircuitBreaker(cp.circuit_breaker_failures, cp.circuit_breaker_open_s)
        try:
            self.peer.health_check()
            log.info("control plane healthy", url=cp.url)
        except ProtocolError as exc:
            log.warning("health check failed; polling anyway with backoff", error=exc.message)
        while not self.stop_event.is_set():
            wait = breaker.wait_s()
            if wait > 0:
                self.stop_event.wait(min(wait, 1.0))
                continue
            if not self._acquire_slot():
                break
            try:
                body = self.peer.dequeue()
            except ProtocolError as exc:
                self._slots.release()
                self.stats.poll_errors += 1
                opened = breaker.failure()
                delay = backoff.next_delay()
                log.warning("dequeue failed", error=exc.message, retry_in_s=round(delay, 2),
                            breaker="opened" if opened else breaker.state)
                self.stop_event.wait(delay)
                continue
            breaker.success()
            backoff.reset()
            if body is None:
                self._slots.release()
                self.stop_event.wait(self.cfg.runner.poll_interval_s)
                continue
            self.stats.dequeued += 1
            self._spawn(body)
        self.drain()

    def _acquire_slot(self) -> bool:
        while not self.stop_event.is_set():
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _spawn(self, body: bytes) -> None:
        cancel = threading.Event()
        key = f"w{id(cancel)}"

        def work() -> None:
            try:
                self.handle(body, cancel=cancel)
            finally:
                with self._workers_lock:
                    self._workers.pop(key, None)
                self._slots.release()

        thread = threading.Thread(target=work, name="par-task", daemon=True)
        with self._workers_lock:
            self._workers[key] = (thread, cancel)
        thread.start()

    def drain(self) -> None:
        """Let running actions finish up to the drain timeout, then kill them (reported interrupted)."""
        deadline = time.monotonic() + self.cfg.runner.drain_timeout_s
        while True:
            with self._workers_lock:
                workers = list(self._workers.values())
            if not workers:
                break
            if time.monotonic() >= deadline:
                log.warning("drain timeout: killing running actions", count=len(workers))
                for _, cancel in workers:
                    cancel.set()
                for thread, _ in workers:
                    thread.join(timeout=self.cfg.jail.kill_grace_s + 10)
                break
            workers[0][0].join(timeout=0.1)

    def close(self, *, publish_timeout_s: float = 10.0) -> list[str]:
        """Stop the helpers; returns the task ids whose results were never acknowledged."""
        if self._closed:
            return []
        self._closed = True
        if self._own_decider:
            self._decider.shutdown(wait=True)
        self.heartbeats.close()
        self.outbox.close(publish_timeout_s)
        return self.outbox.unacknowledged()

    # --- the pipeline -----------------------------------------------------------------------------------

    def handle(self, body: bytes, *, cancel: threading.Event | None = None) -> TaskResult:
        """Run the whole pipeline for one dequeued message; the result is also queued for publishing."""
        rid = self.cfg.runner.runner_id
        task_id: str | None = None
        try:
            delivery = protocol.parse_delivery(body, max_task_bytes=self.cfg.runner.max_task_bytes)
            task_id = delivery.task_id
            task = protocol.verify_task(
                delivery,
                keys=self.task_keys,
                org_id=self.cfg.runner.org_id,
                runner_id=rid,
                max_task_bytes=self.cfg.runner.max_task_bytes,
                max_clock_skew_s=self.cfg.control_plane.max_clock_skew_s,
            )
            task_id = task.id
            if self.ledger.check_and_mark_seen(task.id):
                raise TaskRejected(ErrorCode.REPLAYED_TASK, f"task {task.id} was already received; refusing a replay")
            resolved = resolve(self.catalog, task, self.runner_vars)
            result = self._admit_and_execute(task, resolved, cancel)
        except TaskRejected as exc:
            result = self._refuse(task_id or exc.task_id, ErrorCode(exc.code), exc.message)
        except AuditError as exc:
            log.error("audit log unavailable: nothing executed", task_id=task_id, error=exc.message)
            result = protocol.failure_result(
                task_id or "unknown", rid, ErrorCode.INTERNAL_ERROR, f"audit log unavailable: {exc.message}"
            )
        except Exception as exc:  # a bug must still answer the task, and never kill the loop
            log.exception("internal error in the task pipeline", task_id=task_id)
            result = protocol.failure_result(
                task_id or "unknown", rid, ErrorCode.INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
            )
        if result.task_id != "unknown":
            self.outbox.put(result)
        return result

    def _refuse(self, task_id: str | None, code: ErrorCode, reason: str) -> TaskResult:
        self.stats.refused += 1
        data: dict[str, Any] = {"task_id": task_id, "code": code.value, "reason": reason}
        log.warning("task refused", task_id=task_id, code=code.value, reason=reason)
        metrics.task_rejected(code.value)
        try:
            self.audit.append("task_rejected", data)
        except AuditError as exc:
            return protocol.failure_result(
                task_id or "unknown", self.cfg.runner.runner_id, ErrorCode.INTERNAL_ERROR,
                f"audit log unavailable: {exc.message} (task refused: {code.value})",
            )
        return protocol.failure_result(task_id or "unknown", self.cfg.runner.runner_id, code, reason)

    def _counts_toward_limits(self, action_name: str) -> bool:
        """Only state-changing executions are policy history; an action no longer in the catalog still counts."""
        action = self.catalog.actions.get(action_name)
        return action is None or action.category != "diagnostic"

    def _admit_and_execute(self, task: Task, resolved: Resolved, cancel: threading.Event | None) -> TaskResult:
        rid = self.cfg.runner.runner_id
        action = resolved.action
        with self._admission:
            now = datetime.now(UTC)
            now_ns = time.time_ns()
            try:
                doc = build_task_input(
                    action=action.name, parameters=resolved.parameters, principal=task.principal,
                    trigger=task.trigger, task=task.policy_view(),
                    history=self.ledger.history(now_ns, self.cfg.policy.history_window_s,
                                                counts=self._counts_toward_limits),
                    runner_id=rid, now=now, catalog_action=action,
                    history_window_s=self.cfg.policy.history_window_s,
                )
                decision = self._decider.submit(self.policy.decide, doc, query=self.cfg.policy.decision).result()
                allow, reasons, rule_ids = decision.allow, tuple(decision.reasons), tuple(decision.rule_ids)
                limits: Mapping[str, Any] = decision.limits
                revision = decision.revision
            except PolicyError as exc:  # bad input: fail closed, like an engine error
                allow, reasons, rule_ids, limits = False, (f"policy_error: {exc.message}",), ("policy_error",), {}
                revision = getattr(self.policy, "revision", "")
            self.audit.append("decision", {
                "task_id": task.id, "action": action.name, "parameters": resolved.parameters,
                "principal": dict(task.principal), "trigger": dict(task.trigger), "allow": allow,
                "reasons": list(reasons), "rule_ids": list(rule_ids), "policy_revision": revision,
            })
            metrics.decision(allow, rule_ids, action=action.name)
            code = refusal_code(allow, rule_ids)
            if code is not None:
                self.stats.refused += 1
                metrics.task_rejected(code.value, action=action.name)
                reason = "; ".join(reasons) or "denied by policy"
                log.warning("task denied by policy", task_id=task.id, action=action.name, code=code.value,
                            reasons=list(reasons))
                return protocol.failure_result(task.id, rid, code, reason)
            timeout_s = effective_timeout(action.timeout_s, limits, task.timeout_s, self.cfg.jail.default_timeout_s)
            started = {
                "task_id": task.id, "action": action.name, "argv": resolved.argv,
                "services": list(action.services), "principal_id": str(task.principal.get("id", "")),
            }
            self.audit.append("execution_started", started)
            self.ledger.observe("execution_started", started, ts_ns=now_ns)
        return self._execute(task, resolved, timeout_s, cancel)

    def _execute(self, task: Task, resolved: Resolved, timeout_s: float, cancel: threading.Event | None) -> TaskResult:
        rid = self.cfg.runner.runner_id
        action = resolved.action
        env = {k: os.environ[k] for k in action.allowed_env_vars if k in os.environ}
        self.heartbeats.add(task.id, timeout_s)
        log.info("executing", task_id=task.id, action=action.name, timeout_s=timeout_s)
        t0 = time.perf_counter()
        try:
            res = self.jail.run(resolved.argv, timeout_s=timeout_s, output_limit=self.cfg.jail.output_limit_bytes,
                                env=env, cancel=cancel)
        except JailError as exc:
            data = finished_record(task.id, action.name, "error", None,
                                   duration_ms=(time.perf_counter() - t0) * 1000)
            seq = self.audit.append("execution_finished", data)
            self.ledger.observe("execution_finished", data, ts_ns=time.time_ns())
            metrics.task_finished("error", (time.perf_counter() - t0), action=action.name)
            return protocol.failure_result(task.id, rid, ErrorCode.INTERNAL_ERROR,
                                           f"jail refused to run the action: {exc.message}",
                                           outputs={"auditSeq": seq})
        finally:
            self.heartbeats.remove(task.id)
        cancelled = bool(cancel is not None and cancel.is_set())
        out = outcome_of(res.exit_code, res.signal, timed_out=res.timed_out, cancelled=cancelled, timeout_s=timeout_s)
        data = finished_record(task.id, action.name, out.outcome, res)
        seq = self.audit.append("execution_finished", data)
        self.ledger.observe("execution_finished", data, ts_ns=time.time_ns())
        self.stats.executed += 1
        metrics.task_finished(out.outcome, res.duration_ms / 1000, action=action.name)
        outputs = protocol.execution_outputs(
            resolved.argv, res.exit_code, res.stdout, res.stderr,
            duration_ms=res.duration_ms, truncated=res.truncated, audit_seq=seq,
        )
        log.info("executed", task_id=task.id, action=action.name, outcome=out.outcome, exit_code=res.exit_code,
                 duration_ms=round(res.duration_ms, 1))
        if out.success:
            return protocol.TaskResult(task_id=task.id, runner_id=rid, success=True, outputs=outputs)
        assert out.code is not None
        return protocol.failure_result(task.id, rid, out.code, out.message, outputs=outputs)


def run_until_stopped(runner: Runner) -> None:
    """Recover, poll, drain; errors from the audit log at recovery stop the runner (fail closed)."""
    try:
        runner.recover()
    except Error:
        runner.close()
        raise
    try:
        runner.run()
    finally:
        runner.close()
