"""anon/runtime/run_id.py: run and stage folder names depend on what the data and weights are, not where they lie."""
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir
from PIL import Image

from anon.runtime.run import CONFIG_DIR


def names(images: Path, weights: Path, *extra: str) -> tuple[str, ...]:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=[f"dataset.images={images}", f"weights_dir={weights}",
                                             "generator=stylegan2_ffhq1024", "identity=arcface_ir_se50", *extra])
    stages = cfg.stages
    return cfg.run_name, stages.align_dir, stages.fakes_dir, stages.invert_dir, stages.pair_dir


def test_same_data_and_weights_at_other_paths_give_the_same_folders(tiny_world, tmp_path):
    here = tmp_path / "node_a" / "mnt" / "images"
    there = tmp_path / "node_b" / "scratch" / "copy_of_images"
    shutil.copytree(tiny_world / "images", here)
    shutil.copytree(tiny_world / "images", there)
    # A checkpoint outside the registry counts by its content, wherever it lies.
    for node in ("node_a", "node_b"):
        (tmp_path / node / "w" / "custom").mkdir(parents=True)
        (tmp_path / node / "w" / "custom" / "farl.pth").write_bytes(b"the same bytes")
    custom = lambda node: f"attribute.checkpoint={tmp_path / node / 'w' / 'custom' / 'farl.pth'}"  # noqa: E731
    a = names(here, tmp_path / "node_a" / "w", "attribute=farl_vitb16", custom("node_a"), "align=ffhq")
    b = names(there, tmp_path / "node_b" / "w", "attribute=farl_vitb16", custom("node_b"), "align=ffhq")
    assert a == b
    # Another image set, another checkpoint content: other folders.
    Image.new("RGB", (8, 8)).save(there / "extra.png")
    c = names(there, tmp_path / "node_b" / "w", "attribute=farl_vitb16", custom("node_b"), "align=ffhq")
    assert c[0] != a[0] and c[3] != a[3] and c[2] == a[2]  # the fake pool does not depend on the images
    (tmp_path / "node_b" / "w" / "custom" / "farl.pth").write_bytes(b"other bytes")
    (there / "extra.png").unlink()
    d = names(there, tmp_path / "node_b" / "w", "attribute=farl_vitb16", custom("node_b"), "align=ffhq")
    assert d[0] != a[0] and d[2] != a[2]


def test_a_resized_image_changes_the_folder_key(tmp_path):
    from anon.runtime.run_id import folder_key

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    before = folder_key(str(tmp_path))
    Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / "a.png")
    assert folder_key(str(tmp_path)) != before and before.startswith("images:1:")
