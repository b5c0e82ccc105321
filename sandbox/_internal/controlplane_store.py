"""SQLite persistence of the local control plane: tasks, the delivery queue and every result received.

Deliveries are separate from tasks on purpose: the same task can be delivered twice (a test replaying a
captured envelope, or an operator re-queueing one), and the runner must be the one that refuses it.
Results are kept as the first final update per task plus a log of every update, so a duplicate publish
is harmless (idempotent) and a later, different update for the same task cannot rewrite history.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    runner_id TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,            -- queued | dispatched | succeeded | failed
    dequeued_at REAL,
    heartbeat_at REAL,
    heartbeats INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    completed_at REAL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    body BLOB NOT NULL,
    delivered_at REAL
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (runner_id, delivered_at, seq);
"""


class TaskStore:
    """Thread-safe (one connection behind a lock: the HTTP server is threaded, SQLite is not)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_task(self, task_id: str, runner_id: str, action: str, payload: dict[str, Any], body: bytes) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO tasks (id, runner_id, action, payload, created_at, state) VALUES (?,?,?,?,?,?)",
                    (task_id, runner_id, action, json.dumps(payload), now, "queued"),
                )
                self._db.execute(
                    "INSERT INTO deliveries (task_id, runner_id, body) VALUES (?,?,?)", (task_id, runner_id, body)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add_delivery(self, task_id: str, runner_id: str, body: bytes) -> None:
        """Queue a raw message as-is (replays, hand-made attacks); creates no task row."""
        with self._lock:
            self._db.execute(
                "INSERT INTO deliveries (task_id, runner_id, body) VALUES (?,?,?)", (task_id, runner_id, body)
            )

    def next_delivery(self, runner_id: str) -> bytes | None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq, task_id, body FROM deliveries WHERE runner_id = ? AND delivered_at IS NULL "
                    "ORDER BY seq LIMIT 1",
                    (runner_id,),
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute("UPDATE deliveries SET delivered_at = ? WHERE seq = ?", (now, row[0]))
                self._db.execute(
                    "UPDATE tasks SET state = 'dispatched', dequeued_at = ? WHERE id = ? AND state = 'queued'",
                    (now, row[1]),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        body: bytes = row[2]
        return body

    def heartbeat(self, task_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE tasks SET heartbeat_at = ?, heartbeats = heartbeats + 1 WHERE id = ?", (time.time(), task_id)
            )
            return cur.rowcount > 0

    def record_update(self, task_id: str, update: dict[str, Any]) -> str:
        """Store a result; returns 'recorded', 'duplicate' (same as before) or 'ignored' (task already final)."""
        body = json.dumps(update, sort_keys=True)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO updates (task_id, body, received_at) VALUES (?,?,?)", (task_id, body, now)
                )
                row = self._db.execute("SELECT result FROM tasks WHERE id = ?", (task_id,)).fetchone()
                if row is None:
                    status = "ignored"  # not a task we issued (e.g. a forged id): kept in updates only
                elif row[0] is None:
                    state = "succeeded" if update.get("success") else "failed"
                    self._db.execute(
                        "UPDATE tasks SET result = ?, state = ?, completed_at = ? WHERE id = ?",
                        (body, state, now, task_id),
                    )
                    status = "recorded"
                else:
                    status = "duplicate" if row[0] == body else "ignored"
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return status

    def show(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, runner_id, action, payload, created_at, state, dequeued_at, heartbeat_at, heartbeats, "
                "result, completed_at FROM tasks WHERE id = ?",
                (task_id,),
            ).fetchone()
            ups = self._db.execute(
                "SELECT body, received_at FROM updates WHERE task_id = ? ORDER BY seq", (task_id,)
            ).fetchall()
        if row is None and not ups:
            return None
        doc: dict[str, Any] = {"id": task_id, "updates": [{**json.loads(b), "received_at": t} for b, t in ups]}
        if row is not None:
            doc.update(
                runner_id=row[1], action=row[2], payload=json.loads(row[3]), created_at=row[4], state=row[5],
                dequeued_at=row[6], heartbeat_at=row[7], heartbeats=row[8],
                result=json.loads(row[9]) if row[9] else None, completed_at=row[10],
            )
        return doc

    def delivery_body(self, task_id: str) -> bytes | None:
        """The first message queued for a task (what a replaying attacker would have captured)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM deliveries WHERE task_id = ? ORDER BY seq LIMIT 1", (task_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def pending(self, runner_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM deliveries WHERE runner_id = ? AND delivered_at IS NULL", (runner_id,)
            ).fetchone()
        return int(row[0])
