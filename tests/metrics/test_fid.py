"""FID: the metric wiring against a numpy Frechet distance, and the FID Inception-v3's official layout.

Names and shapes are those of pytorch-fid's ``fid_inception_v3()`` (torchvision ``Inception3`` with
``num_classes=1008, aux_logits=False`` and the FID block patches). Outside the test suite the module was
compared with pytorch-fid 0.3.0's ``InceptionV3([3])`` on identical random weights: max |diff| 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from anon.errors import MissingCheckpointError
from anon.metrics.fid import FIDInceptionV3, build_fid


class ChannelMoments(nn.Module):
    """A tiny feature extractor: per-channel mean and mean square of uint8 images -> B x 6."""

    num_features = 6

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.double() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), (x ** 2).mean(dim=(2, 3))], dim=1)


def _numpy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)  # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_fid_wiring_matches_numpy_frechet_distance():
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 8, 8), generator=gen, dtype=torch.uint8)
    fake = (torch.randint(0, 200, (30, 3, 8, 8), generator=gen) + 40).to(torch.uint8)
    metric = build_fid(feature=ChannelMoments())
    for chunk in real.split(16):
        metric.update(chunk, real=True)
    for chunk in fake.split(7):
        metric.update(chunk, real=False)
    extractor = ChannelMoments()
    expected = _numpy_fid(extractor(real).numpy(), extractor(fake).numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert all(fx is not None for fx in metric._reductions.values())


def test_missing_checkpoint_names_the_download(tmp_path):
    with pytest.raises(MissingCheckpointError, match="anon download fid_inception"):
        FIDInceptionV3.from_checkpoint(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(MissingCheckpointError):
        build_fid(tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return FIDInceptionV3(resize_input=False)


def test_official_key_names_and_shapes(inception):
    sd = inception.state_dict()
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("AuxLogits" in k for k in sd)
    # torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, with AuxLogits:
    # 3,326,696 parameters). Without AuxLogits and with 1008 classes: 27,161,264 - 3,326,696 + 8 * 2049.
    assert sum(p.numel() for p in inception.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert all(m.eps == 1e-3 for m in inception.modules() if isinstance(m, nn.BatchNorm2d))


def test_checkpoint_round_trip_and_feature_shape(inception, tmp_path):
    state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in inception.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # the published file has no counters
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    loaded = FIDInceptionV3.from_checkpoint(path, resize_input=False)
    assert torch.equal(loaded.state_dict()["Mixed_6c.branch7x7_3.conv.weight"], state["Mixed_6c.branch7x7_3.conv.weight"])
    images = torch.randint(0, 256, (2, 3, 80, 80), dtype=torch.uint8)
    features = loaded(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    # uint8 and [0, 1] floats are the same input
    torch.testing.assert_close(loaded(images.float() / 255), features)
