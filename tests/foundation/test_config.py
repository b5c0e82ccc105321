"""runner.yaml loading: typed values, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.config import RunnerConfig, load_config
from sandbox.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_with_paths_relative_to_its_directory() -> None:
    cfg = load_config(REPO / "config" / "runner.yaml")
    assert isinstance(cfg, RunnerConfig)
    assert cfg.docker.project == "dogbank"
    assert cfg.policy.engine == "embedded"
    assert cfg.runner.private_key == REPO / "config" / "private_key.pem"
    assert cfg.catalog == REPO / "config" / "credentials" / "script.yaml"
    assert cfg.docker.compose_file == REPO / "examples" / "dogbank" / "docker-compose.full.yml"
    assert cfg.runner.urn == "urn:dd:apps:on-prem-runner:local:dogbank:dogbank-par"


def test_defaults_are_resolved_like_written_keys(tmp_path: Path) -> None:
    p = tmp_path / "runner.yaml"
    p.write_text("{}\n")
    cfg = load_config(p)
    assert cfg.catalog == tmp_path / "credentials" / "script.yaml"
    assert cfg.audit.signing_key == tmp_path / "audit_key.pem"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("polcy:\n  engine: opa\n", "unknown key 'polcy'"),
        ("policy:\n  engin: opa\n", "unknown key 'policy.engin'"),
        ("policy:\n  engine: wasm\n", "'policy.engine' must be one of"),
        ("runner:\n  concurrency: five\n", "'runner.concurrency' must be an integer"),
        ("runner:\n  concurrency: true\n", "'runner.concurrency' must be an integer"),
        ("jail:\n  cpu_s: -1\n", "'jail.cpu_s' must not be negative"),
        ("policy: [1, 2]\n", "'policy' must be a mapping"),
        ("control_plane:\n  task_signing_keys: {a: 1}\n", "'control_plane.task_signing_keys' must be a list"),
        ("control_plane:\n  task_signing_keys:\n    - {key_id: a}\n", "control_plane.task_signing_keys[0]"),
        ("audit:\n  dir: ''\n", "'audit.dir' must be a non-empty path"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("a: &x 1\nb: *x\n", "anchors"),
        ("logging:\n  level: info\n  level: debug\n", "duplicate key 'level'"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "runner.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(p) in str(exc.value)
    assert fragment in str(exc.value), str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_diagnostics_tell_what_to_do(tmp_path: Path) -> None:
    p = tmp_path / "runner.yaml"
    p.write_text("nope: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    text = exc.value.diagnostics()
    assert text.startswith("error: ") and "hint: " in text
