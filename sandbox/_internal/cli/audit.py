"""``par audit``: the auditor's tools (verify, show, tail, export, prove, verify-proof, consistency).

Everything here works offline on copies of the log: an auditor needs the segments, the checkpoints
and the audit public key, never the runner. Paths default to ``audit.*`` in the runner config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox._internal import audit_proofs, signed_note
from sandbox._internal.audit_segments import CHECKPOINT_DIR, LATEST, iter_lines, list_segments, resolve_paths
from sandbox._internal.cli.common import config_from, print_json
from sandbox.audit import Checkpoint, read_checkpoint, verify_log
from sandbox.config import AuditConfig
from sandbox.errors import AuditError, AuditVerificationError, KeyFileError
from sandbox.keys import load_ed25519_public_key


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify and inspect the audit log (offline)")
    asub = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    asub.required = True

    v = asub.add_parser("verify", help="verify chain, tree and signed checkpoints; exit 0 when intact")
    v.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="audit dir or segment files (default: config)")
    _pubkey_arg(v)
    v.add_argument(
        "--checkpoint", action="append", type=Path, default=[], help="a checkpoint kept earlier (repeatable)"
    )
    v.add_argument("--origin", help="require this checkpoint origin (key name)")
    v.add_argument("--json", action="store_true", help="print {ok, records, first_bad_seq, error, ...}")
    v.set_defaults(func=cmd_verify)

    for name, helptext in (("show", "print records"), ("tail", "print the last records")):
        s = asub.add_parser(name, help=helptext)
        s.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="audit dir or segments (default: config)")
        s.add_argument("--kind", action="append", help="only this kind (repeatable)")
        s.add_argument("--task", help="only records whose data.task_id is ID")
        s.add_argument("--since", help="only records at or after T (RFC 3339, or a duration like 15m, 2h, 1d)")
        s.add_argument("--json", action="store_true", help="print the raw JSON lines")
        if name == "tail":
            s.add_argument("-n", type=int, default=20, help="how many records (default %(default)s)")
        s.set_defaults(func=cmd_show, tail=name == "tail")

    e = asub.add_parser("export", help="bundle records, checkpoints and the public key for an auditor")
    e.add_argument("--out", required=True, type=Path, help="a .tar.gz file or a new directory")
    e.add_argument("--dir", type=Path, help="audit directory (default: config)")
    _pubkey_arg(e)
    e.set_defaults(func=cmd_export)

    pr = asub.add_parser("prove", help="inclusion proof (JSON) of one record against the latest checkpoint")
    pr.add_argument("seq", type=int)
    pr.add_argument("--dir", type=Path, help="audit directory (default: config)")
    pr.add_argument("--checkpoint", type=Path, help="prove against this checkpoint (default: latest)")
    pr.add_argument("--out", type=Path, help="write the proof here instead of stdout")
    _pubkey_arg(pr)
    pr.set_defaults(func=cmd_prove)

    vp = asub.add_parser("verify-proof", help="check an inclusion proof without the log")
    vp.add_argument("proof", type=Path)
    _pubkey_arg(vp)
    vp.add_argument("--json", action="store_true")
    vp.set_defaults(func=cmd_verify_proof)

    c = asub.add_parser(
        "consistency",
        help="prove (with the log) or check (with --proof) that checkpoint OLD is a prefix of checkpoint NEW",
    )
    c.add_argument("old", type=Path, nargs="?", help="older checkpoint file")
    c.add_argument("new", type=Path, nargs="?", help="newer checkpoint file")
    c.add_argument("--log", type=Path, help="audit directory to build the proof from (default: config)")
    c.add_argument("--proof", type=Path, help="check this consistency proof instead (no log needed)")
    c.add_argument("--out", type=Path, help="write the proof here instead of stdout")
    _pubkey_arg(c)
    c.set_defaults(func=cmd_consistency)


def _pubkey_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pubkey", type=Path, help="audit public key: PEM or note verifier key (default: config)")


def _cfg(ns: argparse.Namespace) -> AuditConfig:
    return config_from(ns).audit


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM Ed25519 public key, or a note verifier key ``name+id+base64`` as Go tooling prints it."""
    if not path.is_file():
        raise KeyFileError(
            f"public key {path} does not exist", hint="Pass --pubkey FILE (the audit_key.pub the auditor trusts)."
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}") from None
    if text.startswith("-----BEGIN"):
        return load_ed25519_public_key(path)
    try:
        return signed_note.parse_verifier_key(text)[1]
    except signed_note.NoteError as exc:
        raise KeyFileError(f"{path} is neither a PEM public key nor a note verifier key: {exc}") from None


def _pubkey(ns: argparse.Namespace) -> Ed25519PublicKey:
    return load_public_key(ns.pubkey if ns.pubkey else _cfg(ns).public_key)


# --- verify ---------------------------------------------------------------------------------------


def cmd_verify(ns: argparse.Namespace) -> int:
    paths = ns.paths or [_cfg(ns).dir]
    for p in paths:
        if not p.exists():
            raise AuditError(f"{p} does not exist")
    key = _pubkey(ns)
    kept = [read_checkpoint(p) for p in ns.checkpoint]
    result = verify_log(paths, public_key=key, checkpoints=kept, origin=ns.origin)
    if ns.json:
        print_json(result.to_dict())
    elif result.ok:
        tail = result.records - result.signed_size
        print(
            f"OK: {result.records} records intact; {result.signed_size} covered by verified signed checkpoints"
            + (f", {tail} after the last checkpoint (chained, not yet signed)" if tail else "")
        )
    else:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        print(f"FAILED{where}: {result.category}: {result.error}", file=sys.stderr)
    return 0 if result.ok else 1


# --- show / tail ----------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhd])")


def _since(text: str) -> str:
    """The --since bound as a comparable RFC 3339 UTC string."""
    m = _DURATION.fullmatch(text)
    if m:
        secs = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        t = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=secs)
    else:
        try:
            t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise AuditError(f"--since {text!r}: give an RFC 3339 time or a duration like 15m, 2h, 1d") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matching(ns: argparse.Namespace) -> Iterator[tuple[bytes, dict[str, Any]]]:
    segments, _ = resolve_paths(ns.paths or [_cfg(ns).dir])
    since = _since(ns.since) if ns.since else None
    for line in iter_lines(segments):
        try:
            rec = json.loads(line.data)
        except ValueError:
            print(f"warning: {line.path.name}:{line.offset}: unreadable line skipped", file=sys.stderr)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("data"), dict):
            continue
        if ns.kind and rec.get("kind") not in ns.kind:
            continue
        if ns.task and rec["data"].get("task_id") != ns.task:
            continue
        if since and str(rec.get("ts", "")) < since:
            continue
        yield line.data, rec


def cmd_show(ns: argparse.Namespace) -> int:
    rows: Any = _matching(ns)
    if ns.tail:
        rows = deque(rows, maxlen=max(ns.n, 0))
    for raw, rec in rows:
        if ns.json:
            sys.stdout.write(raw.decode(errors="replace") + "\n")
        else:
            task = rec["data"].get("task_id")
            data = json.dumps(rec["data"], ensure_ascii=False, sort_keys=True)
            if len(data) > 160:
                data = data[:157] + "..."
            prefix = f"task={task} " if task is not None else ""
            print(f"{rec.get('seq'):>8}  {rec.get('ts')}  {rec.get('kind'):<19} {prefix}{data}")
    return 0


# --- export ---------------------------------------------------------------------------------------

_README = """\
# DogBank PAR audit log bundle

Contents: `audit-<first seq>.jsonl` segments (JSON Lines, one record per line), `checkpoints/*.note`
(C2SP tlog-checkpoint signed notes; `latest.note` is the newest), `audit_key.pub` (Ed25519 public
key, PEM), `audit_key.vkey` (the same key as a signed-note verifier key), `*.torn` files (bytes cut
off a crashed write, each announced by a `torn_tail` record).

Verify (offline):

    par audit verify . --pubkey <audit public key obtained from a trusted channel>

Use the public key you received out of band, not only the copy in this bundle: whoever could change
the bundle could change that file too. Keep `checkpoints/latest.note`; give it later to
`par audit verify --checkpoint` to prove the log was not rolled back or rewritten since.
The format is specified in docs/audit-format.md of the runner's repository.
"""


def cmd_export(ns: argparse.Namespace) -> int:
    directory = ns.dir or _cfg(ns).dir
    key_path = ns.pubkey or _cfg(ns).public_key
    key = load_public_key(key_path)
    segments = list_segments(directory)
    if not segments:
        raise AuditError(f"no audit segments in {directory}")
    out: Path = ns.out
    if out.exists():
        raise AuditError(f"{out} already exists; choose a new path")
    with tempfile.TemporaryDirectory(prefix="par-audit-export-") as tmp:
        bundle = Path(tmp) / "audit-bundle"
        (bundle / CHECKPOINT_DIR).mkdir(parents=True)
        # Checkpoints first, then segments: the copied log is never shorter than a copied checkpoint.
        for cp in sorted((directory / CHECKPOINT_DIR).glob("*.note")):
            shutil.copyfile(cp, bundle / CHECKPOINT_DIR / cp.name)
        for seg in segments:
            data = seg.read_bytes()
            if seg == segments[-1]:
                data = data[: data.rfind(b"\n") + 1]  # a writer may be mid-line right now
            (bundle / seg.name).write_bytes(data)
        for torn in directory.glob("*.torn"):
            shutil.copyfile(torn, bundle / torn.name)
        shutil.copyfile(key_path, bundle / "audit_key.pub")
        latest = bundle / CHECKPOINT_DIR / LATEST
        origin = read_checkpoint(latest).origin if latest.exists() else _cfg(ns).origin
        (bundle / "audit_key.vkey").write_text(signed_note.verifier_key(origin, key) + "\n")
        (bundle / "README.md").write_text(_README)
        if out.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(out, "w:gz") as tar:
                tar.add(bundle, arcname="audit-bundle")
        else:
            shutil.copytree(bundle, out)
    print(f"exported {len(segments)} segment(s) to {out}")
    return 0


# --- proofs ---------------------------------------------------------------------------------------


def _emit(doc: dict[str, Any], out: Path | None) -> None:
    if out is None:
        print_json(doc)
    else:
        out.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuditError(f"cannot read proof {path}: {exc}") from None


def cmd_prove(ns: argparse.Namespace) -> int:
    directory = ns.dir or _cfg(ns).dir
    cp_path = ns.checkpoint or directory / CHECKPOINT_DIR / LATEST
    if not cp_path.exists():
        raise AuditError(f"no checkpoint at {cp_path}", hint="The runner writes one every N records and at shutdown.")
    cp: Checkpoint = read_checkpoint(cp_path)
    _emit(audit_proofs.build_inclusion_proof(directory, ns.seq, cp.note, _pubkey(ns)), ns.out)
    return 0


def cmd_verify_proof(ns: argparse.Namespace) -> int:
    doc = _load_json(ns.proof)
    try:
        rec = audit_proofs.verify_inclusion_proof(doc, _pubkey(ns))
    except AuditVerificationError as exc:
        if ns.json:
            print_json({"ok": False, "error": exc.message})
        else:
            print(f"FAILED: {exc.message}", file=sys.stderr)
        return 1
    if ns.json:
        print_json({"ok": True, "seq": rec["seq"], "tree_size": doc["tree_size"], "record": rec})
    else:
        print(f"OK: record seq {rec['seq']} ({rec['kind']}) is in the signed tree of size {doc['tree_size']}")
    return 0


def cmd_consistency(ns: argparse.Namespace) -> int:
    key = _pubkey(ns)
    if ns.proof is not None:
        doc = _load_json(ns.proof)
    else:
        if ns.old is None or ns.new is None:
            raise AuditError("give OLD and NEW checkpoint files (or --proof FILE to check a proof)")
        directory = ns.log or _cfg(ns).dir
        old, new = read_checkpoint(ns.old), read_checkpoint(ns.new)
        doc = audit_proofs.build_consistency_proof(directory, old.note, new.note, key)
        _emit(doc, ns.out)
    try:
        old_size, new_size = audit_proofs.verify_consistency_proof(doc, key)
    except AuditVerificationError as exc:
        print(f"FAILED: {exc.message}", file=sys.stderr)
        return 1
    print(f"OK: the checkpoint of size {old_size} is a prefix of the checkpoint of size {new_size}", file=sys.stderr)
    return 0
