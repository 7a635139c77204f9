"""Reading checkpoint files: one place for ``weights_only`` loading and its one-line errors."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from anon.errors import AnonError, CheckpointMismatchError, MissingCheckpointError


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
    except (EOFError, RuntimeError, ValueError, OSError) as err:  # empty, truncated, not a torch file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        fix = f"`anon download {name} --force`" if name else "replace it with a complete copy"
        raise AnonError(f"{path} is empty, truncated or not a PyTorch checkpoint ({path.stat().st_size} bytes; "
                        f"{type(err).__name__}{': ' + first[:160] if first else ''}); {fix}") from None


def key_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                 ) -> tuple[list[str], list[str], list[str]]:
    """How a state dict differs from a module's own: its keys that ``state`` lacks, ``state``'s keys the
    module does not have, and the shared keys whose shapes differ (each list sorted)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return missing, unexpected, reshaped


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str,
                 **load_kwargs) -> None:
    """``module.load_state_dict(state, strict=True)``; a checkpoint made for another architecture is one
    line: the file, how many keys are missing / unexpected / mis-shaped (a few examples), what to do."""
    own = module.state_dict()
    missing, unexpected, shapes = key_mismatch(own, state)
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} of its {len(own)} keys missing (e.g. {', '.join(missing[:2])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})" if unexpected else "",
                 f"{len(shapes)} with another shape (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} in the "
                 f"file, {tuple(own[shapes[0]].shape)} expected)" if shapes else ""]
        raise CheckpointMismatchError(f"{path} does not fit {what}: {'; '.join(p for p in parts if p)}; "
                        f"point the config at a checkpoint of this architecture or pick the config group "
                        f"that matches the file")
    module.load_state_dict(state, strict=True, **load_kwargs)


def read_state_dict(path: str | Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint that is a plain state dict."""
    state = read_checkpoint(path, name)
    if not isinstance(state, dict):
        raise AnonError(f"{path} is not a state dict (found {type(state).__name__})")
    return state
