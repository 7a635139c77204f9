"""The fit loop itself (no Trainer): independence across a batch, frozen rows, loss going down."""
from contextlib import contextmanager
from typing import Callable

import pytest
import torch

from anon.method.optimise import render_and_score
from anon.runtime.run import build_module
from tests.conftest import compose_config


def make_problem(*overrides: str):
    torch.manual_seed(0)
    module = build_module(compose_config("dataset.images=unused", "dataset.inversions=unused",
                                         "dataset.neighbours=unused", "module.steps=8", *overrides))
    g = module.generator
    with torch.no_grad():
        w_inv = g.mapping(torch.randn(8, g.z_dim))
        w_nb = g.mapping(torch.randn(8, g.z_dim), truncation_psi=0.7)
        images = g(w_inv)
    return module, images, w_inv, w_nb


@contextmanager
def watching(*modules: torch.nn.Module, record: Callable):
    """Calls ``record(module, inputs)`` before every forward of each module, inside the block only."""
    handles = [m.register_forward_pre_hook(record) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def trajectory(module):
    """The trainable rows after every optimiser step (a list filled while the loop runs), via the
    optimiser factory (which receives the trainable tensor) and ``on_step``."""
    make, seen, codes = module.make_optimizer, [], []
    module.make_optimizer = lambda params: seen.append(params[0]) or make(params)
    try:
        yield codes, lambda step, terms: codes.append(seen[-1].detach().clone())
    finally:
        module.make_optimizer = make


@pytest.fixture(scope="module")
def tiny_problem():
    return make_problem()


# Adam (the paper's optimiser) is invariant to a constant scale of the loss, so it cannot tell a
# summed batch loss from an averaged one; plain SGD's step is proportional to the gradient, so a
# mean over the batch would shrink every image's step by the batch size.
@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_image_in_a_batch_ends_where_it_ends_alone(optim):
    module, images, w_inv, w_nb = make_problem(f"optim={optim}")
    expected = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optim]
    assert isinstance(module.make_optimizer([torch.zeros(1, requires_grad=True)]), expected)
    batched = module.optimise(images, w_inv, w_nb)
    assert (batched["ws"][:, 3:8] - w_nb[:, 3:8]).abs().amax() > 0.05, "the codes must really move"
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
    assert out["initial_images"] is None, "initial images are kept only when asked for (memory)"


def test_zero_steps_return_the_starting_code_and_its_terms(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 0
    try:
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
        kept = module.optimise(images[:2], w_inv[:2], w_nb[:2], keep_initial_images=True)
    finally:
        module.steps = 8
    start = torch.cat([w_inv[:2, :3], w_nb[:2, 3:8], w_inv[:2, 8:]], dim=1)
    assert torch.equal(out["ws"], start) and out["steps"].tolist() == [0, 0] and out["steps"].dtype == torch.long
    assert all(torch.equal(out["initial"][k], out["final"][k]) for k in out["final"])
    assert torch.equal(kept["initial_images"], kept["images"])


def test_loop_tensors_follow_the_images_device(tiny_problem):
    """Every tensor the loop creates goes to the images' device: with another default device (meta,
    which holds no data) the loop still runs and returns CPU tensors. On a GPU a forgotten ``device=``
    would leave a mask or a step counter on the CPU."""
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 2
    try:
        with torch.device("meta"):
            plain = module.optimise(images[:2], w_inv[:2], w_nb[:2])
            module.early_stop_tolerance = 10.0
            stopped = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    finally:
        module.steps, module.early_stop_tolerance = 8, None
    for out, steps in ((plain, [2, 2]), (stopped, [0, 0])):
        assert out["ws"].device.type == "cpu" and out["steps"].device.type == "cpu"
        assert out["steps"].tolist() == steps and out["steps"].dtype == torch.long


def test_initial_terms_are_those_of_the_starting_code(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    out = module.optimise(images[:2], w_inv[:2], w_nb[:2], keep_initial_images=True)
    start = torch.cat([w_inv[:2, :3], w_nb[:2, 3:8], w_inv[:2, 8:]], dim=1)
    with torch.no_grad():
        ref = module.loss.reference(module.identity, module.attribute, images[:2])
        rendered = module.generator(start)
        expected = module.loss(module.identity, module.attribute, rendered, ref)
    torch.testing.assert_close(out["initial"]["similarity"], expected["similarity"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["initial_images"], rendered, atol=1e-5, rtol=0)


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
    sizes = []
    module.loss_resolution = 32
    try:
        with watching(module.identity, module.attribute, record=lambda m, args: sizes.append(args[0].shape[-1])):
            out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    finally:
        module.loss_resolution = None
    # identity and attribute: the originals once (64 px), every step (32 px), the final image (64 px)
    assert sizes == [64, 64] + [32, 32] * module.steps + [64, 64]
    assert out["images"].shape[-1] == 64, "the final image is rendered at full size"
    assert out["final"]["total"].mean() < out["initial"]["total"].mean()


def test_bf16_autocast_keeps_codes_and_losses_fp32_and_close(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 2  # bf16 convolutions are ~100x slower than fp32 on this CPU
    nets = {"generator": module.generator, "identity": module.identity, "attribute": module.attribute}
    calls = {name: [] for name in nets}  # per forward of each network: the dtypes its sub-layers put out
    handles = []
    for name, net in nets.items():
        handles.append(net.register_forward_pre_hook(lambda m, args, name=name: calls[name].append(set())))
        for layer in net.modules():
            if layer is not net:
                handles.append(layer.register_forward_hook(
                    lambda m, args, out, name=name: calls[name][-1].add(out.dtype)
                    if isinstance(out, torch.Tensor) else None))
    try:
        reference = module.optimise(images[:1], w_inv[:1], w_nb[:1])
        assert all(c == {torch.float32} for name in nets for c in calls[name]), "precision 32: fp32 throughout"
        for c in calls.values():
            c.clear()
        module.precision = "bf16"
        # bf16 is asked for by name: with another default autocast dtype (fp16 on CUDA) it is still bf16
        default_dtype = torch.get_autocast_dtype("cpu")
        torch.set_autocast_dtype("cpu", torch.float16)
        out = module.optimise(images[:1], w_inv[:1], w_nb[:1])
    finally:
        torch.set_autocast_dtype("cpu", default_dtype)
        module.precision, module.steps = "32", 8
        for h in handles:
            h.remove()
    # the 2 steps' forwards compute in bf16; the references (loss nets) and the final scoring in fp32
    assert [torch.bfloat16 in c for c in calls["generator"]] == [True, True, False]
    for name in ("identity", "attribute"):
        assert [torch.bfloat16 in c for c in calls[name]] == [False, True, True, False], name
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


def test_tf32_is_on_during_the_steps_only(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    forwards, backwards = [], []  # the flags seen by each identity forward / each gradient of the codes
    make = module.make_optimizer

    def make_watched(params):
        params[0].register_hook(lambda grad: backwards.append(flags()))
        return make(params)

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    handle = module.identity.register_forward_pre_hook(lambda m, args: forwards.append(flags()))
    module.precision, module.steps, module.make_optimizer = "tf32", 2, make_watched
    try:
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
        assert flags() == (False, False), "the process-wide flags are put back after the loop"
    finally:
        module.precision, module.steps, module.make_optimizer = "32", 8, make
        handle.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    # reference (off), the 2 steps (on), final scoring (off); both backward passes (on)
    assert forwards == [(False, False), (True, True), (True, True), (False, False)]
    assert backwards == [(True, True)] * 2


def test_precision_32_turns_off_the_tf32_pytorch_allows_by_default(tiny_problem):
    """PyTorch lets cuDNN convolutions use TF32 by default (``cudnn.allow_tf32`` is True): on an Ampere or
    newer GPU "float32" would then be TF32 (an H200 moved the tiny config's first loss by 5.6e-4 against the
    CPU). With ``precision=32`` every forward and backward of the loop sees both flags off, and the
    process's own flags come back afterwards."""
    module, images, w_inv, w_nb = tiny_problem
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    forwards, backwards = [], []
    make = module.make_optimizer

    def make_watched(params):
        params[0].register_hook(lambda grad: backwards.append(flags()))
        return make(params)

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    handle = module.identity.register_forward_pre_hook(lambda m, args: forwards.append(flags()))
    module.steps, module.make_optimizer = 2, make_watched
    try:
        assert module.precision == "32"
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
        assert flags() == (True, True), "the process-wide flags are put back after the loop"
    finally:
        module.steps, module.make_optimizer = 8, make
        handle.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert forwards == [(False, False)] * 4
    assert backwards == [(False, False)] * 2


def test_without_compile_the_step_is_the_eager_method(tiny_problem):
    module = tiny_problem[0]
    assert not module.compile
    step = module.step_function()
    assert step.func is render_and_score and module.method.step_function.compiled is None


def test_compiled_step_matches_the_eager_step(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 2
    try:
        reference = module.optimise(images[:2], w_inv[:2], w_nb[:2])
        module.compile = True
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
        compiled = module.method.step_function.compiled
        module.optimise(images[2:4], w_inv[2:4], w_nb[2:4])  # the next batch: the same compiled step
    finally:
        module.compile, module.steps = False, 8
    assert compiled is not None and module.method.step_function.compiled is compiled
    torch.testing.assert_close(out["initial"]["total"], reference["initial"]["total"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["final"]["similarity"], reference["final"]["similarity"], atol=1e-3, rtol=0)


def test_early_stop_leaves_unfinished_images_on_their_own_trajectory(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    with trajectory(module) as (plain_codes, on_step):
        plain = module.optimise(images, w_inv, w_nb, on_step=on_step)
    # a tolerance half the images meet at some step, one of them (the worst start) never
    tolerance = float(plain["final"]["identity"].median())
    module.early_stop_tolerance = tolerance
    rendered = []  # batch size of every generator call
    handle = module.generator.register_forward_pre_hook(lambda m, args: rendered.append(args[0].shape[0]))
    try:
        with trajectory(module) as (codes, on_step):
            stopped = module.optimise(images, w_inv, w_nb, on_step=on_step)
    finally:
        module.early_stop_tolerance = None
        handle.remove()
    never = stopped["steps"] == module.steps
    finished = ~never
    assert finished.any() and never.any()
    # finished images left the batch: the others were rendered alone, and end exactly where they
    # end without early stop (each image's gradient is its own)
    torch.testing.assert_close(stopped["ws"][never], plain["ws"][never], atol=1e-5, rtol=0)
    # and a finished image keeps the code that met the tolerance
    assert (stopped["final"]["identity"][finished] <= tolerance + 1e-5).all()
    # The loop really stepped, and some image finished with steps still to run after it (Adam's
    # momentum would keep moving its code). A finished image's code after its s steps is the code it
    # had after s steps of the plain run, and it stays exactly that for every later step.
    start = w_nb[:, 3:8]
    assert len(codes) >= 2 and any(0 < s < len(codes) - 1 for s in stopped["steps"][finished].tolist())
    for i in finished.nonzero().squeeze(1).tolist():
        s = int(stopped["steps"][i])
        at_finish = start[i] if s == 0 else plain_codes[s - 1][i]
        torch.testing.assert_close(stopped["ws"][i, 3:8], at_finish, atol=1e-5, rtol=0)
        for later in codes[max(s - 1, 0):]:
            assert torch.equal(later[i], stopped["ws"][i, 3:8]), f"image {i} moved after it finished"
    # finished images leave the batch: step t renders the images still unfinished before it (an image
    # that finishes at step s is rendered at steps 0..s); the final image is rendered for the whole batch
    steps = stopped["steps"]
    assert rendered[:-1] == [int((steps >= t).sum()) for t in range(len(rendered) - 1)]
    assert rendered[-1] == len(images) and min(rendered) < len(images)


def test_early_stop_tolerance_is_inclusive_and_on_step_sees_every_step(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 3
    try:
        start = module.optimise(images[:2], w_inv[:2], w_nb[:2])["initial"]["identity"]
        # image `first` meets the tolerance exactly at its start: |cos - m| <= tolerance stops it
        first = int(start.argmin())
        module.early_stop_tolerance = float(start[first])
        calls = []
        out = module.optimise(images[:2], w_inv[:2], w_nb[:2], on_step=lambda step, terms: calls.append((step, terms)))
    finally:
        module.steps, module.early_stop_tolerance = 8, None
    other = 1 - first
    assert start[other] > start[first] and out["steps"][first] == 0 and out["steps"][other] >= 2
    # on_step: every step index, with that step's per-image terms (the other image alone after step 0)
    assert [step for step, _ in calls] == list(range(int(out["steps"][other])))
    assert set(calls[0][1]) == {"total", "identity", "attribute", "similarity"}
    assert calls[0][1]["identity"].shape == (2,) and calls[1][1]["identity"].shape == (1,)
    torch.testing.assert_close(calls[0][1]["identity"], start, atol=0, rtol=0)


def test_default_layout_leaves_a_networks_own_choice_alone(tiny_problem):
    module, images, w_inv, w_nb = tiny_problem
    module.steps = 0
    try:  # the option switched on and back off (puts every network in NCHW) before the network chooses
        module.channels_last = True
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
        module.channels_last = False
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
    finally:
        module.channels_last, module.steps = False, 8
    module.identity.to(memory_format=torch.channels_last)  # as MobileFaceNet does for itself
    try:
        module.optimise(images[:1], w_inv[:1], w_nb[:1])
        conv_weights = [p for p in module.identity.parameters() if p.dim() == 4]
        assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    finally:
        module.identity.to(memory_format=torch.contiguous_format)


def test_a_generator_without_a_skip_output_runs_at_full_size():
    """The lite set's DCGAN has no ``resolution`` argument: without ``loss_resolution`` none is passed."""
    module, images, w_inv, w_nb = make_problem("generator=dcgan_face64", "generator.checkpoint=null", "latent=whole",
                                               "module.steps=1")
    out = module.optimise(images[:2], w_inv[:2], w_nb[:2])
    assert out["ws"].shape == (2, 1, 100) and out["images"].shape == (2, 3, 64, 64)
    assert not torch.equal(out["ws"], w_nb[:2])
