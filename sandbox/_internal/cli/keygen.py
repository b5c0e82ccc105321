"""``par keygen``: create the runner, audit and control-plane key pairs (private keys mode 0600)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox._internal import signed_note
from sandbox._internal.cli.common import config_from
from sandbox.errors import KeyFileError
from sandbox.keys import KeyKind, generate, public_path, save_key_pair

KINDS: tuple[KeyKind, ...] = ("runner", "audit", "controlplane")
_DEFAULT_NAMES: dict[KeyKind, str] = {
    "runner": "private_key.pem",
    "audit": "audit_key.pem",
    "controlplane": "controlplane_key.pem",
}


def register(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create key pairs: runner (ECDSA P-256), audit and control plane (Ed25519)")
    p.add_argument("--dir", type=Path, help="write all keys into DIR with default names (default: paths from config)")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.add_argument("--only", choices=KINDS, action="append", help="create only this key pair (repeatable)")
    p.set_defaults(func=run)


def key_paths(ns: argparse.Namespace) -> tuple[dict[KeyKind, tuple[Path, Path]], str]:
    """(private, public) path per key kind, and the audit origin for the printed verifier key."""
    if ns.dir is not None:
        d: Path = ns.dir
        paths = {k: (d / n, public_path(d / n)) for k, n in _DEFAULT_NAMES.items()}
        return paths, "dogbank-par/audit"
    cfg = config_from(ns)
    cp_keys = cfg.control_plane.task_signing_keys
    cp_priv = cfg.control_plane.signing_key
    cp_pub = cp_keys[0].public_key if cp_keys else public_path(cp_priv)
    return {
        "runner": (cfg.runner.private_key, public_path(cfg.runner.private_key)),
        "audit": (cfg.audit.signing_key, cfg.audit.public_key),
        "controlplane": (cp_priv, cp_pub),
    }, cfg.audit.origin


def run(ns: argparse.Namespace) -> int:
    paths, origin = key_paths(ns)
    kinds = ns.only or list(KINDS)
    if not ns.force:
        existing = [str(p) for k in kinds for p in paths[k] if p.exists()]
        if existing:
            raise KeyFileError(
                f"key files already exist: {', '.join(existing)}; refusing to overwrite",
                hint="Pass --force to replace them (the old keys stop working), or --only to pick others.",
            )
    for kind in kinds:
        priv, pub = paths[kind]
        key = generate(kind)
        save_key_pair(key, priv, pub, force=ns.force)
        print(f"{kind:<12} {priv} (0600)  {pub}")
        if kind == "audit":
            pub_key = key.public_key()
            if isinstance(pub_key, Ed25519PublicKey):
                print(f"{'':<12} verifier key: {signed_note.verifier_key(origin, pub_key)}")
    return 0
