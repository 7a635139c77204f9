"""Shared fixtures: a tiny synthetic dataset, composed tiny configs, and the real-data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from anon.data.images import to_uint8
from anon.runtime.outputs import save_png
from anon.runtime.run import CONFIG_DIR
from tests.helpers import torch_threads
from tests.requires import unavailable

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# ../shared/data beside the checkout; $ANON_SHARED_DATA points elsewhere (e.g. at a missing folder, to
# check that a CI run without it fails)
SHARED_DATA = Path(os.environ.get("ANON_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
TINY_IMAGES = 6


def compose_config(*overrides: str) -> DictConfig:
    """The real ``conf/anonymize.yaml`` with overrides (no Hydra runtime: set ``run_dir``)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="anonymize", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Images made by the tiny generator, with their true codes as 'inversions' and the codes of
    other (truncated) samples as 'neighbours' -- the shape of what the pipeline stages produce."""
    root = tmp_path_factory.mktemp("tiny_world")
    cfg = compose_config()
    torch.manual_seed(1234)
    generator = instantiate(cfg.generator).eval()
    with torch.no_grad():
        w_real = generator.mapping(torch.randn(TINY_IMAGES, generator.z_dim))
        w_fake = generator.mapping(torch.randn(TINY_IMAGES, generator.z_dim), truncation_psi=0.7)
        images = to_uint8(generator(w_real))
    for i in range(TINY_IMAGES):
        image_id = f"person{i // 2}/img{i}"  # nested ids, like LFW's Name/Name_0001
        save_png(images[i], root / "images" / f"{image_id}.png")
        for folder, codes in (("inversions", w_real), ("neighbours", w_fake)):
            path = root / folder / f"{image_id}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(codes[i].clone(), path)
    return root


def tiny_overrides(world: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"dataset.images={world / 'images'}", f"dataset.inversions={world / 'inversions'}",
            f"dataset.neighbours={world / 'neighbours'}", "dataset.image_size=64", "dataset.batch_size=4",
            "module.steps=4", f"run_dir={run_dir}", *extra]


@pytest.fixture
def tiny_cfg(tiny_world, tmp_path):
    """A composed tiny config writing to a fresh run folder; call with extra overrides."""
    def make(*extra: str) -> DictConfig:
        return compose_config(*tiny_overrides(tiny_world, tmp_path / "run", *extra))
    return make


@pytest.fixture
def one_thread():
    """One torch thread for the test: many tiny ops run several times faster so on a busy 2-core machine,
    and a comparison of an image alone vs in a batch sees no 2-thread summation-order noise (which Adam
    amplifies on near-zero gradients to ~1e-3 in the codes and renders)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real LFW and CelebA-HQ samples): every test that reads real data takes it from here.

    Absent: the test is skipped with the reason, or fails under ``CI=true``."""
    if not SHARED_DATA.is_dir():
        unavailable(f"real-data sample folder {SHARED_DATA} is absent (it lives beside the checkout, "
                    "or set $ANON_SHARED_DATA)")
    return SHARED_DATA


def pytest_runtest_setup(item):
    """``@requires(ok, reason)`` (tests/requires.py): skip when ``ok`` is false, fail under ``CI=true``."""
    for mark in item.iter_markers("requires"):
        ok, reason = mark.args
        if not ok:
            unavailable(reason)
