"""C2SP signed notes and checkpoints, checked against the Go sumdb/note published example."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox._internal import signed_note as sn

# golang.org/x/mod/sumdb/note example key and note (also in the C2SP signed-note spec's ecosystem).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann "
    + "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def test_matches_go_reference_signer_byte_for_byte() -> None:
    key = go_key()
    assert sn.key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    assert sn.verifier_key("PeterNeumann", key.public_key()) == GO_VKEY
    assert sn.sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE


def test_opens_go_reference_note_with_its_verifier_key() -> None:
    name, pub = sn.parse_verifier_key(GO_VKEY)
    assert sn.open_note(GO_NOTE, name, pub) == GO_TEXT


def test_tampered_note_or_other_key_is_rejected() -> None:
    name, pub = sn.parse_verifier_key(GO_VKEY)
    with pytest.raises(sn.NoteError, match="invalid"):
        sn.open_note(GO_NOTE.replace("cryptography", "cryptograph!"), name, pub)
    other = Ed25519PrivateKey.generate()
    forged = sn.sign_note(GO_TEXT, "PeterNeumann", other)
    with pytest.raises(sn.NoteError, match="no signature by the expected key"):
        sn.open_note(forged, name, pub)
    # a signature that claims the right key ID but is wrong rejects the note
    blob = base64.b64decode(forged.rsplit(" ", 1)[1])
    claimed = forged.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes.fromhex("c74f20a3") + blob[4:]).decode() + "\n"
    with pytest.raises(sn.NoteError, match="invalid"):
        sn.open_note(claimed, name, pub)


def test_verifier_key_whose_base64_contains_a_plus() -> None:
    # transparency-dev/formats test key: the '+' inside the base64 must not split the key
    name, _ = sn.parse_verifier_key("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert name == "TEST"


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,  # no signatures
        GO_TEXT + "\n",  # blank line, no signature
        GO_TEXT + "\n-- PeterNeumann AAAA\n",  # not an em dash
        GO_TEXT + "\n\u2014 PeterNeumann !!!\n",  # bad base64
        GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/S",  # no final newline
        "a\x01b\n\n\u2014 x AAAAAAAA\n",  # control character
    ],
)
def test_malformed_notes_are_rejected(note: str) -> None:
    name, pub = sn.parse_verifier_key(GO_VKEY)
    with pytest.raises(sn.NoteError):
        sn.open_note(note, name, pub)


def test_checkpoint_round_trip_and_validation() -> None:
    key = Ed25519PrivateKey.generate()
    body = sn.CheckpointBody("example.com/log", 42, bytes(range(32)))
    assert body.text() == f"example.com/log\n42\n{base64.b64encode(bytes(range(32))).decode()}\n"
    note = sn.sign_note(body.text(), "example.com/log", key)
    assert sn.parse_checkpoint_text(sn.open_note(note, "example.com/log", key.public_key())) == body
    for bad in ["o\n01\nAAAA\n", "o\n1\n", "o\nx\n" + base64.b64encode(bytes(32)).decode() + "\n", "o\n1\nAAAA\n"]:
        with pytest.raises(sn.NoteError):
            sn.parse_checkpoint_text(bad)
    with pytest.raises(sn.NoteError, match="key name"):
        sn.key_id("has space", key.public_key())
