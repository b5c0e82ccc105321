"""The runner's HTTP client against a scripted HTTP/1.1 server on 127.0.0.1 (real sockets, no mocks).

What matters for a pull-mode runner: a dequeue POST is never sent twice (a resent dequeue could hand a
task to nobody), a server-closed keep-alive connection costs no error, redirects and proxy variables
are ignored, an oversized body is capped, and every failure is a ProtocolError.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox import protocol
from sandbox._internal.runner_http import HttpPeer, PermanentPublishError
from sandbox.errors import ProtocolError

KEY = ec.generate_private_key(ec.SECP256R1())
Reply = tuple[int, dict[str, str], bytes]


@contextlib.contextmanager
def server(
    reply: Callable[[str, str, bytes], Reply], idle_timeout_s: float | None = None
) -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    """Serve ``reply(method, path, body)``; yields the base URL and the log of (method, path, client port)."""
    seen: list[tuple[str, str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = idle_timeout_s  # the server silently drops a keep-alive connection idle this long

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            assert self.headers.get(protocol.JWT_HEADER, "").count(".") == 2
            seen.append((self.command, self.path, self.client_address[1]))
            status, headers, payload = reply(self.command, self.path, body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Transfer-Encoding" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def peer(url: str, max_body: int = 1024) -> HttpPeer:
    return HttpPeer(url, key=KEY, org_id="dogbank", runner_id="r1", timeout_s=5, max_body_bytes=max_body)


def test_keep_alive_one_connection_for_many_requests() -> None:
    with server(lambda m, p, b: (204, {}, b"")) as (url, seen):
        p = peer(url)
        for _ in range(5):
            assert p.dequeue() is None
        p.close()
    assert len(seen) == 5 and len({port for _, _, port in seen}) == 1


def test_server_closed_idle_connection_is_replaced_and_the_dequeue_is_sent_once() -> None:
    calls = {"n": 0}

    def reply(method: str, path: str, body: bytes) -> Reply:
        calls["n"] += 1
        # The first answer closes the connection after the response, as an idle timeout would.
        return (204, {"Connection": "close"} if calls["n"] == 1 else {}, b"")

    with server(reply) as (url, seen):
        p = peer(url)
        assert p.dequeue() is None
        assert p.dequeue() is None  # a new connection, not an error and not a resend
        p.close()
    assert [m for m, _, _ in seen] == ["POST", "POST"]
    assert seen[0][2] != seen[1][2]


def test_keep_alive_dropped_silently_by_the_server_costs_no_error_and_no_resend() -> None:
    """An idle timeout on the server side closes the socket without a word; the next POST goes out once."""
    with server(lambda m, p, b: (204, {}, b""), idle_timeout_s=0.2) as (url, seen):
        p = peer(url)
        assert p.dequeue() is None
        time.sleep(0.6)  # the server has closed our idle connection by now
        assert p.dequeue() is None
        p.close()
    assert [m for m, _, _ in seen] == ["POST", "POST"]
    assert seen[0][2] != seen[1][2]


def test_redirects_are_not_followed() -> None:
    with server(lambda m, p, b: (302, {"Location": "http://127.0.0.1:9/elsewhere"}, b"")) as (url, seen):
        p = peer(url)
        with pytest.raises(ProtocolError, match="HTTP 302"):
            p.dequeue()
        p.close()
    assert len(seen) == 1


def test_proxy_environment_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with server(lambda m, p, b: (200, {}, b"")) as (url, seen):
        peer(url).health_check()
    assert seen and seen[0][1] == protocol.HEALTH_PATH


def test_oversized_dequeue_body_is_capped_not_read_whole() -> None:
    big = b"x" * 100_000
    with server(lambda m, p, b: (200, {}, big)) as (url, _):
        p = peer(url, max_body=1000)
        body = p.dequeue()
        assert body is not None and len(body) == 1001  # the pipeline rejects it as oversized
        assert p.dequeue() is not None  # the half-read connection was dropped, the next one works
        p.close()


def test_chunked_body_is_read() -> None:
    doc = {"task_id": "t1", "envelope": {}}
    raw = json.dumps(doc).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(raw), raw)
    with server(lambda m, p, b: (200, {"Transfer-Encoding": "chunked"}, chunked)) as (url, _):
        p = peer(url)
        assert json.loads(p.dequeue() or b"") == doc
        p.close()


def test_threads_never_share_a_connection() -> None:
    with server(lambda m, p, b: (200, {}, b"")) as (url, seen):
        p = peer(url)
        errors: list[BaseException] = []

        def beat() -> None:
            try:
                for _ in range(20):
                    p.heartbeat("t1")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=beat) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.close()
    assert not errors and len(seen) == 80
    assert len({port for _, _, port in seen}) == 4


def test_publish_status_classes() -> None:
    status = {"code": 400}
    with server(lambda m, p, b: (status["code"], {}, b"nope")) as (url, _):
        p = peer(url)
        result = protocol.failure_result("t1", "r1", protocol.ErrorCode.INTERNAL_ERROR, "x")
        with pytest.raises(PermanentPublishError):
            p.publish(result)
        for code in (401, 429, 500, 503):
            status["code"] = code
            with pytest.raises(ProtocolError) as info:
                p.publish(result)
            assert not isinstance(info.value, PermanentPublishError)
        p.close()


def _self_signed(tmp: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_verifies_the_server_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A control plane with a certificate the trust store does not vouch for is refused; a trusted one works."""
    cert, key = _self_signed(tmp_path, "127.0.0.1")
    with server(lambda m, p, b: (200, {}, b"")) as (url, seen):
        srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv_ctx.load_cert_chain(cert, key)
        port = int(url.rsplit(":", 1)[1])
        # put TLS in front of the scripted server: a one-connection TLS terminator on another port
        front = socket.create_server(("127.0.0.1", 0))
        front_port = front.getsockname()[1]

        def terminate() -> None:
            while True:
                try:
                    raw, _ = front.accept()
                except OSError:
                    return
                try:
                    tls = srv_ctx.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    raw.close()
                    continue
                back = socket.create_connection(("127.0.0.1", port))
                data = tls.recv(65536)
                back.sendall(data)
                tls.sendall(back.recv(65536))
                back.close()
                tls.close()

        t = threading.Thread(target=terminate, daemon=True)
        t.start()
        try:
            untrusted = peer(f"https://127.0.0.1:{front_port}")
            with pytest.raises(ProtocolError, match="CERTIFICATE_VERIFY_FAILED"):
                untrusted.health_check()
            untrusted.close()
            assert seen == []  # nothing reached the server through an unverified connection
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's trust store now includes it
            trusted = peer(f"https://127.0.0.1:{front_port}")
            trusted.health_check()
            trusted.close()
            assert [p for _, p, _ in seen] == [protocol.HEALTH_PATH]
        finally:
            front.close()


def test_unreachable_and_tls_mismatch_are_protocol_errors() -> None:
    with server(lambda m, p, b: (200, {}, b"")) as (url, _):
        tls = peer(url.replace("http://", "https://"))
        with pytest.raises(ProtocolError):
            tls.health_check()  # a plain-HTTP server never passes a TLS handshake
        tls.close()
        port = url.rsplit(":", 1)[1]
    gone = peer(f"http://127.0.0.1:{port}")
    with pytest.raises(ProtocolError):
        gone.dequeue()  # nothing listens any more
    gone.close()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http://", "127.0.0.1:8080", "http://h:99999/",
                                 "http://h/?q=1", "http://user:secret@127.0.0.1/"])
def test_bad_control_plane_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ProtocolError, match="control_plane.url"):
        peer(url)


def test_closed_client_refuses_new_requests() -> None:
    with server(lambda m, p, b: (204, {}, b"")) as (url, seen):
        p = peer(url)
        p.close()
        with pytest.raises(ProtocolError, match="closed"):
            p.dequeue()
    assert seen == []
