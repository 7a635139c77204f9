"""The field's three re-identification attacks on a set of embeddings (one evaluator).

Inputs are ``N x D`` float tensors with NaN rows for "no face" (:func:`anon.metrics.reid.stack_embeddings`):
``originals[i]`` and ``probes[i]`` belong to item ``i`` (the probe is the anonymised output, or the
inversion), ``labels[i]`` names item ``i``'s person.

* :func:`own_original`: verification of each probe against its own original (same person at the
  threshold). Judged: items whose original has a face; a probe without a face is not matched.
* :func:`other_photo`: verification against *another* photo of the same person: the originals
  ``j != i`` with ``labels[j] == labels[i]`` (LFW same-name folders, CelebA identities). Matched when
  any of them is "same person". Judged: items with at least one such photo that has a face.
* :func:`closed_set`: identification in the test set: the probe's nearest original (gallery: every
  original with a face) is of the right person. Judged: items whose own original is in the gallery, and
  only when the gallery holds at least two people (with one, the answer is right by construction);
  a probe without a face is not identified. No threshold.

Each returns ``(matched, judged)`` counts and a per-item list (True / False / None = not judged).
"""
from __future__ import annotations

from typing import Sequence

import torch

from anon.metrics.reid import has_face, pair_scores, same_person, score_matrix


def own_original(originals: torch.Tensor, probes: torch.Tensor, threshold: float,
                 higher_is_same: bool) -> list[bool | None]:
    scores = pair_scores(originals, probes, higher_is_same)
    same = same_person(scores, threshold, higher_is_same) & has_face(probes)
    judged = has_face(originals)
    return [bool(same[i]) if judged[i] else None for i in range(len(same))]


def other_photo(originals: torch.Tensor, probes: torch.Tensor, labels: Sequence, threshold: float,
                higher_is_same: bool) -> list[bool | None]:
    face_o, face_p = has_face(originals), has_face(probes)
    out: list[bool | None] = []
    scores = score_matrix(probes, originals, higher_is_same) if len(labels) else None
    for i, label in enumerate(labels):
        others = [j for j, lab in enumerate(labels) if j != i and lab == label and face_o[j]]
        if not others:
            out.append(None)
            continue
        if not face_p[i]:
            out.append(False)
            continue
        row = scores[i, others]
        out.append(bool(same_person(row, threshold, higher_is_same).any()))
    return out


def closed_set(originals: torch.Tensor, probes: torch.Tensor, labels: Sequence,
               higher_is_same: bool) -> list[bool | None]:
    face_o, face_p = has_face(originals), has_face(probes)
    gallery = [j for j in range(len(labels)) if face_o[j]]
    out: list[bool | None] = []
    if len({labels[j] for j in gallery}) < 2:  # one person in the gallery: "identified" by construction
        return [None] * len(labels)
    scores = score_matrix(probes, originals[gallery], higher_is_same)
    for i, label in enumerate(labels):
        if not face_o[i]:
            out.append(None)
        elif not face_p[i]:
            out.append(False)
        else:
            row = scores[i]
            best = int(row.argmax() if higher_is_same else row.argmin())  # ties: the first gallery item
            out.append(labels[gallery[best]] == label)
    return out


def counts(per_item: Sequence[bool | None]) -> tuple[int, int]:
    """``(matched, judged)`` of a per-item list."""
    judged = [v for v in per_item if v is not None]
    return sum(judged), len(judged)


__all__ = ["own_original", "other_photo", "closed_set", "counts"]
