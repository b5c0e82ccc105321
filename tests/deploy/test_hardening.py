"""The container hardening in docker-compose.yml and hardening/: shape checks, then the real dockerd.

The profiles are attacked for real: a container hardened exactly like each compose service tries the
operations the profile exists to stop (and that Docker's default profile would let through once the
runner holds CAP_SYS_ADMIN), and the runner's jail must still work inside that container.
"""

from __future__ import annotations

import grp
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyseccomp
import pytest

from sandbox._internal import demo_stack
from sandbox._internal.doctor_http import unix_get
from sandbox.config import PolicyConfig, ProxyConfig, load_config
from sandbox.policy import open_engine
from sandbox.proxy import DockerProxy
from tests.deploy.support import COMPOSE_FILE, HARDENING, PROFILES, REPO, compose_model, run_hardened
from tests.support.env import require

EPERM = 1
SERVICES = ("par-runner", "par-docker-proxy", "opa")
ACTIONS = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_LOG"}
#: Never allowed unconditionally in any profile: the classic container-escape and kernel-attack-surface calls.
FORBIDDEN = {
    "mount", "umount2", "pivot_root", "chroot", "setns", "bpf", "ptrace", "process_vm_readv", "process_vm_writev",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "open_by_handle_at",
    "name_to_handle_at", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "perf_event_open",
    "keyctl", "add_key", "request_key", "fsopen", "fsmount", "move_mount", "open_tree", "reboot", "swapon",
    "clone3", "unshare",
}
SYS_ADMIN_CAPS = ["SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE"]


@pytest.fixture(scope="module")
def model() -> dict:
    require("docker")
    return compose_model()


def _load(name: str) -> dict:
    return json.loads(PROFILES[name].read_text())


# ---- docker-compose.yml -------------------------------------------------------------------------------


def test_compose_config_passes_without_the_external_network(model: dict) -> None:
    # `config` validates the whole file (the external network only matters at `up`).
    assert set(model["services"]) == set(SERVICES)
    assert model["networks"]["dogbank_default"]["external"] is True
    assert model["networks"]["par-internal"]["internal"] is True


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    require("docker")
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE_FILE.read_text().replace("pids_limit: 512", "pids_limit: lots"))
    proc = subprocess.run(["docker", "compose", "-f", str(bad), "config", "-q"], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode != 0 and "pids_limit" in proc.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_hardened(model: dict, service: str) -> None:
    svc = model["services"][service]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    opts = svc["security_opt"]
    assert "no-new-privileges:true" in opts
    assert f"seccomp=hardening/{service}.json" in opts
    assert svc["tmpfs"] and all("nosuid" in t and "nodev" in t for t in svc["tmpfs"])
    assert svc["mem_limit"] and svc["pids_limit"] and svc["cpus"]
    assert svc["memswap_limit"] == svc["mem_limit"]  # no swap past the limit
    logs = json.loads(svc["labels"]["com.datadoghq.ad.logs"])
    assert logs[0]["service"].startswith(("par-",)) and logs[0]["source"]
    if service != "opa":  # the static OPA image has no client to probe itself; the runner's doctor does
        assert svc["healthcheck"]["test"][:2] == ["CMD", "par"]
        assert "doctor" in svc["healthcheck"]["test"]
    for volume in svc.get("volumes", []):
        if volume["type"] == "bind" and volume["target"] not in ("/var/run/docker.sock", "/run/par"):
            assert volume.get("read_only") is True, f"{service}: {volume['target']} should be read-only"


def test_only_the_proxy_mounts_the_docker_socket(model: dict) -> None:
    holders = [
        name for name, svc in model["services"].items()
        for v in svc.get("volumes", []) if v["source"].endswith("docker.sock") or v["target"].endswith("docker.sock")
    ]
    assert holders == ["par-docker-proxy"]
    proxy = model["services"]["par-docker-proxy"]
    assert proxy["network_mode"] == "none"
    assert "cap_add" not in proxy
    assert proxy["user"] == "0:0" and proxy["group_add"] == ["10001"]  # uid 0, zero capabilities


def test_runner_capabilities_are_exactly_what_the_jail_needs_each_with_a_reason(model: dict) -> None:
    assert sorted(model["services"]["par-runner"]["cap_add"]) == sorted(SYS_ADMIN_CAPS)
    text = COMPOSE_FILE.read_text()
    for cap in SYS_ADMIN_CAPS:
        line = re.search(rf"^\s+- {cap}\s+#\s*(\S.*)$", text, re.MULTILINE)
        assert line and len(line.group(1)) > 20, f"cap_add {cap} has no reason written next to it"
    assert "apparmor=par-runner" in model["services"]["par-runner"]["security_opt"]


def test_every_profile_is_referenced_and_every_reference_exists(model: dict) -> None:
    referenced = {
        opt.split("=", 1)[1] for svc in model["services"].values() for opt in svc["security_opt"]
        if opt.startswith("seccomp=")
    }
    assert referenced == {f"hardening/{p.name}" for p in PROFILES.values()}
    assert all((REPO / r).is_file() for r in referenced)


def test_container_config_file_loads_with_the_runner_schema() -> None:
    cfg = load_config(HARDENING / "runner.container.yaml")
    assert cfg.proxy.in_process is False and cfg.jail.user == "par-jail"
    assert str(cfg.proxy.socket_path).startswith("/run/par/")
    assert cfg.docker.compose_file.is_relative_to(Path("/srv/dogbank"))
    proxy = load_config(HARDENING / "proxy.container.yaml")
    assert proxy.policy.engine == "embedded"  # network_mode none: an OPA backend would deny everything
    assert proxy.proxy.socket_path == cfg.proxy.socket_path and proxy.proxy.socket_group == "par-jail"
    assert proxy.audit.dir != cfg.audit.dir  # one writer per audit log


# ---- seccomp profiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_seccomp_profile_shape_and_syscall_names(name: str) -> None:
    require("seccomp")
    prof = _load(name)
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == EPERM
    arches = {a["architecture"] for a in prof["archMap"]}
    assert arches == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}
    assert all(a["subArchitectures"] == [] for a in prof["archMap"]), "32-bit/x32 ABIs must stay off"
    seen = set()
    for rule in prof["syscalls"]:
        assert rule["action"] in ACTIONS
        assert rule["names"] and rule.get("comment")
        for n in rule["names"]:
            nr = max(pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, n),
                     pyseccomp.resolve_syscall(pyseccomp.Arch.AARCH64, n))
            assert nr >= 0, f"{name}: '{n}' is not a syscall on x86_64 or aarch64"
            seen.add(n)
        for arg in rule.get("args", []):
            assert set(arg) <= {"index", "value", "valueTwo", "op"} and arg["op"].startswith("SCMP_CMP_")
    unconditional = {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
                     for n in r["names"]}
    assert not (unconditional & FORBIDDEN), sorted(unconditional & FORBIDDEN)
    assert "socket" not in unconditional, "socket must be limited to address families"
    assert {"read", "write", "exit_group", "futex", "execve"} <= seen


def test_runner_profile_allows_unshare_only_for_a_network_namespace() -> None:
    rules = [r for r in _load("par-runner")["syscalls"] if "unshare" in r["names"]]
    assert len(rules) == 1 and rules[0]["args"] == [{"index": 0, "value": 0x40000000, "op": "SCMP_CMP_EQ"}]
    for other in ("par-docker-proxy", "opa"):
        assert not [r for r in _load(other)["syscalls"] if "unshare" in r["names"]]


def test_the_readme_documents_every_profile() -> None:
    readme = (HARDENING / "README.md").read_text()
    for name in PROFILES:
        assert f"{name}.json" in readme


# ---- the real dockerd applies them ---------------------------------------------------------------------


def _probe(service: str, **kw: object) -> dict[str, int]:
    proc = run_hardened(service, [str(REPO / "tests/deploy/probe_syscalls.py")], **kw)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def engine() -> None:
    require("docker")
    demo_stack.ensure_images()


def test_docker_default_profile_with_sys_admin_lets_the_escapes_through(engine: None) -> None:
    # Baseline for the attacks below: why a custom profile is needed once the runner holds CAP_SYS_ADMIN.
    res = _probe("par-runner", seccomp="docker-default", caps=["SYS_ADMIN"])
    assert res["unshare_mnt"] == 0 and res["unshare_user"] == 0 and res["mount_tmpfs"] == 0


def test_runner_profile_blocks_escapes_even_with_sys_admin(engine: None) -> None:
    res = _probe("par-runner")
    assert res["unshare_net"] == 0  # what the jail needs
    assert res["landlock_create_ruleset"] == 0  # the ABI probe works (Landlock in the jail)
    for attack in ("unshare_mnt", "unshare_user", "unshare_net_pid", "mount_tmpfs", "setns", "ptrace_parent",
                   "io_uring_setup", "bpf", "af_packet", "af_vsock"):
        assert res[attack] == EPERM, (attack, res)
    assert res["af_unix"] == 0 and res["af_inet"] == 0 and res["af_netlink"] == 0


def test_proxy_profile_allows_unix_sockets_only(engine: None) -> None:
    res = _probe("par-docker-proxy")
    assert res["af_unix"] == 0
    for attack in ("af_inet", "af_inet6", "af_netlink", "af_packet", "unshare_net", "mount_tmpfs",
                   "landlock_create_ruleset", "ptrace_parent"):
        assert res[attack] == EPERM, (attack, res)


def test_opa_profile_allows_inet_only(engine: None) -> None:
    res = _probe("opa")
    assert res["af_inet"] == 0 and res["af_inet6"] == 0
    for attack in ("af_unix", "af_netlink", "af_packet", "unshare_net", "mount_tmpfs", "io_uring_setup"):
        assert res[attack] == EPERM, (attack, res)


def test_the_jail_applies_every_control_inside_the_hardened_runner_container(engine: None) -> None:
    require("landlock", "seccomp")
    proc = run_hardened(
        "par-runner",
        [str(REPO / "tests/deploy/probe_jail.py"), "--", "/bin/sh", "-c", "echo hi > f && cat f && id -u"],
        extra=["-v", "/etc/passwd:/etc/passwd:ro", "-v", "/etc/group:/etc/group:ro"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["exit_code"] == 0 and doc["stdout"].split() == ["hi", "65534"]
    assert {"identity", "netns", "seccomp", "landlock", "no_new_privs", "rlimits"} <= set(doc["controls"])
    assert doc["tmp_left"] == []  # the per-run dir was removed (needs DAC_OVERRIDE, see docker-compose.yml)


def test_without_dac_override_the_runner_cannot_use_the_jail_dir(engine: None) -> None:
    # Why DAC_OVERRIDE is in cap_add: drop it and the jail cannot enter its own per-run directory.
    caps = [c for c in SYS_ADMIN_CAPS if c != "DAC_OVERRIDE"]
    proc = run_hardened(
        "par-runner",
        [str(REPO / "tests/deploy/probe_jail.py"), "--", "/bin/true"],
        caps=caps,
        extra=["-v", "/etc/passwd:/etc/passwd:ro", "-v", "/etc/group:/etc/group:ro"],
    )
    assert proc.returncode != 0 and "Permission denied" in proc.stderr


# ---- AppArmor and Dockerfile -----------------------------------------------------------------------------


def test_apparmor_profile_parses_and_a_broken_one_does_not(tmp_path: Path) -> None:
    parser = shutil.which("apparmor_parser")
    profile = HARDENING / "apparmor" / "par-runner"
    text = profile.read_text()
    assert re.search(r"^profile par-runner ", text, re.MULTILINE)
    assert "deny mount," in text and "deny ptrace," in text and "deny /var/run/docker.sock" in text
    if parser is None:
        return  # structural checks only: `apt-get install apparmor` for the compile check (.ci/run lacks it)
    ok = subprocess.run([parser, "-Q", "-K", str(profile)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "par-runner"
    broken.write_text(text.replace("capability kill,", "capability kill"))
    bad = subprocess.run([parser, "-Q", "-K", str(broken)], capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_dockerfile_is_multistage_pinned_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    pin = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert pin and re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", pin.group(1))
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert [s[1] for s in stages] == ["builder", "runtime"] and all(s[0] == "${PYTHON_IMAGE}" for s in stages)
    final = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER par$", final, re.MULTILINE)
    assert "useradd --system --uid 10001 --gid par-jail" in final
    assert "/usr/local/lib/docker/cli-plugins/docker-compose" in text
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in final, f"build tooling in the final stage: {tool}"
    assert "COPY --from=builder" in final
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!sandbox/"]


def test_a_read_only_docker_socket_mount_still_gives_the_whole_api(engine: None) -> None:
    # The seed mounted docker.sock `:ro`. connect(2) ignores the mount's read-only flag (it only stops
    # chmod/unlink of the socket inode), so the container can still create containers: host root.
    name = f"par-deploytest-ro-{uuid.uuid4().hex[:8]}"
    try:
        proc = run_hardened("par-docker-proxy", [str(REPO / "tests/deploy/probe_ro_socket.py"), name], caps=[],
                            extra=["-v", "/var/run/docker.sock:/var/run/docker.sock:ro"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"create": 201, "delete": 204}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_docker_compose_runs_in_the_jail_in_the_hardened_runner_container_through_the_proxy(
    demo_project: tuple[str, Path], world_readable_dir: Path
) -> None:
    # The production path minus the image: hardened container (caps, seccomp, no-new-privileges, read-only,
    # no network, no Docker socket) -> jail (all controls) -> the real docker CLI and compose plugin (Go)
    # -> the project-scoped proxy (on the host here) -> dockerd.
    require("landlock", "seccomp", "root")
    project, compose_file = demo_project
    listen = world_readable_dir / f"proxy-{uuid.uuid4().hex[:8]}.sock"
    engine = open_engine(PolicyConfig(path=REPO / "policies", watch=False))
    proxy = DockerProxy(listen=listen, upstream=Path("/var/run/docker.sock"), project=project, policy=engine,
                        audit=None, cfg=ProxyConfig(socket_group=""), socket_gid=grp.getgrnam("nogroup").gr_gid)
    proxy.start()
    mounts = ["-v", "/etc/passwd:/etc/passwd:ro", "-v", "/etc/group:/etc/group:ro",
              "-v", f"{world_readable_dir}:{world_readable_dir}:ro"]
    name = "par-deploytest-unset"
    base = [str(REPO / "tests/deploy/probe_jail.py"), "--proxy-socket", str(listen), "--project", project,
            "--read-path", str(compose_file.parent), "--"]
    try:
        ok = run_hardened("par-runner", [*base, "docker", "compose", "-p", project, "-f", str(compose_file),
                                         "ps", "--all", "--format", "{{.Service}}"], extra=mounts)
        assert ok.returncode == 0, ok.stderr[-2000:]
        doc = json.loads(ok.stdout.strip().splitlines()[-1])
        assert doc["exit_code"] == 0, doc["stderr"]
        assert "transaction-service" in doc["stdout"].split() and "netns" in doc["controls"]
        name = f"par-deploytest-escape-{uuid.uuid4().hex[:8]}"
        escape = run_hardened("par-runner", [*base, "docker", "run", "--name", name, "--privileged",
                                             "--network", "none", "-v", "/:/host", "dogbank/busybox:local", "true"],
                              extra=mounts)
        doc = json.loads(escape.stdout.strip().splitlines()[-1])
        assert doc["exit_code"] != 0 and "create_privileged" in doc["stderr"], doc["stderr"]  # the proxy's rule
        gone = subprocess.run(["docker", "inspect", name], capture_output=True, check=False)
        assert gone.returncode != 0, "the proxy let a privileged container with / mounted be created"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        proxy.stop()
        engine.close()


def test_the_proxy_and_its_healthcheck_run_under_the_proxy_profile(
    demo_project: tuple[str, Path], world_readable_dir: Path
) -> None:
    # `par proxy` (Python, h11, the regorus engine) serving under par-docker-proxy.json with no capabilities
    # and no network, answering the host; then its compose healthcheck (`par doctor --only proxy_socket`).
    project, _ = demo_project
    work = world_readable_dir / f"proxy-svc-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    work.chmod(0o777)
    listen = work / "docker-proxy.sock"
    config = work / "proxy.yaml"
    config.write_text(json.dumps({
        "policy": {"engine": "embedded", "path": str(REPO / "policies")},
        "docker": {"project": project, "upstream_socket": "/var/run/docker.sock"},
        "proxy": {"socket_path": str(listen), "socket_group": "", "in_process": False},
        "logging": {"format": "json"},
    }))
    name = f"par-deploytest-proxy-{uuid.uuid4().hex[:8]}"
    mounts = ["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{work}:{work}"]
    try:
        started = run_hardened("par-docker-proxy", ["-m", "sandbox", "--config", str(config), "proxy", "--no-audit"],
                               extra=mounts, detach_as=name)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 30
        while not listen.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False).stderr
        assert listen.exists(), logs[-2000:]
        assert unix_get(listen, "/_ping").body == b"OK"
        listed = unix_get(listen, "/v1.41/containers/json?all=1")
        assert listed.status == 200
        assert {c["Labels"]["com.docker.compose.project"] for c in listed.json()} == {project}
        assert unix_get(listen, "/v1.41/images/json").status == 403  # not something compose needs
        health = subprocess.run(["docker", "exec", name, sys.executable, "-m", "sandbox", "--config", str(config),
                                 "doctor", "--only", "proxy_socket"], capture_output=True, text=True, check=False,
                                timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_a_static_go_binary_starts_under_the_opa_profile(engine: None) -> None:
    # OPA is a static Go binary; no OPA image can be pulled here, so the Go runtime's start-up (threads,
    # signals, memory) is exercised with another static Go binary, the compose v2 plugin, as OPA's uid.
    plugin = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
    assert plugin.exists(), ".ci/run installs the compose plugin here"
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
         "--security-opt", "no-new-privileges:true", "--security-opt", f"seccomp={PROFILES['opa']}",
         "-v", f"{plugin}:/docker-compose:ro", "dogbank/busybox:local", "/docker-compose", "version"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("Docker Compose version"), proc.stderr
