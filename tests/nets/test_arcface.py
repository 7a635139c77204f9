"""ArcFace IR-SE-50 identity encoder: official key names/shapes, loading, preprocessing, gradients.

The official parameter layout is written out below from the TreB1eN/InsightFace_Pytorch
``model.py`` description (the file pSp/e4e/FALCO load as ``model_ir_se50.pth``), not taken
from the module under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from anon.errors import CheckpointMismatchError, MissingCheckpointError
from anon.nets.arcface import ArcFaceIdentity, resize_center_crop
from tests.helpers import caused_by, learned_parameter_count

CONF = Path(__file__).resolve().parents[2] / "conf" / "identity"

# --- facts about the official IR-SE-50 (TreB1eN model.py, Backbone(50, drop, 'ir_se'), 112x112) ---
# stages: (in_channel, depth, num_units); the first unit of a stage has stride 2.
IR_SE_50_STAGES = [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)]
IR_SE_50_NUM_ENTRIES = 397  # state_dict entries, buffers included
IR_SE_50_NUM_PARAMS = 43_797_696  # learnable parameters


def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_ir_se_trunk_shapes(stages=IR_SE_50_STAGES, reduction: int = 16) -> dict[str, tuple]:
    """``input_layer.*`` and ``body.*`` entries of an IR-SE network (shared with e4e)."""
    shapes = {"input_layer.0.weight": (64, 3, 3, 3), **_bn("input_layer.1", 64), "input_layer.2.weight": (64,)}
    n = 0
    for in_c, depth, units in stages:
        for u in range(units):
            i = in_c if u == 0 else depth
            p = f"body.{n}"
            if i != depth:  # projection shortcut: 1x1 conv + BN (else a parameter-free MaxPool2d(1, stride))
                shapes[f"{p}.shortcut_layer.0.weight"] = (depth, i, 1, 1)
                shapes.update(_bn(f"{p}.shortcut_layer.1", depth))
            shapes.update(_bn(f"{p}.res_layer.0", i))
            shapes[f"{p}.res_layer.1.weight"] = (depth, i, 3, 3)
            shapes[f"{p}.res_layer.2.weight"] = (depth,)  # PReLU
            shapes[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            shapes.update(_bn(f"{p}.res_layer.4", depth))
            shapes[f"{p}.res_layer.5.fc1.weight"] = (depth // reduction, depth, 1, 1)
            shapes[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // reduction, 1, 1)
            n += 1
    return shapes


def official_ir_se50_shapes() -> dict[str, tuple]:
    shapes = official_ir_se_trunk_shapes()
    shapes.update(_bn("output_layer.0", 512))  # BatchNorm2d(512), Dropout, Flatten
    shapes["output_layer.3.weight"] = (512, 512 * 7 * 7)
    shapes["output_layer.3.bias"] = (512,)
    shapes.update(_bn("output_layer.4", 512))  # BatchNorm1d(512), affine
    return shapes


def shared_storage_state(shapes: dict[str, tuple], seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A state dict whose tensors are views of two buffers (random values; ones for running_var).

    torch.save keeps the sharing, so the file is as big as the largest tensor: full-size
    checkpoints cost a few tens of MB on disk and in memory.
    """
    largest = max(int(torch.Size(s).numel()) for s in shapes.values())
    values = torch.randn(largest, generator=torch.Generator().manual_seed(seed)) * scale
    ones = torch.ones(largest)
    state = {}
    for key, shape in shapes.items():
        numel = int(torch.Size(shape).numel())
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        else:
            state[key] = (ones if key.endswith("running_var") else values)[:numel].view(shape)
    return state


def tiny(**kw) -> ArcFaceIdentity:
    cfg = OmegaConf.load(CONF / "tiny_irse.yaml")
    cfg.update(kw)
    return instantiate(cfg)


# --------------------------------------------------------------------------------- (a) official
def test_full_size_checkpoint_loads_strictly_and_embeds(tmp_path):
    shapes = official_ir_se50_shapes()
    path = tmp_path / "model_ir_se50.pth"
    torch.save(shared_storage_state(shapes), path)
    model = ArcFaceIdentity.from_checkpoint(path)
    ours = {k: tuple(v.shape) for k, v in model.backbone.state_dict().items()}
    assert ours == shapes
    assert (len(ours), learned_parameter_count(ours)) == (IR_SE_50_NUM_ENTRIES, IR_SE_50_NUM_PARAMS)
    assert model.embedding_dim == 512 and not model.training
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (1, 512) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))


@pytest.mark.parametrize("edit", ["missing", "unexpected", "shape"])
def test_full_size_loading_is_strict(tmp_path, edit):
    shapes = official_ir_se50_shapes()
    if edit == "missing":
        del shapes["body.23.res_layer.5.fc2.weight"]
    elif edit == "unexpected":
        shapes["output_layer.5.weight"] = (512,)
    else:
        shapes["input_layer.0.weight"] = (64, 1, 3, 3)
    torch.save(shared_storage_state(shapes), tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match="bad.pth? does not fit the IR-SE50 identity backbone: 1 "):
        ArcFaceIdentity.from_checkpoint(tmp_path / "bad.pth")


# --------------------------------------------------------------------------------- (b) tiny
def test_tiny_forward_backward_reaches_input():
    torch.manual_seed(0)
    model = tiny()
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    emb = model(x)
    assert emb.shape == (2, model.embedding_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    (emb[0] @ emb[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # frozen


def test_frozen_model_stays_in_eval_and_is_per_sample():
    model = tiny()
    model.train()
    assert not model.training and not model.backbone.output_layer[0].training
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- (c) missing
def test_missing_checkpoint_names_file_and_command(tmp_path):
    path = tmp_path / "nowhere" / "model_ir_se50.pth"
    with pytest.raises(MissingCheckpointError) as err:
        ArcFaceIdentity.from_checkpoint(path)
    assert str(path) in str(err.value) and "anon download arcface_ir_se50" in str(err.value)


def test_real_config_resolves_weights_dir(tmp_path):
    cfg = OmegaConf.create({"weights_dir": str(tmp_path), "identity": OmegaConf.load(CONF / "arcface_ir_se50.yaml")})
    with pytest.raises(Exception) as err:  # Hydra wraps the error raised by the target
        instantiate(cfg.identity)
    cause = caused_by(err.value, MissingCheckpointError)
    assert cause.path == tmp_path / "arcface" / "model_ir_se50.pth" and cause.name == "arcface_ir_se50"


# --------------------------------------------------------------------------------- (d) crop
def _avg_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Adaptive average pooling as a matrix: bin i covers [floor(i*n/m), ceil((i+1)*n/m))."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _antialias_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """PIL-style antialiased bilinear (triangle filter, support scaled by n_in/n_out) downsampling."""
    scale = n_in / n_out
    centre = (torch.arange(n_out, dtype=torch.float64)[:, None] + 0.5) * scale  # in input pixel units
    m = (1.0 - ((torch.arange(n_in, dtype=torch.float64)[None, :] + 0.5 - centre).abs() / scale)).clamp(min=0)
    return (m / m.sum(dim=1, keepdim=True)).float()


def test_preprocess_is_psp_crop_then_pool():
    model = ArcFaceIdentity(stage_units=[1, 1, 1, 1], stage_widths=[8, 8, 8, 8], embedding_dim=8)  # official preprocessing
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    pool = _avg_pool_matrix(188, 112)
    expected = pool @ x[:, :, 35:223, 32:220] @ pool.T
    torch.testing.assert_close(model.preprocess(x), expected, rtol=1e-5, atol=1e-5)
    wide = torch.rand(1, 3, 256, 320) * 2 - 1  # shorter side already 256: centre crop takes cols 32:288
    torch.testing.assert_close(model.preprocess(wide), pool @ wide[:, :, 35:223, 64:252] @ pool.T, rtol=1e-5, atol=1e-5)


def test_resize_is_antialiased_bilinear():
    x = torch.rand(1, 3, 512, 512)
    r = _antialias_bilinear_matrix(512, 256)
    torch.testing.assert_close(resize_center_crop(x, 256), r @ x @ r.T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("side", [64, 128])
def test_embedding_ignores_pixels_outside_the_face_crop(side):
    torch.manual_seed(0)
    model = tiny()  # resize 64: crop rows 9:56, cols 8:55
    assert model.crop_box == (9, 56, 8, 55)
    k = side // 64  # the crop in input pixels, plus a 2-pixel margin for the resize filter at 128
    top, bottom, left, right = 9 * k - 2 * (k - 1), 56 * k + 2 * (k - 1), 8 * k - 2 * (k - 1), 55 * k + 2 * (k - 1)
    x = torch.rand(1, 3, side, side) * 2 - 1
    outside = torch.ones(1, 1, side, side, dtype=torch.bool)
    outside[..., top:bottom, left:right] = False
    y = torch.where(outside, torch.rand_like(x) * 2 - 1, x)
    inside = x.clone()
    inside[..., (top + bottom) // 2, (left + right) // 2] += 1.0
    with torch.no_grad():
        e_x, e_y, e_in = model(x), model(y), model(inside)
    assert (y != x).sum() > 0.3 * x.numel()
    torch.testing.assert_close(e_y, e_x, rtol=0, atol=1e-6)
    assert (e_in - e_x).abs().max() > 1e-4
