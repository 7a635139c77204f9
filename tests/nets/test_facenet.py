"""FaceNet InceptionResnetV1: official key layout, strict loading, standardisation, gradients.

The expected state-dict layout is written out here from facenet-pytorch's
``models/inception_resnet_v1.py`` (module names, channel counts, kernel sizes), not generated from
the module under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from anon.errors import MissingCheckpointError
from anon.nets.facenet import FaceNetIdentity, facenet_standardize
from anon.runtime.weights import REGISTRY


def basic_conv(prefix: str, cin: int, cout: int, k) -> dict[str, tuple]:
    """facenet-pytorch ``BasicConv2d``: ``conv`` (no bias) and ``bn`` (affine, with running stats)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return {f"{prefix}.conv.weight": (cout, cin, kh, kw), f"{prefix}.bn.weight": (cout,),
            f"{prefix}.bn.bias": (cout,), f"{prefix}.bn.running_mean": (cout,), f"{prefix}.bn.running_var": (cout,),
            f"{prefix}.bn.num_batches_tracked": ()}


def facenet_shapes(num_classes: int) -> dict[str, tuple]:
    s: dict[str, tuple] = {}
    for name, cin, cout, k in [("conv2d_1a", 3, 32, 3), ("conv2d_2a", 32, 32, 3), ("conv2d_2b", 32, 64, 3),
                               ("conv2d_3b", 64, 80, 1), ("conv2d_4a", 80, 192, 3), ("conv2d_4b", 192, 256, 3)]:
        s.update(basic_conv(name, cin, cout, k))
    for i in range(5):  # Block35
        p = f"repeat_1.{i}"
        for sub, cin, cout, k in [("branch0", 256, 32, 1), ("branch1.0", 256, 32, 1), ("branch1.1", 32, 32, 3),
                                  ("branch2.0", 256, 32, 1), ("branch2.1", 32, 32, 3), ("branch2.2", 32, 32, 3)]:
            s.update(basic_conv(f"{p}.{sub}", cin, cout, k))
        s.update({f"{p}.conv2d.weight": (256, 96, 1, 1), f"{p}.conv2d.bias": (256,)})
    for sub, cin, cout, k in [("branch0", 256, 384, 3), ("branch1.0", 256, 192, 1), ("branch1.1", 192, 192, 3),
                              ("branch1.2", 192, 256, 3)]:
        s.update(basic_conv(f"mixed_6a.{sub}", cin, cout, k))
    for i in range(10):  # Block17
        p = f"repeat_2.{i}"
        for sub, cin, cout, k in [("branch0", 896, 128, 1), ("branch1.0", 896, 128, 1),
                                  ("branch1.1", 128, 128, (1, 7)), ("branch1.2", 128, 128, (7, 1))]:
            s.update(basic_conv(f"{p}.{sub}", cin, cout, k))
        s.update({f"{p}.conv2d.weight": (896, 256, 1, 1), f"{p}.conv2d.bias": (896,)})
    for sub, cin, cout, k in [("branch0.0", 896, 256, 1), ("branch0.1", 256, 384, 3), ("branch1.0", 896, 256, 1),
                              ("branch1.1", 256, 256, 3), ("branch2.0", 896, 256, 1), ("branch2.1", 256, 256, 3),
                              ("branch2.2", 256, 256, 3)]:
        s.update(basic_conv(f"mixed_7a.{sub}", cin, cout, k))
    for p in [f"repeat_3.{i}" for i in range(5)] + ["block8"]:  # Block8
        for sub, cin, cout, k in [("branch0", 1792, 192, 1), ("branch1.0", 1792, 192, 1),
                                  ("branch1.1", 192, 192, (1, 3)), ("branch1.2", 192, 192, (3, 1))]:
            s.update(basic_conv(f"{p}.{sub}", cin, cout, k))
        s.update({f"{p}.conv2d.weight": (1792, 384, 1, 1), f"{p}.conv2d.bias": (1792,)})
    s.update({"last_linear.weight": (512, 1792), "last_bn.weight": (512,), "last_bn.bias": (512,),
              "last_bn.running_mean": (512,), "last_bn.running_var": (512,), "last_bn.num_batches_tracked": (),
              "logits.weight": (num_classes, 512), "logits.bias": (num_classes,)})
    return s


def synth(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes, stored small: a random last-axis row broadcast over the
    other axes (``torch.save`` writes only the row), scaled by 1/sqrt(fan-in) for weights."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        row = torch.randn(shape[-1] if shape else 1, generator=gen)
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000)
            continue
        if k.endswith("running_var"):
            row = torch.rand(shape[-1], generator=gen) + 0.5
        elif k.endswith(".weight") and len(shape) > 1:
            row = row / (shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)) ** 0.5
        else:
            row = 0.1 * row + (1.0 if k.endswith("bn.weight") else 0.0)
        sd[k] = row.expand(shape)
    return sd


@pytest.mark.parametrize("filename,num_classes", [("20180402-114759-vggface2.pt", 8631),
                                                  ("20180408-102900-casia-webface.pt", 10575)])
def test_full_size_official_checkpoint_loads(tmp_path, filename, num_classes):
    shapes = facenet_shapes(num_classes)
    sd = synth(shapes)
    path = tmp_path / filename
    torch.save(sd, path)

    enc = FaceNetIdentity.from_checkpoint(path, num_classes=num_classes)
    own = enc.net.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == shapes
    assert all(torch.equal(own[k], sd[k]) for k in ("conv2d_1a.conv.weight", "repeat_2.9.branch1.2.bn.running_var",
                                                     "block8.conv2d.bias", "logits.weight"))
    with torch.no_grad():
        emb = enc(torch.rand(2, 3, 160, 160) * 2 - 1)
    assert emb.shape == (2, 512) and enc.embedding_dim == 512
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)

    # num_classes is read from the file when not given; a wrong one is a clear error
    assert FaceNetIdentity(checkpoint=path).net.num_classes == num_classes
    with pytest.raises(ValueError, match="shape mismatch"):
        FaceNetIdentity(checkpoint=path, num_classes=num_classes + 1)


def test_load_rejects_foreign_keys_and_tolerates_missing_bn_counters(tmp_path):
    sd = synth(facenet_shapes(7))
    path = tmp_path / "f.pt"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    FaceNetIdentity(checkpoint=path)
    torch.save({**sd, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="unexpected"):
        FaceNetIdentity(checkpoint=path)
    torch.save({k: v for k, v in sd.items() if k != "last_bn.running_mean"}, path)
    with pytest.raises(ValueError, match="missing"):
        FaceNetIdentity(checkpoint=path)
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ValueError, match="InceptionResnetV1"):
        FaceNetIdentity(checkpoint=path)


def test_missing_file_names_file_and_download_command(tmp_path):
    path = tmp_path / "20180408-102900-casia-webface.pt"
    with pytest.raises(MissingCheckpointError) as err:
        FaceNetIdentity.from_checkpoint(path, download_name="facenet_casia_webface")
    msg = str(err.value)
    assert "20180408-102900-casia-webface.pt" in msg and "anon download facenet_casia_webface" in msg


def test_fixed_image_standardization():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    pixels = (x + 1) / 2 * 255  # [-1, 1] -> [0, 255]
    assert torch.allclose(facenet_standardize(x), (pixels - 127.5) / 128.0, atol=1e-6)


def test_forward_backward_reaches_input_any_size():
    torch.manual_seed(0)
    enc = FaceNetIdentity()
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    x = (torch.rand(2, 3, 96, 120) * 2 - 1).requires_grad_(True)
    emb = enc(x)
    assert emb.shape == (2, 512)
    (emb[0] @ emb[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the wrapper = resize to 160, standardise, network (computed here step by step)
    with torch.no_grad():
        ref = F.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
        ref = F.normalize(enc.net.features(ref * 127.5 / 128.0), dim=1)
        assert torch.allclose(enc(x), ref, atol=1e-5)


@pytest.mark.parametrize("name,filename,num_classes", [("facenet_vggface2", "20180402-114759-vggface2.pt", 8631),
                                                       ("facenet_casia", "20180408-102900-casia-webface.pt", 10575)])
def test_hydra_configs(tmp_path, name, filename, num_classes):
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "evaluator"
    cfg = OmegaConf.merge({"weights_dir": str(tmp_path)}, {"ev": OmegaConf.load(conf / f"{name}.yaml")}).ev
    assert cfg._target_ == "anon.nets.facenet.FaceNetIdentity" and cfg.num_classes == num_classes
    assert cfg.checkpoint == str(tmp_path / REGISTRY[cfg.download_name].filename)  # `anon download` layout
    assert cfg.checkpoint.endswith("/" + filename)
    with pytest.raises(MissingCheckpointError, match=f"anon download {cfg.download_name}"):
        FaceNetIdentity(**{k: v for k, v in cfg.items() if k != "_target_"})
