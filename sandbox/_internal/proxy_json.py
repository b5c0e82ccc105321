"""Strict JSON for request bodies: one reading, no ambiguity, exact-case allowlisted keys.

Go's encoding/json (dockerd) matches object keys case-insensitively and keeps the *last* duplicate,
so ``{"Privileged": false, "privileged": true}`` or a repeated key can mean something to dockerd that a
naive checker never saw. The proxy therefore rejects duplicate keys, non-ASCII keys and any key that is
not spelled exactly as allowlisted at its level, and forwards the re-serialised document it checked,
never the client's bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox._internal.proxy_http import BadRequest

MAX_DEPTH = 12
_MAP_KEY_RE = re.compile(r"^[A-Za-z0-9_./:=@+-]{1,256}$")


class Scalar:
    """A JSON scalar or null."""


class ScalarList:
    """A list of scalars, or null."""


class MapOf:
    """An object with free-form (but plain ASCII) keys, e.g. Labels or Sysctls."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ListOf:
    def __init__(self, item: Any) -> None:
        self.item = item


SCALAR = Scalar()
SCALARS = ScalarList()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not key.isascii():
            raise BadRequest("json_non_ascii_key", f"non-ASCII JSON key {key[:40]!r}")
        if key in out:
            raise BadRequest("json_duplicate_key", f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise BadRequest("json_parse", f"non-standard JSON constant {name}")


def loads_strict(raw: bytes) -> Any:
    """Parse UTF-8 JSON; duplicates, non-ASCII keys, NaN/Infinity and trailing data are refused."""
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest("json_parse", "request body is not UTF-8") from exc
    if text.startswith("\ufeff"):
        raise BadRequest("json_parse", "byte order mark in JSON body")
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_no_constants)
    except RecursionError as exc:
        raise BadRequest("json_parse", "JSON nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest("json_parse", f"invalid JSON body: {exc}") from exc


def check_shape(doc: Any, schema: Any, where: str = "$", depth: int = 0) -> None:
    """Every key must be allowlisted (exact case) at its level; values must have the allowed shape."""
    if depth > MAX_DEPTH:
        raise BadRequest("json_shape", f"{where}: nested too deeply")
    if isinstance(schema, Scalar):
        if isinstance(doc, dict | list):
            raise BadRequest("json_shape", f"{where}: expected a scalar")
        return
    if isinstance(schema, ScalarList):
        if doc is None:
            return
        if not isinstance(doc, list) or any(isinstance(x, dict | list) for x in doc):
            raise BadRequest("json_shape", f"{where}: expected a list of scalars")
        return
    if doc is None:
        return
    if isinstance(schema, ListOf):
        if not isinstance(doc, list):
            raise BadRequest("json_shape", f"{where}: expected a list")
        for i, item in enumerate(doc):
            check_shape(item, schema.item, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(doc, dict):
        raise BadRequest("json_shape", f"{where}: expected an object")
    if isinstance(schema, MapOf):
        for key, value in doc.items():
            if not _MAP_KEY_RE.match(key):
                raise BadRequest("json_shape", f"{where}: key {key[:60]!r} has characters that are not allowed")
            check_shape(value, schema.value, f"{where}.{key}", depth + 1)
        return
    assert isinstance(schema, dict)
    for key, value in doc.items():
        if key not in schema:
            raise BadRequest("json_unknown_key", f"{where}: key {key[:60]!r} is not allowed")
        check_shape(value, schema[key], f"{where}.{key}", depth + 1)


def dumps(doc: Any) -> bytes:
    """The canonical bytes forwarded upstream (what was checked is exactly what dockerd reads)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


# --- body schemas (keys measured from compose v2.40 against API 1.41, plus documented siblings) ---

_MOUNT = {
    "Type": SCALAR,
    "Source": SCALAR,
    "Target": SCALAR,
    "ReadOnly": SCALAR,
    "Consistency": SCALAR,
    "BindOptions": {"Propagation": SCALAR, "NonRecursive": SCALAR, "CreateMountpoint": SCALAR},
    "VolumeOptions": {
        "NoCopy": SCALAR,
        "Labels": MapOf(SCALAR),
        "DriverConfig": {"Name": SCALAR, "Options": MapOf(SCALAR)},
        "Subpath": SCALAR,
    },
    "TmpfsOptions": {"SizeBytes": SCALAR, "Mode": SCALAR},
}

_HOST_CONFIG = {
    "Binds": SCALARS,
    "ContainerIDFile": SCALAR,
    "LogConfig": {"Type": SCALAR, "Config": MapOf(SCALAR)},
    "NetworkMode": SCALAR,
    "PortBindings": MapOf(ListOf({"HostIp": SCALAR, "HostPort": SCALAR})),
    "RestartPolicy": {"Name": SCALAR, "MaximumRetryCount": SCALAR},
    "AutoRemove": SCALAR,
    "VolumeDriver": SCALAR,
    "VolumesFrom": SCALARS,
    "ConsoleSize": SCALARS,
    "Annotations": MapOf(SCALAR),
    "CapAdd": SCALARS,
    "CapDrop": SCALARS,
    "CgroupnsMode": SCALAR,
    "Dns": SCALARS,
    "DnsOptions": SCALARS,
    "DnsSearch": SCALARS,
    "ExtraHosts": SCALARS,
    "GroupAdd": SCALARS,
    "IpcMode": SCALAR,
    "Cgroup": SCALAR,
    "Links": SCALARS,
    "OomScoreAdj": SCALAR,
    "PidMode": SCALAR,
    "Privileged": SCALAR,
    "PublishAllPorts": SCALAR,
    "ReadonlyRootfs": SCALAR,
    "SecurityOpt": SCALARS,
    "StorageOpt": MapOf(SCALAR),
    "Tmpfs": MapOf(SCALAR),
    "UTSMode": SCALAR,
    "UsernsMode": SCALAR,
    "ShmSize": SCALAR,
    "Sysctls": MapOf(SCALAR),
    "Runtime": SCALAR,
    "Isolation": SCALAR,
    "CpuShares": SCALAR,
    "Memory": SCALAR,
    "NanoCpus": SCALAR,
    "CgroupParent": SCALAR,
    "BlkioWeight": SCALAR,
    "BlkioWeightDevice": ListOf({"Path": SCALAR, "Weight": SCALAR}),
    "BlkioDeviceReadBps": ListOf({"Path": SCALAR, "Rate": SCALAR}),
    "BlkioDeviceWriteBps": ListOf({"Path": SCALAR, "Rate": SCALAR}),
    "BlkioDeviceReadIOps": ListOf({"Path": SCALAR, "Rate": SCALAR}),
    "BlkioDeviceWriteIOps": ListOf({"Path": SCALAR, "Rate": SCALAR}),
    "CpuPeriod": SCALAR,
    "CpuQuota": SCALAR,
    "CpuRealtimePeriod": SCALAR,
    "CpuRealtimeRuntime": SCALAR,
    "CpusetCpus": SCALAR,
    "CpusetMems": SCALAR,
    "Devices": ListOf({"PathOnHost": SCALAR, "PathInContainer": SCALAR, "CgroupPermissions": SCALAR}),
    "DeviceCgroupRules": SCALARS,
    "DeviceRequests": ListOf(
        {"Driver": SCALAR, "Count": SCALAR, "DeviceIDs": SCALARS, "Capabilities": SCALARS, "Options": MapOf(SCALAR)}
    ),
    "KernelMemory": SCALAR,
    "KernelMemoryTCP": SCALAR,
    "MemoryReservation": SCALAR,
    "MemorySwap": SCALAR,
    "MemorySwappiness": SCALAR,
    "OomKillDisable": SCALAR,
    "PidsLimit": SCALAR,
    "Ulimits": ListOf({"Name": SCALAR, "Soft": SCALAR, "Hard": SCALAR}),
    "CpuCount": SCALAR,
    "CpuPercent": SCALAR,
    "IOMaximumIOps": SCALAR,
    "IOMaximumBandwidth": SCALAR,
    "Mounts": ListOf(_MOUNT),
    "MaskedPaths": SCALARS,
    "ReadonlyPaths": SCALARS,
    "Init": SCALAR,
}

_ENDPOINT = {
    "IPAMConfig": {"IPv4Address": SCALAR, "IPv6Address": SCALAR, "LinkLocalIPs": SCALARS},
    "Links": SCALARS,
    "Aliases": SCALARS,
    "MacAddress": SCALAR,
    "DriverOpts": MapOf(SCALAR),
    "NetworkID": SCALAR,
    "EndpointID": SCALAR,
    "Gateway": SCALAR,
    "IPAddress": SCALAR,
    "IPPrefixLen": SCALAR,
    "IPv6Gateway": SCALAR,
    "GlobalIPv6Address": SCALAR,
    "GlobalIPv6PrefixLen": SCALAR,
    "DNSNames": SCALARS,
}

CONTAINER_CREATE = {
    "Hostname": SCALAR,
    "Domainname": SCALAR,
    "User": SCALAR,
    "AttachStdin": SCALAR,
    "AttachStdout": SCALAR,
    "AttachStderr": SCALAR,
    "ExposedPorts": MapOf({}),
    "Tty": SCALAR,
    "OpenStdin": SCALAR,
    "StdinOnce": SCALAR,
    "Env": SCALARS,
    "Cmd": SCALARS,
    "Healthcheck": {
        "Test": SCALARS,
        "Interval": SCALAR,
        "Timeout": SCALAR,
        "StartPeriod": SCALAR,
        "StartInterval": SCALAR,
        "Retries": SCALAR,
    },
    "ArgsEscaped": SCALAR,
    "Image": SCALAR,
    "Volumes": MapOf({}),
    "WorkingDir": SCALAR,
    "Entrypoint": SCALARS,
    "NetworkDisabled": SCALAR,
    "MacAddress": SCALAR,
    "OnBuild": SCALARS,
    "Labels": MapOf(SCALAR),
    "StopSignal": SCALAR,
    "StopTimeout": SCALAR,
    "Shell": SCALARS,
    "HostConfig": _HOST_CONFIG,
    "NetworkingConfig": {"EndpointsConfig": MapOf(_ENDPOINT)},
}

EXEC_CREATE = {
    "User": SCALAR,
    "Privileged": SCALAR,
    "Tty": SCALAR,
    "ConsoleSize": SCALARS,
    "AttachStdin": SCALAR,
    "AttachStderr": SCALAR,
    "AttachStdout": SCALAR,
    "DetachKeys": SCALAR,
    "Env": SCALARS,
    "WorkingDir": SCALAR,
    "Cmd": SCALARS,
    "Detach": SCALAR,
}

EXEC_START = {"Detach": SCALAR, "Tty": SCALAR, "ConsoleSize": SCALARS}

VOLUME_CREATE = {"Name": SCALAR, "Driver": SCALAR, "DriverOpts": MapOf(SCALAR), "Labels": MapOf(SCALAR)}
