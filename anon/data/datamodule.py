"""LightningDataModule: the images still to anonymise, sharded deterministically across ranks."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from anon.data.codes import CodeFolder
from anon.data.dataset import AnonymizationItems, collate_items
from anon.data.images import list_images
from anon.errors import MissingDataError
from anon.runtime.manifest import done_ids, finished_ids


def empty_batch(_items: list) -> dict:
    """A batch without images or failures (what a rank with no share of the pending images runs)."""
    return {"failed": [], "id": [], "source": []}


def shard(ids: list[str], rank: int, world_size: int) -> list[str]:
    """Rank ``r`` of ``W`` takes items ``r, r + W, ...`` of the sorted pending list: disjoint, complete, stable."""
    return sorted(ids)[rank::world_size]


class FolderDataModule(pl.LightningDataModule):
    """Images in a folder (recursive; id = relative path without suffix) plus their initial codes.

    Args:
        images: folder of original images.
        inversions: folder of ``<id>.pt`` W+ inversions of the originals.
        neighbours: folder of fake-neighbour W+ codes, ``<id>.pt`` or ``<fake_id>.pt`` with ``pairs``.
        pairs: optional JSON ``{image_id: fake_id}``.
        name: dataset name (used in run names and reports).
        image_size: originals are resized to this square size for the losses (the loss networks resize
            to 256 / 224 anyway); ``null`` keeps native size (then all images must share it).
        batch_size: images optimised together (results do not depend on it).
        limit: only the first ``limit`` ids (sorted), for smoke runs.
    """

    def __init__(self, images: str, inversions: str, neighbours: str, pairs: str | None = None, name: str = "folder",
                 image_size: int | None = 256, batch_size: int = 8, num_workers: int = 0, limit: int | None = None):
        super().__init__()
        self.images_root, self.inversions_root, self.neighbours_root = Path(images), Path(inversions), Path(neighbours)
        self.pairs, self.name, self.image_size = pairs, name, image_size
        self.batch_size, self.num_workers, self.limit = batch_size, num_workers, limit
        self.run_dir: Path | None = None
        self.retry_failed = False
        self.num_ws: int | None = None
        self.items: AnonymizationItems | None = None
        self.others_have_work = False  # whether any rank has images left (set by setup)
        self.total = self.skipped = 0
        self.targets_root: Path | None = None

    def use_targets(self, root: str | Path | None) -> None:
        """Compare the losses against the images of ``root`` (same ids, native size, e.g. the unaligned
        originals, as the official code does) instead of the anonymised inputs; ``None``: the inputs."""
        self.targets_root = Path(root) if root is not None else None

    def attach(self, run_dir: str | Path, num_ws: int | None, retry_failed: bool = False) -> None:
        """Tell the data where the run's manifest lives (for resume), the generator's W+ row count, and
        whether ids whose latest record is ``failed`` are tried again (else every recorded id is skipped)."""
        self.run_dir, self.num_ws, self.retry_failed = Path(run_dir), num_ws, bool(retry_failed)

    def select(self, ids: list[str]) -> list[str]:
        """Subclasses narrow the folder to a split (CelebA-HQ test set, LFW pairs...)."""
        return ids

    def image_paths(self) -> dict[str, Path]:
        """The images this dataset covers, ``{id: path}``, sorted by id (split and ``limit`` applied)."""
        if not self.images_root.is_dir():
            raise MissingDataError(self.images_root, "image folder", "fix `dataset.images` in your config")
        images = list_images(self.images_root)
        ids = self.select(sorted(images))
        ids = ids[: self.limit] if self.limit else ids
        return {i: images[i] for i in ids}

    def setup(self, stage: str | None = None) -> None:
        images = self.image_paths()
        ids = list(images)
        skip = finished_ids if self.retry_failed else done_ids
        done = skip(self.run_dir) if self.run_dir is not None else set()
        pending = [i for i in ids if i not in done]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self.total, self.skipped = len(ids), len(ids) - len(pending)
        self.others_have_work = bool(pending)
        self.items = AnonymizationItems(
            shard(pending, rank, world), images,
            CodeFolder(self.inversions_root, what="inversion folder"),
            CodeFolder(self.neighbours_root, self.pairs, what="neighbour-code folder"),
            self.image_size, self.num_ws,
            targets=list_images(self.targets_root) if self.targets_root is not None else None)
        if self.trainer is not None:
            # Every rank must read the manifest before any rank appends to it, or the shards disagree.
            self.trainer.strategy.barrier("anon-manifest-read")

    def predict_dataloader(self) -> DataLoader:
        if len(self.items) == 0 and self.others_have_work:
            # Fewer pending images than ranks: Lightning refuses a rank whose loader is empty while another
            # rank's is not, and every rank must reach the end-of-predict collectives (the step curve's
            # sum, the barrier before the merge). This rank runs one batch of nothing.
            return DataLoader([{}], batch_size=1, collate_fn=empty_batch)
        return DataLoader(self.items, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_items)
