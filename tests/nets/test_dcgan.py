"""DCGAN generator: architecture, generator interface, strict load of the gan-face-generate weights.

The forward pass is checked against a functional re-computation from the state dict, and (when the
optional package is installed) against the package's own ``Generator`` class (plain torch code).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from anon.errors import MissingCheckpointError
from anon.lite.packages import MissingPackageError, has_package, package_file
from anon.nets.dcgan import DCGANGenerator
from anon.runtime.run import CONFIG_DIR
from tests.helpers import torch_threads
from tests.requires import requires

needs_package = requires(has_package("gan_face_generate"),
                         "gan-face-generate not installed (make install-lite)")
# (ConvTranspose index, BatchNorm index or None, stride, padding) of the package's nn.Sequential 'main'
LAYERS = [(0, 1, 1, 0), (3, 4, 2, 1), (6, 7, 2, 1), (9, 10, 2, 1), (12, None, 2, 1)]


def functional_dcgan(state: dict, z: torch.Tensor) -> torch.Tensor:
    """The DCGAN forward written out with torch.nn.functional, straight from the state dict."""
    x = z[:, :, None, None]
    for conv, bn, stride, pad in LAYERS:
        x = F.conv_transpose2d(x, state[f"main.{conv}.weight"], stride=stride, padding=pad)
        if bn is None:
            return torch.tanh(x)
        x = F.batch_norm(x, state[f"main.{bn}.running_mean"], state[f"main.{bn}.running_var"],
                         state[f"main.{bn}.weight"], state[f"main.{bn}.bias"], training=False, eps=1e-5)
        x = F.relu(x)


def test_generator_interface_random_init():
    torch.manual_seed(0)
    g = DCGANGenerator(checkpoint=None)
    assert DCGANGenerator.has_wplus is False
    assert (g.z_dim, g.w_dim, g.num_ws, g.resolution) == (100, 100, 1, 64)
    assert torch.equal(g.w_avg, torch.zeros(100)) and "w_avg" not in g.state_dict()
    z = torch.randn(3, 100)
    ws = g.mapping(z)
    assert ws.shape == (3, 1, 100) and torch.equal(ws[:, 0], z)
    img = g(ws)
    assert img.shape == (3, 3, 64, 64) and img.abs().max() <= 1.0
    assert torch.equal(g.synthesis(ws), img)
    with pytest.raises(ValueError):
        g(z)  # N x 100 is not N x 1 x 100


def test_truncation_moves_towards_prior_mean():
    g = DCGANGenerator(checkpoint=None)
    z = torch.randn(4, 100)
    assert torch.allclose(g.mapping(z, truncation_psi=0.7), 0.7 * z[:, None])
    assert torch.equal(g.mapping(z, truncation_psi=0.0), torch.zeros(4, 1, 100))
    assert torch.equal(g.mapping(z, truncation_psi=0.5, truncation_cutoff=0), z[:, None])


def test_forward_matches_functional_computation():
    torch.manual_seed(1)
    g = DCGANGenerator(checkpoint=None, ngf=8)  # same architecture, narrow
    for m in g.main:  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    z = torch.randn(2, 100)
    assert torch.allclose(g(g.mapping(z)), functional_dcgan(g.state_dict(), z), atol=1e-6)


def test_batchnorm_frozen_and_samples_independent():
    g = DCGANGenerator(checkpoint=None, ngf=8)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    g.train()
    assert not g.training and not any(m.training for m in g.modules())
    ws = torch.randn(3, 1, 100)
    batch = g(ws)
    alone = torch.cat([g(ws[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())


def test_gradients_reach_the_code():
    g = DCGANGenerator(checkpoint=None, ngf=8).requires_grad_(False)
    ws = torch.randn(2, 1, 100, requires_grad=True)
    g(ws).square().sum().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(MissingCheckpointError, match="nope.tar"):
        DCGANGenerator(checkpoint=tmp_path / "nope.tar")
    with pytest.raises(MissingPackageError, match="make install-lite"):
        DCGANGenerator(checkpoint="pkg://not_an_installed_package_xyz/weights.tar")


def test_config_composes_with_random_init():
    cfg = OmegaConf.load(f"{CONFIG_DIR}/generator/dcgan_face64.yaml")
    assert cfg.checkpoint == "pkg://gan_face_generate/weights.tar"
    g = instantiate(cfg, checkpoint=None)
    assert isinstance(g, DCGANGenerator) and g.num_ws == 1


@needs_package
def test_package_weights_load_strictly_with_weights_only():
    path = package_file("gan_face_generate", "weights.tar")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ckpt) == ["netG_state_dict"]
    state = ckpt["netG_state_dict"]
    g = DCGANGenerator()
    ours = g.state_dict()
    assert list(ours) == list(state)
    assert all(ours[k].shape == v.shape and torch.equal(ours[k], v) for k, v in state.items())
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(g(g.mapping(z)), functional_dcgan(state, z), atol=1e-5)


@needs_package
def test_matches_the_packages_own_generator():
    from gan_face_generate import models  # torch-only module of the package
    ref = models.Generator(0, 3, 100, 64)
    ref.load_state_dict(torch.load(package_file("gan_face_generate", "weights.tar"), map_location="cpu",
                                   weights_only=True)["netG_state_dict"])
    ref.eval()
    g = DCGANGenerator()
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(g(g.mapping(z)), ref(z[:, :, None, None]))


@needs_package
@requires(has_package("facenet_pytorch"), "facenet-pytorch not installed (make install-lite)")
def test_real_weights_draw_faces_that_mtcnn_finds():
    from anon.data.images import to_uint8
    from anon.nets.mtcnn import MTCNNDetector

    detector = MTCNNDetector()
    torch.manual_seed(0)
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(0))
    found = {}
    with torch_threads(1):  # many tiny ops: one thread is faster on a busy 2-core machine
        for name, g in (("real", DCGANGenerator()), ("random", DCGANGenerator(checkpoint=None))):
            with torch.no_grad():
                images = F.interpolate(g(g.mapping(z)), size=128, mode="bilinear", align_corners=False)
            found[name] = sum(bool(detector.detect(im)) for im in to_uint8(images))
    assert found["real"] >= 5 and found["random"] == 0, found  # measured: 6 / 6 and 0 / 6
