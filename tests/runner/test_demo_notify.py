"""The demo's notification step: printed, or POSTed to a loopback webhook (and never anywhere else)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandbox._internal.runner_demo import DemoError, _notify


def test_notification_goes_to_a_loopback_webhook(capsys):
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _notify(f"http://127.0.0.1:{server.server_address[1]}/hook", "restarted", {"task_id": "t1"})
    finally:
        server.shutdown()
        server.server_close()
    assert received == [{"text": "restarted", "task_id": "t1"}]
    _notify(None, "printed instead", {})
    assert "[notify] printed instead" in capsys.readouterr().out


def test_webhook_must_be_loopback():
    with pytest.raises(DemoError):
        _notify("http://192.0.2.1/hook", "x", {})  # TEST-NET-1: refused before any packet is sent
