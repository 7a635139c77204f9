"""Stage ``fakes``: a seeded pool of generated faces -- W+ codes, features and (optionally) images.

Fake ``i`` is drawn from its own random stream seeded by ``(seed, i)``, so the pool is the same on any
number of ranks and after any interruption (the official pool is unseeded). Work goes in chunks;
chunk ``c`` belongs to rank ``c % world``; a chunk whose feature file exists is skipped.
"""
from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path

import numpy as np
import torch

from anon.atomic_write import write_atomically
from anon.data.images import to_uint8
from anon.runtime.outputs import save_code, save_png
from anon.stages.common import chunks, is_done, mark_done

def fake_id(index: int) -> str:
    return f"fake{index:07d}"


def fake_latents(index: range, z_dim: int, seed: int) -> torch.Tensor:
    """z of fakes ``index``: fake ``i`` draws from its own stream, ``numpy`` ``SeedSequence([seed, i])``
    (independent streams, unlike small integer seeds of one generator; the same on every platform)."""
    return torch.from_numpy(np.stack([np.random.default_rng([seed, i]).standard_normal(z_dim) for i in index])).float()


def embed(net: torch.nn.Module, images: torch.Tensor, official_value_ranges: bool = False) -> torch.Tensor:
    """Pairing features: the network's ``embed`` (FaRL's projected CLIP embedding) or its output.

    ``official_value_ranges``: the embedding normalises the values as given (FaRL ``values="as_given"``),
    so reals passed in [0, 1] and fakes in [-1, 1] are seen as the official code sees them."""
    if not hasattr(net, "embed"):
        return net(images)
    if not official_value_ranges:
        return net.embed(images)
    if "values" not in inspect.signature(net.embed).parameters:
        raise ValueError(f"official_value_ranges pairing needs an attribute network whose embed takes `values` "
                         f"(farl_vitb16), not {type(net).__name__}")
    return net.embed(images, values="as_given")


def load_features(stage_dir: str | Path) -> tuple[list[str], torch.Tensor]:
    """All fakes' ids and features (K x D), in index order."""
    ids, feats = [], []
    for path in sorted((Path(stage_dir) / "features").glob("chunk*.pt")):
        chunk = torch.load(path, map_location="cpu", weights_only=True)
        ids += chunk["ids"]
        feats.append(chunk["features"])
    return ids, torch.cat(feats) if feats else torch.empty(0)


@torch.no_grad()
def run_fakes(generator, feature_net, stage_dir: str | Path, num_samples: int, truncation_psi: float = 0.7,
              seed: int = 0, chunk_size: int = 256, batch_size: int = 16, save_images: bool = False,
              device: torch.device | str = "cpu", rank: int = 0, world: int = 1,
              official_value_ranges: bool = False) -> Path:
    """``official_value_ranges``: fakes' features from the raw [-1, 1] images normalised as given (see
    :func:`embed`), as the official pool; pair with ``pair.official_value_ranges`` then."""
    stage_dir = Path(stage_dir)
    if is_done(stage_dir):
        return stage_dir
    (stage_dir / "features").mkdir(parents=True, exist_ok=True)
    generator, feature_net = generator.to(device).eval(), feature_net.to(device).eval()
    for c, chunk in enumerate(chunks(num_samples, chunk_size)):
        out = stage_dir / "features" / f"chunk{chunk.start:07d}.pt"
        if c % world != rank or out.exists():
            continue
        feats = []
        for part in chunks(len(chunk), batch_size):
            index = range(chunk.start + part.start, chunk.start + part.stop)
            ws = generator.mapping(fake_latents(index, generator.z_dim, seed).to(device), truncation_psi=truncation_psi)
            images = generator(ws)
            feats.append(embed(feature_net, images, official_value_ranges).float().cpu())
            pixels = to_uint8(images) if save_images else None
            for j, i in enumerate(index):
                save_code(ws[j], stage_dir / "codes" / f"{fake_id(i)}.pt")
                if save_images:
                    save_png(pixels[j], stage_dir / "images" / f"{fake_id(i)}.png")
        write_atomically(out, partial(torch.save, {"ids": [fake_id(i) for i in chunk], "features": torch.cat(feats)}))
    if rank == 0 and len(list((stage_dir / "features").glob("chunk*.pt"))) == len(chunks(num_samples, chunk_size)):
        mark_done(stage_dir, num_samples=num_samples, truncation_psi=truncation_psi, seed=seed)
    return stage_dir
