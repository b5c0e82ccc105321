"""Every command the original (Portuguese) README lists exists and works here.

The seed lives in ../shared/seed/ beside the repository (a copy of it in CI); when it is not there the
test uses the list below, which was transcribed from it, so the check never silently disappears.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox._internal import demo_stack
from sandbox.catalog import load_catalog

REPO = Path(__file__).resolve().parents[2]
SEED_CANDIDATES = [REPO.parent / "shared" / "seed" / "dogbank-par-README.pt-BR.md",
                   Path("/work/shared/seed/dogbank-par-README.pt-BR.md")]
TRANSCRIBED = [
    "restart_transaction_service", "restart_pix_worker", "restart_auth_service", "restart_chatbot_service",
    "restart_account_service", "restart_bancocentral_service", "restart_fraud_detection", "scale_pix_worker_3",
    "scale_pix_worker_5", "scale_pix_worker_1", "restart_all_backend", "restart_messaging",
    "check_services_status", "check_service_logs_*", "check_kafka_topics",
]


def seed_commands() -> list[str]:
    for cand in SEED_CANDIDATES:
        if cand.exists():
            text = cand.read_text(encoding="utf-8")
            return re.findall(r"^\| `([a-z_*0-9]+)` \|", text, flags=re.M)
    return TRANSCRIBED


def test_seed_command_table_is_what_we_transcribed() -> None:
    assert seed_commands() == TRANSCRIBED


def test_every_seed_action_resolves_in_the_catalog() -> None:
    catalog = load_catalog(REPO / "config" / "credentials" / "script.yaml")
    for name in seed_commands():
        if name.endswith("*"):
            matches = [a for a in catalog.actions if a.startswith(name[:-1])]
            assert len(matches) >= 10, name  # one per service of the stack
        else:
            catalog.get(name)


def test_seed_setup_files_exist_where_the_seed_says() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    names = [svc.get("container_name") for svc in compose["services"].values()]
    assert "dogbank-private-action-runner" in names  # `docker logs dogbank-private-action-runner`
    assert compose["networks"]["dogbank_default"]["external"] is True
    assert (REPO / "config" / "credentials" / "script.yaml").exists()  # "Verifique ... a allowlist"
    assert (REPO / "examples" / "dogbank" / "docker-compose.full.yml").exists()  # docker-compose.full.yml


@pytest.mark.docker
def test_seed_network_step_works(docker_engine: None) -> None:
    """`docker network ls | grep dogbank_default` after bringing the DogBank stack up, then
    `docker network inspect dogbank_default` (the troubleshooting step)."""
    network = demo_stack.seed_network("dogbank")
    assert network == "dogbank_default"
    existed = subprocess.run(["docker", "network", "inspect", network], capture_output=True, check=False)
    demo_stack.ensure_network(network)
    try:
        ls = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                            check=True).stdout.split()
        assert network in ls
        inspect = subprocess.run(["docker", "network", "inspect", "-f", "{{.Internal}}", network],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert inspect == "true" or existed.returncode == 0  # ours is internal: no route out
    finally:
        if existed.returncode != 0:
            subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


def test_docker_compose_v1_style_command_exists() -> None:
    """The seed types `docker-compose ...`: the compose extra ships that binary too."""
    venv_bin = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "docker-compose"
    found = shutil.which("docker-compose") or (str(venv_bin) if venv_bin.exists() else None)
    assert found, "install the [compose] extra"
    out = subprocess.run([found, "version"], capture_output=True, text=True, check=True).stdout
    assert "v2." in out
