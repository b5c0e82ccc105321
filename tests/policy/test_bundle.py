"""The policy directory is read with OPA bundle semantics, strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox._internal.policy_bundle import load_bundle
from sandbox.errors import PolicyError
from tests.policy.helpers import POLICIES, SIMPLE_POLICY, write_policy


def test_data_files_are_placed_at_their_directory_path(tmp_path: Path) -> None:
    root = write_policy(
        tmp_path / "p",
        {
            "par.rego": SIMPLE_POLICY,
            "data.json": {"top": 1},
            "docker_proxy/data.json": {"allowed": ["ps"]},
            "docker_proxy/deep/data.yaml": "limit: 3\n",
        },
    )
    bundle = load_bundle(root)
    assert bundle.data == {"top": 1, "docker_proxy": {"allowed": ["ps"], "deep": {"limit": 3}}}


def test_production_load_excludes_test_files_and_tests_include_them(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY, "par_test.rego": "package par_test\n"})
    assert [m for m, _ in load_bundle(root).modules] == ["par.rego"]
    assert [m for m, _ in load_bundle(root, include_tests=True).modules] == ["par.rego", "par_test.rego"]


def test_revision_covers_names_and_contents(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY, "data.json": {"a": 1}})
    first = load_bundle(root).revision
    assert load_bundle(root).revision == first  # deterministic
    (root / "data.json").write_text('{"a": 2}')
    second = load_bundle(root).revision
    assert second != first
    (root / "data.json").rename(root / "data.yaml")
    (root / "data.yaml").write_text('{"a": 2}')
    assert load_bundle(root).revision != second  # same content, other name


def test_hidden_files_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = write_policy(
        tmp_path / "p",
        {"par.rego": SIMPLE_POLICY, ".hidden.rego": "garbage", ".git/x.rego": "garbage", "README.md": "x"},
    )
    assert load_bundle(root).files == ("par.rego",)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"data.json": [1, 2]}, "must hold an object"),
        ({"data.json": "not json"}, "invalid JSON"),
        ({"data.json": '{"a": 1, "a": 2}'}, "duplicate key"),
        ({"data.yaml": "- 1\n- 2\n"}, "must hold an object"),
        ({"data.yaml": "a: &x 1\nb: *x\n"}, "anchors"),
        ({"data.json": {"x": {"y": 1}}, "x/data.json": {"y": 2}}, "data.x.y is set by both"),
        ({"data.json": {"x": 5}, "x/data.json": {"y": 2}}, "already sets to a non-object"),
        ({"data.json": {"a": 1}, "data.yaml": "a: 2\n"}, "data.a is set by both"),
    ],
)
def test_bad_data_is_a_load_error(tmp_path: Path, files: dict[str, object], message: str) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY, **files})
    with pytest.raises(PolicyError, match=message):
        load_bundle(root)


def test_objects_from_two_files_merge_when_keys_differ(tmp_path: Path) -> None:
    root = write_policy(
        tmp_path / "p", {"par.rego": SIMPLE_POLICY, "data.json": {"x": {"a": 1}}, "x/data.json": {"b": 2}}
    )
    assert load_bundle(root).data == {"x": {"a": 1, "b": 2}}


def test_missing_directory_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match=r"no \.rego policy files"):
        load_bundle(tmp_path / "empty")


def test_oversized_policy_file_is_refused(tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", {"par.rego": SIMPLE_POLICY + "#" * (1024 * 1024 + 1)})
    with pytest.raises(PolicyError, match="over the"):
        load_bundle(root)


def test_shipped_policies_load() -> None:
    bundle = load_bundle(POLICIES)
    assert "par/decision.rego" in bundle.files
    assert not any(f.endswith("_test.rego") for f in bundle.files)
    assert len(bundle.revision) == 64
