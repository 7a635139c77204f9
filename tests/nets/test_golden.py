"""The project's networks against outputs of the official implementations (``tests/golden/``).

Each golden file pair was written by ``experiments/golden/make_<net>.py`` running the official code
on seeded random weights; see its JSON for repository, commit and call. Here the same weights are
re-created from the seed under the official key names, saved in the official checkpoint format,
loaded through the project's loader (strictly), and run on the same input.
"""
from __future__ import annotations

import torch

from anon.nets.arcface import ArcFaceIdentity
from tests.golden_data import assert_golden, read_golden, seeded_state, seeded_tensor


def _input(meta: dict, tensors: dict) -> torch.Tensor:
    if "input" in tensors:
        return tensors["input"]
    return seeded_tensor(meta["input_shape"], meta["input_seed"], *meta["input_range"])


@torch.no_grad()
def test_arcface_ir_se50_matches_falco(tmp_path):
    meta, golden = read_golden("arcface_ir_se50")
    path = tmp_path / "model_ir_se50.pth"
    torch.save(seeded_state(meta["layout"], meta["weight_seed"]), path)  # official format: a plain state dict
    model = ArcFaceIdentity.from_checkpoint(path)
    assert_golden(model(_input(meta, golden)), golden["features"])
