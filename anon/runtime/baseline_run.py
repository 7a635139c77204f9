"""A baseline method (blur, pixelate, mask) over a dataset, through the same run folder as FALCO:
``images/<id>`` in ``output.format``, one manifest line per image (appended as soon as it is written,
so a killed run resumes where it stopped), ``summary.json``, the resolved ``config.yaml``.

No generator, inversion, pairing or loss network is built. Under a multi-process launcher each rank
takes every W-th pending image (as the anonymisation data module does).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anon.data.datamodule import shard
from anon.data.images import load_rgb
from anon.runtime.manifest import ManifestWriter, done_ids
from anon.runtime.outputs import image_path, official_jpeg_pixels, save_jpeg, save_png
from anon.stages.common import rank_and_world
from anon.runtime.summary import write_run_summary
from anon.runtime.wandb_record import log_summary_run


def is_baseline(cfg: DictConfig) -> bool:
    """Whether ``method`` names a baseline class (``method=falco`` has no ``_target_``)."""
    return bool(OmegaConf.select(cfg, "method._target_", default=None))


def save_in_format(pixels, path: Path, fmt: str) -> None:
    if fmt == "official_jpeg":
        save_jpeg(official_jpeg_pixels(torch.from_numpy(pixels).permute(2, 0, 1).float()), path)
    else:
        save_png(pixels, path)


def run_baseline(cfg: DictConfig, run_dir: Path, images: str | Path | None = None) -> dict:
    """Apply ``cfg.method`` to every pending image of ``cfg.dataset``; returns the run summary."""
    method = instantiate(cfg.method)
    fmt = OmegaConf.select(cfg, "output.format", default="png")
    overrides = {"inversions": "", "neighbours": "", **({"images": str(images)} if images is not None else {})}
    sources = instantiate(cfg.dataset, **overrides).image_paths()
    done = done_ids(run_dir)
    rank, world = rank_and_world()
    pending = shard([i for i in sources if i not in done], rank, world)
    writer = ManifestWriter(run_dir, rank)
    for image_id in pending:
        started = time.perf_counter()
        source = sources[image_id]
        try:
            original = load_rgb(source)
        except Exception as err:  # PIL raises several types for bad files
            writer.append([{"id": image_id, "source": str(source), "status": "failed", "rank": rank,
                            "error": f"unreadable image: {type(err).__name__}: {err}"}])
            print(f"[anon] skipped {source}: {err}", flush=True)
            continue
        out_path = image_path(run_dir, image_id, fmt)
        save_in_format(method(original), out_path, fmt)
        writer.append([{"id": image_id, "source": str(source), "status": "done", "rank": rank,
                        "method": method.name, "image": out_path.relative_to(run_dir).as_posix(),
                        "wall_time_s": time.perf_counter() - started}])
    summary = write_run_summary(run_dir)
    if rank == 0:
        log_summary_run(cfg, run_dir, summary)  # the configured logger (W&B: config + summary, as a FALCO run)
    print(f"[anon] {method.name}: {summary['images_done']} done, {summary['images_failed']} failed "
          f"({len(done & set(sources))} already in the manifest); "
          f"outputs in {run_dir}", flush=True)
    return {"run_dir": str(run_dir), **summary}
