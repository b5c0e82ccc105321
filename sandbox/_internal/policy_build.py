"""Validate and compile the policy for compiled mode in a child process; the long-lived process loads the result.

Validating a bundle (the interpreter's compile and whole-tree probe, the lint over the parsed AST, the
hardening pass) and compiling it to RVM bytecode leave 8-11 MB resident behind them that no allocator
gives back, while the compiled program itself, loaded from its serialized form, costs ~5 MB. The runner
(60 MB budget) and the proxy (50 MB) therefore run that one-off job in a child, as ``nginx -t`` checks a
configuration: the child gets the exact bundle the parent loaded on stdin, answers with the serialized
program (or the error that makes the policy unusable) on stdout, and exits, taking its memory with it.

The parent trusts the child no more than its own code (same interpreter, same package, same inputs), but
it still fails closed: no answer, a crash, a timeout or a malformed answer is a PolicyError, so a load
refuses to start and a reload keeps the working policy.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sandbox
from sandbox._internal import strictjson
from sandbox._internal.policy_bundle import PolicyBundle
from sandbox._internal.policy_decision import first_line
from sandbox.errors import PolicyError

BUILD_TIMEOUT_S = 60.0  # seconds: a compile takes ~0.1 s, the child's imports ~0.3 s
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # the serialized program is ~60 KB for the shipped policies


@dataclass(frozen=True)
class BuiltProgram:
    """One serialized RVM program answering ``entry_points``; ``program`` is None if none compiled."""

    program: bytes | None
    entry_points: frozenset[str]


def build_in_child(bundle: PolicyBundle, entry_points: Sequence[str]) -> BuiltProgram:
    """Lint, validate and compile ``bundle`` in a fresh process; PolicyError says why it is unusable."""
    request = json.dumps({
        "root": str(bundle.root),
        "modules": [list(m) for m in bundle.modules],
        "data": bundle.data,
        "revision": bundle.revision,
        "entry_points": list(entry_points),
    }).encode()
    package_root = str(Path(sandbox.__file__).resolve().parents[1])  # the child imports this very code
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sandbox._internal.policy_build"],
            input=request, capture_output=True, timeout=BUILD_TIMEOUT_S, check=False, env=env,
        )
    except subprocess.TimeoutExpired:
        raise PolicyError(
            f"{bundle.root}: the policy build process did not finish in {BUILD_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise PolicyError(f"{bundle.root}: cannot start the policy build process: {exc.strerror}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise PolicyError(f"{bundle.root}: the policy build process failed (exit {proc.returncode}): {tail[0][:300]}")
    return _parse_answer(proc.stdout, bundle, entry_points)


def _parse_answer(raw: bytes, bundle: PolicyBundle, entry_points: Sequence[str]) -> BuiltProgram:
    try:
        if len(raw) > MAX_ANSWER_BYTES:
            raise ValueError(f"{len(raw)} bytes")
        doc = strictjson.loads(raw)
        if doc.get("revision") != bundle.revision:
            raise ValueError("it built another revision")
        if not doc["ok"]:
            raise PolicyError(str(doc["error"]))
        compiled = frozenset(str(q) for q in doc["entry_points"])
        if not compiled <= set(entry_points):
            raise ValueError("it compiled entry points nobody asked for")
        program = base64.b64decode(doc["program"], validate=True) if doc["program"] is not None else None
    except PolicyError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PolicyError(f"{bundle.root}: the policy build process gave a malformed answer: {exc}") from exc
    if (program is None) != (not compiled):
        raise PolicyError(f"{bundle.root}: the policy build process gave a malformed answer: program and entry points")
    return BuiltProgram(program, compiled)


def _build(request: dict[str, Any]) -> dict[str, Any]:
    """The child's work: everything :class:`EmbeddedEngine` does at load in compiled mode, then serialize."""
    from sandbox._internal.policy_embedded import compile_bundle, compile_program  # noqa: PLC0415 - imports this module
    from sandbox._internal.policy_lint import harden  # noqa: PLC0415

    bundle = PolicyBundle(
        root=Path(request["root"]),
        modules=tuple((str(name), str(text)) for name, text in request["modules"]),
        data=request["data"],
        revision=str(request["revision"]),
        files=(),
    )
    answer: dict[str, Any] = {"revision": bundle.revision}
    try:
        compile_bundle(bundle, check=True, lint=True)
        harden(bundle.modules)  # a module that cannot be hardened is a policy error, reported as one
    except PolicyError as exc:
        return {**answer, "ok": False, "error": exc.message}
    wanted = [str(q) for q in request["entry_points"]]
    compiled: list[str] = []
    program: Any = None
    for attempt in ([wanted] if len(wanted) > 1 else []) + [[q] for q in wanted]:
        try:
            program = compile_program(bundle, *attempt)
        except Exception:  # noqa: BLE001, S112 - that entry point falls back to the interpreter in the parent
            continue
        compiled = attempt
        break
    raw = bytes(program.serialize_binary()) if compiled else None
    return {
        **answer, "ok": True, "entry_points": compiled,
        "program": base64.b64encode(raw).decode("ascii") if raw is not None else None,
    }


def main() -> int:
    from sandbox import logs  # noqa: PLC0415

    logs.configure(stream=sys.stderr)  # stdout carries the answer and nothing else
    try:
        request = strictjson.loads(sys.stdin.buffer.read())
        answer = _build(request)
    except Exception as exc:  # noqa: BLE001 - the parent turns a non-zero exit into a PolicyError
        print(f"policy build: {type(exc).__name__}: {first_line(str(exc))}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
