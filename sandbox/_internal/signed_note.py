"""C2SP ``signed-note`` and ``tlog-checkpoint`` encoding, parsing and Ed25519 verification.

Written to the specs (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint) so that
standard transparency-log tooling (Go ``sumdb/note``, ``transparency-dev/formats``) reads our
checkpoints: a text ending in a newline, a blank line, then lines ``— <key name> <base64(key ID ||
signature)>``. The Ed25519 key ID is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A note is malformed, not signed by the expected key, or its signature does not verify."""


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID the spec recommends for Ed25519 keys."""
    _check_name(name)
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key_bytes(key)).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The text form ``<name>+<hex key ID>+<base64(0x01 || key)>`` that note verifiers are configured with."""
    raw = bytes([ALG_ED25519]) + public_key_bytes(key)
    return f"{name}+{key_id(name, key).hex()}+{base64.b64encode(raw).decode()}"


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Parse a verifier key string and check that its key ID matches its key."""
    parts = vkey.split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise NoteError("a verifier key has the form <name>+<8 hex digits>+<base64 key>")
    name, kid, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"verifier key: bad base64: {exc}") from exc
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("verifier key: only Ed25519 (type 0x01) keys are supported")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, key).hex() != kid.lower():
        raise NoteError("verifier key: the key ID does not match the key")
    return name, key


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (which must end in a newline and contain no blank line) as one signed note."""
    _check_text(text)
    kid = key_id(name, key.public_key())
    sig = key.sign(text.encode())
    return f"{text}\n{_SIG_PREFIX}{name} {base64.b64encode(kid + sig).decode()}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end in a newline and must not contain a blank line")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a note into its text and signature lines, checking only syntax."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a signed note must not contain control characters other than newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("not a signed note: no blank line before the signatures")
    text, sigpart = note[: cut + 1], note[cut + 2 :]
    if not sigpart.endswith("\n"):
        raise NoteError("signed note: the last signature line must end with a newline")
    sigs: list[NoteSignature] = []
    for line in sigpart[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"signed note: malformed signature line {line[:60]!r}")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise NoteError(f"signed note: malformed signature line {line[:60]!r}")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except binascii.Error as exc:
            raise NoteError(f"signed note: bad base64 in a signature: {exc}") from exc
        if len(blob) < 5:
            raise NoteError("signed note: signature too short")
        sigs.append(NoteSignature(fields[0], blob[:4], blob[4:]))
    if not sigs or len(sigs) > _MAX_SIGNATURES:
        raise NoteError(f"signed note: needs 1..{_MAX_SIGNATURES} signatures, has {len(sigs)}")
    return text, sigs


def open_note(note: str, name: str, key: Ed25519PublicKey) -> str:
    """Return the note's text if it carries a valid signature by (name, key); raise :class:`NoteError` otherwise.

    As the spec requires, signatures by other keys are ignored, and a signature that claims our key
    (same name and key ID) but does not verify rejects the note.
    """
    text, sigs = parse_note(note)
    kid = key_id(name, key)
    for s in sigs:
        if s.name == name and s.key_id == kid:
            try:
                key.verify(s.signature, text.encode())
            except InvalidSignature as exc:
                raise NoteError(f"signature by {name} (key ID {kid.hex()}) is invalid") from exc
            return text
    others = ", ".join(f"{s.name}/{s.key_id.hex()}" for s in sigs)
    raise NoteError(f"no signature by the expected key {name}/{kid.hex()} (signed by: {others})")


_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class CheckpointBody:
    """The text of a C2SP tlog-checkpoint: origin, tree size, root hash (+ optional extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_text(text: str) -> CheckpointBody:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint: needs origin, tree size and root hash lines")
    origin, size_s, root_b64, *ext = lines[:-1]
    if not origin:
        raise NoteError("checkpoint: empty origin line")
    if not _SIZE_RE.fullmatch(size_s):
        raise NoteError(f"checkpoint: bad tree size {size_s[:30]!r}")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"checkpoint: bad base64 root hash: {exc}") from exc
    if len(root) != 32:
        raise NoteError("checkpoint: the root hash must be 32 bytes")
    return CheckpointBody(origin, int(size_s), root, tuple(ext))
