"""Two disjoint halves of the shared LFW sample's people with two photos each: one to tune the lite set
on, one held out to report (issue 16: "tune to the problem, not to the shared sample").

    python experiments/lfw_halves.py [SRC] [OUT] [people]

The people of SRC (``Name/Name_000N.jpg``) with at least two photos, sorted by name, alternate between
the halves (even positions -> ``OUT/tune``, odd -> ``OUT/heldout``); each half keeps its first ``people``
(default 8) people and, for each, the first two photos in name order, as symlinks in the same layout.
Both photos are anonymised, so the evaluation's other-photo attack (folder name = person) judges every
item: each output is verified against its own original and against the person's other photo.
Deterministic; nothing is copied (the links point into SRC).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def people_with_two_photos(src: Path) -> list[tuple[str, list[Path]]]:
    out = []
    for person in sorted(p for p in src.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 2:
            out.append((person.name, photos[:2]))
    return out


def halves(src: Path, people: int) -> dict[str, list[tuple[str, list[Path]]]]:
    both = people_with_two_photos(src)
    split = {"tune": both[0::2][:people], "heldout": both[1::2][:people]}
    for name, chosen in split.items():
        if len(chosen) < people:
            raise SystemExit(f"lfw_halves: {src} has only {len(chosen)} people with two photos for {name}, asked {people}")
    return split


def write(split: dict, out: Path) -> None:
    for name, chosen in split.items():
        for person, photos in chosen:
            folder = out / name / person
            folder.mkdir(parents=True, exist_ok=True)
            for photo in photos:
                link = folder / photo.name
                if not link.is_symlink():
                    link.symlink_to(photo.resolve())


def main(src: str = str(REPO.parent / "shared" / "data" / "lfw_sample"), out: str = "outputs/lfw_halves",
         people: str = "8") -> None:
    split = halves(Path(src), int(people))
    write(split, Path(out))
    for name, chosen in split.items():
        print(f"{out}/{name}: {len(chosen)} people, {2 * len(chosen)} photos: {', '.join(p for p, _ in chosen)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
