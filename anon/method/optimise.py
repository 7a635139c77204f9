"""FALCO's optimisation as a plain function: a batch of latent codes moved for N steps.

:func:`optimise` needs no Trainer and writes nothing: the LightningModule (:class:`anon.fit.module.FalcoModule`)
and the photo path (:class:`anon.photos.falco_faces.FalcoFaceAnonymizer`) both call it through
:class:`anon.method.falco.FalcoMethod`. Every image's result is the one it gets alone: the batch loss is a
sum of per-image losses, and early stop is decided per image.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypedDict

import torch
from torch import nn

from anon.method.latent import LatentLayout
from anon.method.losses import FalcoLoss, Reference
from anon.nets.tuned import Offsets, render, select
from anon.method.schedule import fractional_multistep

PRECISIONS = ("32", "tf32", "bf16")

#: ``params -> optimiser``: ``params`` is the trainable code tensor in a list, or a list of parameter groups.
OptimizerFactory = Callable[[Sequence[Any]], torch.optim.Optimizer]
Terms = dict[str, torch.Tensor]
#: One step's forward: ``(frozen rows, trainable rows, reference, offsets) -> (images, per-image loss terms)``.
StepFn = Callable[[torch.Tensor, torch.Tensor, Reference, "Offsets | None"], tuple[torch.Tensor, Terms]]


class SchedulerFactory(Protocol):
    """``(optimiser, steps=N) -> learning-rate scheduler`` (stepped once per optimisation step)."""

    def __call__(self, optimizer: torch.optim.Optimizer, steps: int) -> Any: ...


def adam(params: Sequence[Any]) -> torch.optim.Optimizer:
    """The default optimiser: Adam with learning rate 0.01 (the official code's)."""
    return torch.optim.Adam(params, lr=0.01)


@contextmanager
def tf32_enabled(enabled: bool) -> Iterator[None]:
    """TF32 matmuls/convolutions inside the block if ``enabled``, true float32 otherwise (the flags are
    process-wide and restored after). PyTorch's own default lets cuDNN convolutions use TF32 on Ampere and
    newer GPUs, so without forcing it off ``precision=32`` would not be float32 there (an H200 moved the
    tiny config's first loss by 5.6e-4 against the CPU's)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class FrozenNetworks:
    """The three networks the loop never trains: ``generator`` (W+ codes -> images in [-1, 1]), ``identity``
    (images -> L2-normalised embeddings) and ``attribute`` (images -> N x T x C tokens)."""

    generator: nn.Module
    identity: nn.Module
    attribute: nn.Module

    def all(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.generator, self.identity, self.attribute


@dataclass(frozen=True)
class OptimiseOptions:
    """How the loop runs (``conf/module/falco.yaml`` documents each; :class:`anon.fit.module.FalcoModule` too).

    ``optimizer`` / ``scheduler`` (None too): Adam lr 0.01 / x0.8 at 75 % and 90 % of the steps.
    """

    steps: int = 50
    optimizer: OptimizerFactory = adam
    scheduler: SchedulerFactory = fractional_multistep
    loss_resolution: int | None = None
    early_stop_tolerance: float | None = None
    precision: str = "32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if str(self.precision) not in PRECISIONS:
            raise ValueError(f"module.precision must be 32, tf32 or bf16, not {self.precision!r}")
        given: dict[str, Any] = {"optimizer": self.optimizer, "scheduler": self.scheduler}  # None: the default
        normalised = {"steps": int(self.steps), "precision": str(self.precision),
                      "channels_last": bool(self.channels_last), "compile": bool(self.compile),
                      "optimizer": given["optimizer"] or adam, "scheduler": given["scheduler"] or fractional_multistep}
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen: set once, here


class OptimiseResult(TypedDict):
    """What :func:`optimise` returns (N images)."""

    ws: torch.Tensor  # N x L x D final codes
    images: torch.Tensor  # N x 3 x R x R final renders, full resolution
    initial: Terms  # per-image loss terms at the starting code
    final: Terms  # per-image loss terms of the final images
    initial_images: torch.Tensor | None  # the first step's renders (keep_initial_images), else None
    steps: torch.Tensor  # N: optimisation steps each image took (fewer with early stop)
    offsets: Offsets | None  # the weight offsets the images were rendered with (None without any)


def render_and_score(networks: FrozenNetworks, loss: FalcoLoss, latent: LatentLayout, options: OptimiseOptions,
                     frozen: torch.Tensor, trainable: torch.Tensor, ref: Reference,
                     offsets: Offsets | None = None) -> tuple[torch.Tensor, Terms]:
    """One step's forward: the W+ code rendered (at ``options.loss_resolution`` if set; with the images'
    weight offsets if any) and its per-image loss terms (float32 even under bf16 autocast)."""
    resolution = {"resolution": options.loss_resolution} if options.loss_resolution else {}
    with torch.autocast(trainable.device.type, dtype=torch.bfloat16, enabled=options.precision == "bf16"):
        generated = render(networks.generator, latent.compose(frozen, trainable), offsets, **resolution)
        terms = loss(networks.identity, networks.attribute, generated, ref)
    return generated, {k: v.float() for k, v in terms.items()}


@dataclass
class StepFunction:
    """The step function of one set of networks, with the options' memory layout and compilation applied.

    It keeps what must outlive one batch: which layout the networks were put in, and the compiled step
    (``torch.compile`` compiles once per batch shape; a new closure every batch would compile again).
    """

    layout_is_channels_last: bool = False  # whether prepare() put the networks in NHWC
    compiled: Callable[..., tuple[torch.Tensor, Terms]] | None = field(default=None, repr=False)

    def prepare(self, networks: FrozenNetworks, loss: FalcoLoss, latent: LatentLayout,
                options: OptimiseOptions) -> StepFn:
        """``(frozen, trainable, reference, offsets) -> (images, loss terms)`` for ``options``."""
        if options.channels_last != self.layout_is_channels_last:
            # Only on a change: by default each network keeps the layout it chose (MobileFaceNet runs
            # NHWC on its own); switching the option back puts every network in NCHW.
            layout = torch.channels_last if options.channels_last else torch.contiguous_format
            for net in networks.all():  # only 4-D weights change layout (memory_format: not in torch's stub)
                net.to(memory_format=layout)  # type: ignore[call-overload]
            self.layout_is_channels_last = options.channels_last
        if not options.compile:
            return partial(render_and_score, networks, loss, latent, options)
        if self.compiled is None:
            self.compiled = torch.compile(render_and_score)
        return partial(self.compiled, networks, loss, latent, options)


def optimise(networks: FrozenNetworks, loss: FalcoLoss, latent: LatentLayout, options: OptimiseOptions,
             images: torch.Tensor, w_inversion: torch.Tensor, w_neighbour: torch.Tensor, *,
             step_function: StepFunction | None = None, on_step: Callable[[int, Terms], None] | None = None,
             keep_initial_images: bool = False, targets: torch.Tensor | None = None,
             offsets: Offsets | None = None) -> OptimiseResult:
    """Anonymise a batch. images: N x 3 x H x W in [-1, 1]; codes: N x L x D; ``targets`` (N x 3 x H' x W'
    in [-1, 1]): what the losses compare against instead of ``images`` (``loss.target=unaligned``);
    ``offsets``: the images' generator weight offsets from a pivotal-tuning inversion
    (``{name: N x *shape}``; None: the shared generator), which every render of the image uses;
    ``step_function``: the networks' layout / compile cache to reuse across batches (None: a fresh one);
    ``on_step(step, terms)``: called after every step with that step's terms (of the unfinished images).

    Returns :class:`OptimiseResult`: the final codes and images, the weight offsets (``latent.trainable_offsets``
    moved, the others as given), and the per-image loss terms ``initial`` (at the starting code) and ``final``.
    """
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    generator = networks.generator
    frozen, start = latent.split(w_inversion, w_neighbour)
    trainable = start.clone().requires_grad_(True)
    # latent.trainable_offsets: which per-image weight offsets the loss may move too; the rest stay fixed
    fixed, tuned = latent.split_offsets(offsets, generator, images.shape[0], images.device)
    params: list[Any] = [trainable]
    if tuned:
        params = [{"params": params}, *latent.offset_groups(tuned, generator)]
    offsets = {**fixed, **tuned} or None
    optimizer = options.optimizer(params)
    scheduler = options.scheduler(optimizer, steps=options.steps)
    with tf32_enabled(False):  # the reference and the final scores are always float32
        ref = loss.reference(networks.identity, networks.attribute, images if targets is None else targets)
    step_losses = (step_function or StepFunction()).prepare(networks, loss, latent, options)
    initial: Terms | None = None
    initial_images: torch.Tensor | None = None
    active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    steps_taken = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    tolerance = options.early_stop_tolerance
    early_stop = tolerance is not None
    for step in range(options.steps):
        # With early stop, finished images leave the batch: only the unfinished ones are rendered.
        rows = active.nonzero().squeeze(1) if early_stop and not active.all() else None
        with tf32_enabled(options.precision == "tf32"):
            if rows is None:
                generated, terms = step_losses(frozen, trainable, ref, offsets)
            else:
                generated, terms = step_losses(frozen[rows], trainable[rows], ref.select(rows), select(offsets, rows))
        if step == 0:
            initial = {k: v.detach() for k, v in terms.items()}
            initial_images = generated.detach() if keep_initial_images else None
        total = terms["total"]
        if tolerance is not None:
            unfinished = terms["identity"].detach() > tolerance
            active[rows if rows is not None else slice(None)] = unfinished
            if not active.any():
                break
            held = trainable.detach().clone()
            held_offsets = {name: value.detach().clone() for name, value in tuned.items()}
            total = total[unfinished]
        optimizer.zero_grad(set_to_none=True)
        with tf32_enabled(options.precision == "tf32"):
            # sum, not mean: each code's gradient is its own image's (Tensor.backward is untyped in torch's stub)
            torch.autograd.backward(total.sum())
        optimizer.step()
        scheduler.step()
        if early_stop:
            with torch.no_grad():  # finished images keep their code (Adam momentum would move it)
                trainable[~active] = held[~active]
                for name, value in tuned.items():
                    value[~active] = held_offsets[name][~active]
        steps_taken += active.long()
        if on_step is not None:
            on_step(step, terms)
    with torch.no_grad(), tf32_enabled(False):
        ws = latent.compose(frozen, trainable)
        final_images = render(generator, ws, offsets)
        final = {k: v.detach() for k, v in loss(networks.identity, networks.attribute, final_images, ref).items()}
        if initial is None:  # steps == 0
            initial, initial_images = final, final_images
    final_offsets = None if offsets is None else {name: value.detach() for name, value in offsets.items()}
    return {"ws": ws.detach(), "images": final_images, "initial": initial, "final": final,
            "initial_images": initial_images, "steps": steps_taken, "offsets": final_offsets}
