"""Closed-set identification needs at least two people in the gallery to mean anything."""
import torch

from anon.metrics.attacks import closed_set, counts


def test_a_gallery_of_one_person_judges_nothing():
    # one photo (or two of one person): the nearest original is "the right person" by construction
    originals = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    probes = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # far from both originals
    assert closed_set(originals[:1], probes[:1], ["a"], higher_is_same=True) == [None]
    assert counts(closed_set(originals, probes, ["a", "a"], higher_is_same=True)) == (0, 0)


def test_two_people_are_judged_by_the_nearest_original():
    originals = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probes = torch.tensor([[0.9, 0.1], [0.8, 0.2]])  # both nearest to person a's original
    assert closed_set(originals, probes, ["a", "b"], higher_is_same=True) == [True, False]


def test_a_distance_recogniser_identifies_by_the_nearest_not_the_farthest():
    # dlib-style descriptors compared by Euclidean distance (lower is the same person); these points are
    # nearest their own person's original, while by cosine each is *least* similar to it
    originals = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    probes = torch.tensor([[2.0, 0.1], [0.0, 9.0]])
    assert closed_set(originals, probes, ["a", "b"], higher_is_same=False) == [True, True]
