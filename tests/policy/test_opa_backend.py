"""The OPA backend against a real HTTP server speaking OPA's Data API on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.config import PolicyConfig
from sandbox.errors import ConfigError
from sandbox.policy import Decision, PolicyEngine, open_engine
from tests.policy.helpers import DEVELOPER, PIX_MONITOR, POLICIES, RESTART_WF, task_input
from tests.policy.opa_server import DataApiServer, data_api_server


@pytest.fixture(scope="module")
def server() -> Iterator[DataApiServer]:
    with data_api_server(POLICIES) as srv:
        yield srv


@pytest.fixture
def opa(server: DataApiServer) -> Iterator[PolicyEngine]:
    server.mode = "regorus"
    eng = open_engine(PolicyConfig(engine="opa", path=POLICIES, opa_url=server.url, opa_timeout_s=0.3, watch=False))
    yield eng
    eng.close()


def assert_policy_error(d: Decision, fragment: str) -> None:
    assert not d.allow
    assert d.rule_ids == ("policy_error",)
    assert d.reasons[0].startswith("policy_error: ") and fragment in d.reasons[0], d.reasons


def test_same_decisions_as_the_embedded_engine(opa: PolicyEngine, server: DataApiServer) -> None:
    embedded = open_engine(PolicyConfig(path=POLICIES, watch=False))
    try:
        for doc in (
            task_input("restart_transaction_service", RESTART_WF, PIX_MONITOR),
            task_input("restart_pix_worker", DEVELOPER),
            task_input("nope_not_an_action"),
        ):
            remote, local = opa.decide(doc), embedded.decide(doc)
            assert remote == local  # same revision too: it describes the same directory
    finally:
        embedded.close()
    path, body = server.requests[-1]
    assert path == "/v1/data/par/decision"
    assert set(body) == {"input"}


def test_proxy_query_path_is_mapped(opa: PolicyEngine, server: DataApiServer) -> None:
    server.mode = "fixed"
    server.fixed = {"allow": False, "reasons": ["docker_proxy.x: no"], "rule_ids": ["docker_proxy.x"]}
    d = opa.decide({"method": "GET"}, query="data.par.docker_proxy.decision")
    assert server.requests[-1][0] == "/v1/data/par/docker_proxy/decision"
    assert not d.allow and d.reasons == ("docker_proxy.x: no",)


def test_timeout_denies_quickly(opa: PolicyEngine, server: DataApiServer) -> None:
    server.mode = "slow"
    start = time.monotonic()
    d = opa.decide(task_input("check_services_status"))
    assert time.monotonic() - start < 1.5  # no retries turning 0.3 s into seconds
    assert_policy_error(d, "did not answer within 0.3 s")


def test_http_500_denies_without_retrying(opa: PolicyEngine, server: DataApiServer) -> None:
    server.mode = "error500"
    before = len(server.requests)
    assert_policy_error(opa.decide(task_input("check_services_status")), "answered HTTP 500")
    assert len(server.requests) == before + 1


def test_garbage_body_denies(opa: PolicyEngine, server: DataApiServer) -> None:
    server.mode = "garbage"
    assert_policy_error(opa.decide(task_input("check_services_status")), "not JSON")


def test_undefined_result_denies(opa: PolicyEngine, server: DataApiServer) -> None:
    server.mode = "undefined"
    assert_policy_error(opa.decide(task_input("check_services_status")), "undefined on the OPA server")


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        ({"reasons": ["looks fine"]}, "'allow' is missing"),
        ({"allow": "true"}, "not a boolean"),
        ({"allow": False}, "at least one reason"),
        ("allow", "must be an object"),
        (None, "is undefined"),
    ],
)
def test_malformed_decision_denies(opa: PolicyEngine, server: DataApiServer, result: Any, fragment: str) -> None:
    server.mode = "fixed"
    server.fixed = result
    assert_policy_error(opa.decide(task_input("check_services_status")), fragment)


def test_connection_refused_denies() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = open_engine(PolicyConfig(engine="opa", path=POLICIES, opa_url=f"http://127.0.0.1:{port}", opa_timeout_s=0.3))
    try:
        assert_policy_error(eng.decide(task_input("check_services_status")), "unreachable")
    finally:
        eng.close()


def test_environment_proxy_is_not_used(monkeypatch: pytest.MonkeyPatch, opa: PolicyEngine) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would refuse every request
    monkeypatch.setenv("NO_PROXY", "")
    assert opa.decide(task_input("check_services_status")).allow


@pytest.mark.parametrize(
    "url", ["ftp://x:1", "http://127.0.0.1:8181/v1/data", "http://u:p@127.0.0.1:1", "127.0.0.1:8181"]
)
def test_bad_opa_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="opa_url"):
        open_engine(PolicyConfig(engine="opa", path=POLICIES, opa_url=url))
