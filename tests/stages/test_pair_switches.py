"""Pairing switches of the official experiment: which original is embedded and in which value range."""
import numpy as np
import torch
from PIL import Image

from anon.data.images import load_image
from anon.stages.pair import run_pair


class Recorder(torch.nn.Module):
    """A 'feature network' that remembers its inputs; features = per-channel means."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x.mean(dim=(2, 3))


def fake_pool(root):
    (root / "features").mkdir(parents=True)
    torch.save({"ids": ["f0", "f1"], "features": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])},
               root / "features" / "chunk00000.pt")
    return root


def write(path, value, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path


def test_default_embeds_the_aligned_image_in_minus_one_one(tmp_path):
    aligned, source = write(tmp_path / "a" / "x.png", 0, 16), write(tmp_path / "s" / "x.png", 255, 32)
    net = Recorder()
    run_pair(net, {"x": aligned}, fake_pool(tmp_path / "fakes"), tmp_path / "pair", image_size=None,
             unaligned={"x": source})
    assert net.seen[0].shape[-1] == 16 and torch.all(net.seen[0] == -1)


def test_official_embeds_the_unaligned_source_in_zero_one(tmp_path):
    aligned = write(tmp_path / "a" / "x.png", 0, 16)
    source = tmp_path / "s" / "x.png"
    source.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(source)
    net = Recorder()
    run_pair(net, {"x": aligned}, fake_pool(tmp_path / "fakes"), tmp_path / "pair", image_size=None,
             unaligned={"x": source}, originals="unaligned", official_value_ranges=True)
    seen = net.seen[0][0]
    expected = torch.from_numpy(np.asarray(Image.open(source), dtype=np.float32) / 255).permute(2, 0, 1)
    assert seen.shape == (3, 32, 32) and torch.allclose(seen, expected, atol=1e-6)
    assert torch.allclose(seen, (load_image(source) + 1) / 2, atol=1e-6)
