"""Reading checkpoint files: one place for ``weights_only`` loading and its one-line errors."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from anon.errors import AnonError, MissingCheckpointError


def read_checkpoint(path: str | Path, name: str | None = None, refused_hint: str = "") -> object:
    """``torch.load(path, weights_only=True)`` on CPU.

    Raises :class:`MissingCheckpointError` (naming ``anon download <name>``) when the file is absent,
    and :class:`AnonError` when it holds pickled Python objects rather than tensors and plain
    containers (``refused_hint`` says how to fix such a file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingCheckpointError(path, name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise AnonError(f"{path} cannot be read with weights_only=True{refused_hint}: {err}") from None


def read_state_dict(path: str | Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint that is a plain state dict."""
    state = read_checkpoint(path, name)
    if not isinstance(state, dict):
        raise AnonError(f"{path} is not a state dict (found {type(state).__name__})")
    return state
