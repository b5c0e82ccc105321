"""docs/operations.md and docs/security.md stay in step with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox import metrics
from sandbox.doctor import CHECKS
from sandbox.protocol import ErrorCode
from tests.deploy.support import compose_model
from tests.support.env import require

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = (REPO / "docs/operations.md").read_text()
SECURITY = (REPO / "docs/security.md").read_text()


def test_every_error_code_is_explained() -> None:
    codes = {c.value for c in ErrorCode}
    rows = {k: v for k, v in re.findall(r"^\| `([A-Z_]+)` \| (.+?) \|", OPERATIONS, re.MULTILINE) if k in codes}
    assert set(rows) == codes, sorted(codes - set(rows))
    assert all(len(text) > 30 for text in rows.values())


def test_every_doctor_check_and_metric_is_documented() -> None:
    for name in CHECKS:
        assert f"| `{name}` |" in OPERATIONS, name
    for name in metrics.names():
        assert name in OPERATIONS or name.removeprefix("dogbank.par.") in OPERATIONS, name


def test_the_security_doc_names_every_capability_the_runner_gets() -> None:
    require("docker")
    for cap in compose_model()["services"]["par-runner"]["cap_add"]:
        assert cap in SECURITY, cap
    assert "`:ro`" in SECURITY and "connect(2)" in SECURITY
    assert "test_a_read_only_docker_socket_mount_still_gives_the_whole_api" in SECURITY


def test_referenced_repository_files_exist() -> None:
    for doc in (OPERATIONS, SECURITY, (REPO / "hardening/README.md").read_text()):
        for path in re.findall(r"`((?:docs|hardening|policies|sandbox|tests|workflows|config)/[A-Za-z0-9_./-]+)`", doc):
            if path.endswith((".pem", ".pub")):
                continue  # keys are made by `par keygen`, never committed
            target = REPO / path.split("::")[0]
            assert target.exists() or target.with_suffix("").exists(), path
