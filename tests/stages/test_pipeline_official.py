"""The official switches together, through the whole pipeline with tiny networks."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from anon.runtime.run import CONFIG_DIR
from anon.stages.pipeline import run_pipeline
from tests.conftest import TINY_IMAGES
from tests.helpers import shard_lines

pytestmark = pytest.mark.slow

SWITCHES = ["loss.target=unaligned", "loss.official_value_ranges=true", "attribute.preprocess=raw",
            "pair.originals=unaligned", "pair.official_value_ranges=true", "fakes.official_value_ranges=true",
            "dataset.image_size=null", "output.format=official_jpeg"]


def test_every_official_switch_runs_end_to_end(tiny_world, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=[f"dataset.images={tiny_world / 'images'}", f"output_root={tmp_path}",
                                             "module.steps=1", "fakes.num_samples=16", "device=cpu", *SWITCHES])
    summary = run_pipeline(cfg)
    records = shard_lines(Path(summary["run_dir"]))
    assert summary["images_done"] == TINY_IMAGES and len(records) == TINY_IMAGES
    with Image.open(Path(summary["run_dir"]) / records[0]["image"]) as im:
        assert im.format == "JPEG"
