"""Baseline rows (blur, pixelate, mask): each output against an independent computation, and runs
through the same run folder, manifest and resume machinery as FALCO."""
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from anon.method.baselines import FilledBox, GaussianBlur, Pixelate
from anon.runtime.run import anonymize
from tests.conftest import TINY_IMAGES, compose_config


def random_image(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def blur_by_hand(image: np.ndarray, sigma: float) -> np.ndarray:
    """Direct 2-D convolution with a Gaussian kernel (3 sigma radius), mirrored borders ``abc|cba``."""
    r = int(np.ceil(3 * sigma))
    offsets = np.arange(-r, r + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
    weights /= weights.sum()
    h, w = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="symmetric")
    out = np.zeros(image.shape, dtype=np.float64)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += weights[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


@pytest.mark.parametrize("sigma", [1.0, 2.5, 4.0])
def test_blur_is_a_gaussian_convolution(sigma):
    image = random_image()
    got = GaussianBlur(sigma)(image).astype(float)
    expected = blur_by_hand(image, sigma)
    assert got.shape == image.shape
    assert np.abs(got - expected).max() <= 0.5 + 1e-6  # rounding only


def test_pixelate_is_the_block_mean():
    image = random_image(48, 64)
    got = Pixelate(16)(image).astype(float)
    blocks = image.astype(float).reshape(3, 16, 4, 16, 3).mean(axis=(1, 3))  # 3 x 4 cells
    expected = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)
    assert np.abs(got - expected).max() <= 0.5 + 1e-6
    # A ragged edge: the last column of cells is 4 px wide and holds its own mean.
    ragged = random_image(16, 20)
    assert np.allclose(Pixelate(16)(ragged)[:, 16:], ragged[:, 16:].astype(float).mean(axis=(0, 1)), atol=0.5)


def test_mask_fills_exactly_the_box():
    image = random_image(100, 50)
    got = FilledBox(box=(0.2, 0.1, 0.6, 0.5), fill=(7, 8, 9))(image)
    inside = np.zeros((100, 50), dtype=bool)
    inside[10:50, 10:30] = True  # rows 0.1*100..0.5*100, columns 0.2*50..0.6*50
    assert (got[inside] == (7, 8, 9)).all()
    assert (got[~inside] == image[~inside]).all()


@pytest.mark.parametrize("bad", [lambda: GaussianBlur(0), lambda: Pixelate(0), lambda: FilledBox(box=(0.5, 0, 0.4, 1))])
def test_bad_parameters_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="method\\."):
        bad()


def baseline_cfg(world: Path, run_dir: Path, *extra: str):
    return compose_config(f"dataset.images={world / 'images'}", "dataset.inversions=???", "dataset.neighbours=???",
                          f"run_dir={run_dir}", *extra)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(l) for p in sorted(run_dir.glob("manifest.rank*.jsonl")) for l in p.read_text().splitlines()]


@pytest.mark.parametrize("method, make", [("blur", lambda: GaussianBlur(4.0)), ("pixelate", lambda: Pixelate(8)),
                                          ("mask", lambda: FilledBox())])
def test_baseline_run_writes_the_run_folder_without_networks_or_codes(tiny_world, tmp_path, method, make):
    cfg = baseline_cfg(tiny_world, tmp_path / "run", f"method={method}", "generator._target_=builtins.NotImplemented")
    summary = anonymize(cfg)
    run_dir = Path(summary["run_dir"])
    recs = records(run_dir)
    assert summary["images_done"] == TINY_IMAGES and len(recs) == TINY_IMAGES
    rec = recs[0]
    assert rec["status"] == "done" and rec["method"] == method and rec["image"].endswith(".png")
    original = np.asarray(Image.open(rec["source"]).convert("RGB"))
    assert (np.asarray(Image.open(run_dir / rec["image"])) == make()(original)).all()
    assert (run_dir / "manifest.jsonl").exists() and (run_dir / "config.yaml").exists()
    assert not (run_dir / "codes").exists()


def test_baseline_run_resumes_and_records_corrupt_images(tiny_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(tiny_world / "images", world / "images")
    (world / "images" / "broken.png").write_bytes(b"not an image")
    run_dir = tmp_path / "run"
    first = anonymize(baseline_cfg(world, run_dir, "method=pixelate", "dataset.limit=3"))
    assert first["images_done"] + first["images_failed"] == 3
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "images").rglob("*.png")}
    second = anonymize(baseline_cfg(world, run_dir, "method=pixelate"))
    counts = Counter(r["id"] for r in records(run_dir))
    assert len(counts) == TINY_IMAGES + 1 and set(counts.values()) == {1}, counts
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished images were not redone"
    assert second["failed_ids"] == ["broken"]


def test_run_folder_differs_by_method_and_parameters_but_not_by_falco_networks(tiny_world, tmp_path):
    name = lambda *o: baseline_cfg(tiny_world, tmp_path, *o).run_name  # noqa: E731
    names = {name(), name("method=blur"), name("method=blur", "method.sigma=2"), name("method=pixelate"),
             name("method=pixelate", "method.block=16"), name("method=mask"), name("method=blur", "output.format=official_jpeg")}
    assert len(names) == 7
    assert name("method=blur", "loss.margin=0.5") == name("method=blur")  # FALCO settings do not touch a baseline


def test_falco_is_the_default_method(tiny_world, tmp_path):
    cfg = baseline_cfg(tiny_world, tmp_path)
    assert cfg.method.name == "falco" and "_target_" not in cfg.method
    assert instantiate(compose_config("method=blur").method).sigma == 4.0


def test_pipeline_with_a_baseline_skips_fakes_inversion_and_pairing(tiny_world, tmp_path):
    from hydra import compose, initialize_config_dir

    from anon.runtime.run import CONFIG_DIR
    from anon.stages.pipeline import run_pipeline

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=[f"dataset.images={tiny_world / 'images'}", f"output_root={tmp_path}",
                                             "method=mask", "device=cpu", "generator._target_=builtins.NotImplemented"])
    summary = run_pipeline(cfg)
    assert summary["images_done"] == TINY_IMAGES
    assert not (tmp_path / "cache").exists(), "no stage cache is written for a baseline"
    assert Path(summary["run_dir"]).parent == tmp_path / "runs"


def test_pipeline_stage_a_baseline_does_not_need_is_a_one_line_error(tiny_world, tmp_path):
    from hydra import compose, initialize_config_dir

    from anon.errors import ConfigError
    from anon.runtime.run import CONFIG_DIR
    from anon.stages.pipeline import run_pipeline

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=[f"dataset.images={tiny_world / 'images'}", f"output_root={tmp_path}",
                                             "method=blur", "only=invert"])
    with pytest.raises(ConfigError, match="needs no invert stage"):
        run_pipeline(cfg)
