"""Errors that carry the fix in their message: one line a user can act on."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class AnonError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits with status 2."""


class MissingCheckpointError(AnonError, FileNotFoundError):
    """A network checkpoint file is not where the config says it is."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        self.name = name
        fix = f"fetch it with `anon download {name}`" if name else "check the path in your config"
        super().__init__(f"checkpoint not found: {self.path} ({fix}, or pass a local path)")


class MissingDataError(AnonError, FileNotFoundError):
    """A data folder or file named in the config does not exist."""

    def __init__(self, path: str | Path, what: str = "data folder", hint: str = "check `dataset.*` paths in your config"):
        self.path = Path(path)
        super().__init__(f"{what} not found: {self.path} ({hint})")


class ConfigError(AnonError, ValueError):
    """A config value that cannot work (e.g. a layer range outside the generator's W+)."""


class CheckpointMismatchError(AnonError, ValueError):
    """A checkpoint file that does not hold the weights of the network the config builds."""


def find_cause(error: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` error in ``error``'s ``__cause__`` chain, ``error`` included, or None (Hydra's
    ``instantiate`` wraps what a ``_target_`` raised in its own exception)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, kind):
            return cause
        cause = cause.__cause__
    return None
