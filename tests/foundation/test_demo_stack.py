"""The catalog's argv driven directly (no jail, no proxy yet) through the real `docker compose`
against the demo stack: restart, scale 1->3->1, logs, kafka topics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest

from sandbox.catalog import Catalog, load_catalog

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "config" / "credentials" / "script.yaml")


def run_action(catalog: Catalog, project: str, compose_file: Path, name: str, **params: object) -> str:
    validated = catalog.validate_parameters(name, params)
    argv = catalog.render(name, validated, {"project": project, "compose_file": str(compose_file)})
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout + proc.stderr


def containers(project: str, service: str) -> list[docker.models.containers.Container]:
    client = docker.from_env()
    return client.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                     f"com.docker.compose.service={service}"]})


def test_restart_really_restarts_the_container(catalog: Catalog, demo_project: tuple[str, Path]) -> None:
    project, compose_file = demo_project
    (before,) = containers(project, "transaction-service")
    started = before.attrs["State"]["StartedAt"]
    run_action(catalog, project, compose_file, "restart_transaction_service")
    (after,) = containers(project, "transaction-service")
    assert after.id == before.id
    assert after.attrs["State"]["StartedAt"] != started
    assert after.status == "running"


def test_scale_pix_worker_1_3_1(catalog: Catalog, demo_project: tuple[str, Path]) -> None:
    project, compose_file = demo_project
    assert len(containers(project, "pix-worker")) == 1
    run_action(catalog, project, compose_file, "scale_pix_worker_3")
    assert len(containers(project, "pix-worker")) == 3
    run_action(catalog, project, compose_file, "scale_pix_worker_1")
    assert len(containers(project, "pix-worker")) == 1


def test_logs_and_status_and_kafka_topics(catalog: Catalog, demo_project: tuple[str, Path]) -> None:
    project, compose_file = demo_project
    logs = run_action(catalog, project, compose_file, "check_service_logs", service="pix-worker", tail=5)
    assert "pix-worker started" in logs
    assert "auth-service started" in run_action(catalog, project, compose_file, "check_service_logs_auth")
    status = run_action(catalog, project, compose_file, "check_services_status")
    assert "transaction-service" in status and "kafka" in status
    topics = run_action(catalog, project, compose_file, "check_kafka_topics").split()
    assert "pix-transactions" in topics


def test_group_restart_messaging(catalog: Catalog, demo_project: tuple[str, Path]) -> None:
    project, compose_file = demo_project
    before = {s: containers(project, s)[0].attrs["State"]["StartedAt"] for s in ("kafka", "zookeeper", "rabbitmq")}
    run_action(catalog, project, compose_file, "restart_messaging")
    for service, started in before.items():
        assert containers(project, service)[0].attrs["State"]["StartedAt"] != started
