"""Rendering with per-image weight offsets: B codes and B weight sets in one batched call.

A pivotal-tuning inversion (:mod:`anon.method.pivotal`) keeps, per image, offsets for some of the
generator's parameters (``{name: N x *shape}``). :func:`render` adds image ``i``'s offsets to the
shared weights and renders its code with them, through ``torch.func.functional_call`` under
``vmap``: no Python loop over images, and each image only ever sees its own weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

Offsets = dict[str, torch.Tensor]


def render(generator: nn.Module, ws: torch.Tensor, offsets: Offsets | None = None, **kwargs) -> torch.Tensor:
    """``generator(ws)`` with image ``i`` rendered by weights ``param + offsets[name][i]``.

    ``offsets`` None or empty: the plain shared generator (every other generator path is unchanged).
    """
    if not offsets:
        return generator(ws, **kwargs)
    params = dict(generator.named_parameters())
    unknown = sorted(set(offsets) - set(params))
    if unknown:
        raise ValueError(f"weight offsets for parameters the generator does not have: {unknown}")
    for name, offset in offsets.items():
        if offset.shape != (ws.shape[0], *params[name].shape):
            raise ValueError(f"offsets[{name!r}] has shape {tuple(offset.shape)}, expected "
                             f"{(ws.shape[0], *params[name].shape)}")
    buffers = dict(generator.named_buffers())

    def one(w: torch.Tensor, own: Offsets) -> torch.Tensor:
        weights = {**params, **{name: params[name] + own[name] for name in own}}
        return functional_call(generator, (weights, buffers), (w[None],), kwargs)[0]

    return vmap(one)(ws, offsets)


def split_inversion(output) -> tuple[torch.Tensor, Offsets | None]:
    """An inverter's output as ``(codes, offsets)``: a plain code tensor has no offsets; a pivotal
    inverter returns ``{"codes", "offsets"}``."""
    if isinstance(output, dict):
        return output["codes"], output.get("offsets") or None
    return output, None


def select(offsets: Offsets | None, rows) -> Offsets | None:
    """The offsets of the images ``rows`` (an index tensor or slice), or None."""
    return None if offsets is None else {name: value[rows] for name, value in offsets.items()}
