"""Result publishing and heartbeats: the runner's outgoing traffic, off the task threads.

A result is retried with backoff until the control plane acknowledges it (the control plane treats the
same update twice as a no-op, so a retry after a lost acknowledgement is safe). A task thread never
waits for the network: it hands the result over and frees its concurrency slot.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from sandbox._internal.runner_backoff import Backoff
from sandbox._internal.runner_http import ControlPlanePeer, PermanentPublishError
from sandbox.errors import ProtocolError
from sandbox.logs import get_logger
from sandbox.protocol import TaskResult

log = get_logger(__name__)


class Outbox:
    def __init__(self, peer: ControlPlanePeer, *, backoff_min_s: float, backoff_max_s: float) -> None:
        self._peer = peer
        self._queue: queue.Queue[TaskResult | None] = queue.Queue()
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._unacked: dict[str, int] = {}  # task id -> results queued but not acknowledged
        self._lock = threading.Lock()
        self.published: list[str] = []  # task ids acknowledged (for tests and `par run` logs)
        self._thread = threading.Thread(target=self._loop, name="par-outbox", daemon=True)
        self._thread.start()

    def put(self, result: TaskResult) -> None:
        with self._lock:
            self._pending += 1
            self._unacked[result.task_id] = self._unacked.get(result.task_id, 0) + 1
            self._idle.clear()
        self._queue.put(result)

    def unacknowledged(self) -> list[str]:
        """Task ids whose result the control plane has not acknowledged (recorded in runner_stopped)."""
        with self._lock:
            return sorted(self._unacked)

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is acknowledged; False if the time ran out."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(item)
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def _deliver(self, result: TaskResult) -> None:
        while not self._stop.is_set():
            try:
                self._peer.publish(result)
            except PermanentPublishError as exc:
                log.error("result refused by the control plane", task_id=result.task_id, error=exc.message)
                with self._lock:
                    self._unacked.pop(result.task_id, None)  # retrying a malformed update cannot help
                return
            except ProtocolError as exc:
                delay = self._backoff.next_delay()
                log.warning("publish failed, retrying", task_id=result.task_id, error=exc.message,
                            retry_in_s=round(delay, 2))
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            self.published.append(result.task_id)
            with self._lock:
                left = self._unacked.get(result.task_id, 1) - 1
                if left <= 0:
                    self._unacked.pop(result.task_id, None)
                else:
                    self._unacked[result.task_id] = left
            log.info("result published", task_id=result.task_id, success=result.success,
                     error_code=result.error_code)
            return
        log.error("result not published before shutdown", task_id=result.task_id)


class Heartbeats:
    """One thread beating for every running task until it ends or its timeout passes."""

    def __init__(self, peer: ControlPlanePeer, interval_s: float) -> None:
        self._peer = peer
        self._interval = max(interval_s, 0.05)
        self._tasks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._loop, name="par-heartbeat", daemon=True)
        self._thread.start()

    def add(self, task_id: str, timeout_s: float) -> None:
        with self._lock:
            self._tasks[task_id] = time.monotonic() + timeout_s

    def remove(self, task_id: str) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                due = [tid for tid, deadline in self._tasks.items() if deadline > now]
            for tid in due:
                try:
                    self._peer.heartbeat(tid)
                    self.sent += 1
                except ProtocolError as exc:
                    log.warning("heartbeat failed", task_id=tid, error=exc.message)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"running": len(self._tasks), "sent": self.sent}
