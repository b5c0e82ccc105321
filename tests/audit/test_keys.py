"""Key files: `par keygen`, 0600 private keys, no silent overwrite, unsafe permissions refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox import keys
from sandbox._cli import main
from sandbox.errors import KeyFileError


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_keygen_creates_all_pairs_with_safe_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verifier key: dogbank-par/audit+" in out
    for name in ("private_key", "audit_key", "controlplane_key"):
        assert mode(tmp_path / f"{name}.pem") == 0o600
        assert mode(tmp_path / f"{name}.pub") == 0o644
    runner = keys.load_runner_key(tmp_path / "private_key.pem")
    assert isinstance(runner.curve, ec.SECP256R1)
    assert (
        keys.load_runner_public_key(tmp_path / "private_key.pub").public_numbers()
        == runner.public_key().public_numbers()
    )
    audit = keys.load_audit_key(tmp_path / "audit_key.pem")
    assert isinstance(audit, Ed25519PrivateKey)
    assert isinstance(keys.load_ed25519_public_key(tmp_path / "audit_key.pub"), Ed25519PublicKey)
    assert isinstance(keys.load_controlplane_key(tmp_path / "controlplane_key.pem"), Ed25519PrivateKey)


def test_keygen_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--dir", str(tmp_path), "--only", "audit"]) == 0
    before = (tmp_path / "audit_key.pem").read_bytes()
    assert not (tmp_path / "private_key.pem").exists()
    assert main(["keygen", "--dir", str(tmp_path), "--only", "audit"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "audit_key.pem").read_bytes() == before
    assert main(["keygen", "--dir", str(tmp_path), "--only", "audit", "--force"]) == 0
    assert (tmp_path / "audit_key.pem").read_bytes() != before
    assert mode(tmp_path / "audit_key.pem") == 0o600


def test_keygen_uses_config_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "runner.yaml"
    cfg.write_text("audit:\n  signing_key: keys/a.pem\n  public_key: keys/a.pub\n")
    assert main(["--config", str(cfg), "keygen", "--only", "audit"]) == 0
    assert mode(tmp_path / "keys" / "a.pem") == 0o600 and (tmp_path / "keys" / "a.pub").exists()


def test_readable_private_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    assert main(["keygen", "--dir", str(tmp_path), "--only", "runner"]) == 0
    pem = tmp_path / "private_key.pem"
    pem.chmod(0o640)
    with pytest.raises(KeyFileError) as exc:
        keys.load_runner_key(pem)
    assert f"chmod 600 {pem}" in exc.value.hint
    pem.chmod(0o600)
    keys.load_runner_key(pem)


def test_wrong_key_types_and_garbage_are_refused(tmp_path: Path) -> None:
    assert main(["keygen", "--dir", str(tmp_path)]) == 0
    with pytest.raises(KeyFileError, match="P-256"):
        keys.load_runner_key(tmp_path / "audit_key.pem")
    with pytest.raises(KeyFileError, match="Ed25519"):
        keys.load_ed25519_private_key(tmp_path / "private_key.pem")
    with pytest.raises(KeyFileError, match="Ed25519 public"):
        keys.load_ed25519_public_key(tmp_path / "private_key.pub")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        keys.load_ed25519_private_key(junk)
    with pytest.raises(KeyFileError, match="does not exist"):
        keys.load_runner_key(tmp_path / "missing.pem")
