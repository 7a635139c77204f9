"""Re-identification metrics against hand computations in numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anon.metrics.reid import (Rank1Identification, ReIdentificationRate, equal_error_rate_threshold, pair_scores,
                               stack_embeddings)

NAN = float("nan")


def _cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_stack_embeddings_marks_missing_faces_with_nan_rows():
    t = stack_embeddings([np.array([1.0, 2.0]), None, np.array([3.0, 4.0])])
    assert t.shape == (3, 2)
    assert torch.isnan(t[1]).all() and t[2].tolist() == [3.0, 4.0]
    assert stack_embeddings([None, None], dim=5).shape == (2, 5)


def test_pair_scores_cosine_and_euclidean():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    cos = pair_scores(torch.tensor(a), torch.tensor(b), True).numpy()
    dist = pair_scores(torch.tensor(a), torch.tensor(b), False).numpy()
    np.testing.assert_allclose(cos, [_cos(x, y) for x, y in zip(a, b)], atol=1e-12)
    np.testing.assert_allclose(dist, np.sqrt(((a - b) ** 2).sum(1)), atol=1e-12)


def test_reidentification_rate_cosine_hand_case_over_two_batches():
    # originals (rows) and anonymised outputs; similarities by construction:
    o = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [1, 0], [NAN, NAN]], dtype=float)
    a = np.array([[1, 0.1], [0, 1], [1, 1], [1, 1], [NAN, NAN], [1, 0]], dtype=float)
    threshold = 0.7
    # hand: image 0 cos=0.995 (re-id), 1 cos=0 (no), 2 cos=0.707 (re-id, >= 0.7), 3 cos=1 (re-id),
    # 4 no face in output (not re-id, counted), 5 no face in original (not judged)
    sims = [_cos(o[i], a[i]) for i in range(4)]
    expected_reid = sum(s >= threshold for s in sims)
    assert expected_reid == 3
    metric = ReIdentificationRate(threshold)
    metric.update(torch.tensor(o[:3]), torch.tensor(a[:3]))
    metric.update(torch.tensor(o[3:]), torch.tensor(a[3:]))
    out = metric.compute()
    assert int(out["reidentified"]) == 3 and int(out["evaluable"]) == 5
    assert int(out["no_face_anonymised"]) == 1 and int(out["no_face_original"]) == 1
    assert float(out["rate"]) == pytest.approx(3 / 5)
    assert float(out["mean_score"]) == pytest.approx(np.mean(sims))


def test_reidentification_rate_distance_based_recogniser():
    o = np.zeros((4, 3))
    a = np.array([[0.3, 0, 0], [0.6, 0, 0], [0.0, 0.7, 0], [0, 0, 2.0]])
    metric = ReIdentificationRate(0.6, higher_is_same=False)
    metric.update(torch.tensor(o), torch.tensor(a))
    out = metric.compute()
    # distances 0.3, 0.6, 0.7, 2.0 -> same person for <= 0.6: two
    assert int(out["reidentified"]) == 2 and float(out["rate"]) == pytest.approx(0.5)
    assert float(out["mean_score"]) == pytest.approx((0.3 + 0.6 + 0.7 + 2.0) / 4)


def test_reduction_functions_are_set_for_ddp():
    metric = ReIdentificationRate(0.5)
    assert set(metric._reductions) >= {"reidentified", "evaluable", "no_face_anonymised", "no_face_original"}
    assert all(fx is not None for fx in metric._reductions.values())
    r1 = Rank1Identification()
    assert all(fx is not None for fx in r1._reductions.values())


def test_rank1_identification_against_brute_force():
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(7, 5))
    gallery_labels = np.array([0, 0, 1, 2, 2, 3, 4])
    queries = gallery[[0, 2, 3, 5, 6]] + 0.8 * rng.normal(size=(5, 5))
    queries[4] = NAN  # no face: a miss
    query_labels = np.array([0, 1, 2, 3, 4])
    g_unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    expected = 0
    for q, label in zip(queries[:4], query_labels[:4]):
        expected += gallery_labels[np.argmax(g_unit @ (q / np.linalg.norm(q)))] == label
    metric = Rank1Identification()
    metric.update(gallery=torch.tensor(gallery[:4]), gallery_labels=torch.tensor(gallery_labels[:4]))
    metric.update(torch.tensor(queries), torch.tensor(query_labels), torch.tensor(gallery[4:]),
                  torch.tensor(gallery_labels[4:]))
    out = metric.compute()
    assert int(out["correct"]) == expected and int(out["queries"]) == 5 and int(out["no_face"]) == 1
    assert float(out["rate"]) == pytest.approx(expected / 5)


def test_rank1_with_distances_uses_the_nearest():
    gallery = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    metric = Rank1Identification(higher_is_same=False)
    metric.update(torch.tensor([[9.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1]), gallery, torch.tensor([0, 1]))
    assert int(metric.compute()["correct"]) == 1


def test_eer_threshold_hand_case():
    same = [0.9, 0.8, 0.7, 0.4]
    different = [0.1, 0.2, 0.5, 0.3]
    # at t = 0.5: one same pair (0.4) rejected (FRR 1/4), one different pair (0.5) accepted (FAR 1/4)
    threshold, eer = equal_error_rate_threshold(same + different, [True] * 4 + [False] * 4)
    assert threshold == pytest.approx(0.5) and eer == pytest.approx(0.25)
    # distances: the same decisions with d = 1 - s and "same if d <= t"
    threshold_d, eer_d = equal_error_rate_threshold([1 - s for s in same + different], [True] * 4 + [False] * 4,
                                                    higher_is_same=False)
    assert threshold_d == pytest.approx(0.5) and eer_d == pytest.approx(0.25)


def _brute_force_eer(scores, labels):
    """Loop over every observed score as threshold; same if score >= t. Ties: smaller eer, smaller t."""
    best = None
    pos, neg = scores[labels], scores[~labels]
    for t in sorted(set(scores.tolist())):
        far, frr = np.mean(neg >= t), np.mean(pos < t)
        key = (round(abs(far - frr), 12), round((far + frr) / 2, 12), t)
        if best is None or key < best[0]:
            best = (key, t, (far + frr) / 2)
    return best[1], best[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.5
    scores = np.round(np.where(labels, rng.normal(0.6, 0.2, 200), rng.normal(0.2, 0.2, 200)), 2)  # with ties
    threshold, eer = equal_error_rate_threshold(scores, labels)
    t_ref, eer_ref = _brute_force_eer(scores, labels)
    assert threshold == pytest.approx(t_ref) and eer == pytest.approx(eer_ref)


def test_eer_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError):
        equal_error_rate_threshold([0.1, 0.2], [True, True])
