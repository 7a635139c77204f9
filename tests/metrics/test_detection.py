"""Detection rate, face counting through any detector shape, and the detection memo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anon.metrics.detection import DetectionRate, MemoDetector, count_faces

FACE = (np.array([1, 1, 5, 5], np.float32), 0.99, np.zeros((5, 2), np.float32))


def _image(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, dtype=np.uint8)


def _faces_by_value(image: np.ndarray) -> list:
    """Fake detector: the image's pixel value is the number of faces in it."""
    return [FACE] * int(image[0, 0, 0])


class ObjectDetector:
    def detect(self, image):
        return _faces_by_value(image)


def test_detection_rate_hand_case():
    metric = DetectionRate()
    metric.update(torch.tensor([0, 1, 2]))
    metric.update(torch.tensor([0, 3]))
    out = metric.compute()
    assert int(out["detected"]) == 3 and int(out["total"]) == 5
    assert float(out["rate"]) == pytest.approx(3 / 5)
    assert all(fx == "sum" or callable(fx) for fx in metric._reductions.values())


@pytest.mark.parametrize("detector", [_faces_by_value, ObjectDetector()])
def test_count_faces_accepts_callables_and_detect_objects(detector):
    counts = count_faces(detector, [_image(v) for v in (0, 2, 1)])
    assert counts.tolist() == [0, 2, 1]


def test_memo_detector_runs_each_image_once():
    calls = []

    def detector(image):
        calls.append(int(image[0, 0, 0]))
        return _faces_by_value(image)

    memo = MemoDetector(detector, size=2)
    assert len(memo.detect(_image(1))) == 1
    assert len(memo(_image(1).copy())) == 1  # equal content: answered from the memo
    assert calls == [1]
    memo.detect(_image(2))
    memo.detect(_image(3))  # evicts image 1 (size 2)
    memo.detect(_image(1))
    assert calls == [1, 2, 3, 1]
