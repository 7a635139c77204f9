"""The fit loop itself (no Trainer): independence across a batch, frozen rows, loss going down."""
import pytest
import torch

from anon.run import build_module
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def tiny_problem():
    torch.manual_seed(0)
    module = build_module(compose_config("dataset.images=unused", "dataset.inversions=unused",
                                         "dataset.neighbours=unused", "module.steps=8"))
    g = module.generator
    with torch.no_grad():
        w_inv = g.mapping(torch.randn(8, g.z_dim))
        w_nb = g.mapping(torch.randn(8, g.z_dim), truncation_psi=0.7)
        images = g(w_inv)
    return module, images, w_inv, w_nb


def test_image_in_a_batch_ends_where_it_ends_alone(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    batched = module.optimise(images, w_inv, w_nb)
    for i in (0, 5):
        alone = module.optimise(images[i:i + 1], w_inv[i:i + 1], w_nb[i:i + 1])
        torch.testing.assert_close(batched["ws"][i:i + 1], alone["ws"], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched["final"]["similarity"][i:i + 1], alone["final"]["similarity"],
                                   atol=1e-5, rtol=0)


def test_only_middle_rows_move_and_the_objective_drops(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    out = module.optimise(images, w_inv, w_nb)
    ws = out["ws"]
    torch.testing.assert_close(ws[:, :3], w_inv[:, :3], atol=0, rtol=0)
    torch.testing.assert_close(ws[:, 8:], w_inv[:, 8:], atol=0, rtol=0)
    assert not torch.allclose(ws[:, 3:8], w_nb[:, 3:8])
    assert out["final"]["total"].mean() < out["initial"]["total"].mean()


def test_initial_terms_are_those_of_the_starting_code(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    start = torch.cat([w_inv[:2, :3], w_nb[:2, 3:8], w_inv[:2, 8:]], dim=1)
    with torch.no_grad():
        ref = module.loss.reference(module.identity, module.attribute, images[:2])
        expected = module.loss(module.identity, module.attribute, module.generator(start), ref)
    torch.testing.assert_close(out["initial"]["similarity"], expected["similarity"], atol=1e-5, rtol=0)


def test_early_stop_freezes_finished_images_only(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.early_stop_tolerance = 10.0  # every image already meets it: nothing may move
    try:
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    finally:
        module.early_stop_tolerance = None
    assert out["steps"].tolist() == [0, 0]
    torch.testing.assert_close(out["ws"][:, 3:8], w_nb[:2, 3:8], atol=0, rtol=0)


def test_loss_resolution_renders_the_skip_output_for_the_losses(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.loss_resolution = 32
    try:
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    finally:
        module.loss_resolution = None
    assert out["images"].shape[-1] == 64, "the final image is rendered at full size"
    assert out["final"]["total"].mean() < out["initial"]["total"].mean()


def test_bf16_autocast_keeps_codes_and_losses_fp32_and_close(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 2  # bf16 convolutions are ~100x slower than fp32 on this CPU
    try:
        reference = module.optimise(images[:1], w_inv[:1], w_nb[:1])
        module.precision = "bf16"
        out = module.optimise(images[:1], w_inv[:1], w_nb[:1])
    finally:
        module.precision, module.steps = "32", 8
    assert out["ws"].dtype == torch.float32 and out["final"]["total"].dtype == torch.float32
    # bf16 has ~3 significant digits: the end point moves little in identity similarity
    assert (out["final"]["similarity"] - reference["final"]["similarity"]).abs().max() < 0.05


def test_channels_last_layout_gives_the_same_result(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    reference = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    module.channels_last = True
    try:
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
        conv_weights = [p for p in module.generator.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    finally:
        module.channels_last = False
        module.steps = 0
        module.optimise(images[:1], w_inv[:1], w_nb[:1])  # puts the weights back in NCHW
        module.steps = 8
    assert all(p.is_contiguous() for p in module.generator.parameters())
    # Only the summation order of the convolutions changes: the end points agree to float rounding
    # amplified by Adam's sign-like steps (each step moves a code entry by at most the lr, 0.01).
    torch.testing.assert_close(out["final"]["similarity"], reference["final"]["similarity"], atol=1e-3, rtol=0)
    assert (out["ws"] - reference["ws"]).abs().max() < 0.01 * module.steps


def test_tf32_flags_are_restored_after_the_loop(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    module.precision, module.steps = "tf32", 1
    try:
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
    finally:
        module.precision, module.steps = "32", 8
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_compiled_step_matches_the_eager_step(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 2
    try:
        reference = module.optimise(images[:2], w_inv[:2], w_nb[:2])
        module.compile = True
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    finally:
        module.compile, module.steps = False, 8
    assert module._compiled_step is not None
    torch.testing.assert_close(out["initial"]["total"], reference["initial"]["total"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["final"]["similarity"], reference["final"]["similarity"], atol=1e-3, rtol=0)


def test_early_stop_leaves_unfinished_images_on_their_own_trajectory(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    plain = module.optimise(images, w_inv, w_nb)
    # a tolerance half the images meet at some step, one of them (the worst start) never
    tolerance = float(plain["final"]["identity"].median())
    module.early_stop_tolerance = tolerance
    try:
        stopped = module.optimise(images, w_inv, w_nb)
    finally:
        module.early_stop_tolerance = None
    never = stopped["steps"] == module.steps
    finished = ~never
    assert finished.any() and never.any()
    # finished images left the batch: the others were rendered alone, and end exactly where they
    # end without early stop (each image's gradient is its own)
    torch.testing.assert_close(stopped["ws"][never], plain["ws"][never], atol=1e-5, rtol=0)
    # and a finished image keeps the code that met the tolerance
    assert (stopped["final"]["identity"][finished] <= tolerance + 1e-5).all()


def test_default_layout_leaves_a_networks_own_choice_alone(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.identity.to(memory_format=torch.channels_last)  # as MobileFaceNet does for itself
    try:
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
        conv_weights = [p for p in module.identity.parameters() if p.dim() == 4]
        assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    finally:
        module.identity.to(memory_format=torch.contiguous_format)
