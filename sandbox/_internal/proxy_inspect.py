"""Facts about request bodies, for the policy: is this create a plain replica of a project service?

Labels on a create body prove nothing (anyone can stamp ``com.docker.compose.project=dogbank``), and
the proxy has no trustworthy copy of the compose file at run time (the file the jailed compose reads
is the client's input). The trusted model of "what a replica of service S looks like" is therefore an
existing, non-one-off container of S in the project, created by the operator's own ``compose up``:
the new container must run the same image, command, entrypoint, user, working dir, environment and
network mode, and may only use mounts that container already has. A service that has no container yet
cannot be created through the proxy (initial deployment is not a runner action).

Everything here only *describes* the body; the allow/deny rules are in ``policies/docker_proxy.rego``.
"""

from __future__ import annotations

from typing import Any

from sandbox._internal.proxy_resolve import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL, Resolved, Resolver

_HARDENING_EXACT = ("CapDrop", "ReadonlyRootfs", "NetworkMode", "Init", "OomKillDisable")
# Resource and misc fields: empty in the body means "engine default"; a set value must equal the reference.
_SUBSET_FIELDS = (
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "NanoCpus",
    "CpuShares",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "Ulimits",
    "ShmSize",
    "OomScoreAdj",
    "GroupAdd",
    "ExtraHosts",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "Links",
    "VolumeDriver",
    "Isolation",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "StorageOpt",
    "Annotations",
    "KernelMemory",
    "KernelMemoryTCP",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
)


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {})


def _norm(value: Any) -> Any:
    return None if _empty(value) else value


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _pruned(value: Any) -> Any:
    """A JSON value with empty members dropped, so `{"ReadOnly": false}` equals `{}`."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in sorted(value.items()) if not _empty(_pruned(v))}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _mount_key(m: Any) -> dict[str, Any]:
    """The whole mount (driver options included: a new volume with driver options is a host mount)."""
    pruned = _pruned(_dict(m))
    return pruned if isinstance(pruned, dict) else {}


def _effective(body: dict[str, Any], image_cfg: dict[str, Any]) -> dict[str, Any]:
    """What dockerd will run: the body merged with the image config the way daemon/create merges it."""
    cmd, entrypoint = _list(body.get("Cmd")), _list(body.get("Entrypoint"))
    if not entrypoint:
        if not cmd:
            cmd = _list(image_cfg.get("Cmd"))
        if body.get("Entrypoint") is None:
            entrypoint = _list(image_cfg.get("Entrypoint"))
    env: dict[str, str] = {}
    for item in [*_list(image_cfg.get("Env")), *_list(body.get("Env"))]:
        key, _, _ = str(item).partition("=")
        env[key] = str(item)
    return {
        "Cmd": cmd,
        "Entrypoint": entrypoint,
        "User": body.get("User") or image_cfg.get("User") or "",
        "WorkingDir": body.get("WorkingDir") or image_cfg.get("WorkingDir") or "",
        "Env": sorted(env.values()),
    }


def create_facts(body: dict[str, Any], name: str, resolver: Resolver) -> dict[str, Any]:
    """Describe a container-create body and how it differs from the service's reference container."""
    hc = _dict(body.get("HostConfig"))
    labels = {str(k): str(v) for k, v in _dict(body.get("Labels")).items()}
    service = labels.get(SERVICE_LABEL)
    facts: dict[str, Any] = {
        "name": name,
        "image": body.get("Image") or "",
        "labels": {
            "project": labels.get(PROJECT_LABEL),
            "service": service,
            "oneoff": labels.get(ONEOFF_LABEL),
            "foreign_keys": sorted(k for k in labels if not k.startswith("com.docker.compose.")),
        },
        "privileged": bool(hc.get("Privileged")),
        "cap_add": _list(hc.get("CapAdd")),
        "devices": _list(hc.get("Devices")),
        "device_requests": _list(hc.get("DeviceRequests")),
        "device_cgroup_rules": _list(hc.get("DeviceCgroupRules")),
        "security_opt": _list(hc.get("SecurityOpt")),
        "sysctls": _dict(hc.get("Sysctls")),
        "runtime": hc.get("Runtime") or "",
        "cgroup_parent": hc.get("CgroupParent") or "",
        "cgroup": hc.get("Cgroup") or "",
        "masked_paths": hc.get("MaskedPaths"),
        "readonly_paths": hc.get("ReadonlyPaths"),
        "port_bindings": _dict(hc.get("PortBindings")),
        "publish_all_ports": bool(hc.get("PublishAllPorts")),
        "volumes_from": _list(hc.get("VolumesFrom")),
        "auto_remove": bool(hc.get("AutoRemove")),
        "namespaces": {
            "network": hc.get("NetworkMode") or "",
            "pid": hc.get("PidMode") or "",
            "ipc": hc.get("IpcMode") or "",
            "uts": hc.get("UTSMode") or "",
            "userns": hc.get("UsernsMode") or "",
            "cgroupns": hc.get("CgroupnsMode") or "",
        },
        "log_driver": _dict(hc.get("LogConfig")).get("Type") or "",
        "binds": _list(hc.get("Binds")),
        "mounts": [_mount_key(m) for m in _list(hc.get("Mounts"))],
        "reference": {"found": False, "id": ""},
        "mismatches": [],
        "undeclared_mounts": [],
    }
    if not service or labels.get(PROJECT_LABEL) != resolver.project:
        return facts
    ref = resolver.reference_container(service)
    if ref is None:
        return facts
    facts["reference"] = {"found": True, "id": ref.id, "name": ref.name}
    image = resolver.image(str(body.get("Image") or "")) if body.get("Image") else None
    image_cfg = _dict(_dict(image).get("Config"))
    facts["mismatches"] = _mismatches(body, hc, ref, image, image_cfg)
    facts["undeclared_mounts"] = _undeclared_mounts(body, hc, ref)
    return facts


def _mismatches(
    body: dict[str, Any], hc: dict[str, Any], ref: Resolved, image: dict[str, Any] | None, image_cfg: dict[str, Any]
) -> list[str]:
    rcfg = _dict(ref.raw.get("Config"))
    rhc = _dict(ref.raw.get("HostConfig"))
    out: list[str] = []
    if (body.get("Image") or "") != (rcfg.get("Image") or ""):
        out.append("Image")
    if image is None or image.get("Id") != ref.raw.get("Image"):
        out.append("ImageID")
    eff = _effective(body, image_cfg)
    ref_env = sorted(str(x) for x in _list(rcfg.get("Env")))
    for key in ("Cmd", "Entrypoint", "User", "WorkingDir"):
        if _norm(eff[key]) != _norm(rcfg.get(key)):
            out.append(key)
    if eff["Env"] != ref_env:
        out.append("Env")
    # A healthcheck is a command the engine runs inside the container: another way to exec.
    if body.get("Healthcheck") is not None and body.get("Healthcheck") != rcfg.get("Healthcheck"):
        out.append("Healthcheck")
    for key in ("Tty", "OpenStdin", "StdinOnce"):
        if bool(body.get(key)) != bool(rcfg.get(key)):
            out.append(key)
    for key in _HARDENING_EXACT:
        a, b = hc.get(key), rhc.get(key)
        if key == "CapDrop":
            a, b = sorted(_list(a)), sorted(_list(b))
        if _norm(a) != _norm(b):
            out.append(f"HostConfig.{key}")
    for key in _SUBSET_FIELDS:
        if not _empty(hc.get(key)) and hc.get(key) != rhc.get(key):
            out.append(f"HostConfig.{key}")
    ref_nets = set(_dict(_dict(ref.raw.get("NetworkSettings")).get("Networks")))
    body_nets = set(_dict(_dict(body.get("NetworkingConfig")).get("EndpointsConfig")))
    if not body_nets <= ref_nets:
        out.append("NetworkingConfig.EndpointsConfig")
    if not set(_dict(body.get("Volumes"))) <= set(_dict(rcfg.get("Volumes"))):
        out.append("Volumes")
    if not set(_dict(hc.get("Tmpfs"))) <= set(_dict(rhc.get("Tmpfs"))):
        out.append("HostConfig.Tmpfs")
    for key in ("Hostname", "Domainname"):  # compose sets them only when the service declares them
        if body.get(key) and body.get(key) != rcfg.get(key):
            out.append(key)
    return sorted(out)


def _undeclared_mounts(body: dict[str, Any], hc: dict[str, Any], ref: Resolved) -> list[str]:
    rhc = _dict(ref.raw.get("HostConfig"))
    ref_binds = set(map(str, _list(rhc.get("Binds"))))
    ref_mounts = [_mount_key(m) for m in _list(rhc.get("Mounts"))]
    out = [f"bind {b}" for b in map(str, _list(hc.get("Binds"))) if b not in ref_binds]
    for m in _list(hc.get("Mounts")):
        key = _mount_key(m)
        if key not in ref_mounts:
            out.append(f"{key.get('Type', '')} {key.get('Source', '')}:{key.get('Target', '')}")
    return out


def exec_create_facts(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "cmd": [str(x) for x in _list(body.get("Cmd"))],
        "cmd_is_strings": all(isinstance(x, str) for x in _list(body.get("Cmd"))),
        "user": body.get("User") or "",
        "privileged": bool(body.get("Privileged")),
        "env": _list(body.get("Env")),
        "working_dir": body.get("WorkingDir") or "",
        "tty": bool(body.get("Tty")),
        "detach_keys": body.get("DetachKeys") or "",
    }


def exec_inspect_facts(raw: dict[str, Any], container: dict[str, Any] | None) -> dict[str, Any]:
    """What an existing exec will run, from the engine's own record (not from the client).

    The engine records an exec created without ``User`` as running as the container's user, so
    ``user`` is reported empty exactly when it is the container's own user.
    """
    pc = _dict(raw.get("ProcessConfig"))
    user = str(pc.get("user") or "")
    if container is not None and user == str(_dict(container.get("Config")).get("User") or ""):
        user = ""
    return {
        "cmd": [str(pc.get("entrypoint") or ""), *map(str, _list(pc.get("arguments")))],
        "user": user,
        "privileged": bool(pc.get("privileged")),
        "running": bool(raw.get("Running")),
    }


def volume_create_facts(body: dict[str, Any]) -> dict[str, Any]:
    labels = {str(k): str(v) for k, v in _dict(body.get("Labels")).items()}
    return {
        "name": body.get("Name") or "",
        "driver": body.get("Driver") or "",
        "driver_opts": _dict(body.get("DriverOpts")),
        "labels": {"project": labels.get(PROJECT_LABEL)},
    }
