"""e4e inverter: official checkpoint layout, opts handling, encoder structure, gradients.

The official key layout is written out from omertov/encoder4editing
``models/encoders/psp_encoders.py`` (``Encoder4Editing(50, 'ir_se', opts)``) and ``models/psp.py``
(checkpoint = ``{'state_dict': {'encoder.*', 'decoder.*'}, 'opts': vars(opts), 'latent_avg'}``).
The forward itself is checked against the official code's output in ``tests/nets/test_golden.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from anon.errors import AnonError, CheckpointMismatchError, ConfigError, MissingCheckpointError
from anon.nets.e4e import E4EInverter, EqualizedLinear, Encoder4Editing, GradualStyleBlock

from .test_arcface import official_ir_se_trunk_shapes
from tests.helpers import caused_by, learned_parameter_count

CONF = Path(__file__).resolve().parents[2] / "conf"

# --- facts about the official Encoder4Editing (IR-SE-50 trunk, stylegan_size 1024 -> 18 styles) ---
E4E_NUM_ENTRIES = 621  # encoder state_dict entries, buffers included
E4E_NUM_PARAMS = 267_136_704
# styles 0-2 read the 16x16 map c3 (4 stride-2 convs), 3-6 the 32x32 p2 (5), 7-17 the 64x64 p1 (6)
E4E_CONVS_PER_STYLE = [4] * 3 + [5] * 4 + [6] * 11


def official_e4e_encoder_shapes() -> dict[str, tuple]:
    shapes = official_ir_se_trunk_shapes()
    for i, n_convs in enumerate(E4E_CONVS_PER_STYLE):
        for j in range(n_convs):  # Conv2d at even indices, LeakyReLU in between
            shapes[f"styles.{i}.convs.{2 * j}.weight"] = (512, 512, 3, 3)
            shapes[f"styles.{i}.convs.{2 * j}.bias"] = (512,)
        shapes[f"styles.{i}.linear.weight"] = (512, 512)  # EqualLinear(512, 512, lr_mul=1)
        shapes[f"styles.{i}.linear.bias"] = (512,)
    shapes.update({"latlayer1.weight": (512, 256, 1, 1), "latlayer1.bias": (512,),
                   "latlayer2.weight": (512, 128, 1, 1), "latlayer2.bias": (512,)})
    return shapes


def official_opts(**changes) -> dict:
    """``vars(TrainOptions().parse())`` as e4e's coach saves it (primitives only), trimmed."""
    opts = {"exp_dir": "experiment/ffhq", "dataset_type": "ffhq_encode", "encoder_type": "Encoder4Editing",
            "batch_size": 8, "learning_rate": 0.0001, "optim_name": "ranger", "train_decoder": False,
            "start_from_latent_avg": True, "lpips_type": "alex", "lpips_lambda": 0.8, "id_lambda": 0.5,
            "l2_lambda": 1.0, "stylegan_weights": "pretrained_models/stylegan2-ffhq-config-f.pt",
            "stylegan_size": 1024, "checkpoint_path": None, "max_steps": 200000, "save_interval": None,
            "w_discriminator_lambda": 0.1, "delta_norm": 2, "progressive_steps": [0] + [20000 + 2000 * i for i in range(17)],
            "progressive_start": 20000, "sub_exp_dir": None, "update_param_list": None, "device": "cuda:0"}
    opts.update(changes)
    return opts


def zero_state(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Zeros (ones for running_var) as views of one buffer: the saved file is as big as one tensor."""
    largest = max(int(torch.Size(s).numel()) for s in shapes.values())
    zeros, ones = torch.zeros(largest), torch.ones(largest)
    return {k: torch.tensor(0) if k.endswith("num_batches_tracked")
            else (ones if k.endswith("running_var") else zeros)[: int(torch.Size(s).numel())].view(s)
            for k, s in shapes.items()}


def save_official_format(path: Path, encoder_state: dict, opts: dict, latent_avg: torch.Tensor | None) -> Path:
    state = {f"encoder.{k}": v for k, v in encoder_state.items()}
    state.update({"decoder.style.1.weight": torch.zeros(8, 8), "decoder.input.input": torch.zeros(1, 8, 4, 4),
                  "decoder.noises.noise_0": torch.zeros(1, 1, 4, 4)})  # the generator: must be ignored
    ckpt = {"state_dict": state, "opts": opts}
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg
    torch.save(ckpt, path)
    return path


TINY_ARCH = dict(w_dim=64, input_size=64, stage_units=[1, 1, 1, 1], stage_widths=[8, 8, 16, 16])


def tiny(**kw) -> E4EInverter:
    cfg = OmegaConf.load(CONF / "inverter" / "tiny_e4e.yaml")
    cfg.update(kw)
    return instantiate(cfg)


# --------------------------------------------------------------------------------- (a) official
def test_official_shape_facts_are_self_consistent():
    shapes = official_e4e_encoder_shapes()
    params = learned_parameter_count(shapes)
    assert (len(shapes), params) == (E4E_NUM_ENTRIES, E4E_NUM_PARAMS)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The official checkpoint layout with zero encoder weights, loaded by from_checkpoint."""
    shapes = official_e4e_encoder_shapes()
    latent_avg = torch.randn(18, 512, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    save_official_format(path, zero_state(shapes), official_opts(), latent_avg)
    return shapes, latent_avg, E4EInverter.from_checkpoint(path)


def test_full_size_checkpoint_loads_strictly(full_size):
    shapes, latent_avg, model = full_size
    assert {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()} == shapes
    assert (model.n_styles, model.w_dim, model.input_size) == (18, 512, 256)
    assert model.start_from_latent_avg and not model.training
    torch.testing.assert_close(model.latent_avg, latent_avg)


@pytest.mark.parametrize("edit", ["missing", "unexpected"])
def test_full_size_loading_is_strict(tmp_path, edit):
    shapes = official_e4e_encoder_shapes()
    if edit == "missing":
        del shapes["styles.17.convs.10.bias"]
    else:
        shapes["styles.18.linear.bias"] = (512,)
    path = save_official_format(tmp_path / "bad.pt", zero_state(shapes), official_opts(), torch.zeros(18, 512))
    with pytest.raises(CheckpointMismatchError, match="bad.pth? does not fit the e4e encoder: 1 "):
        E4EInverter.from_checkpoint(path)


def test_default_encoder_is_the_official_ffhq_layout():
    with torch.device("meta"):  # shapes only: no 267 M numbers
        encoder = Encoder4Editing()
    assert (encoder.n_styles, encoder.w_dim, encoder.input_size, encoder.progressive_stage) == (18, 512, 256, 18)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == official_e4e_encoder_shapes()


def test_mode_ir_builds_the_trunk_without_squeeze_excite():
    gates = lambda mode: sum(".fc1." in k for k in Encoder4Editing(n_styles=10, mode=mode, **TINY_ARCH).state_dict())
    assert (gates("ir"), gates("ir_se")) == (0, 4)  # one gate per residual unit


# --------------------------------------------------------------------------------- opts handling
@pytest.fixture
def tiny_source():
    torch.manual_seed(0)
    return Encoder4Editing(n_styles=10, **TINY_ARCH).eval()


@pytest.mark.parametrize("avg_shape", [(10, 64), (64,)])
def test_tiny_checkpoint_roundtrip_adds_latent_avg(tmp_path, tiny_source, avg_shape):
    latent_avg = torch.randn(avg_shape)
    path = save_official_format(tmp_path / "e4e.pt", tiny_source.state_dict(), official_opts(stylegan_size=64), latent_avg)
    model = E4EInverter.from_checkpoint(path, **TINY_ARCH)  # 2*log2(64)-2 = 10 styles from opts
    assert model.n_styles == 10
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny_source(x) + latent_avg)
    same = E4EInverter(checkpoint=str(path), n_styles=10, **TINY_ARCH)  # the Hydra path
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x))


def test_start_from_latent_avg_false_in_opts(tmp_path, tiny_source):
    path = save_official_format(tmp_path / "e4e.pt", tiny_source.state_dict(),
                                official_opts(stylegan_size=64, start_from_latent_avg=False), torch.randn(10, 64))
    model = E4EInverter.from_checkpoint(path, **TINY_ARCH)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny_source(x))


def test_opts_disagreeing_with_config_or_weights(tmp_path, tiny_source):
    path = save_official_format(tmp_path / "e4e.pt", tiny_source.state_dict(), official_opts(stylegan_size=128), None)
    with pytest.raises(ConfigError, match="12 W\\+ layers"):
        E4EInverter(checkpoint=str(path), n_styles=10, **TINY_ARCH)
    with pytest.raises(CheckpointMismatchError, match="styles.10"):  # 12 styles built, 10 in the file
        E4EInverter.from_checkpoint(path, **TINY_ARCH)
    other = save_official_format(tmp_path / "psp.pt", tiny_source.state_dict(),
                                 official_opts(stylegan_size=64, encoder_type="GradualStyleEncoder"), None)
    with pytest.raises(AnonError, match="GradualStyleEncoder"):
        E4EInverter.from_checkpoint(other, **TINY_ARCH)


def test_pickled_namespace_opts_are_refused_with_a_clear_error(tmp_path, tiny_source):
    path = save_official_format(tmp_path / "e4e.pt", tiny_source.state_dict(),
                                argparse.Namespace(**official_opts(stylegan_size=64)), None)
    with pytest.raises(AnonError, match="weights_only=True"):
        E4EInverter.from_checkpoint(path, **TINY_ARCH)


# --------------------------------------------------------------------------------- (b) tiny
@pytest.mark.parametrize("stage", [0, 3, 8])
def test_progressive_stage_limits_the_deltas(tiny_source, stage):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    staged = Encoder4Editing(n_styles=10, progressive_stage=stage, **TINY_ARCH).eval()
    assert staged.progressive_stage == stage
    staged.load_state_dict(tiny_source.state_dict())
    with torch.no_grad():
        w = staged(x)[0]
    assert torch.equal(w[stage + 1:], w[:1].expand(10 - stage - 1, -1))
    assert all((w[i] - w[0]).abs().max() > 0 for i in range(1, stage + 1))


def test_tiny_forward_backward_reaches_input_any_size():
    torch.manual_seed(0)
    model = tiny()
    x = (torch.rand(2, 3, 80, 96) * 2 - 1).requires_grad_(True)
    codes = model(x)
    assert codes.shape == (2, 10, 64)
    codes.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # frozen


def test_frozen_model_stays_in_eval_and_is_per_sample():
    model = tiny()
    model.train()
    assert not model.training and not model.encoder.body[0].res_layer[0].training
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)


def test_tiny_inverter_matches_the_tiny_generator():
    generator = instantiate(OmegaConf.load(CONF / "generator" / "tiny.yaml"))
    model = tiny()
    assert (model.n_styles, model.w_dim) == (generator.num_ws, generator.w_dim)
    with torch.no_grad():
        images = generator(model(torch.rand(1, 3, 64, 64) * 2 - 1))
    assert images.shape[0] == 1 and torch.isfinite(images).all()


def test_bad_encoder_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^expected B x 3 x 64 x 64, got \(1, 3, 32, 32\)$"):
        Encoder4Editing(n_styles=10, **TINY_ARCH)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="^input_size must be divisible by 16, got 72$"):
        Encoder4Editing(n_styles=10, **{**TINY_ARCH, "input_size": 72})
    with pytest.raises(ValueError, match="^e4e needs a 4-stage backbone, got 3 stages$"):
        Encoder4Editing(n_styles=10, **{**TINY_ARCH, "stage_units": [1, 1, 1], "stage_widths": [8, 8, 16]})
    for side in (0, 1, 3, 12):
        with pytest.raises(ValueError, match=f"^style block input side must be a power of two >= 2, got {side}$"):
            GradualStyleBlock(4, 6, side)


@pytest.mark.parametrize("side", [2, 4])
def test_style_block_halves_its_input_down_to_one_pixel(side):
    block = GradualStyleBlock(4, 6, side)
    convs = [m for m in block.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == side.bit_length() - 1 and len(block.convs) == 2 * len(convs)  # conv + LeakyReLU each
    assert [(c.in_channels, c.out_channels, c.stride, c.padding) for c in convs] == \
        [(4, 6, (2, 2), (1, 1))] + [(6, 6, (2, 2), (1, 1))] * (len(convs) - 1)
    assert block(torch.rand(3, 4, side, side)).shape == (3, 6)


def test_equalized_linear_scales_weight_and_bias_at_run_time():
    """rosinality's EqualLinear: weight * lr_mul / sqrt(in_dim), bias * lr_mul (e4e itself uses lr_mul 1)."""
    torch.manual_seed(0)
    assert 3.5 < float(EqualizedLinear(64, 64, lr_mul=0.25).weight.detach().std()) < 4.5  # stored as normal / lr_mul
    layer = EqualizedLinear(4, 2, lr_mul=0.5)
    assert layer.weight.shape == (2, 4) and torch.equal(layer.bias, torch.zeros(2))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, -2.0]]))
        layer.bias.copy_(torch.tensor([1.0, -3.0]))
        out = layer(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    # row 0: 10 * 0.5 / 2 + 1 * 0.5; row 1: (2 - 8) * 0.5 / 2 - 3 * 0.5
    torch.testing.assert_close(out, torch.tensor([[3.0, -3.0]]), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------- (c) missing
def test_missing_checkpoint_names_file_and_command(tmp_path):
    path = tmp_path / "e4e_ffhq_encode.pt"
    for make in (lambda: E4EInverter.from_checkpoint(path), lambda: E4EInverter(checkpoint=str(path))):
        with pytest.raises(MissingCheckpointError) as err:
            make()
        assert str(path) in str(err.value) and "anon download e4e_ffhq_encode" in str(err.value)


def test_real_config_resolves_weights_dir(tmp_path):
    cfg = OmegaConf.create({"weights_dir": str(tmp_path), "inverter": OmegaConf.load(CONF / "inverter" / "e4e.yaml")})
    with pytest.raises(Exception) as err:  # Hydra wraps the error raised by the target
        instantiate(cfg.inverter)
    cause = caused_by(err.value, MissingCheckpointError)
    assert cause.path == tmp_path / "e4e" / "e4e_ffhq_encode.pt" and cause.name == "e4e_ffhq_encode"
