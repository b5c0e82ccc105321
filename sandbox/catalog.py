"""The action catalog: what the runner may execute, loaded from ``script.yaml``.

The file follows Datadog's ``script-credentials-v1`` shape (``runPredefinedScript.<name>.command`` /
``parameterSchema`` / ``allowedEnvVars``) so the same allowlist reads the same in both places, but it is
stricter on purpose, because the allowlist is the last word on what runs as a process:

* every action declares a ``parameterSchema`` and every string parameter is bounded (``enum``, or an
  anchored ``pattern`` plus ``maxLength``); values must also be printable ASCII, which rules out NUL,
  newlines and unicode look-alikes whatever the schema says;
* ``{{ parameters.x }}`` may only fill a *whole* argv element, and a missing value is an error, never
  an empty string, so a template can never splice text into a shell or split into two arguments;
* argv[0] may not be a shell or an interpreter: commands run without a shell, and a catalog entry
  that brings its own shell would bring the injection risk back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator

from sandbox._internal.yamlsafe import load_yaml_file
from sandbox.errors import CatalogError, ParameterError, UnknownActionError

SCHEMA_ID = "script-credentials-v1"
ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# A whole-element template: "{{ parameters.name }}" or "{{ runner.name }}", nothing around it.
TEMPLATE = re.compile(r"^\{\{\s*(parameters|runner)\.([a-z][a-z0-9_]*)\s*\}\}$")
RUNNER_VARS = frozenset({"project", "compose_file"})
FORBIDDEN_PROGRAMS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "ash", "csh", "tcsh", "fish", "busybox", "env", "xargs",
     "python", "python3", "perl", "ruby", "node", "awk", "sudo", "su", "nsenter", "chroot"}
)
SHELL_METACHARACTERS = set(";&|`$<>()\n\r\\*?!{}\"'")
ACTION_KEYS = frozenset(
    {"command", "parameterSchema", "allowedEnvVars", "description", "category", "timeout", "services",
     "replicas"}
)
CATEGORIES = frozenset({"restart", "group_restart", "scale", "diagnostic"})
MAX_PARAM_STRING = 256  # bytes; hard cap over any schema's maxLength
MAX_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Action:
    """One allowlisted command; ``command`` may hold whole-element templates."""

    name: str
    description: str
    category: str
    command: tuple[str, ...]
    parameter_schema: Mapping[str, Any]
    allowed_env_vars: tuple[str, ...]
    timeout_s: float | None
    services: tuple[str, ...]
    replicas: int | None

    def parameters_summary(self) -> list[dict[str, Any]]:
        """Parameters as a list for display: name, type, constraints, required."""
        props: Mapping[str, Any] = self.parameter_schema.get("properties", {})
        required = set(self.parameter_schema.get("required", []))
        out = []
        for name, spec in props.items():
            item = {"name": name, "required": name in required}
            item.update({k: v for k, v in spec.items() if k != "description"})
            if "description" in spec:
                item["description"] = spec["description"]
            out.append(item)
        return out


@dataclass(frozen=True)
class Catalog:
    """The loaded allowlist; immutable so a running task never sees half a reload."""

    source: Path
    actions: Mapping[str, Action]

    def get(self, name: str) -> Action:
        if not isinstance(name, str) or name not in self.actions:
            shown = name if isinstance(name, str) and len(name) <= 80 else repr(name)[:80]
            raise UnknownActionError(f"action '{shown}' is not in the catalog ({self.source})")
        return self.actions[name]

    def validate_parameters(self, name: str, params: Any) -> dict[str, Any]:
        """Check ``params`` against the action's schema; return them with schema defaults applied."""
        action = self.get(name)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ParameterError(f"{name}: parameters must be an object, got {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(key, str) or not PARAM_NAME.match(key):
                raise ParameterError(f"{name}: parameter name {key!r} is not allowed")
            if isinstance(value, str):
                _check_string_value(name, key, value)
        validator = Draft202012Validator(
            action.parameter_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            where = ".".join(str(p) for p in err.absolute_path) or "(parameters)"
            raise ParameterError(f"{name}: parameter '{where}': {_short(err.message)}")
        out = dict(params)
        for key, spec in action.parameter_schema.get("properties", {}).items():
            if key not in out and "default" in spec:
                out[key] = spec["default"]
        return out

    def render(self, name: str, params: Mapping[str, Any], runner_vars: Mapping[str, str]) -> list[str]:
        """Fill the action's templates; ``params`` must already be validated."""
        action = self.get(name)
        argv: list[str] = []
        for element in action.command:
            m = TEMPLATE.match(element)
            if not m:
                argv.append(element)
                continue
            scope, var = m.groups()
            source = params if scope == "parameters" else runner_vars
            if var not in source or source[var] is None:
                raise ParameterError(f"{name}: template '{element}' has no value (missing {scope}.{var})")
            value = source[var]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ParameterError(f"{name}: {scope}.{var} must be a string or integer to fill argv")
            argv.append(str(value))
        return argv


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:200] + "..."


def _check_string_value(action: str, key: str, value: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PARAM_STRING:
        raise ParameterError(f"{action}: parameter '{key}' is longer than {MAX_PARAM_STRING} bytes")
    for ch in value:
        if not (0x20 <= ord(ch) < 0x7F):
            raise ParameterError(
                f"{action}: parameter '{key}' contains {ch!r}: only printable ASCII is accepted"
            )


def load_catalog(path: Path | str) -> Catalog:
    """Load ``script.yaml``; any problem is a :class:`CatalogError` naming the action."""
    path = Path(path)
    doc = load_yaml_file(path, what="action catalog", error=CatalogError)
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: top level must be a mapping")
    unknown = set(doc) - {"schemaId", "runPredefinedScript"}
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    if doc.get("schemaId") != SCHEMA_ID:
        raise CatalogError(f"{path}: schemaId must be '{SCHEMA_ID}', got {doc.get('schemaId')!r}")
    scripts = doc.get("runPredefinedScript")
    if not isinstance(scripts, dict) or not scripts:
        raise CatalogError(f"{path}: 'runPredefinedScript' must be a non-empty mapping of actions")
    actions = {}
    for name, spec in scripts.items():
        action = _parse_action(path, name, spec)
        actions[action.name] = action
    return Catalog(source=path, actions=actions)


def _parse_action(path: Path, name: Any, spec: Any) -> Action:
    if not isinstance(name, str) or not ACTION_NAME.match(name):
        raise CatalogError(f"{path}: action name {name!r} must match {ACTION_NAME.pattern}")

    def fail(msg: str) -> CatalogError:
        return CatalogError(f"{path}: action '{name}': {msg}")

    if not isinstance(spec, dict):
        raise fail("must be a mapping")
    unknown = set(spec) - ACTION_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    command = spec.get("command")
    if not isinstance(command, list) or not command:
        raise fail("'command' must be a non-empty list of argv strings (no shell)")
    if "parameterSchema" not in spec:
        raise fail("'parameterSchema' is required (use {type: object, properties: {}} for none)")
    schema = spec["parameterSchema"]
    _check_schema(fail, schema)
    props = schema.get("properties", {})
    for i, element in enumerate(command):
        if not isinstance(element, str) or not element or "\0" in element:
            raise fail(f"command[{i}] must be a non-empty string")
        m = TEMPLATE.match(element)
        if m:
            scope, var = m.groups()
            if i == 0:
                raise fail("command[0] (the program) cannot be a template")
            if scope == "parameters" and var not in props:
                raise fail(f"command[{i}] uses parameters.{var}, which parameterSchema does not declare")
            if scope == "runner" and var not in RUNNER_VARS:
                raise fail(f"command[{i}] uses runner.{var}; known: {', '.join(sorted(RUNNER_VARS))}")
        elif "{{" in element or "}}" in element or "{%" in element:
            raise fail(f"command[{i}] {element!r}: a template must be a whole argv element")
        elif SHELL_METACHARACTERS & set(element):
            raise fail(f"command[{i}] {element!r} contains shell metacharacters; argv runs without a shell")
    program = PurePosixPath(command[0]).name
    if program in FORBIDDEN_PROGRAMS or program.startswith("python"):
        raise fail(f"command[0] '{command[0]}' is a shell or interpreter; list the real program instead")
    env = spec.get("allowedEnvVars", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and ENV_NAME.match(e) for e in env):
        raise fail("'allowedEnvVars' must be a list of UPPER_CASE variable names")
    if set(env) & {"PATH", "HOME", "DOCKER_HOST", "COMPOSE_PROJECT_NAME", "LD_PRELOAD", "LD_LIBRARY_PATH"}:
        raise fail("'allowedEnvVars' may not include variables the jail controls or loader variables")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise fail("'description' must be a string")
    category = spec.get("category", "diagnostic")
    if category not in CATEGORIES:
        raise fail(f"'category' must be one of {', '.join(sorted(CATEGORIES))}")
    timeout = spec.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise fail(f"'timeout' must be a number of seconds in (0, {MAX_TIMEOUT_S}]")
    services = spec.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise fail("'services' must be a list of compose service names")
    replicas = spec.get("replicas")
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0):
        raise fail("'replicas' must be a non-negative integer")
    return Action(
        name=name,
        description=description,
        category=category,
        command=tuple(command),
        parameter_schema=schema,
        allowed_env_vars=tuple(env),
        timeout_s=float(timeout) if timeout is not None else None,
        services=tuple(services),
        replicas=replicas,
    )


def _check_schema(fail: Any, schema: Any) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise fail("'parameterSchema' must be a JSON Schema with type: object")
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise fail(f"'parameterSchema' is not a valid JSON Schema: {_short(exc.message)}") from exc
    if schema.get("additionalProperties") is not False:
        raise fail("'parameterSchema' must set additionalProperties: false")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise fail("'parameterSchema.properties' must be a mapping")
    for pname, pspec in props.items():
        if not PARAM_NAME.match(pname):
            raise fail(f"parameter name {pname!r} must match {PARAM_NAME.pattern}")
        if not isinstance(pspec, dict) or pspec.get("type") not in ("string", "integer"):
            raise fail(f"parameter '{pname}' must have type string or integer")
        if pspec["type"] == "string":
            bounded = "enum" in pspec or ("pattern" in pspec and "maxLength" in pspec)
            if not bounded:
                raise fail(f"string parameter '{pname}' needs an enum, or a pattern and a maxLength")
            pattern = pspec.get("pattern")
            if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
                raise fail(f"parameter '{pname}': pattern must be anchored with ^ and $")
            if pspec.get("maxLength", 0) > MAX_PARAM_STRING:
                raise fail(f"parameter '{pname}': maxLength may not exceed {MAX_PARAM_STRING}")
        if pspec["type"] == "integer" and not ("minimum" in pspec and "maximum" in pspec):
            raise fail(f"integer parameter '{pname}' needs a minimum and a maximum")
