"""Stage ``pair``: each real image's nearest fake in a feature space (cosine), chunked in torch.

Memory stays at ``query_chunk x key_chunk`` similarities whatever the pool size (60,000 fakes x
30,000 reals needs no more than one block at a time). Writes ``pairs.json`` (``{real_id: fake_id}``,
what the anonymisation data reads) and ``neighbours.json`` (the k best ids and similarities).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from anon.atomic_write import write_text_atomically
from anon.data.images import load_image
from anon.stages.common import chunks
from anon.stages.fakes import embed, load_features


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int = 1, query_chunk: int = 4096,
                       key_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours: (similarities Q x k, indices Q x k), best first."""
    q_all, keys = F.normalize(queries.float(), dim=1), F.normalize(keys.float(), dim=1)
    k = min(k, keys.shape[0])
    sims_out, idx_out = [], []
    for qc in chunks(q_all.shape[0], query_chunk):
        q = q_all[qc.start:qc.stop]
        best_s = torch.full((q.shape[0], 0), float("-inf"))
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for kc in chunks(keys.shape[0], key_chunk):
            s = q @ keys[kc.start:kc.stop].T
            top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
            cand_s, cand_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i + kc.start], 1)
            order = cand_s.topk(min(k, cand_s.shape[1]), dim=1).indices
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        sims_out.append(best_s)
        idx_out.append(best_i)
    return torch.cat(sims_out), torch.cat(idx_out)


@torch.no_grad()
def real_features(feature_net, images: dict[str, Path], ids: list[str], image_size: int | None, batch_size: int,
                  device, official_value_ranges: bool = False) -> tuple[list[str], torch.Tensor]:
    """Features of the readable images among ``ids`` (unreadable ones are left out; invert records them).

    ``official_value_ranges``: feed the reals in [0, 1] (the fakes' features stay those of [-1, 1]
    generator outputs), the official code's mismatch (FALCO.md section 9.2)."""
    kept, feats = [], []
    for part in chunks(len(ids), batch_size):
        tensors = []
        for image_id in ids[part.start:part.stop]:
            try:
                tensors.append(load_image(images[image_id], image_size))
                kept.append(image_id)
            except Exception:
                continue
        if tensors:
            batch = torch.stack(tensors).to(device)
            batch = (batch + 1) / 2 if official_value_ranges else batch
            feats.append(embed(feature_net, batch, official_value_ranges).float().cpu())
    return kept, torch.cat(feats) if feats else torch.empty(0)


def run_pair(feature_net, images: dict[str, Path], fakes_dir: str | Path, stage_dir: str | Path, k: int = 1,
             image_size: int | None = 256, batch_size: int = 16, device: torch.device | str = "cpu",
             official_value_ranges: bool = False, originals: str = "aligned",
             unaligned: dict[str, Path] | None = None) -> Path:
    """Pair every readable image of ``images`` (``{id: path}``) with its nearest fake(s).

    Pairs already in ``pairs.json`` are kept; only images without one are embedded and searched.
    ``originals="unaligned"`` embeds ``unaligned[id]`` (the source before alignment) instead of
    ``images[id]``, as the official code does; ``official_value_ranges`` feeds the reals in [0, 1].
    """
    if originals not in ("aligned", "unaligned"):
        raise ValueError(f"pair.originals must be aligned or unaligned, not {originals!r}")
    if originals == "unaligned":
        images = {i: (unaligned or {}).get(i, p) for i, p in images.items()}
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    pairs = read_json(stage_dir / "pairs.json")
    neighbours = read_json(stage_dir / "neighbours.json")
    todo = [i for i in sorted(images) if i not in pairs]
    if not todo:
        return stage_dir
    feature_net = feature_net.to(device).eval()
    real_ids, real = real_features(feature_net, images, todo, image_size, batch_size, device, official_value_ranges)
    fake_ids, fake = load_features(fakes_dir)
    if not fake_ids:
        raise RuntimeError(f"no fake features in {fakes_dir}: run the fakes stage first")
    if real_ids:
        sims, idx = nearest_neighbours(real, fake, k=k)
        pairs.update({r: fake_ids[int(i[0])] for r, i in zip(real_ids, idx)})
        neighbours.update({r: {"ids": [fake_ids[int(j)] for j in i], "similarity": [float(v) for v in s]}
                           for r, i, s in zip(real_ids, idx, sims)})
    write_json(stage_dir / "neighbours.json", neighbours)
    write_json(stage_dir / "pairs.json", pairs)  # written last: it is what later stages read
    return stage_dir


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, value: dict) -> None:
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=True))
