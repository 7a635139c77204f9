"""``experiments/lfw_halves.py``: the tune and held-out halves share no person, keep two photos of each
person (so the other-photo attack judges every item), skip people with one photo, and are the same on
every call."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import lfw_halves  # noqa: E402


def make_lfw(root: Path, counts: dict[str, int]) -> Path:
    for person, n in counts.items():
        (root / person).mkdir(parents=True)
        for k in range(1, n + 1):
            (root / person / f"{person}_{k:04d}.jpg").write_bytes(b"jpeg")
    return root


def test_halves_are_disjoint_two_photo_people_alternating_by_name(tmp_path):
    src = make_lfw(tmp_path / "lfw", {"A": 2, "B": 1, "C": 3, "D": 2, "E": 2, "F": 2})
    split = lfw_halves.halves(src, 2)
    names = {half: [p for p, _ in chosen] for half, chosen in split.items()}
    assert names == {"tune": ["A", "D"], "heldout": ["C", "E"]}  # B has one photo; F is the third of its half
    assert [p.name for p in dict(split["heldout"])["C"]] == ["C_0001.jpg", "C_0002.jpg"]
    lfw_halves.write(split, tmp_path / "out")
    lfw_halves.write(split, tmp_path / "out")  # a rerun keeps the links
    linked = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert linked == ["heldout/C/C_0001.jpg", "heldout/C/C_0002.jpg", "heldout/E/E_0001.jpg", "heldout/E/E_0002.jpg",
                      "tune/A/A_0001.jpg", "tune/A/A_0002.jpg", "tune/D/D_0001.jpg", "tune/D/D_0002.jpg"]
    assert (tmp_path / "out/tune/A/A_0001.jpg").resolve() == (src / "A/A_0001.jpg").resolve()


def test_too_few_people_is_a_one_line_error(tmp_path):
    src = make_lfw(tmp_path / "lfw", {"A": 2, "B": 2})
    with pytest.raises(SystemExit, match=r"^lfw_halves: .* has only 1 people with two photos for tune, asked 2$"):
        lfw_halves.halves(src, 2)
