"""The proxy's decision memo: never outlives a policy change, never remembers an engine failure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox._internal.policy_decision import Decision, policy_error
from sandbox.config import ProxyConfig
from sandbox.proxy import DockerProxy


class CountingPolicy:
    def __init__(self) -> None:
        self.revision = "r1"
        self.calls = 0
        self.fail = False

    def decide(self, input_doc: Mapping[str, Any], *, query: str = "") -> Decision:
        self.calls += 1
        if self.fail:
            return policy_error("engine down", self.revision)
        return Decision(allow=True, reasons=("allow: x",), rule_ids=("allow.x",), revision=self.revision)

    def reload(self) -> bool:
        return True

    def close(self) -> None:
        return None


def make(policy: CountingPolicy) -> DockerProxy:
    return DockerProxy(
        listen=Path("/tmp/unused.sock"),
        upstream=Path("/var/run/docker.sock"),
        project="p",
        policy=policy,
        audit=None,
        cfg=ProxyConfig(),  # type: ignore[arg-type]
    )


def test_same_input_same_revision_is_decided_once() -> None:
    pol = CountingPolicy()
    px = make(pol)
    assert px._evaluate({"a": 1})[0] and px._evaluate({"a": 1})[0]
    assert pol.calls == 1
    px._evaluate({"a": 2})
    assert pol.calls == 2


def test_a_new_policy_revision_is_asked_again() -> None:
    pol = CountingPolicy()
    px = make(pol)
    px._evaluate({"a": 1})
    pol.revision = "r2"
    px._evaluate({"a": 1})
    assert pol.calls == 2


def test_engine_failures_are_not_remembered() -> None:
    pol = CountingPolicy()
    pol.fail = True
    px = make(pol)
    assert px._evaluate({"a": 1}) == (False, ["policy_error: engine down"], ["policy_error"])
    pol.fail = False
    assert px._evaluate({"a": 1})[0] is True
    assert pol.calls == 2
