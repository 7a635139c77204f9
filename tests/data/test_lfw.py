"""LFW pair-list parser (View 1 and View 2, handmade files) and the datamodule on the shared sample."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.utils import instantiate

from anon.data.lfw import LFWDataModule, Pair, read_pairs
from anon.errors import ConfigError, MissingDataError
from tests.conftest import compose_config


def module(images, **kwargs) -> LFWDataModule:
    return LFWDataModule(images=str(images), inversions="unused", neighbours="unused", **kwargs)


VIEW1 = "2\nAaron_Peirsol\t1\t2\nAJ_Cook 1 12\nAJ_Cook\t1\tMarsha_Thomason\t1\nA_B\t2\tC\t10\n"


def test_read_pairs_view1(tmp_path):
    path = tmp_path / "pairsDevTrain.txt"
    path.write_text(VIEW1)
    assert read_pairs(path) == [
        Pair("Aaron_Peirsol/Aaron_Peirsol_0001", "Aaron_Peirsol/Aaron_Peirsol_0002", True, 0),
        Pair("AJ_Cook/AJ_Cook_0001", "AJ_Cook/AJ_Cook_0012", True, 0),
        Pair("AJ_Cook/AJ_Cook_0001", "Marsha_Thomason/Marsha_Thomason_0001", False, 0),
        Pair("A_B/A_B_0002", "C/C_0010", False, 0)]


def test_read_pairs_view2(tmp_path):
    # 3 folds of 1 matched + 1 mismatched pair; the header is `folds N` as in the official pairs.txt (`10 300`).
    lines = ["3\t1"]
    for fold in range(3):
        lines += [f"P{fold}\t1\t{fold + 2}", f"P{fold}\t1\tQ\t{fold + 100}"]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    pairs = read_pairs(path)
    assert [p.fold for p in pairs] == [0, 0, 1, 1, 2, 2]
    assert [p.same for p in pairs] == [True, False] * 3
    assert pairs[5] == Pair("P2/P2_0001", "Q/Q_0102", False, 2)
    assert pairs[2] == Pair("P1/P1_0001", "P1/P1_0003", True, 1)


@pytest.mark.parametrize("text, match", [
    ("2\nA\t1\t2\nB\t1\t2\nA\t1\tB\t1\n", "announces"),            # one mismatched line short
    ("1\nA\t1\tB\t1\nA\t1\t2\n", "matched pair"),                   # mismatched where a matched pair belongs
    ("1\nA\t1\t2\nA\t1\t2\n", "mismatched pair"),
    ("A\t1\t2\n", "line 1"),                                        # no header
])
def test_read_pairs_rejects_malformed(tmp_path, text, match):
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_pairs(path)


# -- the shared sample --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(shared_data) -> Path:
    return shared_data / "lfw_sample"


@pytest.mark.real_data
def test_sample_images_and_identities(sample):
    dm = module(sample)
    ids = list(dm.image_paths())
    assert len(ids) == 292 and len({dm.identity(i) for i in ids}) == 199  # SOURCE.md
    assert all(i.startswith(dm.identity(i) + "/" + dm.identity(i) + "_") for i in ids)


@pytest.mark.real_data
def test_sample_pairs(sample):
    pairs = read_pairs(sample / "pairs.txt")
    assert sum(p.same for p in pairs) == 90 and sum(not p.same for p in pairs) == 90
    assert all(p.fold == 0 for p in pairs)
    for p in pairs:
        assert (p.id_a.split("/")[0] == p.id_b.split("/")[0]) == p.same
        for image in (p.id_a, p.id_b):
            assert os.path.isfile(sample / f"{image}.jpg"), image


def referenced_ids(pair_lines: list[str]) -> set[str]:
    """Image ids a pair list references, read independently of the parser (tab-separated official lines)."""
    referenced = set()
    for line in pair_lines:
        t = line.split("\t")
        names = [(t[0], t[1]), (t[0], t[2])] if len(t) == 3 else [(t[0], t[1]), (t[2], t[3])]
        referenced |= {f"{n}/{n}_{k.zfill(4)}" for n, k in names}
    return referenced


@pytest.mark.real_data
def test_sample_subset_pairs(sample, tmp_path):
    lines = (sample / "pairs.txt").read_text().splitlines()[1:]
    dm = module(sample, verification_pairs=str(sample / "pairs.txt"), subset="pairs")
    selected = dm.image_paths()
    assert set(selected) == referenced_ids(lines) and len(selected) == 292  # the sample is exactly the pairs' images
    assert all(path.is_file() and path.parent.name == dm.identity(i) for i, path in selected.items())
    # A shorter list (first 10 matched + first 10 mismatched lines) selects only its own images.
    short = lines[:10] + lines[90:100]
    (tmp_path / "pairs.txt").write_text("10\n" + "\n".join(short) + "\n")
    selected = module(sample, verification_pairs=str(tmp_path / "pairs.txt"), subset="pairs").image_paths()
    assert set(selected) == referenced_ids(short) and 20 <= len(selected) < 292


def test_subset_pairs_needs_the_images_and_the_list(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "A_0001.jpg").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("1\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(MissingDataError, match="A_0002.jpg"):
        module(tmp_path, verification_pairs=str(tmp_path / "pairs.txt"), subset="pairs").image_paths()
    with pytest.raises(MissingDataError, match="LFW pair list"):
        module(tmp_path, subset="pairs").image_paths()
    assert list(module(tmp_path).image_paths()) == ["A/A_0001"]
    with pytest.raises(ConfigError, match="subset"):
        module(tmp_path, subset="view2")


@pytest.mark.real_data
def test_hydra_config(sample):
    cfg = compose_config("dataset=lfw", f"dataset.images={sample}", "dataset.inversions=unused",
                         "dataset.neighbours=unused", "dataset.subset=pairs",
                         f"dataset.verification_pairs={sample / 'pairs.txt'}")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, LFWDataModule) and dm.name == "lfw" and dm.pairs is None
    assert len(dm.image_paths()) == len({i for p in dm.verification_pairs() for i in (p.id_a, p.id_b)})
    default = compose_config("dataset=lfw", "dataset.images=datasets/lfw", "dataset.inversions=x", "dataset.neighbours=y")
    assert default.dataset.verification_pairs == "datasets/lfw/../pairs.txt"
