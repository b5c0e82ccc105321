"""The action catalog: loading, template rendering, and every bad-input case of the foundation issue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sandbox.catalog import load_catalog
from sandbox.errors import CatalogError, ParameterError, UnknownActionError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "config" / "credentials" / "script.yaml"
RUNNER_VARS = {"project": "dogbank", "compose_file": "/srv/dogbank/docker-compose.full.yml"}

SEED_COMMANDS = [
    "restart_transaction_service", "restart_pix_worker", "restart_auth_service", "restart_chatbot_service",
    "restart_account_service", "restart_bancocentral_service", "restart_fraud_detection",
    "scale_pix_worker_3", "scale_pix_worker_5", "scale_pix_worker_1", "restart_all_backend",
    "restart_messaging", "check_services_status", "check_kafka_topics",
]
SERVICES = ["transaction-service", "pix-worker", "auth-service", "chatbot-service", "account-service",
            "bancocentral-service", "fraud-detection-service", "kafka", "zookeeper", "rabbitmq"]

NO_PARAMS = {"type": "object", "properties": {}, "additionalProperties": False}


def write_catalog(tmp_path: Path, actions: dict[str, Any], **top: Any) -> Path:
    doc = {"schemaId": "script-credentials-v1", "runPredefinedScript": actions, **top}
    p = tmp_path / "script.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def action(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"command": ["docker", "compose", "ps"], "parameterSchema": NO_PARAMS}
    base.update(over)
    return base


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return load_catalog(SCRIPT)


def test_every_seed_command_resolves(catalog) -> None:  # type: ignore[no-untyped-def]
    for name in SEED_COMMANDS:
        assert catalog.get(name).name == name
    # check_service_logs_* : one per service, plus the generic action with a service enum.
    logs = [n for n in catalog.actions if n.startswith("check_service_logs_")]
    assert len(logs) == len(SERVICES)
    assert catalog.get("check_service_logs").parameter_schema["properties"]["service"]["enum"] == SERVICES


def test_restart_renders_compose_argv_without_shell(catalog) -> None:  # type: ignore[no-untyped-def]
    argv = catalog.render("restart_transaction_service", {}, RUNNER_VARS)
    assert argv == ["docker", "compose", "-p", "dogbank", "-f", RUNNER_VARS["compose_file"],
                    "restart", "transaction-service"]


def test_scale_and_group_restarts(catalog) -> None:  # type: ignore[no-untyped-def]
    argv = catalog.render("scale_pix_worker_3", {}, RUNNER_VARS)
    assert "--scale" in argv and argv[argv.index("--scale") + 1] == "pix-worker=3"
    assert catalog.get("scale_pix_worker_5").replicas == 5
    messaging = catalog.render("restart_messaging", {}, RUNNER_VARS)
    assert messaging[-3:] == ["kafka", "zookeeper", "rabbitmq"]
    assert catalog.get("restart_all_backend").category == "group_restart"


def test_logs_parameters_validated_and_defaulted(catalog) -> None:  # type: ignore[no-untyped-def]
    params = catalog.validate_parameters("check_service_logs", {"service": "pix-worker"})
    assert params == {"service": "pix-worker", "tail": 100}
    argv = catalog.render("check_service_logs", params, RUNNER_VARS)
    assert argv[-3:] == ["--tail", "100", "pix-worker"]
    assert catalog.validate_parameters("check_service_logs_kafka", {"tail": 5}) == {"tail": 5}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"service": "pix-worker; rm -rf /"}, "is not one of"),
        ({"service": "../etc"}, "is not one of"),
        ({"service": "pix-worker\x00"}, "printable ASCII"),
        ({"service": "a" * 10_000}, "longer than"),
        ({"service": "pix\u2010worker"}, "printable ASCII"),  # unicode hyphen look-alike
        ({"service": "pix-worker\n"}, "printable ASCII"),
        ({"service": "pix-worker", "tail": 0}, "minimum"),
        ({"service": "pix-worker", "tail": 10**9}, "maximum"),
        ({"service": "pix-worker", "tail": "10; id"}, "not of type"),
        ({"service": "pix-worker", "extra": "x"}, "Additional properties"),
        ({}, "'service' is a required property"),
        ({"Service": "pix-worker"}, "not allowed"),
    ],
)
def test_hostile_parameters_rejected_before_anything_runs(catalog, params, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError) as exc:
        catalog.validate_parameters("check_service_logs", params)
    assert fragment in str(exc.value)
    assert "check_service_logs" in str(exc.value)


def test_parameters_must_be_an_object(catalog) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError, match="must be an object"):
        catalog.validate_parameters("check_services_status", ["x"])


@given(st.text(min_size=1, max_size=64))
def test_any_service_string_outside_the_enum_is_refused(value: str) -> None:
    cat = load_catalog(SCRIPT)
    if value in SERVICES:
        return
    with pytest.raises(ParameterError):
        cat.validate_parameters("check_service_logs", {"service": value})


def test_unknown_action(catalog) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownActionError, match="not in the catalog"):
        catalog.get("rm_everything")


def test_missing_template_value_is_an_error_not_empty(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"svc": {"type": "string", "enum": ["a"]}},
              "additionalProperties": False}
    cat = load_catalog(write_catalog(tmp_path, {"x": action(command=["docker", "{{ parameters.svc }}"],
                                                           parameterSchema=schema)}))
    with pytest.raises(ParameterError, match="no value"):
        cat.render("x", {}, RUNNER_VARS)
    assert cat.render("x", {"svc": "a"}, RUNNER_VARS) == ["docker", "a"]


BAD_ACTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown key", action(shell=True), "unknown key"),
    ("non-list command", action(command="docker compose ps"), "non-empty list"),
    ("empty command", action(command=[]), "non-empty list"),
    ("missing schema", {"command": ["docker", "ps"]}, "parameterSchema' is required"),
    ("schema not object", action(parameterSchema={"type": "string"}), "type: object"),
    ("open schema", action(parameterSchema={"type": "object", "properties": {}}), "additionalProperties: false"),
    ("unbounded string", action(parameterSchema={"type": "object", "additionalProperties": False,
                                                 "properties": {"s": {"type": "string"}}}), "needs an enum"),
    ("template inside element", action(command=["docker", "restart-{{ parameters.s }}"],
                                        parameterSchema={"type": "object", "additionalProperties": False,
                                                         "properties": {"s": {"type": "string", "enum": ["a"]}}}),
     "whole argv element"),
    ("smuggled metachar", action(command=["docker", "ps;id"]), "shell metacharacters"),
    ("shell program", action(command=["/bin/sh", "-c", "docker ps"]), "shell or interpreter"),
    ("undeclared param", action(command=["docker", "{{ parameters.nope }}"]), "does not declare"),
    ("unknown runner var", action(command=["docker", "{{ runner.secret }}"]), "runner.secret"),
    ("template program", action(command=["{{ runner.project }}"]), "cannot be a template"),
    ("env override", action(allowedEnvVars=["LD_PRELOAD"]), "allowedEnvVars"),
    ("bad timeout", action(timeout=-1), "timeout"),
    ("bad category", action(category="root"), "category"),
]


@pytest.mark.parametrize(("label", "spec", "fragment"), BAD_ACTIONS, ids=[b[0] for b in BAD_ACTIONS])
def test_hostile_catalog_refused_naming_the_action(tmp_path: Path, label: str, spec: dict[str, Any],
                                                   fragment: str) -> None:
    path = write_catalog(tmp_path, {"evil_action": spec})
    with pytest.raises(CatalogError) as exc:
        load_catalog(path)
    assert "evil_action" in str(exc.value), label
    assert fragment in str(exc.value), str(exc.value)


def test_duplicate_action_names_refused(tmp_path: Path) -> None:
    p = tmp_path / "script.yaml"
    p.write_text("schemaId: script-credentials-v1\nrunPredefinedScript:\n"
                 "  a: {command: [docker, ps], parameterSchema: {type: object, additionalProperties: false}}\n"
                 "  a: {command: [docker, rm], parameterSchema: {type: object, additionalProperties: false}}\n")
    with pytest.raises(CatalogError, match="duplicate key 'a'"):
        load_catalog(p)


def test_yaml_alias_bomb_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    p = tmp_path / "script.yaml"
    p.write_text(bomb)
    with pytest.raises(CatalogError, match="anchors"):
        load_catalog(p)


def test_oversized_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "script.yaml"
    p.write_bytes(b"# " + b"x" * (1024 * 1024 + 10) + b"\n")
    with pytest.raises(CatalogError, match="over the"):
        load_catalog(p)


def test_non_utf8_refused(tmp_path: Path) -> None:
    p = tmp_path / "script.yaml"
    p.write_bytes(b"schemaId: script-credentials-v1\n# \xff\xfe\n")
    with pytest.raises(CatalogError, match="UTF-8"):
        load_catalog(p)


def test_wrong_schema_id_and_unknown_top_level(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="schemaId"):
        load_catalog(write_catalog(tmp_path, {"a": action()}, schemaId="v2"))
    with pytest.raises(CatalogError, match="unknown top-level"):
        load_catalog(write_catalog(tmp_path, {"a": action()}, extra=1))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")
