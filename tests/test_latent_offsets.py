"""Where the anonymisation acts on the lite DCGAN (``latent.trainable_offsets``): the named per-image
weight offsets move with z, every other offset and the shared weights stay bitwise as they were, and
an image in a batch ends where it ends alone."""
from __future__ import annotations

import pytest
import torch

from anon.errors import ConfigError
from anon.method.latent import LatentLayout
from anon.nets.dcgan import DCGANGenerator
from anon.runtime.run import build_module
from tests.conftest import compose_config

FINE = ("main.9.weight", "main.10.weight", "main.10.bias", "main.12.weight")  # what conf/inverter/pivotal.yaml tunes
MIDDLE = ("main.4.weight", "main.4.bias", "main.7.weight", "main.7.bias")


def make_problem(latent: str, n: int = 3, *overrides: str):
    torch.manual_seed(0)
    module = build_module(compose_config(
        "dataset.images=unused", "dataset.inversions=unused", "dataset.neighbours=unused",
        "generator=dcgan_face64", "generator.checkpoint=null", f"latent={latent}",
        "latent.trainable_init=inversion", "module.steps=5", "optim.lr=0.05", *overrides))
    g = module.generator
    params = dict(g.named_parameters())
    with torch.no_grad():
        ws = g.mapping(torch.randn(n, g.z_dim))
        images = g(g.mapping(torch.randn(n, g.z_dim)))  # other faces: the loss has somewhere to go
    offsets = {name: 0.01 * torch.randn(n, *params[name].shape) for name in FINE}  # as a pivotal inversion leaves them
    return module, images, ws, offsets


@pytest.mark.parametrize("latent, moved", [("whole", ()), ("lite_middle", MIDDLE), ("lite_all", MIDDLE + FINE)])
def test_only_the_named_offsets_move_and_the_rest_stay_bitwise(latent, moved):
    module, images, ws, offsets = make_problem(latent)
    shared = {name: p.detach().clone() for name, p in module.generator.named_parameters()}
    given = {name: value.clone() for name, value in offsets.items()}
    steps, module.steps = module.steps, 0  # the start: every offset as the inversion left it (zeros if none)
    start = module.optimise(images, ws, ws, offsets=offsets)
    for name, value in start["offsets"].items():
        assert torch.equal(value, given.get(name, torch.zeros_like(value))), f"{name} does not start at the inversion's"
    module.steps = steps
    result = module.optimise(images, ws, ws, offsets=offsets)
    assert (result["ws"] - ws).abs().amax() > 1e-3, "z must move"
    assert set(result["offsets"]) == set(FINE) | set(moved)
    for name, value in result["offsets"].items():
        start = given.get(name, torch.zeros_like(value))
        if name in moved:
            assert (value - start).abs().amax() > 1e-4, f"{name} should be trained"
        else:
            assert torch.equal(value, start), f"{name} must stay bitwise frozen"
    for name, value in given.items():
        assert torch.equal(offsets[name], value), f"the caller's {name} offsets were changed in place"
    for name, p in module.generator.named_parameters():
        assert torch.equal(p, shared[name]), f"the shared generator weight {name} changed"


# SGD, not Adam: Adam divides each gradient by its own running size, so on offsets whose gradient is
# ~1e-9 the 1e-7-relative float noise of a batched vs single render becomes lr-sized steps of random
# sign (the first-step gradients agree to 1e-7 relative). SGD's step is proportional to the gradient,
# so a batch that mixed images (or averaged their losses) shows, and noise does not.
def test_image_in_a_batch_ends_where_it_ends_alone_with_trainable_offsets(one_thread):
    module, images, ws, offsets = make_problem("lite_middle", 3, "optim=sgd", "optim.lr=200")
    batch = module.optimise(images, ws, ws, offsets=offsets)
    alone = module.optimise(images[1:2], ws[1:2], ws[1:2], offsets={k: v[1:2] for k, v in offsets.items()})
    assert (batch["ws"][1] - ws[1]).abs().amax() > 1e-2, "z must really move"
    torch.testing.assert_close(alone["ws"][0], batch["ws"][1], atol=1e-5, rtol=1e-4)
    for name in MIDDLE:
        assert batch["offsets"][name][1].abs().amax() > 1e-3, f"{name} must really move"
        torch.testing.assert_close(alone["offsets"][name][0], batch["offsets"][name][1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone["images"][0], batch["images"][1], atol=1e-4, rtol=1e-4)


def test_an_unknown_offset_name_is_a_one_line_config_error():
    layout = LatentLayout((0, None), trainable_init="inversion", trainable_offsets=["main.99.weight"])
    with pytest.raises(ConfigError, match=r"^latent\.trainable_offsets names parameters DCGANGenerator does not have"):
        layout.check_generator(DCGANGenerator(checkpoint=None))


def test_offset_lr_is_the_offsets_own_learning_rate():
    """``latent.offset_lr`` reaches the optimiser: at 0 the trainable offsets stay at their start while z moves."""
    module, images, ws, offsets = make_problem("lite_middle", 2, "latent.offset_lr=0.0")
    result = module.optimise(images, ws, ws, offsets=offsets)
    assert (result["ws"] - ws).abs().amax() > 1e-3, "z must move at the optimiser's lr"
    for name in MIDDLE:
        assert torch.equal(result["offsets"][name], torch.zeros_like(result["offsets"][name])), name
    moved = make_problem("lite_middle", 2)  # the same problem with offset_lr null: they do move
    assert all((moved[0].optimise(*moved[1:3], moved[2], offsets=moved[3])["offsets"][n]).abs().amax() > 1e-4
               for n in MIDDLE)


def test_early_stop_with_trainable_offsets_keeps_each_image_on_its_own_trajectory(one_thread):
    """Finished images leave the batch with their offsets: the others are rendered with their own
    (fixed and trainable) offsets and end where they end without early stop."""
    module, images, ws, offsets = make_problem("lite_middle", 4, "optim=sgd", "optim.lr=200")
    plain = module.optimise(images, ws, ws, offsets=offsets)
    tolerance = float(plain["final"]["identity"].median())
    module.early_stop_tolerance = tolerance
    try:
        stopped = module.optimise(images, ws, ws, offsets=offsets)
    finally:
        module.early_stop_tolerance = None
    never = stopped["steps"] == module.steps
    assert never.any() and (~never).any()
    torch.testing.assert_close(stopped["ws"][never], plain["ws"][never], atol=1e-5, rtol=1e-4)
    for name in MIDDLE:
        torch.testing.assert_close(stopped["offsets"][name][never], plain["offsets"][name][never], atol=1e-5, rtol=1e-4)
    assert (stopped["final"]["identity"][~never] <= tolerance + 1e-5).all()


def test_relative_offset_lr_scales_each_offsets_first_adam_step_by_its_parameters_size():
    """``latent.offset_lr_relative``: Adam's first step moves an element by its lr (sign of the gradient),
    so each offset's largest first-step change is offset_lr x mean |parameter|: a 0.03-scale convolution
    weight and a 1-scale BatchNorm scale move by the same fraction of themselves."""
    names = ("main.4.weight", "main.9.weight")
    module, images, ws, offsets = make_problem(
        "lite_all", 2, f"latent.trainable_offsets=[{','.join(names)}]", "latent.offset_lr=0.1",
        "latent.offset_lr_relative=true", "module.steps=1")
    params = dict(module.generator.named_parameters())
    result = module.optimise(images, ws, ws, offsets=offsets)
    steps, scales = [], []
    for name in names:
        start = offsets.get(name, torch.zeros_like(result["offsets"][name]))
        steps.append(float((result["offsets"][name] - start).abs().amax()))
        scales.append(float(params[name].detach().abs().mean()))
    assert scales[0] / scales[1] > 5, "the test needs parameters of different sizes to tell relative from absolute"
    # the ratio, not each step: the scheduler's milestones scale a one-step run's lr for every group alike
    assert steps[0] / steps[1] == pytest.approx(scales[0] / scales[1], rel=1e-3)
    assert steps[0] <= 0.1 * scales[0] * 1.0001

def test_relative_offset_lr_needs_an_offset_lr_and_nonzero_parameters():
    with pytest.raises(ConfigError, match=r"^latent\.offset_lr_relative=true scales latent\.offset_lr"):
        LatentLayout((0, None), trainable_init="inversion", trainable_offsets=list(MIDDLE), offset_lr_relative=True)
    layout = LatentLayout((0, None), trainable_init="inversion", trainable_offsets=["main.4.bias"], offset_lr=0.1,
                          offset_lr_relative=True)
    generator = DCGANGenerator(checkpoint=None)  # BatchNorm shifts start at zero
    with pytest.raises(ConfigError, match=r"^latent\.offset_lr_relative: \['main\.4\.bias'\] are all zeros, so an lr relative to their size is 0; leave them out of latent\.trainable_offsets or use an absolute offset_lr$"):
        layout.offset_groups({"main.4.bias": torch.zeros(1, 256)}, generator)
