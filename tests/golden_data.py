"""Golden outputs of the official implementations (files under ``tests/golden/``).

Each network has ``tests/golden/<net>.json`` (where the numbers come from: official repository,
commit, seeds, and the official state-dict layout as ``[key, shape]`` pairs) and
``tests/golden/<net>.pt`` (the official output, and the input when it is small). They are written by
``experiments/golden/make_<net>.py``, which runs the official code; a test rebuilds the same weights
from the seed with :func:`seeded_state`, loads them through the project's loader, and compares.

The weights are re-created rather than stored because full-size checkpoints are tens to hundreds of
megabytes; :func:`seeded_state` depends only on the seed, the key order and the shapes.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
#: Tolerance of every golden comparison (issue 15): absolute 1e-4 plus relative 1e-5.
ATOL, RTOL = 1e-4, 1e-5


def seeded_tensor(shape, seed: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """Uniform values in ``[low, high)`` from a CPU generator seeded with ``seed`` (same on every machine)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=g) * (high - low) + low


def _seeded_entry(key: str, shape: tuple, g: torch.Generator, equalized_lr: bool) -> torch.Tensor:
    """One state-dict tensor with a scale that keeps activations finite through deep networks.

    Matrices and kernels: normal / sqrt(fan-in), or plain normal with ``equalized_lr`` (StyleGAN's
    equalised learning rate stores weights at unit scale and rescales them at run time); batch-norm
    running variances in [0.5, 1.5); running means and biases 0.1 * normal; other vectors named
    ``weight`` (norm scales, PReLU slopes) uniform in [0.2, 1.2); any other tensor 0.1 * normal.
    """
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if len(shape) >= 2 and (equalized_lr or not key.endswith("embedding")):
        gain = 1.0 if equalized_lr else 1.0 / math.sqrt(math.prod(shape[1:]))
        return torch.randn(shape, generator=g) * gain
    if key.endswith("weight"):
        return torch.rand(shape, generator=g) + 0.2
    return 0.1 * torch.randn(shape, generator=g)


def seeded_state(layout: list, seed: int, equalized_lr: bool = False, rules: list = ()) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of ``layout`` (``[[key, shape], ...]``, official order).

    ``rules``: ``[[regex, scale, shift], ...]``; a key matching ``regex`` gets ``value * scale + shift``
    (e.g. weights stored divided by a learning-rate multiplier, biases initialised at 1).
    """
    g = torch.Generator().manual_seed(seed)
    state = {key: _seeded_entry(key, tuple(shape), g, equalized_lr) for key, shape in layout}
    for pattern, scale, shift in rules:
        for key in state:
            if re.search(pattern, key):
                state[key] = state[key] * scale + shift
    return state


def golden_state(meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict a golden file was made with: seeded tensors, plus the official constants
    (e.g. FIR filter buffers) stored in the ``.pt`` as ``constant.<key>``."""
    state = seeded_state(meta["layout"], meta["weight_seed"], **meta.get("seeding", {}))
    for key, value in tensors.items():
        if key.startswith("constant."):
            state[key[len("constant."):]] = value
    return state


def state_layout(state: dict[str, torch.Tensor]) -> list:
    """``[[key, shape], ...]`` of a state dict, in its order (what :func:`seeded_state` takes)."""
    return [[k, list(v.shape)] for k, v in state.items()]


def read_golden(net: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of ``tests/golden/<net>.{json,pt}``."""
    meta = json.loads((GOLDEN_DIR / f"{net}.json").read_text())
    tensors = torch.load(GOLDEN_DIR / f"{net}.pt", map_location="cpu", weights_only=True)
    return meta, tensors


def write_golden(net: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write the pair of golden files (used by the generation scripts only)."""
    GOLDEN_DIR.mkdir(exist_ok=True)
    (GOLDEN_DIR / f"{net}.json").write_text(json.dumps(meta, indent=1) + "\n")
    torch.save({k: v.detach().contiguous().clone() for k, v in tensors.items()}, GOLDEN_DIR / f"{net}.pt")


def assert_golden(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The project's output equals the official one to 1e-4 absolute + 1e-5 relative."""
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)
