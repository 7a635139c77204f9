"""Re-identification metrics against hand computations in numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anon.metrics.reid import (Rank1Identification, ReIdentificationRate, equal_error_rate_threshold, pair_scores,
                               same_person, score_matrix, stack_embeddings)

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
    metric.update(torch.tensor([[9.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 0]), gallery, torch.tensor([0, 1]))
    assert int(metric.compute()["correct"]) == 2  # the farthest gallery face would give 0


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


def test_eer_tie_goes_to_the_smaller_score():
    same, different = [0.8, 0.3, 0.2, 0.7], [0.8, 0.2, 0.3, 0.0]
    # t = 0.3: FAR 2/4 (0.8, 0.3), FRR 1/4 (0.2); t = 0.7: FAR 1/4, FRR 2/4: same gap, same eer 0.375
    assert equal_error_rate_threshold(same + different, [True] * 4 + [False] * 4) == pytest.approx((0.3, 0.375))
    # as distances d = 1 - s ("same if d <= t"): the tie is between d = 0.3 and d = 0.7 again
    distances = [round(1 - x, 10) for x in same + different]
    assert equal_error_rate_threshold(distances, [True] * 4 + [False] * 4, higher_is_same=False) == pytest.approx(
        (0.3, 0.375))


def _brute_force_eer(scores, labels, higher_is_same=True):
    """Loop over every observed score as threshold; same if score >= t (<= t for distances).
    Ties: smaller eer, then smaller t."""
    best = None
    pos, neg = scores[labels], scores[~labels]
    for t in sorted(set(scores.tolist())):
        if higher_is_same:
            far, frr = np.mean(neg >= t), np.mean(pos < t)
        else:
            far, frr = np.mean(neg <= t), np.mean(pos > t)
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


@pytest.mark.parametrize("higher_is_same", [True, False])
def test_eer_threshold_matches_brute_force_on_small_tied_cases(higher_is_same):
    """Few pairs and coarse scores: many thresholds tie on |FAR - FRR|, and some of those on the eer."""
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        labels = rng.random(8) < 0.5
        labels[:2] = [True, False]
        scores = rng.integers(0, 5, 8) / 4.0
        threshold, eer = equal_error_rate_threshold(scores, labels, higher_is_same)
        t_ref, eer_ref = _brute_force_eer(scores, labels, higher_is_same)
        assert (threshold, eer) == pytest.approx((t_ref, eer_ref)), seed


def test_eer_inputs_are_checked_and_labels_may_be_zero_one():
    with pytest.raises(ValueError, match="^similarities and same_labels must be 1-d and of equal length$"):
        equal_error_rate_threshold([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="^need both same-person and different-person pairs$"):
        equal_error_rate_threshold([0.1, 0.2], [False, False])
    same, different = [0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.5, 0.3]
    assert equal_error_rate_threshold(same + different, [1] * 4 + [0] * 4) == pytest.approx((0.5, 0.25))


def test_stack_embeddings_details():
    with pytest.raises(ValueError, match="^all embeddings are None: pass `dim`$"):
        stack_embeddings([None, None])
    t = stack_embeddings([None, np.array([1.0, 2.0, 3.0])])  # the size comes from the first found
    assert t.shape == (2, 3) and t.dtype == torch.float64 and t[1].tolist() == [1.0, 2.0, 3.0]
    assert stack_embeddings([np.array([0.1 + 1e-12])])[0, 0].item() == 0.1 + 1e-12  # float64 kept


def test_default_recogniser_is_cosine_and_the_threshold_is_inclusive():
    a, b = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    assert pair_scores(a, b).tolist() == pytest.approx([0.96, 0.0])
    # rows of different norms: each row is normalised on its own
    np.testing.assert_allclose(score_matrix(a, b).numpy(), [[0.96, 0.8], [0.8, 0.0]], atol=1e-12)
    np.testing.assert_allclose(score_matrix(a, b, higher_is_same=False).numpy(), [[2 ** 0.5, 13 ** 0.5], [18 ** 0.5, 5 ** 0.5]],
                               atol=1e-12)
    scores = torch.tensor([0.5, 0.49, 0.51])
    assert same_person(scores, 0.5).tolist() == [True, False, True]
    assert same_person(scores, 0.5, higher_is_same=False).tolist() == [True, True, False]


def test_reidentification_rate_counts_accumulate_and_validate():
    metric = ReIdentificationRate(0.5)
    out = metric.compute()  # nothing evaluable yet: NaN, not an error
    assert torch.isnan(out["rate"]) and torch.isnan(out["mean_score"]) and out["rate"].dtype == torch.float64
    assert out["mean_score"].dtype == torch.float64
    for _ in range(2):  # each batch: one original without a face, one output without a face, one re-identified
        metric.update(torch.tensor([[NAN, NAN], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [NAN, NAN],
                                                                                        [1.0, 0.1]]))
    out = metric.compute()
    assert [int(out[k]) for k in ("reidentified", "evaluable", "no_face_anonymised", "no_face_original")] == [2, 4, 2, 2]
    single = ReIdentificationRate(0.5)
    single.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))  # one image: cos = 1 / sqrt 2
    out = single.compute()
    assert float(out["rate"]) == 1.0 and out["mean_score"].dtype == torch.float64
    assert float(out["mean_score"]) == pytest.approx(0.5 ** 0.5, abs=1e-14)  # summed in float64
    with pytest.raises(ValueError, match="^3 originals but 2 anonymised embeddings$"):
        single.update(torch.zeros(3, 5), torch.zeros(2, 5))


def test_rank1_default_is_cosine_and_edge_cases():
    gallery = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    metric = Rank1Identification()  # cosine: the query is its own gallery face, scaled
    metric.update(3 * gallery, torch.tensor([7, 8, 9]), gallery, torch.tensor([7, 8, 9]))
    out = metric.compute()
    assert (int(out["correct"]), int(out["queries"]), int(out["no_face"])) == (3, 3, 0) and float(out["rate"]) == 1.0

    # cosine and Euclidean disagree here: the query points along g0 but lies closer to g1
    by_angle = Rank1Identification()
    by_angle.update(torch.tensor([[10.0, 1.0]]), [0], torch.tensor([[1.0, 0.0], [7.0, 7.0]]), [0, 1])
    assert int(by_angle.compute()["correct"]) == 1

    empty = Rank1Identification().compute()
    assert torch.isnan(empty["rate"]) and [int(empty[k]) for k in ("correct", "queries", "no_face")] == [0, 0, 0]
    one = Rank1Identification()
    one.update(gallery[:1], [7], gallery, [7, 8, 9])
    assert float(one.compute()["rate"]) == 1.0
    no_gallery = Rank1Identification()  # queries only (the gallery never came): nobody is identified
    no_gallery.update(gallery, [7, 8, 9])
    assert int(no_gallery.compute()["correct"]) == 0
    faceless_gallery = Rank1Identification()  # gallery rows without a face are dropped: nothing to match
    faceless_gallery.update(gallery, [7, 8, 9], torch.full((2, 5), NAN), [7, 8])
    assert int(faceless_gallery.compute()["correct"]) == 0
