"""Stage ``invert``: a W+ code per real image (e4e, or optimisation for generators with no encoder).

Writes ``codes/<id>.pt`` (and ``offsets/<id>.pt``, per-image generator weight offsets, for a
pivotal-tuning inverter) and, per rank, ``failures.rank<r>.jsonl`` (unreadable images, failed
alignment with policy ``skip``). Images that already have a code or a failure record are skipped.
"""
from __future__ import annotations

from pathlib import Path

import torch

from anon.data.images import load_image
from anon.runtime.manifest import ManifestWriter, latest_by_id
from anon.nets.tuned import split_inversion
from anon.runtime.outputs import save_code, save_offsets
from anon.seeding import takes_ids
from anon.stages.common import chunks


def read_failures(stage_dir: Path) -> dict[str, dict]:
    return latest_by_id(stage_dir, "failures")


def missing(stage_dir: Path, ids: list[str]) -> list[str]:
    """Ids with neither a code nor a failure record: the work left."""
    failed = read_failures(stage_dir)
    return [i for i in ids if i not in failed and not (Path(stage_dir) / "codes" / f"{i}.pt").exists()]


def run_invert(inverter, images: dict[str, Path], stage_dir: str | Path, image_size: int | None = 256,
               batch_size: int = 8, device: torch.device | str = "cpu", rank: int = 0, world: int = 1) -> Path:
    """Invert ``images`` (``{id: path}``, e.g. ``datamodule.image_paths()``) into ``stage_dir/codes``.

    The folder is shared by every subset of the same image folder: only ids without a code or a
    failure record are computed.
    """
    stage_dir = Path(stage_dir)
    pending = missing(stage_dir, sorted(images)[rank::world])
    failures = ManifestWriter(stage_dir, rank, prefix="failures")
    inverter = inverter.to(device).eval()
    for part in chunks(len(pending), batch_size):
        batch_ids, tensors, bad = [], [], []
        for image_id in pending[part.start:part.stop]:
            try:
                tensors.append(load_image(images[image_id], image_size))
                batch_ids.append(image_id)
            except Exception as err:
                bad.append({"id": image_id, "source": str(images[image_id]), "stage": "invert",
                            "error": f"unreadable image: {type(err).__name__}: {err}"})
        if batch_ids:
            with torch.no_grad():
                batch = torch.stack(tensors).to(device)  # random starts keyed by id, not by place in the batch
                output = inverter(batch, ids=batch_ids) if takes_ids(inverter) else inverter(batch)
            codes, offsets = split_inversion(output)
            for i, image_id in enumerate(batch_ids):
                if offsets is not None:  # first: the code marks the image done
                    save_offsets({k: v[i] for k, v in offsets.items()}, stage_dir / "offsets" / f"{image_id}.pt")
                save_code(codes[i], stage_dir / "codes" / f"{image_id}.pt")
        failures.append(bad)
    return stage_dir
