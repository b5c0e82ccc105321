"""The OPA backend: the same decision documents, asked of an OPA server over its Data API.

``opa-python-client``'s ``OpaClient.query_rule`` is exactly ``POST /v1/data/<path>`` with
``{"input": ...}`` and a per-request ``timeout``, so it is used as is, with two settings changed for a
security control that must answer fast: ``retries=0`` (its default retries 500s with back-off, which
turns a 0.5 s budget into seconds) and no proxy from the environment (a policy query must not leave
for an HTTP proxy because ``HTTP_PROXY`` is set). Its ``timeout`` is requests' per-socket-operation
timeout (connect, then each read), so a server that trickles bytes can take longer than one timeout;
a short timeout still bounds a dead or hung server, which is the failure that matters.

Everything that goes wrong (refused connection, timeout, HTTP error, body that is not JSON, no
``result`` key, malformed decision) is a deny with a ``policy_error`` reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient

from sandbox._internal.policy_bundle import load_bundle
from sandbox._internal.policy_decision import QUERY, Decision, first_line, parse_decision, policy_error
from sandbox.errors import ConfigError, PolicyError
from sandbox.logs import get_logger

log = get_logger(__name__)

UNKNOWN_REVISION = "unknown"


def client_for(url: str, timeout_s: float) -> OpaClient:
    """An OpaClient for ``url`` (scheme://host:port, no path); ConfigError if the URL is not that."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"policy.opa_url must look like http://host:port, got {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"policy.opa_url must not carry credentials, a query or a fragment: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"policy.opa_url has an invalid port: {url!r}") from exc
    if timeout_s <= 0:
        raise ConfigError("policy.opa_timeout_s must be greater than 0")
    client = OpaClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", retries=0, timeout=timeout_s)
    # The client keeps its requests.Session private; trust_env=False is the one setting it lacks.
    client._session.trust_env = False
    return client


class OpaEngine:
    """:class:`sandbox.policy.PolicyEngine` backed by an OPA server."""

    def __init__(self, url: str, timeout_s: float, *, local_path: Path | None = None) -> None:
        self._url = url
        self._client = client_for(url, timeout_s)
        self._local_path = local_path
        self.revision = self._local_revision()

    def decide(self, input_doc: Mapping[str, Any], *, query: str = "data.par.decision") -> Decision:
        revision = self.revision
        try:
            if not QUERY.match(query):
                return policy_error(f"query {query!r} is not a data path like data.par.decision", revision)
            package, _, rule = query.removeprefix("data.").rpartition(".")
            if not package:  # a top-level document: data.x
                package, rule = rule, ""
            body = self._client.query_rule(dict(input_doc), package, rule or None)
        except requests.Timeout:
            return policy_error(f"OPA at {self._url} did not answer within {self._client.timeout} s", revision)
        except requests.ConnectionError as exc:
            return policy_error(f"OPA at {self._url} is unreachable: {_reason(exc)}", revision)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            return policy_error(f"OPA at {self._url} answered HTTP {status} for {query}", revision)
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError; bad input is TypeError
            return policy_error(f"OPA at {self._url} sent a response that is not JSON: {exc}", revision)
        except Exception as exc:  # noqa: BLE001 - decide() never raises: anything else is a deny too
            return policy_error(f"OPA query failed: {type(exc).__name__}: {first_line(str(exc))}", revision)
        if not isinstance(body, dict) or "result" not in body:
            return policy_error(f"{query} is undefined on the OPA server (no 'result' in the response)", revision)
        return parse_decision(body["result"], query=query, revision=revision)

    def reload(self) -> bool:
        """OPA loads its own bundles; we only refresh the revision we report for the local copy."""
        self.revision = self._local_revision()
        return True

    def close(self) -> None:
        self._client.close_connection()

    def _local_revision(self) -> str:
        if self._local_path is None:
            return UNKNOWN_REVISION
        try:
            return load_bundle(self._local_path).revision
        except PolicyError as exc:
            log.warning("policy_local_revision_unavailable", path=str(self._local_path), error=exc.message)
            return UNKNOWN_REVISION


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker
    return first_line(text)[:200]
