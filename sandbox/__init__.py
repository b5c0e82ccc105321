"""DogBank Private Action Runner: a policy-enforced, jailed, audited runner for Datadog-style actions."""

__version__ = "0.1.0"
