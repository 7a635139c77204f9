"""End to end through Hydra config, Lightning Trainer and the run folder (tiny networks)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anon.errors import MissingDataError
from anon.runtime.run import anonymize
from tests.conftest import TINY_IMAGES


def manifest(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def test_run_writes_lossless_png_code_and_one_manifest_line_per_image(tiny_cfg, tiny_world):
    cfg = tiny_cfg()
    summary = anonymize(cfg)
    run_dir = Path(summary["run_dir"])
    records = manifest(run_dir)
    assert sorted(r["id"] for r in records) == sorted(
        p.relative_to(tiny_world / "images").with_suffix("").as_posix() for p in (tiny_world / "images").rglob("*.png"))
    assert summary["images_done"] == TINY_IMAGES and summary["images_failed"] == 0
    rec = records[0]
    code = torch.load(run_dir / rec["code"], weights_only=True)
    assert code.shape == (2 * 6 - 2, cfg.generator.w_dim)  # num_ws of a 64 px StyleGAN2
    png = np.asarray(Image.open(run_dir / rec["image"]))
    assert png.shape == (64, 64, 3)
    assert rec["steps"] == 4 and set(rec["loss"]) == {"total", "identity", "attribute"}
    assert -1 <= rec["identity_similarity_after"] <= 1
    assert (run_dir / "config.yaml").exists() and (run_dir / "summary.json").exists()
    # Per-step metrics reached the CSV logger; no image grid was written by default.
    metrics = next(run_dir.rglob("metrics.csv")).read_text()
    assert "step/total" in metrics and "run/identity_similarity_after" in metrics
    assert not (run_dir / "grids").exists()


def test_png_equals_generator_output_at_saved_code(tiny_cfg):
    cfg = tiny_cfg("dataset.limit=2")
    run_dir = Path(anonymize(cfg)["run_dir"])
    from anon.runtime.compose import build_network

    torch.manual_seed(987)  # whatever ran before: the network is seeded by (seed, "generator")
    generator = build_network(cfg, "generator").eval()  # same random weights as the run
    rec = manifest(run_dir)[0]
    code = torch.load(run_dir / rec["code"], weights_only=True)
    with torch.no_grad():
        expected = ((generator(code[None]) + 1) * 127.5).round().clamp(0, 255)[0].permute(1, 2, 0).byte().numpy()
    saved = np.asarray(Image.open(run_dir / rec["image"])).astype(int)
    # Batched and single convolutions differ in the last float bits: allow one grey level on a few pixels.
    assert np.abs(saved - expected).max() <= 1 and (saved != expected).mean() < 0.01


def test_corrupt_image_is_reported_and_skipped(tiny_cfg, tiny_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    (world / "images" / "broken.png").write_bytes(b"this is not an image")
    (world / "images" / "notes.txt").write_text("ignored: not an image suffix")
    cfg = tiny_cfg(f"dataset.images={world / 'images'}")
    summary = anonymize(cfg)
    records = {r["id"]: r for r in manifest(Path(summary["run_dir"]))}
    assert records["broken"]["status"] == "failed" and "unreadable image" in records["broken"]["error"]
    assert summary["images_done"] == TINY_IMAGES and summary["failed_ids"] == ["broken"]


@pytest.mark.parametrize("content", ["pickled object", "garbage", "empty"])
def test_unreadable_code_file_is_that_items_failed_record(tiny_cfg, tiny_world, tmp_path, content):
    """A pickled object, random bytes or an empty file as ``<id>.pt``: that item fails, the rest run."""
    import pickle
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    bad = world / "inversions" / "person0" / "img1.pt"
    bad.write_bytes({"pickled object": pickle.dumps(Path("x")), "garbage": b"\x80\x04garbage" * 9,
                     "empty": b""}[content])
    cfg = tiny_cfg(f"dataset.inversions={world / 'inversions'}")
    summary = anonymize(cfg)
    records = {r["id"]: r for r in manifest(Path(summary["run_dir"]))}
    assert records["person0/img1"]["status"] == "failed" and "img1.pt" in records["person0/img1"]["error"]
    assert "\n" not in records["person0/img1"]["error"]
    assert summary["images_done"] == TINY_IMAGES - 1 and summary["failed_ids"] == ["person0/img1"]
    again = anonymize(cfg)  # a rerun neither crashes nor redoes anything
    assert len(manifest(Path(again["run_dir"]))) == TINY_IMAGES


def test_symlink_loop_and_same_stem_files_each_get_a_record(tiny_cfg, tiny_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    (world / "images" / "loop.png").symlink_to("loop.png")
    shutil.copy(world / "images" / "person2" / "img5.png", world / "images" / "person2" / "img5.jpg")
    summary = anonymize(tiny_cfg(f"dataset.images={world / 'images'}"))
    records = {r["id"]: r for r in manifest(Path(summary["run_dir"]))}
    assert records["loop"]["status"] == "failed" and "unreadable image" in records["loop"]["error"]
    # Both files of one stem are items of their own (their codes are named the same way: missing here).
    assert {"person2/img5.jpg", "person2/img5.png"} <= set(records) and "person2/img5" not in records
    assert len(records) == TINY_IMAGES + 2


def test_missing_data_folder_names_the_path(tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"dataset.images={tmp_path / 'nowhere'}")
    with pytest.raises(MissingDataError, match="nowhere"):
        anonymize(cfg)


def test_image_grids_only_when_opted_in(tiny_cfg):
    run_dir = Path(anonymize(tiny_cfg("module.log_images=true", "dataset.limit=2"))["run_dir"])
    grid = np.asarray(Image.open(run_dir / "grids" / "rank0_batch0.png"))
    assert grid.shape == (2 * 64, 3 * 64, 3)


def test_wandb_offline_logger(tiny_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = Path(anonymize(tiny_cfg("logger=wandb", "dataset.limit=2"))["run_dir"])
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert not list(runs[0].rglob("media/images/*")), "no face images are logged unless log_images is set"


def test_speed_only_options_keep_the_run_folder_and_results_do_not(tiny_cfg):
    base = tiny_cfg().run_name
    assert tiny_cfg("module.compile=true", "module.channels_last=true", "dataset.batch_size=1").run_name == base
    assert tiny_cfg("loss.margin=0.3").run_name != base
    assert tiny_cfg("module.precision=bf16").run_name != base  # bf16 changes results beyond rounding


def test_compiled_run_through_the_trainer_matches_the_eager_run(tiny_cfg, tmp_path):
    eager = manifest(Path(anonymize(tiny_cfg("dataset.limit=4"))["run_dir"]))
    compiled_cfg = tiny_cfg("dataset.limit=4", "module.compile=true", f"run_dir={tmp_path / 'compiled'}")
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = {r["id"]: r for r in manifest(Path(anonymize(compiled_cfg)["run_dir"]))}
    assert counters["stats"]["unique_graphs"] >= 1, "the step was not compiled"
    assert sorted(compiled) == sorted(r["id"] for r in eager)
    for record in eager:
        assert compiled[record["id"]]["identity_similarity_after"] == pytest.approx(
            record["identity_similarity_after"], abs=1e-3)


def test_retry_failed_reruns_exactly_the_failed_ids_and_keeps_the_history(tiny_cfg, tiny_world, tmp_path):
    import shutil

    from anon.runtime.manifest import read_records

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    first = sorted((world / "images").rglob("*.png"))[0]
    rel = first.relative_to(world / "images").with_suffix(".pt")
    for folder in ("inversions", "neighbours"):
        shutil.copyfile(world / folder / rel, world / folder / "broken.pt")
    (world / "images" / "broken.png").write_bytes(b"this is not an image")
    overrides = (f"dataset.images={world / 'images'}", f"dataset.inversions={world / 'inversions'}",
                 f"dataset.neighbours={world / 'neighbours'}", "dataset.limit=3")
    run_dir = Path(anonymize(tiny_cfg(*overrides))["run_dir"])
    shutil.copyfile(first, world / "images" / "broken.png")  # the file is repaired
    anonymize(tiny_cfg(*overrides))  # a plain resume skips every recorded id, failed ones too
    assert [r["status"] for r in read_records(run_dir) if r["id"] == "broken"] == ["failed"]
    before = [r["id"] for r in read_records(run_dir)]
    summary = anonymize(tiny_cfg(*overrides, "retry_failed=true"))
    history = read_records(run_dir)
    assert [r["id"] for r in history[len(before):]] == ["broken"], "only the failed id ran again"
    assert [r["status"] for r in history if r["id"] == "broken"] == ["failed", "done"]
    assert {r["id"]: r for r in manifest(run_dir)}["broken"]["status"] == "done"
    assert summary["images_failed"] == 0
