"""One trunk forward when the identity and the attribute network are one network (the lite set).

The lite set's identity loss reads MobileFaceNet's embedding and its attribute loss the same
network's ``conv2d_4`` tokens, so each step ran the layers up to the token layer (most of the
network's cost at 112 px) twice on the same image. :func:`embeddings_and_tokens` runs them once.

Its backward still goes through the trunk once per loss and adds the two image gradients, which is
what autograd did for the two separate forwards (the image had two readers; a sum of two terms is
the same in either order). So every step, and every output, is bitwise what it was
(``tests/test_shared_trunk.py``); only the second trunk forward is saved.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.mobilefacenet import MobileFaceNetIdentity, MobileFaceNetTokens


def shares_trunk(identity: nn.Module, attribute: nn.Module) -> TypeGuard[MobileFaceNetIdentity]:
    """Whether ``attribute``'s tokens are ``identity``'s network at its token layer: a plain MobileFaceNet
    identity and MobileFaceNet tokens of the same layer, input layout and weights (values and memory layout)."""
    if torch.compiler.is_compiling():  # module.compile=true traces the two networks as before
        return False
    if type(identity) is not MobileFaceNetIdentity or type(attribute) is not MobileFaceNetTokens:
        return False
    if (identity.token_layer, identity.channels_last) != (attribute.token_layer, attribute.channels_last):
        return False
    mine, theirs = dict(identity.net.named_parameters()), dict(attribute.net.named_parameters())
    return mine.keys() == theirs.keys() and all(
        a.stride() == theirs[k].stride() and torch.equal(a, theirs[k]) for k, a in mine.items())


Trunk = Callable[[torch.Tensor], torch.Tensor]


class _GraphContext(Protocol):
    """What :class:`_TrunkOnce` uses of autograd's context object: the trunk's graph kept for the backward."""

    graph: tuple[torch.Tensor, torch.Tensor] | None  # (inputs, features)

    def set_materialize_grads(self, value: bool) -> None: ...


class _TrunkOnce(torch.autograd.Function):
    """``images -> (features, features)``: one forward of ``trunk``; the backward runs the trunk's
    backward for each output's gradient separately and returns their sum."""

    @staticmethod
    def forward(ctx: _GraphContext, images: torch.Tensor, trunk: Trunk) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        with torch.enable_grad():
            inputs = images.detach().requires_grad_(images.requires_grad)
            features = trunk(inputs)
        ctx.graph = (inputs, features) if images.requires_grad else None
        out = features.detach()
        return out, out.clone()

    @staticmethod
    def backward(ctx: _GraphContext, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, None]:
        if ctx.graph is None:
            raise RuntimeError("_TrunkOnce.backward without a graph: a second backward through one trunk forward")
        inputs, features = ctx.graph
        total: torch.Tensor | None = None
        for grad in grads:  # the embedding's first, then the tokens'; a + b == b + a in floating point
            if grad is not None:
                (part,) = torch.autograd.grad(features, inputs, grad, retain_graph=True)
                total = part if total is None else total + part
        ctx.graph = None
        return total, None


def embeddings_and_tokens(identity: MobileFaceNetIdentity, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``identity(images)`` and the tokens of its ``token_layer`` (``B x 192``, ``B x T x C``) from one trunk forward."""
    layer = identity.token_layer
    if not images.requires_grad:  # no backward: the one forward is all there is
        fmap = identity.net.feature_map(identity.prepare(images), layer)
        to_embedding, to_tokens = fmap, fmap
    else:
        # Function.apply is untyped in torch's stub: this is its type for _TrunkOnce
        trunk_once: Callable[[torch.Tensor, Trunk], tuple[torch.Tensor, torch.Tensor]] = _TrunkOnce.apply
        to_embedding, to_tokens = trunk_once(images, lambda x: identity.net.feature_map(identity.prepare(x), layer))
    embeddings = F.normalize(identity.net.embedding_from(to_embedding, layer), p=2, dim=1)
    return embeddings, to_tokens.flatten(2).transpose(1, 2)
