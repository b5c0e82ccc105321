"""``par controlplane serve``, ``par submit`` and ``par tasks show``: the local control plane and its admin API."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sandbox import logs
from sandbox._internal.cli.common import config_from, json_arg, key_value_params, print_json
from sandbox.controlplane import ADMIN_PREFIX, ControlPlane, admin_token_path
from sandbox.errors import Error, ProtocolError


class SubmitError(Error):
    default_hint = "Check the arguments; `par actions` lists actions and parameters."


def register(sub: Any) -> None:
    cp = sub.add_parser("controlplane", help="the local control plane (queue, signer, results)")
    cps = cp.add_subparsers(dest="cp_command", metavar="SUBCOMMAND")
    cps.required = True
    serve = cps.add_parser("serve", help="serve the control-plane endpoints and the admin API on loopback")
    serve.add_argument("--listen", default=None, help="HOST:PORT (default: from control_plane.url)")
    serve.add_argument("--database", type=Path, default=None, help="SQLite file (default: control_plane.database)")
    serve.set_defaults(func=serve_cmd)

    s = sub.add_parser("submit", help="submit a task to the local control plane (prints its id)")
    s.add_argument("action")
    s.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="a parameter; digits-only values are sent as integers")
    s.add_argument("--principal", required=True, help="JSON or @file: {type, id, name, roles}")
    s.add_argument("--trigger", default=None, help="JSON or @file: {type, monitor_name, workflow_name, ...}")
    s.add_argument("--timeout", type=float, default=None, help="task timeout in seconds")
    s.add_argument("--wait", action="store_true", help="wait for the result and print it")
    s.add_argument("--wait-timeout", type=float, default=300.0, help="seconds to wait with --wait")
    s.add_argument("--url", default=None, help="control plane URL (default: control_plane.url)")
    s.set_defaults(func=submit_cmd)

    t = sub.add_parser("tasks", help="inspect tasks of the local control plane")
    ts = t.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    ts.required = True
    show = ts.add_parser("show", help="show a task, its result and every update received")
    show.add_argument("task_id")
    show.add_argument("--url", default=None)
    show.set_defaults(func=show_cmd)


def serve_cmd(ns: argparse.Namespace) -> int:
    cfg = config_from(ns)
    logs.configure(cfg.logging)
    listen = ns.listen or cfg.control_plane.url.split("://", 1)[-1].rstrip("/")
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ProtocolError(f"--listen must be HOST:PORT, got {listen!r}")
    plane = ControlPlane(cfg, host=host or "127.0.0.1", port=int(port), database=ns.database)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plane.start()
    print(f"control plane listening on {plane.url} (admin token: {admin_token_path(plane.store.path)})", flush=True)
    stop.wait()
    plane.stop()
    return 0


class AdminClient:
    def __init__(self, ns: argparse.Namespace) -> None:
        cfg = config_from(ns)
        self.url = (ns.url or cfg.control_plane.url).rstrip("/")
        token_file = admin_token_path(cfg.control_plane.database)
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ProtocolError(
                f"cannot read the admin token {token_file}: {exc.strerror}",
                hint="Start `par controlplane serve` with the same config first (it creates the token).",
            ) from exc
        self.client = httpx.Client(timeout=10.0, trust_env=False,
                                   headers={"Authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, doc: Any = None) -> Any:
        try:
            r = self.client.request(method, self.url + path, json=doc)
        except httpx.HTTPError as exc:
            raise ProtocolError(f"{method} {self.url}{path}: {exc}") from exc
        if r.status_code >= 400:
            raise ProtocolError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()


def submit_cmd(ns: argparse.Namespace) -> int:
    client = AdminClient(ns)
    doc: dict[str, Any] = {
        "action": ns.action,
        "parameters": key_value_params(ns.param, SubmitError),
        "principal": json_arg(ns.principal, "--principal", SubmitError),
        "trigger": json_arg(ns.trigger, "--trigger", SubmitError) if ns.trigger else {"type": "manual"},
    }
    if ns.timeout is not None:
        doc["timeout_s"] = ns.timeout
    task_id = client.request("POST", ADMIN_PREFIX, doc)["task_id"]
    print(task_id, flush=True)
    if not ns.wait:
        return 0
    deadline = time.monotonic() + ns.wait_timeout
    while time.monotonic() < deadline:
        shown = client.request("GET", f"{ADMIN_PREFIX}/{task_id}")
        if shown.get("result") is not None:
            print_json(shown["result"])
            return 0 if shown["result"].get("success") else 1
        time.sleep(0.5)
    raise ProtocolError(f"no result for {task_id} after {ns.wait_timeout:g} s", hint="Is `par run` running?")


def show_cmd(ns: argparse.Namespace) -> int:
    print_json(AdminClient(ns).request("GET", f"{ADMIN_PREFIX}/{ns.task_id}"))
    return 0
