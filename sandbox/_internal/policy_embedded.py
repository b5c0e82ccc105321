"""The embedded backend: regorus, compiled once per thread, swapped atomically on reload.

regorus' Python ``Engine`` is *unsendable*: touching it (even ``clone()``) from a thread other than the
one that created it panics. The proxy evaluates from many threads, so each thread lazily compiles its
own engine from the shared, immutable :class:`PolicyBundle` and keeps it in thread-local storage, tagged
with the generation it was built from. A reload compiles the new bundle first (in the reloading thread)
and only then bumps the generation, so a policy that fails to compile never replaces a working one, and
every thread picks up the new policy on its next decision. Per decision the cost is one
``set_input_json`` plus one ``eval_rule`` on an already-prepared engine; no lock is taken.

``mode="compiled"`` evaluates through regorus' RVM (the policy compiled to bytecode per query, 2-4x
faster). It is opt-in because its semantics are not identical to the interpreter that
``par policy test`` runs: where the interpreter reports a conflicting complete rule, the RVM yields
undefined (two definitions) or silently the last value (one iterating body), which can make a deny
rule silently not fire (docs/policy-input.md). A query the RVM cannot compile falls back to the
interpreter.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

from sandbox._internal.policy_bundle import PolicyBundle, fingerprint, load_bundle
from sandbox._internal.policy_decision import QUERY, Decision, first_line, parse_decision, policy_error
from sandbox.errors import PolicyError
from sandbox.logs import get_logger

log = get_logger(__name__)

MAX_INPUT_BYTES = 1024 * 1024  # any input; task inputs have their own, smaller cap
UNDEFINED = "<undefined>"  # what regorus' eval_rule_as_json returns for an undefined rule
_tokens = itertools.count(1)
_tls = threading.local()
# json.dumps(doc, allow_nan=False, separators=...) builds a new encoder per call; this is the same
# encoder, built once (same output, about 1 us less per decision).
_encode_input = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode

ReloadCallback = Callable[[str, "str | None"], None]


def compile_bundle(bundle: PolicyBundle, *, coverage: bool = False, check: bool = False) -> Any:
    """A ready regorus engine for ``bundle``; PolicyError names the file and line that failed.

    regorus parses in ``add_policy`` but resolves rules (unknown functions, bad refs) only when a rule
    is first evaluated. With ``check``, the whole ``data`` tree is evaluated once against an empty
    input so those errors surface at load time, where they keep the old policy, rather than on the
    first request. Rules must therefore be undefined, not errors, when input fields are missing.
    """
    engine = regorus.Engine()
    if coverage:
        engine.set_enable_coverage(True)
    for name, text in bundle.modules:
        try:
            engine.add_policy(name, text)
        except Exception as exc:  # regorus raises RuntimeError with a source excerpt
            raise PolicyError(f"{bundle.root / name}: does not compile: {first_line(str(exc))}") from exc
    try:
        engine.add_data_json(bundle.data_json)
    except Exception as exc:
        raise PolicyError(f"{bundle.root}: policy data rejected by the engine: {first_line(str(exc))}") from exc
    if check:
        probe = engine.clone()
        try:
            probe.set_input_json("{}")
            probe.eval_query_as_json("data")
        except Exception as exc:
            raise PolicyError(f"{bundle.root}: policy does not compile: {first_line(str(exc))}") from exc
    return engine


@dataclass(frozen=True)
class _State:
    bundle: PolicyBundle
    generation: int


@dataclass
class _ThreadEngines:
    """One thread's prepared engines for one policy generation."""

    generation: int
    engine: Any  # regorus.Engine (the interpreter)
    vms: dict[str, Any]  # compiled mode: query -> regorus.Rvm, or None if that query fell back


def _compile_vm(bundle: PolicyBundle, query: str) -> Any:
    program = regorus.Program.compile_from_modules(bundle.data_json, list(bundle.modules), [query])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json(bundle.data_json)
    return vm


class EmbeddedEngine:
    """:class:`sandbox.policy.PolicyEngine` on regorus; see the module docstring for threading."""

    def __init__(
        self,
        path: Path,
        *,
        on_reload: ReloadCallback | None = None,
        watch: bool = False,
        watch_interval_s: float = 1.0,
        mode: str = "interpreter",
    ) -> None:
        if mode not in ("interpreter", "compiled"):
            raise PolicyError(f"unknown embedded_mode {mode!r}; use 'interpreter' or 'compiled'")
        self._compiled = mode == "compiled"
        self._path = Path(path)
        self._on_reload = on_reload
        self._token = next(_tokens)
        self._reload_lock = threading.Lock()
        self._closed = threading.Event()
        bundle = load_bundle(self._path)
        engine = compile_bundle(bundle, check=True)
        self._state = _State(bundle=bundle, generation=1)
        self._remember(self._state, engine)
        self._fingerprint = fingerprint(self._path)
        self._watcher: threading.Thread | None = None
        if watch:
            self._watcher = threading.Thread(
                target=self._watch, args=(watch_interval_s,), name="policy-watch", daemon=True
            )
            self._watcher.start()

    @property
    def revision(self) -> str:
        return self._state.bundle.revision

    @property
    def bundle(self) -> PolicyBundle:
        return self._state.bundle

    def decide(self, input_doc: Mapping[str, Any], *, query: str = "data.par.decision") -> Decision:
        state = self._state
        try:
            if not QUERY.match(query):
                return policy_error(f"query {query!r} is not a data path like data.par.decision", state.bundle.revision)
            doc = input_doc if isinstance(input_doc, dict) else dict(input_doc)
            text = _encode_input(doc)
            if len(text) > MAX_INPUT_BYTES:
                return policy_error(f"input is {len(text)} bytes, over {MAX_INPUT_BYTES}", state.bundle.revision)
            prepared = self._engines_for(state)
            vm = self._vm_for(prepared, state, query) if self._compiled else None
            if vm is not None:
                vm.set_input_json(text)
                result = json.loads(vm.execute_entry_point(query))
            else:
                prepared.engine.set_input_json(text)
                result = json.loads(prepared.engine.eval_rule_as_json(query))
            if result == UNDEFINED:
                result = None
        except (TypeError, ValueError) as exc:
            return policy_error(f"input is not plain JSON: {exc}", state.bundle.revision)
        except PolicyError as exc:
            return policy_error(exc.message, state.bundle.revision)
        except Exception as exc:  # noqa: BLE001 - decide() never raises; regorus raises RuntimeError
            msg = first_line(str(exc))
            if "not a valid rule path" in msg:
                msg = f"{query} is not defined by any loaded policy"
            return policy_error(msg, state.bundle.revision)
        except BaseException as exc:  # pyo3 PanicException derives from BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
            return policy_error(f"engine panic: {exc}", state.bundle.revision)
        return parse_decision(result, query=query, revision=state.bundle.revision)

    def reload(self) -> bool:
        """Re-read the directory; on any error keep the working policy and report the failure."""
        with self._reload_lock:
            old = self._state
            try:
                bundle = load_bundle(self._path)
                if bundle.revision == old.bundle.revision:
                    self._fingerprint = fingerprint(self._path)
                    return True
                engine = compile_bundle(bundle, check=True)
            except PolicyError as exc:
                log.error("policy_reload_failed", path=str(self._path), error=exc.message, revision=old.bundle.revision)
                self._notify("policy_reload_failed", exc.message)
                return False
            new = _State(bundle=bundle, generation=old.generation + 1)
            self._remember(new, engine)
            self._state = new  # one reference assignment: readers see old or new, never a mix
            self._fingerprint = fingerprint(self._path)
        log.info("policy_reloaded", path=str(self._path), revision=bundle.revision, previous=old.bundle.revision)
        self._notify("policy_reloaded", None)
        return True

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
        getattr(_tls, "engines", {}).pop(self._token, None)

    # -- internals -------------------------------------------------------------------------------

    def _engines_for(self, state: _State) -> _ThreadEngines:
        engines: dict[int, _ThreadEngines] | None = getattr(_tls, "engines", None)
        if engines is not None:
            cached = engines.get(self._token)
            if cached is not None and cached.generation == state.generation:
                return cached
        return self._remember(state, compile_bundle(state.bundle))

    def _remember(self, state: _State, engine: Any) -> _ThreadEngines:
        engines = getattr(_tls, "engines", None)
        if engines is None:
            engines = _tls.engines = {}
        prepared = engines[self._token] = _ThreadEngines(state.generation, engine, {})
        return prepared

    def _vm_for(self, prepared: _ThreadEngines, state: _State, query: str) -> Any:
        """The compiled program for ``query``; None (interpreter) if regorus cannot compile it."""
        if query not in prepared.vms:
            try:
                prepared.vms[query] = _compile_vm(state.bundle, query)
            except Exception as exc:  # noqa: BLE001 - fall back to the interpreter, which reports real errors
                log.warning("policy_compiled_mode_fallback", query=query, error=first_line(str(exc)))
                prepared.vms[query] = None
        return prepared.vms[query]

    def _notify(self, event: str, error: str | None) -> None:
        if self._on_reload is None:
            return
        try:
            self._on_reload(event, error)
        except Exception as exc:  # noqa: BLE001 - a failing audit hook must not kill the watcher
            log.error("policy_reload_callback_failed", policy_event=event, error=str(exc))

    def _watch(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            try:
                current = fingerprint(self._path)
            except OSError:
                continue
            if current != self._fingerprint:
                self._fingerprint = current  # report a broken edit once, not every second
                self.reload()
