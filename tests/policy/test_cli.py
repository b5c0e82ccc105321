"""`par policy test` and `par check`, through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from sandbox._cli import main
from tests.policy.helpers import POLICIES, REPO, SIMPLE_POLICY, copy_policies, ran, write_policy

CONFIG = str(REPO / "config" / "runner.yaml")
SRE = '{"type": "user", "id": "alice", "name": "Alice", "roles": ["sre"]}'
DEV = '{"type": "user", "id": "bob", "name": "Bob", "roles": ["developer"]}'
SCALE_WF = '{"type": "workflow", "id": "wf-2", "name": "[DogBank] Auto-Scale PIX Worker", "roles": []}'
LAG = '{"type": "monitor", "monitor_id": "m-2", "monitor_name": "[DogBank] Kafka - Consumer Lag Alto"}'


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- par policy test --------------------------------------------------------------------------------


def test_shipped_policies_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", str(POLICIES))
    assert code == 0, out
    assert "FAIL" not in out and "PASS: " in out


def test_json_format_lists_table_cases(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", str(POLICIES), "--format", "json", "--run", r"authz_test\.test_denied")
    assert code == 0
    doc = json.loads(out)
    names = {r["test"] for r in doc["results"]}
    assert "data.par.authz_test.test_denied[developer restarts]" in names
    assert doc["summary"]["FAIL"] == 0 and doc["summary"]["PASS"] == len(doc["results"]) > 10


def test_coverage_is_line_level(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", str(POLICIES), "--format", "json", "--coverage", "--run", "par\\.")
    assert code == 0
    cov = json.loads(out)["coverage"]
    assert cov["granularity"] == "line"
    files = {f["file"]: f for f in cov["files"]}
    assert "par/ratelimit.rego" in files and not any(f.endswith("_test.rego") for f in files)
    assert files["par/ratelimit.rego"]["coverage"] == 100.0


def test_failing_and_erroring_tests_exit_2_and_name_the_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_policy(
        tmp_path / "p",
        {
            "par.rego": SIMPLE_POLICY,
            "par_test.rego": """package par_test

import rego.v1

cases := {"allowed": true, "denied": false}

test_table[note] if {
	some note, ok in cases
	data.par.decision.allow == ok with input as {"ok": true}
}

test_fails if data.par.decision.allow with input as {"ok": false}

test_errors if 1 / 0 == 1

test_passes if data.par.decision.allow with input as {"ok": true}
""",
        },
    )
    code, out, _ = run(capsys, "policy", "test", str(root), "-v")
    assert code == 2
    assert "data.par_test.test_table[allowed]: PASS" in out
    assert "data.par_test.test_table[denied]: FAIL" in out
    assert "data.par_test.test_fails: FAIL" in out
    assert "data.par_test.test_errors: ERROR" in out
    assert "data.par_test.test_passes: PASS" in out
    code, out, _ = run(capsys, "policy", "test", str(root), "--run", "passes")
    assert code == 0


def test_compile_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": "package par\nimport rego.v1\nallow if {\n"})
    code, _, err = run(capsys, "policy", "test", str(root))
    assert code == 1
    assert "par.rego" in err


def test_bad_data_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY, "data.json": "[1]"})
    code, out, _ = run(capsys, "policy", "test", str(root), "--format", "json")
    assert code == 1
    assert "must hold an object" in json.loads(out)["error"]


def test_fail_on_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY})
    assert run(capsys, "policy", "test", str(root))[0] == 0
    assert run(capsys, "policy", "test", str(root), "--fail-on-empty")[0] == 1


def test_bad_run_regex_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "policy", "test", str(POLICIES), "--run", "(")[0] == 1


def test_several_paths_are_combined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_policy(tmp_path / "a", {"par.rego": SIMPLE_POLICY})
    b = write_policy(
        tmp_path / "b",
        {
            "x_test.rego": "package x_test\nimport rego.v1\n"
            'test_sees_a if data.par.decision.allow with input as {"ok": true}\n',
        },
    )
    code, out, _ = run(capsys, "policy", "test", str(a), str(b), "-v")
    assert code == 0 and "test_sees_a: PASS" in out


def test_a_broken_shipped_rule_is_caught_by_its_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack on the tests themselves: weaken the scale limit and the suite must notice."""
    root = copy_policies(tmp_path)
    rl = root / "par" / "ratelimit.rego"
    rl.write_text(rl.read_text().replace("count(scale_runs) >= limit.max", "count(scale_runs) > limit.max"))
    assert "count(scale_runs) > limit.max" in rl.read_text()
    code, out, _ = run(capsys, "policy", "test", str(root))
    assert code == 2
    assert "test_scale_at_the_limit_is_denied: FAIL" in out
    shutil.rmtree(root)


# -- par check --------------------------------------------------------------------------------------


def test_check_allow_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--config", CONFIG, "check", "scale_pix_worker_3", "--principal", SCALE_WF, "--trigger", LAG
    )
    assert code == 0, out
    assert out.startswith("ALLOW scale_pix_worker_3")
    assert "authz.workflow" in out


def test_check_deny_exits_1_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", CONFIG, "check", "restart_pix_worker", "--principal", DEV)
    assert code == 1
    assert "DENY restart_pix_worker" in out and "authz.role:" in out


def test_check_history_from_file_and_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now_ns = time.time_ns()
    history = [{**ran("scale_pix_worker_3", 0, "pix-worker"), "ts_ns": now_ns - 10 * 10**9}]
    hist = tmp_path / "history.json"
    hist.write_text(json.dumps(history))
    principal = tmp_path / "principal.json"
    principal.write_text(SCALE_WF)
    code, out, _ = run(
        capsys,
        "--config",
        CONFIG,
        "check",
        "scale_pix_worker_5",
        "--principal",
        f"@{principal}",
        "--trigger",
        LAG,
        "--history",
        f"@{hist}",
        "--json",
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["decision"]["rule_ids"] == ["rate_limit.scale_interval"]
    assert "next attempt allowed at" in doc["decision"]["reasons"][0]
    assert doc["input"]["history"][0]["action"] == "scale_pix_worker_3"


def test_check_parameters_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--config",
        CONFIG,
        "check",
        "check_service_logs",
        "-p",
        "service=kafka",
        "-p",
        "tail=5",
        "--principal",
        DEV,
    )
    assert code == 0, out
    code, _, err = run(
        capsys, "--config", CONFIG, "check", "check_service_logs", "-p", "service=kafka;reboot", "--principal", DEV
    )
    assert code == 2 and "parameter 'service'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--principal", "{not json"], "not valid JSON"),
        (
            ["--principal", '{"type": "user", "id": "a", "name": "A", "roles": [], "admin": true}'],
            "invalid policy input",
        ),
        (["--principal", "@/nonexistent/principal.json"], "cannot read"),
        (["--principal", SRE, "--history", '{"a": 1}'], "must be a JSON list"),
        (["--principal", SRE, "--param", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_check_bad_input_exits_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _, err = run(capsys, "--config", CONFIG, "check", "check_services_status", *args)
    assert code == 2
    assert message in err


def test_check_unknown_action_is_denied_by_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", CONFIG, "check", "format_disk", "--principal", SRE)
    assert code == 1 and "allowlist:" in out


def test_check_broken_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_dir = tmp_path / "config"
    shutil.copytree(REPO / "config" / "credentials", cfg_dir / "credentials")
    write_policy(tmp_path / "policies", {"par.rego": 'package par\nimport rego.v1\ndecision := {"reasons": []}\n'})
    (cfg_dir / "runner.yaml").write_text("policy:\n  path: ../policies\n")
    code, out, _ = run(
        capsys, "--config", str(cfg_dir / "runner.yaml"), "check", "check_services_status", "--principal", SRE
    )
    assert code == 2
    assert "policy_error" in out


def test_partial_set_and_array_table_tests_report_each_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(
        tmp_path / "p",
        {
            "a_test.rego": """package a_test

import rego.v1

test_set contains note if {
	some note in ["x", "y", "z"]
	note != "y"
}

test_arr[i] if {
	some i, v in [10, 20]
	v == 10
}
""",
        },
    )
    code, out, _ = run(capsys, "policy", "test", str(root), "--format", "json")
    assert code == 2
    status = {r["test"]: r["status"] for r in json.loads(out)["results"]}
    assert status == {
        "data.a_test.test_set[x]": "PASS",
        "data.a_test.test_set[y]": "FAIL",
        "data.a_test.test_set[z]": "PASS",
        "data.a_test.test_arr[0]": "PASS",
        "data.a_test.test_arr[1]": "FAIL",
    }


# -- par policy test --mode ----------------------------------------------------------------------------

UNSAFE_FOR_COMPILED = """package par

import rego.v1

x := v if { some v in input.xs }

decision := {"allow": x == 1, "reasons": ["x"]}
"""
UNSAFE_TEST = 'package par_test\n\nimport rego.v1\n\ntest_one if data.par.x == 1 with input as {"xs": [1]}\n'


def test_compiled_mode_lint_failure_exits_1_naming_the_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": UNSAFE_FOR_COMPILED, "par_test.rego": UNSAFE_TEST})
    code, _, err = run(capsys, "policy", "test", str(root), "--mode", "compiled")
    assert code == 1
    assert "par.rego:5: data.par.x: value `v` depends on v" in err and "hint:" in err
    code, out, _ = run(capsys, "policy", "test", str(root), "--mode", "interpreter")
    assert code == 0, out


def test_mode_defaults_to_the_configured_embedded_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": UNSAFE_FOR_COMPILED, "par_test.rego": UNSAFE_TEST})
    text = (REPO / "config" / "runner.yaml").read_text()
    assert "embedded_mode: compiled" in text  # the shipped default
    config = tmp_path / "config" / "runner.yaml"
    config.parent.mkdir()
    config.write_text(text.replace("embedded_mode: compiled", "embedded_mode: interpreter"))
    assert run(capsys, "--config", str(config), "policy", "test", str(root))[0] == 0
    assert run(capsys, "--config", CONFIG, "policy", "test", str(root))[0] == 1
    assert run(capsys, "--config", str(tmp_path / "none.yaml"), "policy", "test", str(root))[0] == 1  # built-in default


def test_unreadable_config_is_a_load_error_not_a_guess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "runner.yaml"
    config.write_text("policy: [not, a, mapping]\n")
    code, _, err = run(capsys, "--config", str(config), "policy", "test", str(POLICIES))
    assert code == 1 and "embedded_mode" in err and "--mode" in err


def test_shipped_policies_pass_in_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    for mode in ("compiled", "interpreter"):
        code, out, _ = run(capsys, "policy", "test", str(POLICIES), "--mode", mode)
        assert code == 0 and "FAIL" not in out, (mode, out)
