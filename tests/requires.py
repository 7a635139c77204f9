"""What a test needs from outside the repository, and what happens when it is missing.

Locally a missing requirement (a ``make install-lite`` package, the npm-fetched MobileFaceNet file,
the ``../shared/data`` samples) skips the test with the reason. Under ``CI=true`` the same call
*fails* the test with that reason: a CI run that silently skips is a CI run that tests less than
it says. Tests never download anything: files fetched at install time are only read from the cache.

Use :func:`unavailable` inside a test or fixture, or the ``@requires(ok, reason)`` marker (checked
by ``pytest_runtest_setup`` in ``conftest.py``) in place of ``pytest.mark.skipif``.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["on_ci", "unavailable", "requires", "import_or_unavailable", "require_file"]


def on_ci() -> bool:
    """Whether ``$CI`` says this is a CI run (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> None:
    """Skip the current test with ``reason``; under ``CI=true`` fail it instead."""
    if on_ci():
        pytest.fail(f"CI=true, so this is a failure, not a skip: {reason}", pytrace=False)
    pytest.skip(reason)


def requires(ok: bool, reason: str) -> pytest.MarkDecorator:
    """Marker: the test needs ``ok`` to hold (see :func:`unavailable` for what happens otherwise)."""
    return pytest.mark.requires(ok, reason)


def import_or_unavailable(module: str, reason: str) -> ModuleType:
    """``importlib.import_module(module)``, or :func:`unavailable` with ``reason`` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        unavailable(f"{reason} ({err})")


def require_file(path: Path, reason: str = "") -> Path:
    """``path`` when it is a file, else :func:`unavailable` (``reason`` says where it should come from)."""
    if not Path(path).is_file():
        unavailable(f"{path} is absent" + (f": {reason}" if reason else ""))
    return Path(path)
