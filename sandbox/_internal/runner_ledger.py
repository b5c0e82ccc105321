"""What the runner remembers, rebuilt from the audit log on every start.

The audit log is the single source of truth for three things that must survive a restart:

* **seen task ids** (replay protection): ids of tasks that passed signature verification, i.e. that
  reached a ``decision``, an execution, or a refusal only possible after verification. Ids from refusals
  before that point are attacker-chosen and are not remembered, or a forged task could block a real one;
* **execution history** for the policy's rate limits (every started execution counts, whatever its
  outcome), so a restart does not reset "no scale within 60 s";
* **unfinished executions** (``execution_started`` without ``execution_finished``): the runner died
  mid-action; they are reported ``interrupted`` and never re-run.

Keeping this in memory next to the log (updated as records are appended) makes the per-task checks
O(1) instead of re-reading the log for every task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.policy import history_entries
from sandbox.protocol import VERIFIED_CODES


@dataclass
class Execution:
    task_id: str
    action: str
    ts_ns: int
    principal_id: str
    services: tuple[str, ...]
    outcome: str = "started"


def ts_to_ns(ts: Any) -> int:
    if isinstance(ts, int | float):
        return int(ts * 1_000_000_000) if ts < 1e12 else int(ts)
    if isinstance(ts, str):
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return 0


MAX_REPUBLISH = 1000  # results re-sent after a crash: the most recent ones of the previous run


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: set[str] = set()
        self.executions: dict[str, Execution] = {}
        # The previous run (records after the last runner_started): did it stop cleanly, which results did
        # it leave unacknowledged, and where is each task's final record. Used to re-send results that a
        # crash or an unreachable control plane kept from being acknowledged (the control plane ignores
        # duplicates, so re-sending is safe).
        self.previous_run = False
        self.previous_clean = True
        self.previous_unacknowledged: set[str] = set()
        self.previous_results: dict[str, int] = {}

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> Ledger:
        ledger = cls()
        for rec in records:
            ledger.observe(rec.kind, rec.data, ts_ns=ts_to_ns(rec.ts))
            ledger._track_run(rec)
        return ledger

    def _track_run(self, rec: Any) -> None:
        if rec.kind == "runner_started":
            self.previous_run, self.previous_clean = True, False
            self.previous_unacknowledged, self.previous_results = set(), {}
        elif rec.kind == "runner_stopped":
            self.previous_clean = True
            self.previous_unacknowledged = {t for t in rec.data.get("unacknowledged") or () if isinstance(t, str)}
        elif rec.kind in ("execution_finished", "task_rejected", "decision") and self.previous_run:
            task_id = rec.data.get("task_id")
            if not isinstance(task_id, str):
                return
            if rec.kind == "decision" and rec.data.get("allow") is not False:
                return  # an allowed decision is not a result; its execution_finished is
            # The first final record is the task's real result; a later one can only be a replay's refusal.
            self.previous_results.setdefault(task_id, rec.seq)

    def results_to_resend(self) -> dict[str, int]:
        """task id -> seq of its final record, for results the previous run may not have delivered."""
        if not self.previous_run:
            return {}
        if self.previous_clean:
            return {t: q for t, q in self.previous_results.items() if t in self.previous_unacknowledged}
        return dict(list(self.previous_results.items())[-MAX_REPUBLISH:])

    def observe(self, kind: str, data: Mapping[str, Any], *, ts_ns: int) -> None:
        task_id = data.get("task_id")
        if not isinstance(task_id, str):
            return
        with self._lock:
            if kind == "decision" or (kind == "task_rejected" and data.get("code") in VERIFIED_CODES):
                self.seen.add(task_id)
            elif kind == "execution_started":
                self.seen.add(task_id)
                self.executions[task_id] = Execution(
                    task_id=task_id,
                    action=str(data.get("action", "")),
                    ts_ns=ts_ns,
                    principal_id=str(data.get("principal_id", "")),
                    services=tuple(data.get("services") or ()),
                )
            elif kind == "execution_finished" and task_id in self.executions:
                self.executions[task_id].outcome = str(data.get("outcome", "error"))

    def check_and_mark_seen(self, task_id: str) -> bool:
        """True if the id was already seen; marks it seen otherwise (atomic, for concurrent workers)."""
        with self._lock:
            if task_id in self.seen:
                return True
            self.seen.add(task_id)
            return False

    def history(
        self, now_ns: int, window_s: int, *, counts: Callable[[str], bool] = lambda action: True
    ) -> list[dict[str, Any]]:
        """Policy history inside the window, limited to executions of actions for which ``counts`` is true.

        The runner leaves read-only (diagnostic) actions out: they are never rate limited, and keeping them
        would let a burst of harmless reads fill the policy input's bounded history, which fails closed and
        would deny every remediation until the burst ages out of the window.
        """
        horizon = now_ns - window_s * 1_000_000_000
        out: list[dict[str, Any]] = []
        with self._lock:
            # Finished executions older than the window can never matter again (the window is fixed by the
            # config); dropping them keeps a long-running runner's memory flat.
            stale = [t for t, ex in self.executions.items() if ex.ts_ns <= horizon and ex.outcome != "started"]
            for t in stale:
                del self.executions[t]
            for ex in self.executions.values():
                if ex.ts_ns > horizon and ex.action and counts(ex.action):
                    out.extend(
                        history_entries(
                            action=ex.action, ts_ns=ex.ts_ns, outcome=ex.outcome,
                            principal_id=ex.principal_id or "unknown", services=ex.services,
                        )
                    )
        return out

    def unfinished(self) -> list[Execution]:
        with self._lock:
            return [ex for ex in self.executions.values() if ex.outcome == "started"]
