"""Unit tests of the strict parsing layer (no engine): each ambiguity is refused, plain requests pass."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox._internal import proxy_json
from sandbox._internal.proxy_http import BadRequest, RequestReader, build_request, parse_target
from sandbox._internal.proxy_stream import EventFilter, filter_list
from sandbox.proxy import force_project_filter, route


def read(data: bytes, *, close: bool = True, timeout_s: float = 2.0, max_body: int = 1024) -> object:
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        if close:
            a.shutdown(socket.SHUT_WR)
        reader = RequestReader(b, max_header_bytes=512, max_body_bytes=max_body, timeout_s=timeout_s)
        return reader.next_request()
    finally:
        a.close()
        b.close()


def refused(data: bytes, **kw: object) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        read(data, **kw)  # type: ignore[arg-type]
    return info.value


def test_plain_request_is_parsed() -> None:
    req = read(b"POST /v1.41/containers/x/restart?t=10 HTTP/1.1\r\nHost: docker\r\nUser-Agent: compose/v2\r\n\r\n")
    assert req.method == "POST" and req.route_path == "/containers/x/restart"  # type: ignore[attr-defined]
    assert req.query == {"t": "10"} and req.api_version == "1.41"  # type: ignore[attr-defined]


def test_json_body_with_content_type_variants() -> None:
    for ct in (b"application/json", b"Application/JSON; charset=utf-8"):
        req = read(b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nContent-Type: " + ct + b"\r\nContent-Length: 2\r\n\r\n{}")
        assert req.body == b"{}"  # type: ignore[attr-defined]
    assert (
        refused(b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}").status
        == 415
    )
    assert refused(b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}").rule == "content_type"


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (
            b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "cl_te_conflict",
        ),
        (
            b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}",
            "duplicate_content_length",
        ),
        (b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "transfer_encoding"),
        (b"GET /v1.41/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate_header"),
        (b"GET /v1.41/x HTTP/1.0\r\nHost: a\r\n\r\n", "http_version"),
        (b"GET /v1.41/x HTTP/1.1\nHost: a\n\n", "http_parse"),
        (b"GET /v1.41/x HTTP/1.1\r\nHost : a\r\n\r\n", "http_parse"),
        (b"GET /v1.41/x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 600 + b"\r\n\r\n", "header_too_large"),
        (
            b"POST /v1.41/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n",
            "body_too_large",
        ),
        (b"GET /v1.20/containers/json HTTP/1.1\r\nHost: a\r\n\r\n", "api_version"),
        (b"GET /v1.41/x HTTP/1.1\r\nHost: a\r\n", "http_parse"),  # closed inside the head
    ],
)
def test_framing_ambiguities_are_refused(data: bytes, rule: str) -> None:
    assert refused(data).rule == rule


def test_slow_client_times_out() -> None:
    t0 = time.monotonic()
    exc = refused(b"GET /v1.41/version HTTP/1.1\r\nHo", close=False, timeout_s=0.5)
    assert exc.rule == "client_timeout" and exc.status == 408
    assert time.monotonic() - t0 < 3


def test_drip_feeding_does_not_extend_the_deadline() -> None:
    a, b = socket.socketpair()
    stop = threading.Event()

    def drip() -> None:
        for ch in b"GET /v1.41/version HTTP/1.1\r\nHost: docker\r\nX-Slow: " + b"a" * 400:
            if stop.is_set():
                return
            try:
                a.send(bytes([ch]))
            except OSError:
                return
            time.sleep(0.01)

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        reader = RequestReader(b, max_header_bytes=4096, max_body_bytes=10, timeout_s=0.5)
        with pytest.raises(BadRequest) as info:
            reader.next_request()
        assert info.value.rule == "client_timeout"
    finally:
        stop.set()
        a.close()
        b.close()


def test_clean_close_between_requests_is_not_an_error() -> None:
    assert read(b"") is None


@pytest.mark.parametrize(
    "target",
    [
        "/v1.41/containers/%2e%2e/json",
        "/v1.41/containers/../info",
        "/v1.41//info",
        "/v1.41/containers/a b/json",
        "/info",
        "/v2.0/info",
        "/v1.41",
        "http://docker/v1.41/info",
        "/v1.41/containers/json?all=1&all=0",
        "/v1.41/containers/json?all=1;size=1",
        "/v1.41/containers/json?a[]=1",
        "/v1.41/containers/json?all",
    ],
)
def test_path_and_query_ambiguities_are_refused(target: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_target(target)
    assert info.value.status == 403


def test_encoded_query_values_are_decoded_once() -> None:
    path, query = parse_target("/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%7B%7D%7D")
    assert path == "/v1.41/containers/json" and query == {"all": "1", "filters": '{"label":{}}'}


def test_rebuilt_request_has_only_allowlisted_headers() -> None:
    req = build_request("POST", "/v1.41/exec/abc/start", {}, b"{}", user_agent="compose/v2", upgrade=True)
    names = sorted(k.decode().lower() for k, _ in req.headers)
    assert names == ["connection", "content-length", "content-type", "host", "upgrade", "user-agent"]
    req = build_request(
        "GET", "/v1.41/containers/json", {"filters": '{"a":1}', "all": "1"}, None, user_agent="x\r\nEvil: 1"
    )
    assert req.target == b"/v1.41/containers/json?all=1&filters=%7B%22a%22%3A1%7D"
    assert sorted(k.decode().lower() for k, _ in req.headers) == ["host"]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b'{"Privileged": false, "Privileged": true}', "json_duplicate_key"),
        (b'{"Cmd": ["x"], "\xc3\xa9": 1}', "json_non_ascii_key"),
        (b'{"Cmd": NaN}', "json_parse"),
        (b'{"Cmd": []} {}', "json_parse"),
        (b"\xff", "json_parse"),
        (b"\xef\xbb\xbf{}", "json_parse"),
    ],
)
def test_strict_json(body: bytes, rule: str) -> None:
    with pytest.raises(BadRequest) as info:
        proxy_json.loads_strict(body)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    ("doc", "rule"),
    [
        ({"privileged": True}, "json_unknown_key"),  # dockerd would match it case-insensitively
        ({"Cmd": ["x"], "Evil": 1}, "json_unknown_key"),
        ({"HostConfig": {"privileged": True}}, "json_unknown_key"),
        ({"HostConfig": {"Mounts": [{"Type": "bind", "source": "/"}]}}, "json_unknown_key"),
        ({"Cmd": "sh"}, "json_shape"),
        ({"Cmd": [["nested"]]}, "json_shape"),
        ({"HostConfig": []}, "json_shape"),
        ({"Labels": {"bad key\n": "x"}}, "json_shape"),
    ],
)
def test_shape_allowlist(doc: object, rule: str) -> None:
    with pytest.raises(BadRequest) as info:
        proxy_json.check_shape(doc, proxy_json.CONTAINER_CREATE)
    assert info.value.rule == rule


def test_compose_create_body_passes_the_allowlist() -> None:
    body = {
        "Hostname": "",
        "User": "",
        "AttachStdout": True,
        "Env": ["A=1"],
        "Cmd": None,
        "Image": "i",
        "Labels": {"a.b": "c"},
        "StopTimeout": 5,
        "HostConfig": {
            "Binds": None,
            "LogConfig": {"Type": "", "Config": None},
            "NetworkMode": "none",
            "PortBindings": {},
            "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
            "MaskedPaths": None,
            "Init": False,
        },
    }
    proxy_json.check_shape(body, proxy_json.CONTAINER_CREATE)
    assert json.loads(proxy_json.dumps(body)) == body


def test_routes() -> None:
    assert route("/containers/create").endpoint == "container.create"
    assert route("/containers/json").endpoint == "containers.list"
    assert (route("/containers/abc/restart").endpoint, route("/containers/abc/restart").ref) == (
        "container.restart",
        "abc",
    )
    assert route("/images/dogbank/standin:local/json").ref == "dogbank/standin:local"
    for p in ("/containers/abc/archive", "/images/create", "/build", "/commit", "/swarm", "/info", "/system/df"):
        assert route(p).endpoint in ("unknown", "image.inspect") and route(p).endpoint == "unknown"


def test_ref_span_is_exact_even_when_the_ref_prefixes_the_collection_name() -> None:
    r = route("/containers/c/restart")
    assert r.ref == "c" and "/containers/c/restart"[: r.span[0]] == "/containers/"


def test_forced_project_filter() -> None:
    q = force_project_filter({"all": "1"}, "p")
    assert json.loads(q["filters"]) == {"label": {"com.docker.compose.project=p": True}}
    q = force_project_filter({"filters": '{"label":["a=b"],"status":{"running":true}}'}, "p")
    assert json.loads(q["filters"]) == {
        "label": {"a=b": True, "com.docker.compose.project=p": True},
        "status": {"running": True},
    }
    for bad in ('{"label":{"a":false}}', '{"before":["x"]}', "[]", '{"label":1}', '{"label":{"a":true},"label":{}}'):
        with pytest.raises(BadRequest):
            force_project_filter({"filters": bad}, "p")


def test_list_and_event_responses_are_filtered() -> None:
    mine = {"Id": "1", "Labels": {"com.docker.compose.project": "p"}}
    theirs = {"Id": "2", "Labels": {"com.docker.compose.project": "q"}}
    assert filter_list("containers.list", [mine, theirs, {"Id": "3"}], "p") == [mine]
    assert filter_list("volumes.list", {"Volumes": [theirs, mine]}, "p")["Volumes"] == [mine]
    f = EventFilter("p")
    ev_mine = {"Type": "container", "Actor": {"Attributes": {"com.docker.compose.project": "p"}}}
    ev_theirs = {"Type": "container", "Actor": {"Attributes": {"com.docker.compose.project": "q"}}}
    raw = (json.dumps(ev_theirs) + "\n" + json.dumps(ev_mine) + "\n").encode()
    out = f(raw[:30]) + f(raw[30:])
    assert [json.loads(x) for x in out.decode().splitlines()] == [ev_mine]


def test_idle_keep_alive_connection_is_closed_quietly() -> None:
    assert read(b"", close=False, timeout_s=0.3) is None


_FUZZ_PIECES = [
    b"GET ",
    b"POST ",
    b"/v1.41/containers/json",
    b"/_ping",
    b"?a=1",
    b"&a=2",
    b"%2e",
    b"..",
    b"//",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: d",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"Content-Type: application/json",
    b"{}",
    b"0\r\n\r\n",
    b"\x00",
    b"\xff",
    b": ",
    b" ",
    b"abc",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FUZZ_PIECES), max_size=24), st.binary(max_size=64))
def test_reader_never_fails_other_than_by_refusing(pieces: list[bytes], tail: bytes) -> None:
    """Whatever the bytes, the reader returns a checked request, None, or a BadRequest; nothing else escapes."""
    try:
        req = read(b"".join(pieces) + tail, timeout_s=0.5)
    except BadRequest as exc:
        assert exc.status in (400, 403, 408, 411, 413, 415, 431)
        return
    if req is not None:
        assert req.path.startswith(("/_ping", "/v1."))  # type: ignore[attr-defined]
        assert "%" not in req.path and ".." not in req.path and "//" not in req.path  # type: ignore[attr-defined]
