"""LFW: images ``Name/Name_000N.jpg`` (identity = folder name) and the verification pair lists.

Pair files (official, whitespace or tab separated):

- View 1 (``pairsDevTrain.txt`` / ``pairsDevTest.txt``): line 1 ``N``, then N matched lines ``name i j``,
  then N mismatched lines ``name1 i name2 j``. All pairs get fold 0.
- View 2 (``pairs.txt``): line 1 ``folds N``, then per fold N matched and N mismatched lines (folds 0..folds-1).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from anon.data.datamodule import FolderDataModule
from anon.errors import ConfigError, MissingDataError

SUBSETS = ("all", "pairs")


class Pair(NamedTuple):
    """One verification pair: image ids ``Name/Name_000i``, whether they show one person, and the fold."""
    id_a: str
    id_b: str
    same: bool
    fold: int


def image_id(name: str, number: str | int) -> str:
    """``("Aaron_Peirsol", 1)`` -> ``"Aaron_Peirsol/Aaron_Peirsol_0001"`` (the LFW file layout, no suffix)."""
    return f"{name}/{name}_{int(number):04d}"


def identity_of(image: str) -> str:
    """The person of an LFW image id, its folder name: ``"Aaron_Peirsol/Aaron_Peirsol_0001"`` -> ``"Aaron_Peirsol"``."""
    return image.split("/")[0]


def _parse_pair(tokens: list[str], same: bool, fold: int, where: str) -> Pair:
    if same and len(tokens) == 3:
        name, i, j = tokens
        return Pair(image_id(name, i), image_id(name, j), True, fold)
    if not same and len(tokens) == 4:
        name_a, i, name_b, j = tokens
        return Pair(image_id(name_a, i), image_id(name_b, j), False, fold)
    expected = "name i j" if same else "name1 i name2 j"
    raise ValueError(f"{where}: expected a {'matched' if same else 'mismatched'} pair `{expected}`, got {tokens}")


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW pair list in View 1 (``N``) or View 2 (``folds N``) format, in file order.

    Raises ``ValueError`` when the header is neither, a line has the wrong number of fields for its
    position, or the line count is not ``folds * 2N``.
    """
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or not 1 <= len(lines[0]) <= 2 or not all(t.isdigit() for t in lines[0]):
        raise ValueError(f"{path}: line 1 must be `N` (View 1) or `folds N` (View 2)")
    folds, n = (1, int(lines[0][0])) if len(lines[0]) == 1 else (int(lines[0][0]), int(lines[0][1]))
    body = lines[1:]
    if len(body) != folds * 2 * n:
        raise ValueError(f"{path}: header announces {folds} x ({n} matched + {n} mismatched) pairs, "
                         f"found {len(body)} lines")
    pairs = []
    for k, tokens in enumerate(body):
        fold, position = divmod(k, 2 * n)
        pairs.append(_parse_pair(tokens, position < n, fold, f"{path}:{k + 2}"))
    return pairs


def pair_images(pairs: list[Pair]) -> list[str]:
    """Every image id some pair references, sorted, once each."""
    return sorted({i for p in pairs for i in (p.id_a, p.id_b)})


class LFWDataModule(FolderDataModule):
    """LFW images (id ``Name/Name_000N``), all of them or only those the verification pairs reference.

    Args (besides :class:`FolderDataModule`'s; its ``pairs`` stays the neighbour-code map):
        verification_pairs: LFW pair list (View 1 or View 2), read on first use.
        subset: ``all`` (every image in the folder) or ``pairs`` (exactly the images the pair list references;
            a referenced image missing from the folder raises :class:`MissingDataError`).
    """

    def __init__(self, images: str, inversions: str, neighbours: str, pairs: str | None = None, name: str = "lfw",
                 image_size: int | None = 256, batch_size: int = 8, num_workers: int = 0, limit: int | None = None,
                 verification_pairs: str | None = None, subset: str = "all"):
        super().__init__(images, inversions, neighbours, pairs, name, image_size, batch_size, num_workers, limit)
        if subset not in SUBSETS:
            raise ConfigError(f"dataset.subset={subset!r} is not an LFW subset; use one of {', '.join(SUBSETS)}")
        self.subset = subset
        self.verification_pairs_path = None if verification_pairs is None else Path(verification_pairs)
        self._pairs: list[Pair] | None = None

    def verification_pairs(self) -> list[Pair]:
        """The pair list (file order): ``Pair(id_a, id_b, same, fold)``."""
        if self._pairs is None:
            path = self.verification_pairs_path
            if path is None or not path.is_file():
                raise MissingDataError(path or "pairs.txt", "LFW pair list",
                                       "set `dataset.verification_pairs` to pairs.txt / pairsDevTest.txt")
            self._pairs = read_pairs(path)
        return self._pairs

    def select(self, ids: list[str]) -> list[str]:
        """``subset=pairs``: the referenced images, which must all be in the folder."""
        if self.subset == "all":
            return ids
        present = set(ids)
        referenced = pair_images(self.verification_pairs())
        missing = [i for i in referenced if i not in present]
        if missing:
            raise MissingDataError(self.images_root / f"{missing[0]}.jpg",
                                   f"LFW image ({len(missing)} of those in {self.verification_pairs_path} missing)",
                                   "use the full LFW folder the pair list was made for")
        return referenced

    @staticmethod
    def identity(image: str) -> str:
        """The person of an image id: its folder name."""
        return identity_of(image)
