"""CelebA-HQ parsers (handmade files in the official formats) and the datamodule on the shared sample."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from anon.data.celebahq import (CelebAHQDataModule, read_attributes, read_celeba_identities, read_combined,
                                read_mapping, read_partition, split_ids)
from anon.errors import ConfigError, MissingDataError
from tests.conftest import compose_config

# CelebA's official partition by file number (list_eval_partition.txt): 1..162770 train, ..182637 val, rest test.
LAST_TRAIN, LAST_VAL = 162770, 182637


def official_partition(number: int) -> str:
    return "train" if number <= LAST_TRAIN else "val" if number <= LAST_VAL else "test"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def module(images, split="all", **files) -> CelebAHQDataModule:
    return CelebAHQDataModule(images=str(images), inversions="unused", neighbours="unused", split=split,
                              **{k: None if v is None else str(v) for k, v in files.items()})


# -- parsers on handmade files -------------------------------------------------------------------------------

def test_read_mapping_official_format(tmp_path):
    # Header and first rows as in CelebAMask-HQ's CelebA-HQ-to-CelebA-mapping.txt (column-aligned with spaces).
    path = write(tmp_path / "m.txt", "idx        orig_idx   orig_file\n0          119613     119614.jpg\n"
                                     "1          99094      099095.jpg\n16         34958      034959.jpg\n")
    assert read_mapping(path) == {"0": "119614.jpg", "1": "099095.jpg", "16": "034959.jpg"}
    bad = write(tmp_path / "bad.txt", "idx orig_idx orig_file\n3 100 000100.jpg\n")  # orig_file must be orig_idx + 1
    with pytest.raises(ValueError, match="orig_idx"):
        read_mapping(bad)


def test_read_partition_official_format(tmp_path):
    path = write(tmp_path / "p.txt", "000001.jpg 0\r\n162770.jpg 0\r\n162771.jpg 1\r\n182638.jpg 2\r\n")
    assert read_partition(path) == {"000001.jpg": "train", "162770.jpg": "train", "162771.jpg": "val",
                                    "182638.jpg": "test"}
    with pytest.raises(ValueError, match="0\\|1\\|2"):
        read_partition(write(tmp_path / "bad.txt", "000001.jpg 3\n"))


def test_split_ids(tmp_path):
    mapping = {"0": "000002.jpg", "1": "170000.jpg", "2": "190000.jpg", "10": "000010.jpg", "3": "182637.jpg"}
    partition = {f: official_partition(int(f[:6])) for f in mapping.values()}
    assert split_ids(mapping, partition, "train") == ["0", "10"]  # sorted by index, not as strings
    assert split_ids(mapping, partition, "val") == ["1", "3"]
    assert split_ids(mapping, partition, "test") == ["2"]
    assert split_ids(mapping, partition, "train+val") == ["0", "1", "3", "10"]
    assert split_ids(mapping, partition, "all") == ["0", "1", "2", "3", "10"]
    with pytest.raises(ValueError, match="split"):
        split_ids(mapping, partition, "dev")
    with pytest.raises(ValueError, match="not in the partition"):
        split_ids({**mapping, "4": "000004.jpg"}, partition, "test")


def test_read_attributes_format(tmp_path):
    names = " ".join(f"a{k}" for k in range(40))
    row = lambda first: " ".join(["1" if first else "-1"] + ["-1"] * 38 + ["1"])  # noqa: E731
    path = write(tmp_path / "a.txt", f"2\n{names}\n7.jpg  {row(True)}\n30.jpg {row(False)}\n")
    got_names, values = read_attributes(path)
    assert got_names == [f"a{k}" for k in range(40)]
    assert set(values) == {"7", "30"}
    assert values["7"].tolist() == [1] + [-1] * 38 + [1] and values["30"][0] == -1
    with pytest.raises(ValueError, match="announces 3"):
        read_attributes(write(tmp_path / "short.txt", f"3\n{names}\n7.jpg {row(True)}\n"))
    with pytest.raises(ValueError, match="40 values"):
        read_attributes(write(tmp_path / "cut.txt", f"1\n{names}\n7.jpg 1 -1\n"))


def test_read_celeba_identities(tmp_path):
    path = write(tmp_path / "identity_CelebA.txt", "000001.jpg 2880\n000002.jpg 2937\n")
    assert read_celeba_identities(path) == {"000001.jpg": 2880, "000002.jpg": 2937}


def test_missing_split_files_are_named(tmp_path):
    (tmp_path / "img").mkdir()
    write(tmp_path / "img" / "1.jpg", "")
    with pytest.raises(MissingDataError, match="CelebA-HQ-to-CelebA-mapping.txt.*dataset.mapping"):
        module(tmp_path / "img", "test", partition=tmp_path / "p.txt").image_paths()
    write(tmp_path / "m.txt", "idx orig_idx orig_file\n1 0 000001.jpg\n")
    with pytest.raises(MissingDataError, match="partition list.*nope.txt"):
        module(tmp_path / "img", "test", mapping=tmp_path / "m.txt", partition=tmp_path / "nope.txt").image_paths()
    assert list(module(tmp_path / "img", "all").image_paths()) == ["1"]  # split=all needs neither file
    with pytest.raises(ConfigError, match="split"):
        module(tmp_path / "img", "dev")


# -- the shared sample --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(shared_data) -> Path:
    return shared_data / "celebahq_sample"


def sample_module(sample, split="all") -> CelebAHQDataModule:
    return module(sample, split, attributes=sample / "CelebAMask-HQ-attribute-anno.txt",
                  identities=sample / "identity_and_mapping.txt")


@pytest.mark.real_data
def test_sample_images_and_attributes(sample):
    dm = sample_module(sample)
    ids = list(dm.image_paths())
    assert len(ids) == 64
    # SOURCE.md: every 16th index from 16 to 960, plus 992, 1136, 1264, 1616.
    assert sorted(ids, key=int) == [str(i) for i in [*range(16, 961, 16), 992, 1136, 1264, 1616]]
    names = dm.attribute_names
    assert len(names) == 40 and names[20] == "Male" and names[-1] == "Young"
    male = torch.stack([dm.attributes(i) for i in ids])[:, names.index("Male")]
    assert int((male == 1).sum()) == 22 and int((male == -1).sum()) == 42  # SOURCE.md: 22 of 64 are male


@pytest.mark.real_data
def test_sample_splits_from_combined_file(sample):
    counts = {s: len(sample_module(sample, s).image_paths()) for s in ("train", "val", "test", "train+val", "all")}
    assert counts == {"train": 49, "val": 13, "test": 2, "train+val": 62, "all": 64}
    # Independent check: the test images are those made from CelebA files past the last val file.
    mapping, _, _ = read_combined(sample / "identity_and_mapping.txt")
    expected = sorted((i for i, f in mapping.items() if int(f[:6]) > LAST_VAL), key=int)
    assert list(sample_module(sample, "test").image_paths()) == expected


@pytest.mark.real_data
def test_sample_splits_from_official_files(sample, tmp_path):
    """The same split from official-format mapping + partition files (partition from CelebA's number ranges)."""
    mapping, _, _ = read_combined(sample / "identity_and_mapping.txt")
    rows = "".join(f"{i:<10} {int(f[:6]) - 1:<10} {f}\n" for i, f in mapping.items())
    mapping_file = write(tmp_path / "CelebA-HQ-to-CelebA-mapping.txt", "idx        orig_idx   orig_file\n" + rows)
    partition_file = write(tmp_path / "list_eval_partition.txt",
                           "".join(f"{n:06d}.jpg {'012'[('train', 'val', 'test').index(official_partition(n))]}\n"
                                   for n in sorted(int(f[:6]) for f in mapping.values())))
    for split, n in (("train", 49), ("val", 13), ("test", 2)):
        dm = module(sample, split, mapping=mapping_file, partition=partition_file)
        assert list(dm.image_paths()) == list(sample_module(sample, split).image_paths())
        assert len(dm.image_paths()) == n


@pytest.mark.real_data
def test_sample_identities(sample):
    dm = sample_module(sample)
    ids = list(dm.image_paths())
    groups: dict[int, set[str]] = {}
    for i in ids:
        groups.setdefault(dm.identity(i), set()).add(i)
    assert len(groups) == 59  # SOURCE.md
    several = sorted(sorted(g, key=int) for g in groups.values() if len(g) > 1)
    assert several == [["144", "992", "1616"], ["336", "1264"], ["368", "928"], ["688", "1136"]]
    assert dm.identity("144") == 4453 and dm.identity("688") == 4696


def test_identity_from_celeba_identity_file(tmp_path):
    (tmp_path / "img").mkdir()
    write(tmp_path / "m.txt", "idx orig_idx orig_file\n5 9 000010.jpg\n6 10 000011.jpg\n")
    write(tmp_path / "identity_CelebA.txt", "000010.jpg 17\n000011.jpg 3\n000012.jpg 17\n")
    dm = module(tmp_path / "img", mapping=tmp_path / "m.txt", identities=tmp_path / "identity_CelebA.txt")
    assert (dm.identity("5"), dm.identity("6")) == (17, 3)
    with pytest.raises(MissingDataError, match="identity"):
        module(tmp_path / "img").identity("5")


@pytest.mark.real_data
def test_hydra_config(sample):
    cfg = compose_config("dataset=celebahq", f"dataset.images={sample}", "dataset.split=test",
                         "dataset.inversions=unused", "dataset.neighbours=unused",
                         f"dataset.identities={sample / 'identity_and_mapping.txt'}")
    assert cfg.dataset.attributes == f"{sample}/../CelebAMask-HQ-attribute-anno.txt"  # official layout default
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, CelebAHQDataModule) and dm.name == "celebahq"
    assert len(dm.image_paths()) == 2
