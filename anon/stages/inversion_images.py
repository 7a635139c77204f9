"""The inversion of every evaluated image, rendered: what the generator/inverter alone makes of the face.

``anon evaluate`` scores three images per item: the original, this inversion and the anonymised
output. The inversion codes are the run's initial codes (``dataset.inversions`` in the run's
``config.yaml``, written by the pipeline's ``invert`` stage); they are rendered by the run's generator
(``generator`` in the same file) into ``<run_dir>/inversions/<id>.png`` once, and reused after. A
pivotal-tuning inversion's per-image weight offsets (``offsets/<id>.pt`` beside the codes) are part of
the inversion: each image is rendered with its own (:func:`anon.nets.tuned.render`), else the report
would score a z-only rendering as "the inversion".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

INVERSIONS = "inversions"


def render_inversions(run_dir: str | Path, ids: list[str], batch_size: int = 16,
                      device: str | torch.device = "cpu") -> tuple[Path | None, str]:
    """Render the missing ``inversions/<id>.png`` of ``ids``; returns ``(folder or None, description)``.

    None (with the reason) when the run's config names no inversion folder or generator, or none of
    the ids has a code there.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from anon.data.codes import CodeFolder
    from anon.data.images import to_uint8
    from anon.nets.tuned import render
    from anon.runtime.outputs import save_png
    from anon.stages.common import chunks

    run_dir = Path(run_dir)
    out = run_dir / INVERSIONS
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None, f"no {config.name} in the run folder"
    cfg = OmegaConf.load(config)
    codes_dir, generator_cfg = OmegaConf.select(cfg, "dataset.inversions"), OmegaConf.select(cfg, "generator")
    if not codes_dir or generator_cfg is None:
        return None, "the run's config names no inversion codes (dataset.inversions) or generator"
    if not Path(codes_dir).is_dir():
        return None, f"inversion codes {codes_dir} not found"
    have = [i for i in ids if (Path(codes_dir) / f"{i}.pt").is_file()]
    if not have:
        return None, f"no evaluated image has a code in {codes_dir}"
    pending = [i for i in have if not (out / f"{i}.png").is_file()]
    description = f"inversion codes {codes_dir} rendered by the run's generator ({generator_cfg.get('_target_')})"
    codes = CodeFolder(codes_dir, what="inversion folder")
    if any(codes.offsets_path(i).is_file() for i in have):
        description += ", each with its pivotal-tuning weight offsets"
    if pending:
        generator = instantiate(generator_cfg).to(device).eval()
        num_ws = getattr(generator, "num_ws", None)
        for part in chunks(len(pending), batch_size):
            batch = pending[part.start:part.stop]
            ws = torch.stack([codes.load(i, num_ws) for i in batch]).to(device)
            offsets = [codes.load_offsets(i) for i in batch]
            with torch.no_grad():
                if all(o is None for o in offsets):
                    pixels = to_uint8(generator(ws))
                else:  # each image with its own weight offsets (one at a time: sets may differ in names)
                    pixels = np.concatenate([to_uint8(render(generator, w[None], None if o is None else
                                                        {k: v[None].to(device) for k, v in o.items()}))
                                        for w, o in zip(ws, offsets)])
            for image_id, image in zip(batch, pixels):
                save_png(image, out / f"{image_id}.png")
    return out, description


__all__ = ["INVERSIONS", "render_inversions"]
