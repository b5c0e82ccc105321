"""The one exception hierarchy of the runner.

Every failure a user can act on is an :class:`Error`. The CLI catches only this base and prints
:meth:`Error.diagnostics`, so a new failure mode needs a subclass with an actionable message, not a
new ``except`` clause somewhere. Anything else that escapes is a bug and is allowed to show a traceback.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error the user is expected to understand and fix."""

    #: What the user can do about it; subclasses override or pass ``hint=``.
    default_hint = "See the documentation in docs/ for this component."
    #: Process exit code the CLI uses when this error ends a command.
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def diagnostics(self) -> str:
        """A human-readable explanation: what went wrong, then what to do."""
        return f"error: {self.message}\nhint: {self.hint}"


class ConfigError(Error):
    """A configuration file is missing, unreadable or invalid; the message names file and key."""

    default_hint = "Fix the named key in the named file; config/runner.yaml documents every key."


class CatalogError(ConfigError):
    """The action allowlist (script.yaml) is invalid; the message names the action."""

    default_hint = "Fix the named action in config/credentials/script.yaml (schemaId script-credentials-v1)."


class UnknownActionError(Error):
    """A task asked for an action that is not in the catalog."""

    default_hint = "Run `par actions` to list the actions this runner allows."


class ParameterError(Error):
    """Task parameters do not satisfy the action's parameterSchema; nothing was run."""

    default_hint = "Run `par actions` to see each action's parameters and their constraints."


class PolicyError(Error):
    """The policy engine could not produce a decision (compile error, timeout, malformed decision)."""

    default_hint = "Run `par policy test policies/` and check the OPA server, if the engine is `opa`."


class JailError(Error):
    """A sandbox control could not be applied, so the action was refused (fail closed)."""

    default_hint = "Run `par doctor` to see which kernel feature (seccomp, Landlock, netns) is missing."


class ProxyError(Error):
    """The Docker socket proxy could not start or reach its upstream."""

    default_hint = "Check that the upstream Docker socket exists and that the listen path is writable."


class AuditError(Error):
    """The audit log cannot be written or read; actions are refused until it can."""

    default_hint = "Check free space and permissions of the audit directory; `par audit verify` it."


class AuditVerificationError(AuditError):
    """The audit log or a checkpoint failed verification: it was altered, truncated or forged."""

    default_hint = "Treat the log as tampered: keep a copy, compare with an exported bundle or checkpoint."


class KeyFileError(Error):
    """A key file is missing, malformed or has unsafe permissions."""

    default_hint = "Create keys with `par keygen` and keep private keys at mode 0600 (chmod 600 FILE)."


class ProtocolError(Error):
    """The control plane sent something that does not follow the protocol, or could not be reached."""

    default_hint = "Check control_plane.url in config/runner.yaml and that the control plane is up."


class TaskRejected(Error):
    """A task was refused before execution; ``code`` is the error code reported to the control plane."""

    def __init__(self, code: str, message: str, *, hint: str | None = None, task_id: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.task_id = task_id  # the id the message claims, when it is known before verification
