"""Output formats: lossless PNG by default; the official per-image min-max JPEG q75 on request."""
import numpy as np
import pytest
import torch
from PIL import Image

from anon.runtime.outputs import image_path, save_output


def smooth_image(low=-0.6, high=0.3, size=32):
    """3 x size x size gradient spanning exactly [low, high] (JPEG keeps smooth images nearly exact)."""
    ramp = torch.linspace(low, high, size)
    return torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                        torch.full((size, size), (low + high) / 2)])


def test_png_is_lossless_and_not_rescaled(tmp_path):
    image = smooth_image()
    path = image_path(tmp_path, "a/b", "png")
    save_output(image, path, "png")
    expected = ((image + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert path.suffix == ".png" and (np.asarray(Image.open(path)).astype(float) == expected).all()


def test_official_jpeg_is_min_max_rescaled_per_image_at_quality_75(tmp_path):
    image = smooth_image()
    path = image_path(tmp_path, "a/b", "official_jpeg")
    save_output(image, path, "official_jpeg")
    with Image.open(path) as im:
        assert path.suffix == ".jpg" and im.format == "JPEG"
        saved = np.asarray(im.convert("RGB")).astype(float)
        tables = im.quantization
    # Rescaled by hand: (x - min) / (max - min) * 255, truncated as the official uint8 cast does.
    expected = np.floor((image.permute(1, 2, 0).numpy() + 0.6) / 0.9 * 255 + 1e-6)
    assert np.abs(saved - expected).mean() < 2.0 and saved.min() <= 3 and saved.max() >= 252
    reference = tmp_path / "q75.jpg"
    Image.fromarray(expected.astype(np.uint8)).save(reference, format="JPEG", quality=75)
    with Image.open(reference) as ref:
        assert tables == ref.quantization  # same quantisation tables as quality 75


def test_unknown_format_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="output.format"):
        save_output(smooth_image(), tmp_path / "x.png", "tiff")


def test_falco_run_writes_the_official_jpeg_when_asked(tiny_cfg):
    import json
    from pathlib import Path

    from anon.runtime.run import anonymize

    run_dir = Path(anonymize(tiny_cfg("output.format=official_jpeg", "dataset.limit=2", "module.steps=1"))["run_dir"])
    recs = [json.loads(l) for l in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert all(r["image"].endswith(".jpg") for r in recs) and len(recs) == 2
    with Image.open(run_dir / recs[0]["image"]) as im:
        pixels = np.asarray(im.convert("RGB"))
        assert im.format == "JPEG" and pixels.min() <= 8 and pixels.max() >= 247  # stretched to the full range


def test_output_format_gets_its_own_run_folder(tiny_cfg):
    assert tiny_cfg("output.format=official_jpeg").run_name != tiny_cfg().run_name
