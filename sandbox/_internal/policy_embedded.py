"""The embedded backend: regorus, compiled once per thread, swapped atomically on reload.

regorus' Python ``Engine`` is *unsendable*: touching it (even ``clone()``) from a thread other than the
one that created it panics. The proxy evaluates from many threads, so each thread lazily compiles its
own engine from the shared, immutable :class:`PolicyBundle` and keeps it in thread-local storage, tagged
with the generation it was built from. A reload compiles the new bundle first (in the reloading thread)
and only then bumps the generation, so a policy that fails to compile never replaces a working one, and
every thread picks up the new policy on its next decision. Each copy costs ~8 MB resident, so a
long-lived process should create the engine *in* the thread that will decide (the runner and the proxy
open it inside their one policy thread); the thread that merely reloads does not keep its copy. Per
decision the cost is one
``set_input_json`` plus one ``eval_rule`` on an already-prepared engine; no lock is taken.

``mode="compiled"`` (the default) evaluates through regorus' RVM (the policy compiled to bytecode per
query, about 3x faster). The RVM is not the engine ``par policy test`` runs, and differs from it
where a rule could have several values or a value is undefined; so in compiled mode the bundle must
pass the lint of :mod:`sandbox._internal.policy_lint` at load and at every reload (a failure is a
compile error: the old policy stays), and the RVM compiles the lint's hardened text (``x := e`` as
``x = e``). A query the RVM cannot compile falls back to the interpreter (docs/policy-input.md,
"Embedded modes"). With ``isolate_build`` (``par run``, ``par proxy``) that load-time work runs in a
child process and the deciding thread only loads the serialized program (sandbox/_internal/policy_build.py).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus
import ujson

from sandbox._internal.policy_build import BuiltProgram, build_in_child
from sandbox._internal.policy_bundle import PolicyBundle, fingerprint, load_bundle
from sandbox._internal.policy_decision import QUERY, Decision, first_line, parse_decision, policy_error
from sandbox._internal.policy_lint import check_engine, harden
from sandbox.errors import PolicyError
from sandbox.logs import get_logger

log = get_logger(__name__)

MAX_INPUT_BYTES = 1024 * 1024  # any input; task inputs have their own, smaller cap
UNDEFINED = "<undefined>"  # what regorus' eval_rule_as_json returns for an undefined rule
_tokens = itertools.count(1)
_tls = threading.local()


def encode_input(doc: dict[str, Any]) -> str:
    """The input as compact JSON, exactly what ``json.dumps(doc, allow_nan=False, separators=(",", ":"))`` writes.

    Every decision serializes its input for regorus; ujson writes the same bytes (the tests compare
    them) in under half the time, about 4 us less per decision. NaN, infinities, sets, bytes and a
    circular document raise (ValueError, TypeError, OverflowError), which decide() turns into the
    fail-closed "not plain JSON" deny.
    """
    return ujson.dumps(doc, allow_nan=False, escape_forward_slashes=False, reject_bytes=True)


_NOT_COMPILED = object()

ReloadCallback = Callable[[str, "str | None"], None]


def compile_bundle(bundle: PolicyBundle, *, coverage: bool = False, check: bool = False, lint: bool = False) -> Any:
    """A ready regorus engine for ``bundle``; PolicyError names the file and line that failed.

    regorus parses in ``add_policy`` but resolves rules (unknown functions, bad refs) only when a rule
    is first evaluated. With ``check``, the whole ``data`` tree is evaluated once against an empty
    input so those errors surface at load time, where they keep the old policy, rather than on the
    first request. Rules must therefore be undefined, not errors, when input fields are missing.
    With ``lint`` (compiled mode), a rule the compiled engine could answer differently from the
    interpreter (several values, undefined parts: sandbox/_internal/policy_lint.py) is a load error too.
    """
    engine = regorus.Engine()
    if coverage:
        engine.set_enable_coverage(True)
    for name, text in bundle.modules:
        try:
            engine.add_policy(name, text)
        except Exception as exc:  # regorus raises RuntimeError with a source excerpt
            raise PolicyError(f"{bundle.root / name}: does not compile: {first_line(str(exc))}") from exc
    if lint:
        check_engine(engine)
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
    built: BuiltProgram | None = None  # compiled mode with isolate_build: the child's program


@dataclass
class _ThreadEngines:
    """One thread's prepared engines for one policy generation."""

    generation: int
    engine: Any  # regorus.Engine (the interpreter); in compiled mode None until a query falls back
    vms: dict[str, Any]  # compiled mode: query -> regorus.Rvm, or None if that query fell back


def compile_program(bundle: PolicyBundle, *queries: str) -> Any:
    """``bundle`` compiled to RVM bytecode for the entry points ``queries`` (raises if it cannot).

    One program per process for all the queries it answers: each program carries the whole compiled
    bundle (~4 MB resident), so the runner with its in-process proxy compiles one, not two.
    """
    # harden(): `x := e` compiled as `x = e`, which the RVM evaluates correctly (policy_lint.py).
    return regorus.Program.compile_from_modules(bundle.data_json, harden(bundle.modules), list(queries))


def compile_vm(bundle: PolicyBundle, *queries: str) -> Any:
    """A regorus RVM running :func:`compile_program` (raises if it cannot compile)."""
    return _vm(compile_program(bundle, *queries), bundle)


def _vm(program: Any, bundle: PolicyBundle) -> Any:
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json(bundle.data_json)
    return vm


def _load_program(raw: bytes, bundle: PolicyBundle) -> Any:
    """An RVM running the child's serialized program; None (compile here instead) if it does not load whole."""
    try:
        program, partial = regorus.Program.deserialize_binary(raw)
        if partial:  # regorus would have to recompile parts of it: do it the ordinary way
            return None
        return _vm(program, bundle)
    except Exception as exc:  # noqa: BLE001 - the in-process compile path still decides correctly
        log.warning("policy_program_load_failed", error=first_line(str(exc)))
        return None


class EmbeddedEngine:
    """:class:`sandbox.policy.PolicyEngine` on regorus; see the module docstring for threading."""

    def __init__(
        self,
        path: Path,
        *,
        on_reload: ReloadCallback | None = None,
        watch: bool = False,
        watch_interval_s: float = 1.0,
        mode: str = "compiled",
        entry_points: tuple[str, ...] = (),
        isolate_build: bool = False,
    ) -> None:
        if mode not in ("interpreter", "compiled"):
            raise PolicyError(f"unknown embedded_mode {mode!r}; use 'interpreter' or 'compiled'")
        self._compiled = mode == "compiled"
        self._entry_points = tuple(q for q in entry_points if QUERY.match(q))  # compiled together, once
        # Long-lived processes validate and compile in a child (sandbox/_internal/policy_build.py).
        self._isolate_build = isolate_build and self._compiled
        self._path = Path(path)
        self._on_reload = on_reload
        self._token = next(_tokens)
        self._reload_lock = threading.Lock()
        self._closed = threading.Event()
        bundle = load_bundle(self._path)
        engine, built = self._prepare(bundle)
        self._state = _State(bundle=bundle, generation=1, built=built)
        # In compiled mode the interpreter only validated the bundle: the deciding thread keeps compiled
        # programs alone (an interpreter beside them costs ~4 MB resident it would never use).
        self._remember(self._state, None if self._compiled else engine)
        del engine
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
            prepared = self._engines_for(state)
            # A compiled program exists only for a query that was validated when it was compiled, so the
            # hot path skips the query regex; a None entry means "use the interpreter".
            vm = prepared.vms.get(query, _NOT_COMPILED) if self._compiled else None
            if vm is _NOT_COMPILED or (vm is None and not self._compiled):
                if not QUERY.match(query):
                    return policy_error(
                        f"query {query!r} is not a data path like data.par.decision", state.bundle.revision
                    )
                if self._compiled:
                    vm = self._vm_for(prepared, state, query)
            text = encode_input(input_doc if type(input_doc) is dict else dict(input_doc))
            if len(text) > MAX_INPUT_BYTES:
                return policy_error(f"input is {len(text)} bytes, over {MAX_INPUT_BYTES}", state.bundle.revision)
            if vm is not None:
                vm.set_input_json(text)
                raw = vm.execute_entry_point(query)
            else:
                if prepared.engine is None:  # compiled mode, a query the RVM could not compile
                    prepared.engine = compile_bundle(state.bundle)
                prepared.engine.set_input_json(text)
                raw = prepared.engine.eval_rule_as_json(query)
            result = ujson.loads(raw)  # same values as json.loads (tests compare), ~1 us faster
            if result == UNDEFINED:
                result = None
        except (TypeError, ValueError, OverflowError) as exc:
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
                engine, built = self._prepare(bundle)
            except PolicyError as exc:
                log.error("policy_reload_failed", path=str(self._path), error=exc.message, revision=old.bundle.revision)
                self._notify("policy_reload_failed", exc.message)
                return False
            new = _State(bundle=bundle, generation=old.generation + 1, built=built)
            if self._token in getattr(_tls, "engines", {}):
                # Only a thread that decides keeps its copy: a watcher or SIGHUP thread would hold ~8 MB
                # it never uses, and the deciding threads compile the new generation on their next call.
                self._remember(new, None if self._compiled else engine)
            del engine
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

    def _prepare(self, bundle: PolicyBundle) -> tuple[Any, BuiltProgram | None]:
        """Validate ``bundle`` (PolicyError if unusable): an interpreter engine, or the child's program."""
        if self._isolate_build:
            return None, build_in_child(bundle, self._entry_points)
        return compile_bundle(bundle, check=True, lint=self._compiled), None

    def _engines_for(self, state: _State) -> _ThreadEngines:
        engines: dict[int, _ThreadEngines] | None = getattr(_tls, "engines", None)
        if engines is not None:
            cached = engines.get(self._token)
            if cached is not None and cached.generation == state.generation:
                return cached
        return self._remember(state, None if self._compiled else compile_bundle(state.bundle))

    def _remember(self, state: _State, engine: Any) -> _ThreadEngines:
        engines = getattr(_tls, "engines", None)
        if engines is None:
            engines = _tls.engines = {}
        prepared = engines[self._token] = _ThreadEngines(state.generation, engine, {})
        return prepared

    def _vm_for(self, prepared: _ThreadEngines, state: _State, query: str) -> Any:
        """The compiled program for ``query``; None (interpreter) if regorus cannot compile it."""
        built = state.built
        if query not in prepared.vms and built is not None and built.program and query in built.entry_points:
            vm = _load_program(built.program, state.bundle)
            if vm is not None:
                prepared.vms.update(dict.fromkeys(built.entry_points, vm))
        if query not in prepared.vms:
            together = [q for q in self._entry_points if q not in prepared.vms]
            if query in together and len(together) > 1:
                try:
                    vm = compile_vm(state.bundle, *together)
                except Exception:  # noqa: BLE001 - one entry point may not compile: try them one by one
                    vm = None
                if vm is not None:
                    prepared.vms.update(dict.fromkeys(together, vm))
        if query not in prepared.vms:
            try:
                prepared.vms[query] = compile_vm(state.bundle, query)
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
