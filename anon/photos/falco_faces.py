"""FALCO on the aligned face crops of the photo path: invert, pick the nearest fake, optimise.

:class:`FalcoFaceAnonymizer` is the ``falco`` face anonymiser of :class:`anon.photos.anonymizer.Anonymizer`. It runs
the method object (:class:`anon.method.falco.FalcoMethod`), the same loop the Lightning run calls, with no
Trainer: no run folder, manifest or logger of its own (the photo CLI keeps the photos' records).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from anon.errors import ConfigError
from anon.method.falco import FalcoMethod
from anon.nets.tuned import split_inversion
from anon.seeding import content_key, takes_ids


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """N x 3 x h x w -> N x 3 x size x size, bilinear with anti-aliasing (identity when already that size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class FalcoFaceAnonymizer:
    """FALCO on face crops with a composed model set: invert, pick the nearest fake, optimise.

    Args:
        method: :class:`anon.method.falco.FalcoMethod` (generator, identity and attribute networks, loss,
            latent layout and loop options; ``method.optimise`` is the anonymisation loop).
        inverter: ``images N x 3 x R x R [-1, 1] -> codes N x num_ws x w_dim`` (e.g.
            :class:`anon.method.inversion.OptimisationInverter`).
        pool_ids, pool_features: the fake pool (K ids, K x D pairing features of the fakes).
        load_code: ``fake id -> its code (num_ws x w_dim)``.
        pairing: network whose ``embed`` (else output) gives the pairing features of a crop
            (the pipeline's ``pair`` stage uses the attribute network).
        image_size: side the crops are resized to for inversion and optimisation (the pipeline's
            ``dataset.image_size``); results are resized back to the crop size.

    ``last`` holds per-crop facts of the latest call (fake id, pairing similarity, identity
    similarity before / after).
    """

    def __init__(self, method: FalcoMethod, inverter: Callable, pool_ids: Sequence[str], pool_features: torch.Tensor,
                 load_code: Callable[[str], torch.Tensor], pairing: torch.nn.Module, image_size: int,
                 device: torch.device | str = "cpu"):
        if len(pool_ids) == 0 or len(pool_ids) != pool_features.shape[0]:
            raise ConfigError("the fake pool is empty or its ids and features disagree (run the fakes stage)")
        self.device = torch.device(device)
        self.method = method.to(self.device)
        self.inverter = inverter.to(self.device) if isinstance(inverter, torch.nn.Module) else inverter
        self.pairing = pairing.to(self.device).eval()
        self.pool_ids, self.pool_features = list(pool_ids), pool_features.float().cpu()
        self.load_code = functools.lru_cache(maxsize=4096)(load_code)
        self.image_size = int(image_size)
        self.last: list[dict] = []

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device | str | None = None) -> "FalcoFaceAnonymizer":
        """Networks from the config groups (:func:`anon.runtime.compose.build_method`, ``build_inverter``); the fake
        pool from the pipeline's ``fakes`` stage (cached in ``stages.fakes_dir``, shared with ``anon pipeline``)."""
        from hydra.utils import instantiate

        from anon.runtime.compose import build_method
        from anon.stages.common import pick_device
        from anon.stages.fakes import load_features
        from anon.stages.pipeline import build_inverter

        device = pick_device(cfg.get("device", "auto")) if device is None else torch.device(device)
        method = build_method(cfg)
        networks = method.networks
        inverter = build_inverter(cfg, networks.generator)
        fakes_dir = cfg.stages.fakes_dir
        print(f"[anon] fakes   -> {fakes_dir}", flush=True)
        instantiate(cfg.fakes)(networks.generator, networks.attribute, stage_dir=fakes_dir, device=device)
        ids, features = load_features(fakes_dir)

        def load_code(fake: str) -> torch.Tensor:
            return torch.load(f"{fakes_dir}/codes/{fake}.pt", map_location="cpu", weights_only=True)

        return cls(method, inverter, ids, features, load_code, networks.attribute, cfg.dataset.image_size, device)

    #: Nearest fakes searched per face: a fake whose code file cannot be read is passed over for the next.
    NEIGHBOURS = 8

    def _readable_neighbour(self, index: torch.Tensor, similarity: torch.Tensor) -> tuple[str, torch.Tensor, float]:
        """``(fake id, its code, pairing similarity)`` of the nearest fake whose code file is readable."""
        errors = []
        for i, s in zip(index.tolist(), similarity.tolist()):
            fake = self.pool_ids[int(i)]
            try:
                code = self.load_code(fake)
                if not isinstance(code, torch.Tensor):
                    raise ValueError(f"holds a {type(code).__name__}, not a tensor")
                return fake, code, float(s)
            except Exception as err:  # a corrupt file in the fake pool's cache
                errors.append(f"{fake}: {type(err).__name__}")
        raise ValueError(f"no readable code among the {len(errors)} nearest fakes ({', '.join(errors)}); "
                         "delete the fake pool's folder (stages.fakes_dir) to rebuild it")

    def __call__(self, crops: torch.Tensor, ids: Sequence[str] | None = None) -> torch.Tensor:
        from anon.stages.fakes import embed
        from anon.stages.pair import nearest_neighbours

        size = crops.shape[-1]
        x = _resize(crops.to(self.device, torch.float32), self.image_size)
        with torch.no_grad():
            if takes_ids(self.inverter):  # keyed random starts: the crop's content when no ids are given
                output = self.inverter(x, ids=list(ids) if ids is not None else [content_key(c) for c in crops])
            else:
                output = self.inverter(x)
            codes, offsets = split_inversion(output)
            similarity, index = nearest_neighbours(embed(self.pairing, x).float().cpu(), self.pool_features,
                                                   k=self.NEIGHBOURS)
        picks = [self._readable_neighbour(index[i], similarity[i]) for i in range(index.shape[0])]
        neighbours = torch.stack([code for _, code, _ in picks]).to(self.device, codes.dtype)
        tuned = {} if offsets is None else {"offsets": offsets}  # a pivotal inversion's per-image weights
        result = self.method.optimise(x, codes, neighbours, **tuned)
        self.last = [{"fake": f, "pair_similarity": s,
                      "identity_similarity_before": float(result["initial"]["similarity"][i]),
                      "identity_similarity_after": float(result["final"]["similarity"][i])}
                     for i, (f, _, s) in enumerate(picks)]
        return _resize(result["images"].detach().float(), size).clamp(-1.0, 1.0).cpu()
