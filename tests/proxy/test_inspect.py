"""create_facts against a reference container with declared mounts (the demo stack declares none)."""

from __future__ import annotations

import copy
from typing import Any

from sandbox._internal.proxy_inspect import create_facts, exec_inspect_facts
from sandbox._internal.proxy_resolve import Resolved

MOUNT = {"Type": "volume", "Source": "p_data", "Target": "/data", "VolumeOptions": {}}
REF = Resolved(
    kind="container",
    id="ref",
    name="p-svc-1",
    project="p",
    service="svc",
    raw={
        "Image": "sha256:img",
        "Config": {
            "Image": "img:1",
            "Cmd": ["run"],
            "Entrypoint": ["/e"],
            "User": "1000",
            "WorkingDir": "/w",
            "Env": ["PATH=/bin", "A=1"],
            "Healthcheck": None,
        },
        "HostConfig": {
            "Binds": ["/srv/p/conf:/conf:ro"],
            "Mounts": [MOUNT],
            "NetworkMode": "p_default",
            "CapDrop": ["ALL"],
            "ReadonlyRootfs": True,
            "ShmSize": 67108864,
        },
        "NetworkSettings": {"Networks": {"p_default": {}}},
    },
)


class FakeResolver:
    project = "p"

    def reference_container(self, service: str) -> Resolved | None:
        return REF if service == "svc" else None

    def image(self, ref: str) -> dict[str, Any] | None:
        if ref == "img:1":
            return {
                "Id": "sha256:img",
                "Config": {
                    "Cmd": ["run"],
                    "Entrypoint": ["/e"],
                    "User": "1000",
                    "WorkingDir": "/w",
                    "Env": ["PATH=/bin"],
                },
            }
        return {"Id": "sha256:other", "Config": {}}


BODY = {
    "Image": "img:1",
    "Cmd": None,
    "Entrypoint": None,
    "User": "",
    "Env": ["A=1"],
    "Labels": {
        "com.docker.compose.project": "p",
        "com.docker.compose.service": "svc",
        "com.docker.compose.oneoff": "False",
    },
    "HostConfig": {
        "Binds": ["/srv/p/conf:/conf:ro"],
        "Mounts": [{"Type": "volume", "Source": "p_data", "Target": "/data"}],
        "NetworkMode": "p_default",
        "CapDrop": ["ALL"],
        "ReadonlyRootfs": True,
    },
    "NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["svc"]}}},
}


def facts(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    for path, value in changes.items():
        node = body
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return create_facts(body, "p-svc-2", FakeResolver())  # type: ignore[arg-type]


def test_replica_with_declared_mounts_matches() -> None:
    f = facts()
    assert f["reference"]["found"] and f["mismatches"] == [] and f["undeclared_mounts"] == []


def test_undeclared_or_altered_mounts_are_reported() -> None:
    assert facts(HostConfig__Binds=["/:/host"])["undeclared_mounts"] == ["bind /:/host"]
    assert facts(HostConfig__Binds=["/srv/p/conf:/conf"])["undeclared_mounts"]  # read-only dropped
    assert facts(HostConfig__Mounts=[{**MOUNT, "ReadOnly": False, "Source": "other"}])["undeclared_mounts"]


def test_weaker_hardening_and_other_process_are_mismatches() -> None:
    assert "HostConfig.CapDrop" in facts(HostConfig__CapDrop=None)["mismatches"]
    assert "HostConfig.ReadonlyRootfs" in facts(HostConfig__ReadonlyRootfs=False)["mismatches"]
    assert {"Image", "ImageID"} <= set(facts(Image="other:1")["mismatches"])
    assert "User" in facts(User="0")["mismatches"]
    assert "Env" in facts(Env=["A=2"])["mismatches"]
    assert (
        "NetworkingConfig.EndpointsConfig" in facts(NetworkingConfig={"EndpointsConfig": {"bridge": {}}})["mismatches"]
    )
    assert "HostConfig.ShmSize" in facts(HostConfig__ShmSize=1)["mismatches"]
    assert facts(HostConfig__ShmSize=67108864)["mismatches"] == []  # equal to the reference is fine


def test_unknown_service_or_foreign_project_has_no_reference() -> None:
    assert not facts(Labels={"com.docker.compose.project": "p", "com.docker.compose.service": "x"})["reference"][
        "found"
    ]
    assert not facts(Labels={"com.docker.compose.project": "q", "com.docker.compose.service": "svc"})["reference"][
        "found"
    ]


def test_exec_user_equal_to_the_containers_user_counts_as_default() -> None:
    raw = {"ProcessConfig": {"entrypoint": "kafka-topics", "arguments": ["--list"], "user": "65534:65534"}}
    assert exec_inspect_facts(raw, {"Config": {"User": "65534:65534"}})["user"] == ""
    assert exec_inspect_facts(raw, {"Config": {"User": ""}})["user"] == "65534:65534"
    assert exec_inspect_facts(raw, None)["cmd"] == ["kafka-topics", "--list"]
