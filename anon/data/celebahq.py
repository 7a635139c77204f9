"""CelebA-HQ: the official train/val/test split, the 40 CelebA attributes and CelebA identities per image.

Files (official layouts):

- ``CelebAMask-HQ-attribute-anno.txt`` (CelebAMask-HQ): line 1 the image count, line 2 the 40 attribute
  names, then ``<idx>.jpg a1 ... a40`` with values 1 / -1.
- ``CelebA-HQ-to-CelebA-mapping.txt`` (CelebAMask-HQ): a header ``idx orig_idx orig_file``, then one row per
  CelebA-HQ index: ``orig_idx`` is the 0-based CelebA index, ``orig_file`` its file (``orig_idx + 1``, 6 digits).
- ``list_eval_partition.txt`` (CelebA): ``<orig_file> <0|1|2>`` for train / val / test.
- ``identity_CelebA.txt`` (CelebA): ``<orig_file> <identity>``.
- Alternatively one combined file with a header ``file celebahq_idx celeba_orig_file celeba_identity
  celeba_official_split`` (as in the shared sample's ``identity_and_mapping.txt``): mapping, partition and identity.

The split of a CelebA-HQ image is the partition of the CelebA file it was made from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anon.data.datamodule import FolderDataModule
from anon.errors import ConfigError, MissingDataError

PARTITIONS = ("train", "val", "test")  # list_eval_partition.txt codes 0, 1, 2
SPLITS = ("train", "val", "test", "train+val", "all")
COMBINED_HEADER = "file celebahq_idx celeba_orig_file celeba_identity celeba_official_split".split()


def _lines(path: str | Path) -> list[str]:
    """Non-empty lines of a text file (trailing whitespace and CR stripped)."""
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


def _stem(name: str) -> str:
    """``"112.jpg"`` or ``"112"`` -> ``"112"``."""
    return Path(name).stem


def read_attributes(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Parse ``CelebAMask-HQ-attribute-anno.txt``.

    Returns:
        names: the 40 attribute names, in file order.
        values: ``{id: int8 array (40,) of +1 / -1}`` keyed by image stem (``"112"`` for ``112.jpg``).
    Raises ``ValueError`` on a row of the wrong length, a value other than +-1, or a count line that
    does not match the number of rows (a truncated file).
    """
    lines = _lines(path)
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a line of attribute names")
    count, names = int(lines[0].split()[0]), lines[1].split()
    values = {}
    for number, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        if len(tokens) != len(names) + 1:
            raise ValueError(f"{path}:{number}: expected a file name and {len(names)} values, got {len(tokens)} fields")
        row = np.array([int(t) for t in tokens[1:]], dtype=np.int8)
        if not np.all(np.abs(row) == 1):
            raise ValueError(f"{path}:{number}: attribute values must be 1 or -1")
        values[_stem(tokens[0])] = row
    if count != len(values):
        raise ValueError(f"{path}: line 1 announces {count} images but {len(values)} rows follow")
    return names, values


def read_mapping(path: str | Path) -> dict[str, str]:
    """Parse ``CelebA-HQ-to-CelebA-mapping.txt`` -> ``{celebahq_id: celeba_file}`` (``{"16": "034959.jpg"}``).

    The header line is skipped; each row is ``idx orig_idx orig_file [...]`` and must satisfy
    ``orig_file == f"{orig_idx + 1:06d}.jpg"`` (CelebA files are numbered from 1, ``orig_idx`` from 0).
    """
    mapping = {}
    for number, line in enumerate(_lines(path), start=1):
        tokens = line.split()
        if number == 1 and not tokens[0].isdigit():
            continue  # header: idx orig_idx orig_file
        if len(tokens) < 3:
            raise ValueError(f"{path}:{number}: expected `idx orig_idx orig_file`, got {line!r}")
        idx, orig_idx, orig_file = tokens[:3]
        if _stem(orig_file) != f"{int(orig_idx) + 1:06d}":
            raise ValueError(f"{path}:{number}: orig_file {orig_file} is not CelebA file number orig_idx + 1 = "
                             f"{int(orig_idx) + 1}")
        mapping[str(int(idx))] = orig_file
    return mapping


def read_partition(path: str | Path) -> dict[str, str]:
    """Parse CelebA ``list_eval_partition.txt`` -> ``{celeba_file: "train" | "val" | "test"}`` (codes 0 / 1 / 2)."""
    partition = {}
    for number, line in enumerate(_lines(path), start=1):
        tokens = line.split()
        if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{number}: expected `<file> <0|1|2>`, got {line!r}")
        partition[tokens[0]] = PARTITIONS[int(tokens[1])]
    return partition


def read_celeba_identities(path: str | Path) -> dict[str, int]:
    """Parse CelebA ``identity_CelebA.txt`` -> ``{celeba_file: identity}``."""
    identities = {}
    for number, line in enumerate(_lines(path), start=1):
        tokens = line.split()
        if len(tokens) != 2 or not tokens[1].isdigit():
            raise ValueError(f"{path}:{number}: expected `<file> <identity>`, got {line!r}")
        identities[tokens[0]] = int(tokens[1])
    return identities


def is_combined_file(path: str | Path) -> bool:
    """Whether ``path`` starts with the combined header (``file celebahq_idx celeba_orig_file ...``)."""
    with open(path) as f:
        return f.readline().split() == COMBINED_HEADER


def read_combined(path: str | Path) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """Parse the combined file -> ``(mapping {id: celeba_file}, partition {celeba_file: split},
    identities {id: CelebA identity})``, the same shapes as :func:`read_mapping` / :func:`read_partition`."""
    mapping, partition, identities = {}, {}, {}
    lines = _lines(path)
    if not lines or lines[0].split() != COMBINED_HEADER:
        raise ValueError(f"{path}: expected the header `{' '.join(COMBINED_HEADER)}`")
    for number, line in enumerate(lines[1:], start=2):
        tokens = line.split()
        if len(tokens) != 5 or tokens[4] not in PARTITIONS:
            raise ValueError(f"{path}:{number}: expected `file idx celeba_file identity train|val|test`, got {line!r}")
        file, idx, orig_file, identity, split = tokens
        if _stem(file) != str(int(idx)):
            raise ValueError(f"{path}:{number}: file {file} does not match CelebA-HQ index {idx}")
        mapping[str(int(idx))] = orig_file
        partition[orig_file] = split
        identities[str(int(idx))] = int(identity)
    return mapping, partition, identities


def split_ids(mapping: dict[str, str], partition: dict[str, str], split: str) -> list[str]:
    """CelebA-HQ ids of the official ``split`` (train / val / test / train+val / all), sorted by index.

    An id is in a split when the partition of its CelebA file (through ``mapping``) is. ``all`` is every
    mapped id. Raises ``ValueError`` for an unknown split or a mapped file the partition does not list.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CelebA-HQ split {split!r}; expected one of {', '.join(SPLITS)}")
    wanted = set(PARTITIONS) if split == "all" else set(split.split("+"))
    missing = [f for f in mapping.values() if f not in partition]
    if missing and split != "all":
        raise ValueError(f"{len(missing)} CelebA files of the mapping are not in the partition (e.g. {missing[0]})")
    ids = [i for i, f in mapping.items() if split == "all" or partition[f] in wanted]
    return sorted(ids, key=int)


class CelebAHQDataModule(FolderDataModule):
    """CelebA-HQ images (``<idx>.jpg``, id ``"<idx>"``), narrowed to an official split, with attributes and identities.

    Args (besides :class:`FolderDataModule`'s):
        split: ``train``, ``val``, ``test``, ``train+val`` or ``all`` (every image in the folder).
        attributes: ``CelebAMask-HQ-attribute-anno.txt``, read on the first :meth:`attributes` call.
        mapping: ``CelebA-HQ-to-CelebA-mapping.txt``; needed (with ``partition``) for a split other than ``all``.
        partition: CelebA ``list_eval_partition.txt``.
        identities: CelebA ``identity_CelebA.txt`` (needs ``mapping``), or a combined file with header
            ``file celebahq_idx celeba_orig_file celeba_identity celeba_official_split``, which then also
            provides mapping and partition (``mapping`` / ``partition`` are not read).
    Files are read lazily: a path that is not needed may point at a file that does not exist.
    """

    def __init__(self, images: str, inversions: str, neighbours: str, pairs: str | None = None,
                 name: str = "celebahq", image_size: int | None = 256, batch_size: int = 8, num_workers: int = 0,
                 limit: int | None = None, split: str = "all", attributes: str | None = None,
                 mapping: str | None = None, partition: str | None = None, identities: str | None = None):
        super().__init__(images, inversions, neighbours, pairs, name, image_size, batch_size, num_workers, limit)
        if split not in SPLITS:
            raise ConfigError(f"dataset.split={split!r} is not a CelebA-HQ split; use one of {', '.join(SPLITS)}")
        self.split = split
        self.attributes_path, self.mapping_path, self.partition_path, self.identities_path = (
            None if p is None else Path(p) for p in (attributes, mapping, partition, identities))
        self._attributes: tuple[list[str], dict[str, np.ndarray]] | None = None
        self._split_source: tuple[dict[str, str], dict[str, str]] | None = None
        self._identities: dict[str, int] | None = None

    # -- files, read once ---------------------------------------------------------------------------------
    @staticmethod
    def _need(path: Path | None, default_name: str, what: str, key: str) -> Path:
        if path is None or not path.is_file():
            raise MissingDataError(path or default_name, what, f"set `dataset.{key}` to its path")
        return path

    def _combined(self) -> bool:
        path = self.identities_path
        return path is not None and path.is_file() and is_combined_file(path)

    def _mapping_and_partition(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._split_source is None:
            if self._combined():
                mapping, partition, self._identities = read_combined(self.identities_path)
            else:
                why = f"needed for split={self.split}; or give `dataset.identities` as a combined identity file"
                mapping = read_mapping(self._need(self.mapping_path, "CelebA-HQ-to-CelebA-mapping.txt",
                                                  f"CelebA-HQ -> CelebA mapping ({why})", "mapping"))
                partition = read_partition(self._need(self.partition_path, "list_eval_partition.txt",
                                                      f"CelebA partition list ({why})", "partition"))
            self._split_source = (mapping, partition)
        return self._split_source

    # -- the split ----------------------------------------------------------------------------------------
    def select(self, ids: list[str]) -> list[str]:
        """Keep the folder's images that belong to ``split`` (ids are ``<idx>``; folder order kept)."""
        if self.split == "all":
            return ids
        mapping, partition = self._mapping_and_partition()
        unknown = [i for i in ids if i not in mapping]
        if unknown:
            raise ConfigError(f"{len(unknown)} images in {self.images_root} have no CelebA-HQ index in the mapping "
                              f"(e.g. {unknown[0]!r}); CelebA-HQ images must be named <idx>.jpg")
        keep = set(split_ids({i: mapping[i] for i in ids}, partition, self.split))
        return [i for i in ids if i in keep]

    # -- annotations --------------------------------------------------------------------------------------
    def _attribute_table(self) -> tuple[list[str], dict[str, np.ndarray]]:
        if self._attributes is None:
            path = self._need(self.attributes_path, "CelebAMask-HQ-attribute-anno.txt",
                              "CelebAMask-HQ attribute annotation", "attributes")
            self._attributes = read_attributes(path)
        return self._attributes

    @property
    def attribute_names(self) -> list[str]:
        """The 40 CelebA attribute names, in the annotation file's order."""
        return list(self._attribute_table()[0])

    def attributes(self, image_id: str) -> torch.Tensor:
        """The 40 binary attributes of an image: int8 tensor (40,) of +1 (present) / -1 (absent)."""
        table = self._attribute_table()[1]
        if image_id not in table:
            raise KeyError(f"image {image_id!r} has no line in {self.attributes_path}")
        return torch.from_numpy(table[image_id].copy())

    def identity(self, image_id: str) -> int:
        """The CelebA identity number of an image (same number = same person)."""
        if self._identities is None:
            path = self._need(self.identities_path, "identity_CelebA.txt", "CelebA identity annotation", "identities")
            if self._combined():
                self._mapping_and_partition()
            else:
                mapping = read_mapping(self._need(self.mapping_path, "CelebA-HQ-to-CelebA-mapping.txt",
                                                  "CelebA-HQ -> CelebA mapping (needed to read identity_CelebA.txt)",
                                                  "mapping"))
                by_file = read_celeba_identities(path)
                self._identities = {i: by_file[f] for i, f in mapping.items() if f in by_file}
        if image_id not in self._identities:
            raise KeyError(f"image {image_id!r} has no CelebA identity in {self.identities_path}")
        return self._identities[image_id]
