"""Key files of the project: generation, atomic 0600 saving, and loading with permission checks.

Three key pairs, each a PEM private key (PKCS#8, unencrypted, mode 0600) with a PEM public key next to
it (``.pub``, SubjectPublicKeyInfo):

- runner key, ECDSA P-256 (``config/private_key.pem``): signs the runner's ES256 JWTs to the control plane;
- audit key, Ed25519 (``config/audit_key.pem``): signs audit checkpoints; auditors get ``audit_key.pub``;
- control-plane key, Ed25519 (``config/controlplane_key.pem``): the local control plane signs tasks with it,
  the runner trusts ``controlplane_key.pub``.

Private keys are refused when group- or world-accessible, because a readable key lets anyone act as
the runner or forge audit checkpoints; the error says the ``chmod 600`` that fixes it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox._internal.durable import fsync_dir
from sandbox.errors import KeyFileError

KeyKind = Literal["runner", "audit", "controlplane"]
PrivateKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey


def public_path(private_path: Path) -> Path:
    """Where the public half of a private key file lives: same name, ``.pub`` suffix."""
    return Path(private_path).with_suffix(".pub")


# --- generation -----------------------------------------------------------------------------------


def generate_runner_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_ed25519_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate(kind: KeyKind) -> PrivateKey:
    return generate_runner_key() if kind == "runner" else generate_ed25519_key()


# --- saving ---------------------------------------------------------------------------------------


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_key_file(path: Path, data: bytes, *, mode: int, force: bool = False) -> None:
    """Write atomically: a temp file created O_EXCL with ``mode``, fsync'd, then linked into place.

    Without ``force`` an existing file is never replaced (``link`` fails atomically if it exists), so two
    concurrent ``par keygen`` runs cannot overwrite each other's key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise KeyFileError(f"cannot create {tmp}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we promised
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyFileError(
                    f"{path} already exists; refusing to overwrite a key", hint="Pass --force to replace it."
                ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def save_key_pair(key: PrivateKey, private_path: Path, public_file: Path | None = None, *, force: bool = False) -> Path:
    """Save the private key (0600) and its public key (0644); returns the public key path."""
    pub = public_file or public_path(private_path)
    if not force:
        for p in (Path(private_path), pub):
            if p.exists():
                raise KeyFileError(
                    f"{p} already exists; refusing to overwrite a key", hint="Pass --force to replace it."
                )
    write_key_file(Path(private_path), private_pem(key), mode=0o600, force=force)
    write_key_file(pub, public_pem(key.public_key()), mode=0o644, force=force)
    return pub


# --- loading --------------------------------------------------------------------------------------


def _read(path: Path, *, private: bool) -> bytes:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if private and st.st_mode & 0o077:
        raise KeyFileError(
            f"private key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"Run: chmod 600 {path}",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc


def _load_private(path: Path) -> PrivateKey:
    data = _read(path, private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey):
        raise KeyFileError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _load_public(path: Path) -> PublicKey:
    data = _read(path, private=False)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey):
        raise KeyFileError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def load_runner_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The runner's ECDSA P-256 private key (ES256 JWTs); refuses unsafe permissions."""
    key = _load_private(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path} is not an ECDSA P-256 private key (the runner key must be P-256)")
    return key


def load_runner_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    key = _load_public(path)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path} is not an ECDSA P-256 public key")
    return key


def load_ed25519_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key (audit key or control-plane key); refuses unsafe permissions."""
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def load_ed25519_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM (audit_key.pub, controlplane_key.pub)."""
    key = _load_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


load_audit_key = load_ed25519_private_key
load_controlplane_key = load_ed25519_private_key
