"""One exception root for llmlib, mapped at the boundary (the CLI prints one line and exits).

    LLMLibError
     ├── ConfigError                 bad flags, flag strings, YAML, files
     │    └── UnknownNameError       a name not in a known set ("did you mean ...?")
     ├── MissingDependencyError      an optional package is not installed (names the extra)
     └── BackendError                a core could not be set up or reached
          └── HealthCheckError       a core failed its health check / readiness timeout

Failed *requests* are not exceptions: they are LLMResponse records with ``error`` set,
completed to LoadGen and counted in the report.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LLMLibError(Exception):
    """Root of every error llmlib raises on purpose."""


class ConfigError(LLMLibError):
    """A configuration value, flag string, YAML file or path is wrong."""


class UnknownNameError(ConfigError):
    """A name is not one of the known choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.choices = sorted(choices)
        super().__init__(unknown_message(kind, name, self.choices))


class MissingDependencyError(LLMLibError):
    """An optional dependency is missing; the message names the pip extra."""


class BackendError(LLMLibError):
    """A core could not be set up or reached."""


class HealthCheckError(BackendError):
    """A core failed its health check or did not become ready in time."""


class WrongServerError(HealthCheckError):
    """The server answered, and is not what the flags say it is (another kind of server, a
    model it does not serve): waiting for it to become ready cannot help."""


def unknown_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """``Unknown core type 'dumy'. Did you mean 'dummy'? Available: a, b``."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown {kind} '{name}'.{hint} Available: {', '.join(choices)}"
