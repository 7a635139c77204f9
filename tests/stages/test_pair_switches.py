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


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def tiny_farl():
    from anon.nets.farl import FarlAttributes

    torch.manual_seed(0)
    return FarlAttributes(checkpoint=None, input_resolution=32, patch_size=16, width=32, layers=1, heads=2,
                          output_dim=8).eval()


def test_farl_embed_as_given_normalises_the_values_as_they_are():
    """Official pairing: (v - CLIP mean) / CLIP std of the values given (no [-1, 1] -> [0, 1] remap)."""
    net = tiny_farl()
    v = torch.rand(2, 3, 32, 32) * 2 - 1
    expected = torch.nn.functional.normalize(net.visual.embed((v - CLIP_MEAN) / CLIP_STD), dim=-1)
    assert torch.allclose(net.embed(v, values="as_given"), expected, atol=1e-5)
    # our default maps [-1, 1] to [0, 1] first: as_given on u equals the default on 2u - 1
    u = torch.rand(2, 3, 32, 32)
    assert torch.allclose(net.embed(u, values="as_given"), net.embed(2 * u - 1), atol=1e-5)
    assert not torch.allclose(net.embed(v, values="as_given"), net.embed(v), atol=1e-3)


def test_fakes_stage_switch_reaches_the_fake_features(tmp_path):
    """fakes.official_value_ranges: the pool's features are the as-given embeddings of the raw fakes
    (as_given itself is pinned by the test above)."""
    from hydra.utils import instantiate

    from anon.stages.fakes import fake_latents, load_features, run_fakes
    from tests.conftest import compose_config

    generator, net = instantiate(compose_config().generator).eval(), tiny_farl()
    feats = {}
    for official in (False, True):
        run_fakes(generator, net, tmp_path / str(official), num_samples=3, official_value_ranges=official)
        feats[official] = load_features(tmp_path / str(official))[1]
    with torch.no_grad():
        images = generator(generator.mapping(fake_latents(range(3), generator.z_dim, 0), truncation_psi=0.7))
        assert torch.allclose(feats[True], net.embed(images, values="as_given"), atol=1e-5)
        assert torch.allclose(feats[False], net.embed(images), atol=1e-5)
    assert not torch.allclose(feats[True], feats[False], atol=1e-3)
