"""Re-identification metrics: does a recogniser still match the anonymised face to the original?

Embeddings are ``N x D`` float tensors; a row of NaNs means "no face found" (the evaluator adapters
in :mod:`anon.metrics.evaluators` return ``None`` for such an image and :func:`stack_embeddings`
turns it into a NaN row). Two kinds of recogniser are supported:

* ``higher_is_same=True``: the score is the cosine similarity in ``[-1, 1]`` (FaceNet, ArcFace);
  a pair is "the same person" when ``score >= threshold``.
* ``higher_is_same=False``: the score is the Euclidean distance ``>= 0`` (dlib, threshold 0.6);
  a pair is "the same person" when ``score <= threshold``.

Every state is a sum or a concatenation (``dist_reduce_fx``), so the metrics reduce across DDP ranks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


# ------------------------------------------------------------------------------------------- helpers
def stack_embeddings(embeddings: Sequence[np.ndarray | torch.Tensor | None], dim: int | None = None) -> torch.Tensor:
    """A list of ``D`` vectors (``None`` = no face) -> ``N x D`` float64 tensor with NaN rows for ``None``
    (float64 so that a score on the threshold stays on it: no rounding is added to the recogniser's own).

    ``dim`` is needed only when every entry is ``None``.
    """
    found = [e for e in embeddings if e is not None]
    if dim is None:
        if not found:
            raise ValueError("all embeddings are None: pass `dim`")
        dim = int(torch.as_tensor(np.asarray(found[0])).numel())
    out = torch.full((len(embeddings), dim), float("nan"), dtype=torch.float64)
    for i, e in enumerate(embeddings):
        if e is not None:
            out[i] = torch.as_tensor(np.asarray(e, dtype=np.float64)).reshape(-1)
    return out


def has_face(embeddings: torch.Tensor) -> torch.Tensor:
    """``N x D`` -> ``N`` bool: the row is a real embedding (every entry finite)."""
    return torch.isfinite(embeddings).all(dim=1)


def pair_scores(a: torch.Tensor, b: torch.Tensor, higher_is_same: bool = True) -> torch.Tensor:
    """Row-wise scores of two ``N x D`` embedding sets: cosine similarity (``higher_is_same``) or Euclidean
    distance. Rows where either side is NaN give NaN."""
    a, b = a.double(), b.double()
    if higher_is_same:
        return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1)
    return (a - b).norm(dim=1)


def score_matrix(queries: torch.Tensor, gallery: torch.Tensor, higher_is_same: bool = True) -> torch.Tensor:
    """``Q x D`` against ``G x D`` -> ``Q x G`` cosine similarities or Euclidean distances."""
    q, g = queries.double(), gallery.double()
    if higher_is_same:
        return F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    return torch.cdist(q, g)


def same_person(scores: torch.Tensor, threshold: float, higher_is_same: bool = True) -> torch.Tensor:
    """The recogniser's decision per pair (NaN scores give False)."""
    return scores >= threshold if higher_is_same else scores <= threshold


# ------------------------------------------------------------------------------------------- metrics
class ReIdentificationRate(Metric):
    """Share of anonymised images the recogniser still matches to their original.

    ``update(emb_original, emb_anonymised)`` takes two ``N x D`` tensors, row ``i`` of each describing
    image ``i`` (NaN rows: no face). Counting:

    * an image whose *original* has no face cannot be judged: it is counted in ``no_face_original``
      and left out of the rate's denominator;
    * an image whose *anonymised* output has no face is not re-identified (it stays in the
      denominator) and is also counted in ``no_face_anonymised``.

    ``compute()`` returns a dict of scalar tensors: ``rate`` (re-identified / evaluable), ``reidentified``,
    ``evaluable``, ``no_face_anonymised``, ``no_face_original`` and ``mean_score`` (mean similarity or
    distance over the pairs where both faces were found).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, threshold: float, higher_is_same: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.higher_is_same = float(threshold), bool(higher_is_same)
        for name in ("reidentified", "evaluable", "no_face_anonymised", "no_face_original", "scored"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, emb_original: torch.Tensor, emb_anonymised: torch.Tensor) -> None:
        if emb_original.shape[0] != emb_anonymised.shape[0]:
            raise ValueError(f"{emb_original.shape[0]} originals but {emb_anonymised.shape[0]} anonymised embeddings")
        original_ok, anonymised_ok = has_face(emb_original), has_face(emb_anonymised)
        both = original_ok & anonymised_ok
        scores = pair_scores(emb_original, emb_anonymised, self.higher_is_same)
        self.reidentified += (same_person(scores, self.threshold, self.higher_is_same) & both).sum()
        self.evaluable += original_ok.sum()
        self.no_face_original += (~original_ok).sum()
        self.no_face_anonymised += (original_ok & ~anonymised_ok).sum()
        self.scored += both.sum()
        self.score_sum += scores[both].sum()

    def compute(self) -> dict[str, torch.Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {
            "rate": self.reidentified / self.evaluable if self.evaluable > 0 else nan,
            "reidentified": self.reidentified, "evaluable": self.evaluable,
            "no_face_anonymised": self.no_face_anonymised, "no_face_original": self.no_face_original,
            "mean_score": self.score_sum / self.scored if self.scored > 0 else nan,
        }


class Rank1Identification(Metric):
    """Closed-set identification: share of anonymised queries whose nearest gallery face is their own identity.

    ``update(queries, query_labels, gallery=None, gallery_labels=None)``: ``queries`` ``Q x D`` (anonymised
    embeddings, NaN rows = no face), ``query_labels`` ``Q`` integer identities; the gallery (original
    embeddings ``G x D`` with labels ``G``) may be given in the same or separate calls. Gallery rows
    without a face are dropped. A query with no face counts as not identified. Nearest = highest
    cosine similarity (``higher_is_same``) or smallest Euclidean distance.

    ``compute()`` -> dict: ``rate`` (correct / queries), ``correct``, ``queries``, ``no_face`` (queries).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, higher_is_same: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.higher_is_same = bool(higher_is_same)
        for name in ("query_emb", "query_labels", "gallery_emb", "gallery_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, queries: torch.Tensor | None = None, query_labels: torch.Tensor | None = None,
               gallery: torch.Tensor | None = None, gallery_labels: torch.Tensor | None = None) -> None:
        if queries is not None:
            self.query_emb.append(queries.double())
            self.query_labels.append(torch.as_tensor(query_labels, dtype=torch.long).reshape(-1))
        if gallery is not None:
            keep = has_face(gallery)
            self.gallery_emb.append(gallery.double()[keep])
            self.gallery_labels.append(torch.as_tensor(gallery_labels, dtype=torch.long).reshape(-1)[keep])

    def compute(self) -> dict[str, torch.Tensor]:
        queries, labels = _cat(self.query_emb), _cat(self.query_labels)
        if queries is None or queries.shape[0] == 0:
            zero = torch.tensor(0)
            return {"rate": torch.tensor(float("nan")), "correct": zero, "queries": zero, "no_face": zero}
        found = has_face(queries)
        correct = torch.zeros_like(found)
        gallery, gallery_labels = _cat(self.gallery_emb), _cat(self.gallery_labels)
        if gallery is not None and gallery.shape[0] and found.any():
            scores = score_matrix(queries[found], gallery, self.higher_is_same)
            nearest = scores.argmax(dim=1) if self.higher_is_same else scores.argmin(dim=1)
            correct[found] = gallery_labels[nearest] == labels[found]
        n = torch.tensor(queries.shape[0])
        return {"rate": correct.sum() / n, "correct": correct.sum(), "queries": n, "no_face": (~found).sum()}


def _cat(state) -> torch.Tensor | None:
    """A ``cat`` state (a list of tensors before sync, a tensor after) as one tensor; None when empty."""
    if isinstance(state, torch.Tensor):
        return state
    return dim_zero_cat(state) if state else None


# ------------------------------------------------------------------------------------------- threshold
def equal_error_rate_threshold(similarities, same_labels, higher_is_same: bool = True) -> tuple[float, float]:
    """The verification threshold where false accepts and false rejects balance, and that error rate.

    Args:
        similarities: ``P`` pair scores (similarities, or distances with ``higher_is_same=False``).
        same_labels: ``P`` booleans, True for same-person pairs.
    Returns:
        ``(threshold, eer)``: with the rule "same if score >= threshold" (``<=`` for distances), the
        candidate threshold (one of the observed scores) minimising ``|FAR - FRR|``, where FAR is the
        share of different-person pairs accepted and FRR the share of same-person pairs rejected;
        ``eer = (FAR + FRR) / 2`` there. Ties: the smaller ``eer``, then the smaller score.
    """
    s = torch.as_tensor(np.asarray(similarities, dtype=np.float64))
    y = torch.as_tensor(np.asarray(same_labels, dtype=bool))
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("similarities and same_labels must be 1-d and of equal length")
    if y.all() or not y.any():
        raise ValueError("need both same-person and different-person pairs")
    signed = s if higher_is_same else -s  # accept iff signed >= t
    positives, _ = signed[y].sort()
    negatives, _ = signed[~y].sort()
    candidates = signed.unique()  # ascending
    frr = torch.searchsorted(positives, candidates, side="left").double() / positives.numel()
    far = 1.0 - torch.searchsorted(negatives, candidates, side="left").double() / negatives.numel()
    gap, eer = (far - frr).abs(), (far + frr) / 2
    best = gap <= gap.min() + 1e-12
    best &= eer <= eer[best].min() + 1e-12
    index = int(torch.nonzero(best)[0, 0]) if higher_is_same else int(torch.nonzero(best)[-1, 0])
    threshold = float(candidates[index]) if higher_is_same else -float(candidates[index])
    return threshold, float(eer[index])


__all__ = ["stack_embeddings", "has_face", "pair_scores", "score_matrix", "same_person", "ReIdentificationRate",
           "Rank1Identification", "equal_error_rate_threshold"]
