"""The one place that composes the method from the Hydra config: networks, loss, latent layout, optimiser.

:func:`method_parts` builds them; :func:`build_method` makes a :class:`anon.method.falco.FalcoMethod` of
them (the photo path) and :func:`anon.runtime.run.build_module` a :class:`anon.fit.module.FalcoModule` (the run).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from anon.method.falco import FalcoMethod
from anon.method.optimise import FrozenNetworks, OptimiseOptions
from anon.seeding import built_seeded

#: ``module.*`` config keys that set :class:`anon.method.optimise.OptimiseOptions` (the optimiser and schedule
#: come from the ``optim`` and ``scheduler`` groups).
METHOD_OPTION_KEYS = tuple(f.name for f in fields(OptimiseOptions) if f.name not in ("optimizer", "scheduler"))


def build_network(cfg: DictConfig, group: str) -> nn.Module:
    """The network of config group ``group``, built under a seed keyed by ``(cfg.seed, group)``: randomly
    initialised networks (the tiny set) are the same in every stage, process and run."""
    network: nn.Module = built_seeded(int(cfg.get("seed", 0)), group, lambda: instantiate(cfg[group]))
    return network


def method_parts(cfg: DictConfig) -> dict[str, Any]:
    """The method's pieces named by the config groups: ``generator``, ``identity``, ``attribute``,
    ``loss``, ``latent``, ``optimizer`` and ``scheduler`` (the keyword arguments of ``FalcoModule``)."""
    return {"generator": build_network(cfg, "generator"), "identity": build_network(cfg, "identity"),
            "attribute": build_network(cfg, "attribute"), "loss": instantiate(cfg.loss),
            "latent": instantiate(cfg.latent), "optimizer": instantiate(cfg.optim),
            "scheduler": instantiate(cfg.scheduler)}


def build_method(cfg: DictConfig) -> FalcoMethod:
    """The method of the config, without Lightning: the loop's settings from ``module.*``."""
    parts = method_parts(cfg)
    networks = FrozenNetworks(parts["generator"], parts["identity"], parts["attribute"])
    settings = {key: cfg.module[key] for key in METHOD_OPTION_KEYS if key in cfg.module}
    options = OptimiseOptions(optimizer=parts["optimizer"], scheduler=parts["scheduler"], **settings)
    return FalcoMethod(networks, parts["loss"], parts["latent"], options)
