"""One item per image: the original, its inversion code and its nearest fake neighbour's code."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from anon.data.codes import CodeFolder
from anon.data.images import load_image


class AnonymizationItems(Dataset):
    """Items ``{"id", "image" (3 x S x S, [-1, 1]), "w_inversion" (L x D), "w_neighbour" (L x D)}``.

    With ``targets`` (``{id: path}``), items also carry ``"target"``: that image at its native size in
    [-1, 1], what the losses compare against (``loss.target=unaligned``).

    An item that cannot be read (corrupt image, missing code) comes back as ``{"id", "error"}`` so the
    run records and skips it instead of crashing or silently dropping it.
    """

    def __init__(self, ids: list[str], images: dict[str, Path], inversions: CodeFolder, neighbours: CodeFolder,
                 image_size: int | None, num_ws: int | None, targets: dict[str, Path] | None = None):
        self.ids, self.images, self.targets = ids, images, targets
        self.inversions, self.neighbours = inversions, neighbours
        self.image_size, self.num_ws = image_size, num_ws

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        path = self.images[image_id]
        try:
            image = load_image(path, self.image_size)
            target = {} if self.targets is None else {"target": load_image(self.targets[image_id])}
        except KeyError:
            return {"id": image_id, "source": str(path), "error": "no loss target image with this id"}
        except Exception as err:  # PIL raises several types for bad files
            return {"id": image_id, "source": str(path), "error": f"unreadable image: {one_line(err)}"}
        try:
            w_inv = self.inversions.load(image_id, self.num_ws)
            w_nb = self.neighbours.load(image_id, self.num_ws)
            offsets = self.inversions.load_offsets(image_id)
        except Exception as err:  # torch.load raises UnpicklingError, EOFError, RuntimeError... on bad files
            return {"id": image_id, "source": str(path), "error": f"bad latent code: {one_line(err)}"}
        item = {"id": image_id, "source": str(path), "image": image, "w_inversion": w_inv, "w_neighbour": w_nb, **target}
        return item if offsets is None else {**item, "offsets": offsets}


def one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters (an unpickler's message can be long)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def collate_items(items: list[dict]) -> dict:
    """Stack the readable items; pass the unreadable ones through as ``failed`` records.

    Generator weight offsets (pivotal tuning) are stacked per parameter; in a batch where some items
    have them, an item without them (or with other parameters) fails: it cannot be rendered as inverted.
    """
    tuned = next((it["offsets"] for it in items if "error" not in it and "offsets" in it), None)
    if tuned is not None:
        items = [it if "error" in it or set(it.get("offsets", {})) == set(tuned) else
                 {"id": it["id"], "source": it["source"], "error": "weight offsets missing or different from the "
                  "batch's (an inversion cache mixing inverters): delete its codes/ and offsets/ entries"}
                 for it in items]
    ok = [it for it in items if "error" not in it]
    batch = {"failed": [{"id": it["id"], "source": it["source"], "error": it["error"]} for it in items if "error" in it],
             "id": [it["id"] for it in ok], "source": [it["source"] for it in ok]}
    if ok:
        for key in ("image", "w_inversion", "w_neighbour", "target"):
            if key in ok[0]:
                batch[key] = torch.stack([it[key] for it in ok])
        if tuned is not None:
            batch["offsets"] = {name: torch.stack([it["offsets"][name] for it in ok]) for name in tuned}
    return batch
