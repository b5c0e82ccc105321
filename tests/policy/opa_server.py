"""A local HTTP server that speaks OPA's Data API, for exercising the OPA backend for real.

``mode`` picks the behaviour: "regorus" evaluates the request with the real policies (so the answer is
what OPA would say), the others reproduce the failures the backend must survive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox._internal.policy_bundle import load_bundle
from sandbox._internal.policy_embedded import compile_bundle


class DataApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, policies: Path | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "regorus"
        self.fixed: Any = None
        self.requests: list[tuple[str, Any]] = []
        self._bundle = load_bundle(policies) if policies is not None else None
        self._local = threading.local()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The client gave up (timeout test): a broken pipe here is the expected outcome."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def evaluate(self, path: str, input_doc: Any) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            assert self._bundle is not None
            engine = self._local.engine = compile_bundle(self._bundle)
        engine.set_input_json(json.dumps(input_doc))
        value = json.loads(engine.eval_rule_as_json("data." + path.replace("/", ".")))
        return None if value == "<undefined>" else value


class _Handler(BaseHTTPRequestHandler):
    server: DataApiServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.removeprefix("/v1/data/")
        self.server.requests.append((self.path, body))
        mode = self.server.mode
        if mode == "slow":
            time.sleep(2.0)
            self._send(200, {"result": {"allow": True}})
        elif mode == "error500":
            self._send(500, {"code": "internal_error", "message": "boom"})
        elif mode == "garbage":
            self._raw(200, b"{not json at all")
        elif mode == "undefined":
            self._send(200, {})
        elif mode == "fixed":
            self._send(200, {"result": self.server.fixed})
        else:
            result = self.server.evaluate(path, body.get("input"))
            self._send(200, {} if result is None else {"result": result})

    def _send(self, status: int, doc: Any) -> None:
        self._raw(status, json.dumps(doc).encode())

    def _raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def data_api_server(policies: Path | None) -> Iterator[DataApiServer]:
    server = DataApiServer(policies)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
