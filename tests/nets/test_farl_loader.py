"""FaRL's checkpoint reader and its error messages, the ``as_given`` pairing embedding, train mode.

Checkpoints are synthesised in the official key layout (``clip_vit_shapes`` in test_farl.py, written
from CLIP's ``model.py``), then renamed, cut, extended or reshaped; each message is checked whole.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anon.errors import CheckpointMismatchError
from anon.nets.farl import FarlAttributes, clip_visual_state_dict
from tests.nets.test_farl import MEAN, STD, TINY, tiny_ckpt


def test_a_bare_clip_state_dict_loads_like_farls_wrapped_file(tmp_path):
    bare = tiny_ckpt()["state_dict"]  # openai CLIP files are the state dict itself
    path = tmp_path / "clip.pt"
    torch.save(bare, path)
    enc = FarlAttributes(checkpoint=path, **TINY)
    assert torch.equal(enc.visual.conv1.weight, bare["visual.conv1.weight"])
    assert list(clip_visual_state_dict(bare)) == [k for k in bare if k.startswith("visual.")]


@pytest.mark.parametrize("ckpt, message", [
    ([1, 2], "<checkpoint>: expected a dict with a 'state_dict' entry, got list"),
    ({"state_dict": [1]}, "<checkpoint>: expected a dict with a 'state_dict' entry, got dict"),
    ({f"k{i}": torch.zeros(1) for i in range(7)},
     "<checkpoint>: no 'visual.*' key, so this is not a full CLIP/FaRL state dict (first keys: k0, k1, k2, k3, k4)"),
])
def test_not_a_clip_checkpoint_says_why(ckpt, message):
    with pytest.raises(CheckpointMismatchError) as err:
        clip_visual_state_dict(ckpt)
    assert str(err.value) == message


def _mismatch(enc: FarlAttributes, sd: dict) -> str:
    with pytest.raises(CheckpointMismatchError) as err:
        enc.load_visual({"state_dict": sd})
    return str(err.value)


def test_mismatch_messages_list_at_most_five_keys_of_each_kind():
    enc = FarlAttributes(**TINY)
    sd = tiny_ckpt()["state_dict"]
    renamed = dict(sd)
    renamed["visual.ln_post.gamma"] = renamed.pop("visual.ln_post.weight")  # a renamed key: missing + unexpected
    assert _mismatch(enc, renamed) == ("<checkpoint>: image tower does not match this ViT (missing "
                                       "['visual.ln_post.weight']; unexpected ['visual.ln_post.gamma'])")
    cut = {k: v for k, v in sd.items() if ".resblocks.1." not in k}  # a block of 12 tensors gone
    missing = sorted(k for k in sd if ".resblocks.1." in k)[:5]
    assert _mismatch(enc, cut) == f"<checkpoint>: image tower does not match this ViT (missing {missing})"
    extra = {f"visual.extra{i}.weight": torch.zeros(1) for i in range(7)}  # seven unknown keys: five named
    assert _mismatch(enc, {**sd, **extra}) == ("<checkpoint>: image tower does not match this ViT (unexpected "
                                               f"{sorted(extra)[:5]})")
    wrong = {**sd, **{k: sd[k][..., :-1] for k in sd if k.startswith("visual.") and k.endswith(".bias")}}
    got = _mismatch(enc, wrong)
    first = sorted(k for k in sd if k.startswith("visual.") and k.endswith(".bias"))[:5]
    listed = [(k, tuple(wrong[k].shape), tuple(sd[k].shape)) for k in first]
    assert got == f"<checkpoint>: image tower does not match this ViT (shape mismatch {listed})"


def test_mismatch_message_names_the_file(tmp_path):
    path = tmp_path / "farl-other.pth"
    torch.save(tiny_ckpt(extra={"visual.extra.weight": torch.zeros(3)}), path)
    with pytest.raises(CheckpointMismatchError, match=r"^.*farl-other\.pth: image tower does not match this ViT "
                                                      r"\(unexpected \['visual\.extra\.weight'\]\)$"):
        FarlAttributes(checkpoint=path, **TINY)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointMismatchError, match=r"farl-other\.pth: no 'visual\.\*' key"):
        FarlAttributes(checkpoint=path, **TINY)


def test_bad_option_values_are_named():
    with pytest.raises(ValueError, match=r"preprocess must be one of \('clip', 'raw'\), got 'imagenet'"):
        FarlAttributes(preprocess="imagenet", **TINY)
    enc = FarlAttributes(**TINY)
    with pytest.raises(ValueError, match=r"preprocess must be one of \('clip', 'raw'\), got 'rgb'"):
        enc.prepare(torch.zeros(1, 3, 32, 32), "rgb")
    with pytest.raises(ValueError, match="values must be minus_one_one or as_given, not 'zero_one'"):
        enc.embed(torch.zeros(1, 3, 32, 32), values="zero_one")


def test_as_given_embedding_normalises_the_values_as_they_are():
    """FALCO's pairing feeds values as given: resize + crop, CLIP mean/std, unit rows (FALCO.md 9.2)."""
    torch.manual_seed(0)
    enc = FarlAttributes(**TINY)
    x = torch.rand(3, 3, 48, 40)  # reals in [0, 1], not square: the resize and crop matter
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    crop = F.interpolate(x, size=(38, 32), mode="bilinear", align_corners=False, antialias=True)[:, :, 3:35]
    with torch.no_grad():
        expected = enc.visual.embed((crop - mean) / std)
        got = enc.embed(x, values="as_given")
    torch.testing.assert_close(got, expected / expected.norm(dim=1, keepdim=True), atol=1e-6, rtol=1e-5)


def test_bf16_images_stay_bf16_through_the_clip_normalisation():
    enc = FarlAttributes(**TINY)
    x = torch.rand(1, 3, 32, 32).to(torch.bfloat16) * 2 - 1
    out = enc.prepare(x)
    mean = torch.tensor(MEAN, dtype=torch.bfloat16).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.bfloat16).view(1, 3, 1, 1)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ((x + 1.0) / 2.0 - mean) / std)


def test_an_unfrozen_encoder_follows_train_mode():
    enc = FarlAttributes(frozen=False, **TINY)
    assert enc.train().training and not enc.eval().training
    assert any(p.requires_grad for p in enc.parameters())


def test_as_given_normalisation_keeps_bf16_images_in_bf16():
    torch.manual_seed(0)
    enc = FarlAttributes(**TINY)
    x = torch.rand(2, 3, 32, 32).to(torch.bfloat16)  # already R x R: no resize
    mean = torch.tensor(MEAN, dtype=torch.bfloat16).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.bfloat16).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.normalize(enc.visual.embed((x - mean) / std), dim=-1)
        assert torch.equal(enc.embed(x, values="as_given"), expected)
