"""loss.target: the losses compare against the anonymised input (default) or the unaligned source at
its native size (official), and with official_value_ranges the source is seen in [0, 1]."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anon.data.images import list_images, load_image
from anon.method.losses import FalcoLoss
from anon.runtime.run import anonymize


def record_reference_inputs(monkeypatch) -> list:
    seen = []
    original = FalcoLoss.reference_input

    def recording(self, originals):
        x = original(self, originals)
        seen.append(x.detach().clone())
        return x
    monkeypatch.setattr(FalcoLoss, "reference_input", recording)
    return seen


def first_source(tiny_world: Path) -> Path:
    return list_images(tiny_world / "images")["person0/img0"]


def test_default_target_is_the_resized_input_in_minus_one_one(tiny_cfg, tiny_world, monkeypatch):
    seen = record_reference_inputs(monkeypatch)
    anonymize(tiny_cfg("dataset.image_size=32", "dataset.limit=1", "dataset.batch_size=1", "module.steps=1"))
    assert seen[0].shape == (1, 3, 32, 32)
    assert torch.allclose(seen[0][0], load_image(first_source(tiny_world), 32))


def test_official_target_is_the_unaligned_source_at_native_size_in_zero_one(tiny_cfg, tiny_world, monkeypatch):
    seen = record_reference_inputs(monkeypatch)
    anonymize(tiny_cfg("dataset.image_size=32", "dataset.limit=1", "dataset.batch_size=1", "module.steps=1",
                       "loss.target=unaligned", "loss.official_value_ranges=true"))
    source = load_image(first_source(tiny_world))  # 64 px, not resized
    assert seen[0].shape == (1, 3, 64, 64) and seen[0].min() >= 0
    assert torch.allclose(seen[0][0], (source + 1) / 2)


def test_unknown_target_is_a_one_line_error():
    import pytest

    with pytest.raises(ValueError, match="loss.target"):
        FalcoLoss(target="cropped")


def test_image_size_null_resizes_once_inside_the_networks(tiny_cfg, tiny_world, monkeypatch):
    """dataset.image_size=null (the official experiment): no resampling on load, the decoded pixels reach
    the loss networks, which do the only resize."""
    seen = record_reference_inputs(monkeypatch)
    anonymize(tiny_cfg("dataset.image_size=null", "dataset.limit=1", "dataset.batch_size=1", "module.steps=1"))
    decoded = torch.from_numpy(np.asarray(Image.open(first_source(tiny_world)).convert("RGB"), dtype=np.float32))
    assert seen[0].shape == (1, 3, 64, 64)
    assert torch.allclose(seen[0][0], decoded.permute(2, 0, 1) / 127.5 - 1)
