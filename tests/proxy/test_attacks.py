"""Attacks sent as raw bytes over the proxy socket; after each, the engine is checked to prove nothing happened."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox._internal.policy_decision import policy_error
from sandbox.proxy import DockerProxy
from tests.proxy.conftest import (
    TEST_CFG,
    UPSTREAM,
    ListSink,
    Proxy,
    Stacks,
    container_id,
    containers,
    docker,
    raw,
    read_response,
    request,
)
from tests.support.env import require

pytestmark = [pytest.mark.docker]
V = "/v1.41"
_numbers = itertools.count(100)
KAFKA_LIST = ["kafka-topics", "--bootstrap-server", "localhost:9092", "--list"]


def exists(name: str) -> bool:
    return subprocess.run(["docker", "inspect", name], capture_output=True, check=False).returncode == 0


def replica(project: str, number: int, **changes: Any) -> tuple[str, dict[str, Any]]:
    """What compose v2.40 sends to scale pix-worker up (measured), under a fresh replica name."""
    name = f"{project}-pix-worker-{number}"
    body: dict[str, Any] = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": ["SERVICE_NAME=pix-worker"],
        "Cmd": None,
        "Image": "dogbank/standin:local",
        "Volumes": None,
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {
            "com.docker.compose.config-hash": "0" * 64,
            "com.docker.compose.container-number": str(number),
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.project": project,
            "com.docker.compose.service": "pix-worker",
            "com.docker.compose.version": "2.40.3",
        },
        "StopTimeout": 5,
        "HostConfig": {
            "Binds": None,
            "LogConfig": {"Type": "", "Config": None},
            "NetworkMode": "none",
            "PortBindings": {},
            "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
            "AutoRemove": False,
            "CapAdd": None,
            "CapDrop": None,
            "IpcMode": "",
            "PidMode": "",
            "Privileged": False,
            "SecurityOpt": None,
            "UTSMode": "",
            "UsernsMode": "",
            "CgroupParent": "",
            "Devices": None,
            "MaskedPaths": None,
            "ReadonlyPaths": None,
            "Init": False,
        },
    }
    for path, value in changes.items():
        node = body
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return name, body


def create(px: Proxy, name: str, body: Any) -> Any:
    return request(px.sock, "POST", f"{V}/containers/create?name={name}", body)


def assert_refused(r: Any, rule: str, status: int = 403) -> None:
    assert r.status == status, (r.status, r.body)
    assert rule in r.json()["message"], r.body


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for n in names:
        subprocess.run(["docker", "rm", "-f", n], capture_output=True, check=False)


# --- control: the legitimate raw create works, so the refusals below are about the attack ---------------


def test_plain_replica_create_is_allowed(proxy: Proxy, cleanup: list[str]) -> None:
    require("docker")
    name, body = replica(proxy.project, next(_numbers))
    cleanup.append(name)
    r = create(proxy, name, body)
    assert r.status == 201, r.body
    assert exists(name)
    assert proxy.audit.kinds("proxy_allowed")[-1]["path"] == f"{V}/containers/create"


CREATE_ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "privileged": ({"HostConfig__Privileged": True}, "create_privileged"),
    "bind_root": ({"HostConfig__Binds": ["/:/host"]}, "create_mounts"),
    "mount_root": ({"HostConfig__Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}, "create_mounts"),
    "volume_with_driver_options": (
        {
            "HostConfig__Mounts": [
                {
                    "Type": "volume",
                    "Source": "evilvol",
                    "Target": "/host",
                    "VolumeOptions": {
                        "DriverConfig": {"Name": "local", "Options": {"type": "none", "device": "/", "o": "bind"}}
                    },
                }
            ]
        },
        "create_mounts",
    ),
    "host_pid": ({"HostConfig__PidMode": "host"}, "create_namespaces"),
    "host_network": ({"HostConfig__NetworkMode": "host"}, "create_namespaces"),
    "container_ipc": ({"HostConfig__IpcMode": "container:abc"}, "create_namespaces"),
    "cap_add": ({"HostConfig__CapAdd": ["SYS_ADMIN"]}, "create_cap_add"),
    "devices": (
        {"HostConfig__Devices": [{"PathOnHost": "/dev/kmsg", "PathInContainer": "/dev/kmsg"}]},
        "create_devices",
    ),
    "security_opt": ({"HostConfig__SecurityOpt": ["seccomp=unconfined"]}, "create_security_opt"),
    "sysctls": ({"HostConfig__Sysctls": {"net.ipv4.ip_forward": "1"}}, "create_sysctls"),
    "runtime": ({"HostConfig__Runtime": "runc-evil"}, "create_runtime"),
    "cgroup_parent": ({"HostConfig__CgroupParent": "/evil"}, "create_cgroup"),
    "unmask_paths": ({"HostConfig__MaskedPaths": []}, "create_masked_paths"),
    "ports": ({"HostConfig__PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}, "create_ports"),
    "other_image": ({"Image": "dogbank/busybox:local"}, "create_not_replica"),
    "other_user": ({"User": "0:0"}, "create_not_replica"),
    "other_hostname": ({"Hostname": "evil"}, "create_not_replica"),
    "healthcheck_command": (
        {"Healthcheck": {"Test": ["CMD", "sh", "-c", "echo pwned > /tmp/pwned"]}},
        "create_not_replica",
    ),
    "cap_drop_removed_or_readonly_changed": ({"HostConfig__ReadonlyRootfs": True}, "create_not_replica"),
    "auto_remove": ({"HostConfig__AutoRemove": True}, "create_auto_remove"),
    "log_driver": ({"HostConfig__LogConfig": {"Type": "syslog", "Config": None}}, "create_log_driver"),
    "volumes_from": ({"HostConfig__VolumesFrom": ["other"]}, "create_mounts"),
    "other_entrypoint": ({"Entrypoint": ["/bin/sh", "-c", "id"]}, "create_not_replica"),
    "other_cmd": ({"Cmd": ["--evil"]}, "create_not_replica"),
    "extra_env": ({"Env": ["SERVICE_NAME=pix-worker", "LD_PRELOAD=/tmp/x.so"]}, "create_not_replica"),
    "foreign_label": ({"Labels__evil": "1"}, "create_labels"),
    "unknown_service": ({"Labels__com.docker.compose.service": "evil"}, "create_no_reference"),
    "oneoff": ({"Labels__com.docker.compose.oneoff": "True"}, "create_labels"),
}


@pytest.mark.parametrize("attack", sorted(CREATE_ATTACKS))
def test_create_that_is_not_a_plain_replica_is_refused(proxy: Proxy, cleanup: list[str], attack: str) -> None:
    require("docker")
    changes, rule = CREATE_ATTACKS[attack]
    name, body = replica(proxy.project, next(_numbers), **changes)
    cleanup.append(name)
    assert_refused(create(proxy, name, body), rule)
    assert not exists(name)
    denied = proxy.audit.kinds("proxy_denied")[-1]
    assert rule in denied["rule"] and denied["method"] == "POST"


def test_labels_stamped_on_a_foreign_create_are_not_trusted(proxy: Proxy, cleanup: list[str]) -> None:
    """Our project's labels on an arbitrary container (a shell in busybox) do not make it a replica."""
    require("docker")
    name, body = replica(
        proxy.project,
        next(_numbers),
        Image="dogbank/busybox:local",
        Entrypoint=["/bin/sh"],
        Cmd=["-c", "sleep 600"],
        Env=None,
    )
    cleanup.append(name)
    assert_refused(create(proxy, name, body), "create_not_replica")
    assert not exists(name)


def test_other_project_labels_and_bad_names_are_refused(proxy: Proxy, stacks: Stacks, cleanup: list[str]) -> None:
    require("docker")
    name, body = replica(stacks.other, next(_numbers))
    cleanup.append(name)
    assert_refused(create(proxy, name, body), "create_labels")
    assert not exists(name)
    _, body = replica(proxy.project, next(_numbers))
    cleanup.append("evilname")
    assert_refused(create(proxy, "evilname", body), "create_name")
    assert not exists("evilname")


JSON_ATTACKS = {
    "duplicate_key": (b'"HostConfig": {"Privileged": false, "Privileged": true}', "json_duplicate_key"),
    "case_variant_key": (b'"HostConfig": {"Privileged": false, "privileged": true}', "json_unknown_key"),
    "unknown_key": (b'"HostConfig": {"Evil": true}', "json_unknown_key"),
    "non_ascii_key": ('"HostConfig": {"Privil\u0435ged": true}'.encode(), "json_non_ascii_key"),
}


@pytest.mark.parametrize("attack", sorted(JSON_ATTACKS))
def test_ambiguous_json_is_refused(proxy: Proxy, cleanup: list[str], attack: str) -> None:
    require("docker")
    fragment, rule = JSON_ATTACKS[attack]
    name, body = replica(proxy.project, next(_numbers))
    del body["HostConfig"]
    cleanup.append(name)
    text = json.dumps(body).encode()[:-1] + b", " + fragment + b"}"
    assert_refused(create(proxy, name, text), rule)
    assert not exists(name)


# --- exec ------------------------------------------------------------------------------------------------


def exec_body(**changes: Any) -> dict[str, Any]:
    body = {
        "User": "",
        "Privileged": False,
        "Tty": False,
        "AttachStdin": True,
        "AttachStderr": True,
        "AttachStdout": True,
        "DetachKeys": "",
        "Env": None,
        "WorkingDir": "",
        "Cmd": KAFKA_LIST,
        "Detach": False,
    }
    body.update(changes)
    return body


def exec_ids(cid: str) -> list[str]:
    return json.loads(docker("inspect", "-f", "{{json .ExecIDs}}", cid)) or []


def marker_absent(cid: str) -> bool:
    r = subprocess.run(["docker", "exec", cid, "cat", "/tmp/pwned"], capture_output=True, check=False)
    return r.returncode != 0


PWN = ["sh", "-c", "echo pwned > /tmp/pwned"]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"Privileged": True}, "exec_privileged"),
        ({"User": "0"}, "exec_user"),
        ({"Cmd": PWN}, "exec_command"),
        ({"Cmd": [*KAFKA_LIST, "--extra"]}, "exec_command"),
        ({"Env": ["A=1"]}, "exec_options"),
    ],
)
def test_exec_other_than_the_allowlisted_one_is_refused(proxy: Proxy, changes: dict[str, Any], rule: str) -> None:
    require("docker")
    kafka = container_id(proxy.project, "kafka")
    before = exec_ids(kafka)
    r = request(proxy.sock, "POST", f"{V}/containers/{kafka[:12]}/exec", exec_body(**changes))
    assert_refused(r, rule)
    assert exec_ids(kafka) == before  # no exec instance was even created
    assert marker_absent(kafka)


def test_exec_in_another_service_or_project_is_refused(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    for project, service in ((stacks.other, "kafka"), (proxy.project, "pix-worker")):
        cid = container_id(project, service)
        r = request(proxy.sock, "POST", f"{V}/containers/{cid}/exec", exec_body())
        assert r.status == 403, r.body
    r = request(proxy.sock, "POST", f"{V}/containers/{container_id(stacks.other, 'kafka')}/exec", exec_body(Cmd=PWN))
    assert_refused(r, "outside_project")
    assert marker_absent(container_id(stacks.other, "kafka"))


def test_starting_an_exec_made_behind_the_proxys_back_is_refused(proxy: Proxy, stacks: Stacks) -> None:
    """An exec created directly on the engine (in our kafka, or in another project) cannot be started via the proxy."""
    require("docker")
    for project in (proxy.project, stacks.other):
        kafka = container_id(project, "kafka")
        out = subprocess.run(
            [
                "curl",
                "-s",
                "--unix-socket",
                str(UPSTREAM),
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps({"Cmd": PWN}),
                f"http://d{V}/containers/{kafka}/exec",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        exec_id = json.loads(out.stdout)["Id"]
        r = request(
            proxy.sock,
            "POST",
            f"{V}/exec/{exec_id}/start",
            {"Detach": False, "Tty": False},
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        )
        assert r.status == 403, r.body
        time.sleep(0.3)
        assert marker_absent(kafka)


# --- other projects' objects by ID, ID prefix and name ------------------------------------------------------


def test_other_projects_containers_are_out_of_reach(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    before = containers(stacks.other)
    cid = container_id(stacks.other, "pix-worker")
    refs = [cid, cid[:12], cid[:4], f"{stacks.other}-pix-worker-1"]
    for ref in refs:
        for method, path in (("POST", "restart"), ("POST", "stop"), ("GET", "json"), ("GET", "logs?stdout=1")):
            r = request(proxy.sock, method, f"{V}/containers/{ref}/{path}")
            assert r.status in (403,), (ref, path, r.status, r.body)
        r = request(proxy.sock, "DELETE", f"{V}/containers/{ref}?force=1")
        assert r.status == 403
    assert containers(stacks.other) == before


def test_our_containers_by_prefix_and_name_are_rewritten_to_the_full_id(proxy: Proxy) -> None:
    require("docker")
    cid = container_id(proxy.project, "zookeeper")
    for ref in (cid[:12], f"{proxy.project}-zookeeper-1"):
        r = request(proxy.sock, "GET", f"{V}/containers/{ref}/json")
        assert r.status == 200 and r.json()["Id"] == cid


def test_lists_and_events_show_only_our_project(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    r = request(proxy.sock, "GET", f"{V}/containers/json?all=1")
    assert r.status == 200
    projects = {c["Labels"].get("com.docker.compose.project") for c in r.json()}
    assert projects == {proxy.project}
    r = request(
        proxy.sock,
        "GET",
        f"{V}/containers/json?all=1&filters="
        + json.dumps({"label": [f"com.docker.compose.project={stacks.other}"]}).replace('"', "%22").replace(" ", ""),
    )
    assert_refused(r, "filter_other_project")
    # events: restart one of ours and one of theirs; only ours shows up
    since = str(int(time.time()) - 1)
    subprocess.run(
        ["docker", "restart", "-t", "1", container_id(stacks.other, "zookeeper")], capture_output=True, check=True
    )
    subprocess.run(
        ["docker", "restart", "-t", "1", container_id(proxy.project, "zookeeper")], capture_output=True, check=True
    )
    until = str(int(time.time()) + 1)
    r = request(proxy.sock, "GET", f"{V}/events?since={since}&until={until}")
    assert r.status == 200
    events = [json.loads(line) for line in r.body.decode().splitlines() if line.strip()]
    assert events, "expected our restart events"
    assert {e["Actor"]["Attributes"]["com.docker.compose.project"] for e in events} == {proxy.project}


# --- endpoints compose does not need ----------------------------------------------------------------------


def test_endpoints_outside_the_allowlist_are_refused(proxy: Proxy) -> None:
    require("docker")
    own = container_id(proxy.project, "kafka")
    images_before = docker("images", "-q", "--no-trunc").split()
    cases = [
        ("POST", f"{V}/images/create?fromImage=alpine&tag=latest", None),
        ("POST", f"{V}/build?t=evil", None),
        ("POST", f"{V}/images/dogbank/standin:local/push", None),
        ("POST", f"{V}/commit?container={own}&repo=evil", None),
        ("GET", f"{V}/containers/{own}/archive?path=/", None),
        ("PUT", f"{V}/containers/{own}/archive?path=/tmp", None),
        ("GET", f"{V}/containers/{own}/export", None),
        ("POST", f"{V}/containers/{own}/attach?stream=1&stdin=1", None),
        ("POST", f"{V}/containers/{own}/kill", None),
        ("POST", f"{V}/containers/{own}/update", {"Memory": 0}),
        ("GET", f"{V}/plugins", None),
        ("GET", f"{V}/swarm", None),
        ("GET", f"{V}/services", None),
        ("GET", f"{V}/secrets", None),
        ("GET", f"{V}/configs", None),
        ("GET", f"{V}/info", None),
        ("GET", f"{V}/system/df", None),
        ("POST", f"{V}/containers/prune", None),
        ("GET", f"{V}/images/json", None),
        ("GET", f"{V}/images/alpine/json", None),
        ("POST", f"{V}/networks/create", {"Name": "evil"}),
    ]
    for method, path, body in cases:
        r = request(proxy.sock, method, path, body)
        assert r.status == 403, (method, path, r.status, r.body)
        assert "message" in r.json()
    assert docker("images", "-q", "--no-trunc").split() == images_before
    assert len(proxy.audit.kinds("proxy_denied")) >= len(cases)


def test_volume_create_with_driver_options_is_refused(proxy: Proxy) -> None:
    require("docker")
    name = f"{proxy.project}_evil"
    body = {
        "Name": name,
        "Driver": "local",
        "DriverOpts": {"type": "none", "device": "/", "o": "bind"},
        "Labels": {"com.docker.compose.project": proxy.project},
    }
    assert_refused(request(proxy.sock, "POST", f"{V}/volumes/create", body), "volume_driver")
    assert subprocess.run(["docker", "volume", "inspect", name], capture_output=True, check=False).returncode != 0


# --- HTTP-level ambiguity -----------------------------------------------------------------------------------


def test_cl_te_smuggling_is_refused(proxy: Proxy, cleanup: list[str]) -> None:
    require("docker")
    name, body = replica(proxy.project, next(_numbers), HostConfig__Privileged=True)
    cleanup.append(name)
    payload = json.dumps(body).encode()
    smuggled = (
        f"POST {V}/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    chunked = b"0\r\n\r\n" + smuggled
    head = (
        f"GET {V}/version HTTP/1.1\r\nHost: d\r\nContent-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    rs = raw(proxy.sock, head + chunked, responses=2)
    assert [r.status for r in rs] == [400]
    assert "cl_te_conflict" in rs[0].json()["message"]
    assert not exists(name)


def test_duplicate_content_length_is_refused(proxy: Proxy) -> None:
    require("docker")
    rs = raw(
        proxy.sock, f"GET {V}/version HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert rs[0].status == 400 and "duplicate_content_length" in rs[0].json()["message"]


def test_duplicate_query_parameters_are_refused(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    before = containers(stacks.ours, "kafka")
    cid = container_id(stacks.ours, "kafka")
    r = request(proxy.sock, "POST", f"{V}/containers/{cid}/restart?t=1&t=0")
    assert_refused(r, "duplicate_query")
    assert containers(stacks.ours, "kafka") == before


@pytest.mark.parametrize(
    "path",
    [
        f"{V}/containers/%2e%2e/%2e%2e/info",
        f"{V}/containers/../../info",
        f"{V}//info",
        "/info",
        f"{V}/containers/x%2fjson",
    ],
)
def test_encoded_and_dotted_paths_are_refused(proxy: Proxy, path: str) -> None:
    require("docker")
    r = request(proxy.sock, "GET", path)
    assert_refused(r, "path")


def test_bytes_after_a_zero_length_body_are_a_new_request_and_checked(proxy: Proxy, cleanup: list[str]) -> None:
    require("docker")
    name, body = replica(proxy.project, next(_numbers), HostConfig__Privileged=True)
    cleanup.append(name)
    payload = json.dumps(body).encode()
    smuggled = (
        f"POST {V}/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    zk = container_id(proxy.project, "zookeeper")
    first = f"POST {V}/containers/{zk}/json HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n".encode()
    rs = raw(proxy.sock, first + smuggled, responses=2)
    assert [r.status for r in rs] == [403, 403]  # wrong method, then the smuggled create on its own merits
    assert "create_privileged" in rs[1].json()["message"]
    assert not exists(name)


def test_oversize_header_and_body_are_refused(proxy: Proxy) -> None:
    require("docker")
    rs = raw(proxy.sock, f"GET {V}/version HTTP/1.1\r\nHost: d\r\nX-Big: {'a' * 20000}\r\n\r\n".encode())
    assert rs[0].status == 431
    big = b"{" + b'"Env": ["' + b"a" * 100000 + b'"]}'
    rs = raw(
        proxy.sock,
        f"POST {V}/containers/create?name=x HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big[:1000],
    )
    assert rs[0].status == 413


def test_slow_client_is_cut_off(proxy: Proxy) -> None:
    require("docker")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(proxy.sock))
        s.sendall(f"GET {V}/version HTTP/1.1\r\nHo".encode())
        t0 = time.monotonic()
        r = read_response(s)
        assert r is not None and r.status == 408
        assert time.monotonic() - t0 < TEST_CFG.client_timeout_s + 3
        assert s.recv(10) == b""  # and the connection is closed


def test_half_closed_client_still_gets_its_answer_and_keep_alive_works(proxy: Proxy) -> None:
    require("docker")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(proxy.sock))
        s.sendall(f"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET {V}/version HTTP/1.1\r\nHost: d\r\n\r\n".encode())
        s.shutdown(socket.SHUT_WR)
        r1, r2 = read_response(s), read_response(s)
        assert r1 is not None and r1.status == 200 and r1.body == b"OK" and r1.headers.get("api-version") == "1.41"
        assert r2 is not None and r2.status == 200 and "ApiVersion" in r2.json()


# --- fail closed: policy engine and audit log --------------------------------------------------------------


class _BrokenPolicy:
    revision = "broken"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def decide(self, input_doc: Mapping[str, Any], *, query: str = "") -> Any:
        if self.mode == "raise":
            raise RuntimeError("engine crashed")
        return policy_error("engine timed out", "broken")

    def reload(self) -> bool:
        return True

    def close(self) -> None:
        return None


@pytest.mark.parametrize("mode", ["error_decision", "raise"])
def test_policy_engine_failure_refuses(stacks: Stacks, sock_dir: Path, mode: str) -> None:
    require("docker")
    sock = sock_dir / "s.sock"
    sink = ListSink()
    before = containers(stacks.ours, "kafka")
    with DockerProxy(
        listen=sock, upstream=UPSTREAM, project=stacks.ours, policy=_BrokenPolicy(mode), audit=sink, cfg=TEST_CFG
    ):
        r = request(sock, "POST", f"{V}/containers/{container_id(stacks.ours, 'kafka')}/restart")
        assert_refused(r, "policy_error")
        assert request(sock, "GET", "/_ping").status == 403
    assert containers(stacks.ours, "kafka") == before
    assert sink.kinds("proxy_denied")[0]["rule"] == "policy_error"


def test_audit_failure_refuses_state_changes(proxy: Proxy, stacks: Stacks) -> None:
    require("docker")
    before = containers(stacks.ours, "kafka")
    proxy.audit.fail = True
    r = request(proxy.sock, "POST", f"{V}/containers/{container_id(stacks.ours, 'kafka')}/restart")
    assert_refused(r, "audit_unavailable")
    assert containers(stacks.ours, "kafka") == before
    assert request(proxy.sock, "GET", "/_ping").status == 200  # reads are not audited, so they still work


def test_socket_mode_and_group(stacks: Stacks, proxy_engine: Any, sock_dir: Path) -> None:
    require("docker")
    sock = sock_dir / "s.sock"
    cfg = dataclasses.replace(TEST_CFG, socket_mode=0o660)
    with DockerProxy(
        listen=sock, upstream=UPSTREAM, project=stacks.ours, policy=proxy_engine, audit=None, cfg=cfg, socket_gid=65534
    ):
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534
        assert [p.name for p in sock.parent.iterdir()] == ["s.sock"]
    assert not sock.exists()


def test_parallel_keep_alive_clients_are_served(proxy: Proxy) -> None:
    """Compose opens several keep-alive connections at once; each carries several requests."""
    require("docker")

    def client(_: int) -> list[int]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(str(proxy.sock))
            statuses = []
            for path in ("/_ping", f"{V}/version", f"{V}/containers/json?all=1", f"{V}/info"):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: d\r\n\r\n".encode())
                r = read_response(s)
                assert r is not None
                statuses.append(r.status)
            return statuses

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20)))
    assert results == [[200, 200, 200, 403]] * 20


def test_a_denial_is_counted_in_metrics(proxy: Proxy) -> None:
    """Operators alert on proxy denials: each refusal sends one DogStatsD datagram naming its rule."""
    from sandbox import metrics  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as agent:
        agent.bind(("127.0.0.1", 0))
        agent.settimeout(5)
        metrics.set_client(metrics.Metrics("127.0.0.1", agent.getsockname()[1]))
        try:
            r = request(proxy.sock, "GET", f"{V}/info")
            assert r.status == 403
            datagram = agent.recv(4096).decode()
        finally:
            metrics.set_client(None)
    assert datagram.startswith("dogbank.par.proxy.denials:1|c|#")
    assert "rule:route_not_allowed" in datagram and "method:get" in datagram.lower()
