"""Behaviour unchanged: the tiny and the lite pipeline on two LFW faces give exactly the stored reference.

The reference (``tests/reference_run/``) was made by ``experiments/make_reference_run.py`` at the commit
its ``record.json`` names. Every image is compared pixel for pixel and every code and loss exactly:
both runs use one CPU thread (with two, the summation order and so the last bits may change between
runs), fixed seeds and explicit method settings. Exactness holds on one machine and torch build; another
CPU family (other SIMD kernels) or torch version may move the last bits -- then the assertion says
by how much, and the reference is regenerated there on purpose, not loosened.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_demo import lite_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from make_reference_run import REFERENCE_DIR, load, run_reference  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def compare(result: dict, reference: dict) -> list[str]:
    """Every difference between a rerun and the reference, as lines (empty: identical)."""
    problems = []
    if sorted(result["images"]) != sorted(reference["images"]):
        problems.append(f"image ids {sorted(result['images'])} != {sorted(reference['images'])}")
    for image_id, want in reference["images"].items():
        got = result["images"].get(image_id)
        if got is not None and not np.array_equal(got, want):
            diff = np.abs(got.astype(int) - want.astype(int))
            problems.append(f"image {image_id}: {int((diff > 0).sum())} values differ, by up to {diff.max()}")
    if sorted(result["codes"]) != sorted(reference["codes"]):
        problems.append(f"codes {sorted(result['codes'])} != {sorted(reference['codes'])}")
    for name, want in reference["codes"].items():
        got = result["codes"].get(name)
        if got is not None and not (got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want)):
            gap = (got.double() - want.double()).abs().max().item() if got.shape == want.shape else "shape"
            problems.append(f"code {name}: {tuple(got.shape)} vs {tuple(want.shape)}, max difference {gap}")
    for key in ("pairs", "losses", "aligned_sha256"):
        if result["record"][key] != reference["record"][key]:
            problems.append(f"{key}: {result['record'][key]} != {reference['record'][key]}")
    return problems


@pytest.mark.parametrize("kind", ["tiny", "lite"])
def test_pipeline_gives_the_reference_run(kind, shared_data, tmp_path):
    if kind == "lite":
        lite_available()
    reference = load(REFERENCE_DIR / kind)
    assert len(reference["images"]) == 2 and len(reference["codes"]) == 4
    problems = compare(run_reference(kind, shared_data, tmp_path), reference)
    assert not problems, f"{kind} pipeline differs from tests/reference_run/{kind}:\n" + "\n".join(problems)


def test_compare_reports_one_changed_pixel_and_one_changed_code_bit():
    reference = load(REFERENCE_DIR / "tiny")
    changed = {"images": {k: v.copy() for k, v in reference["images"].items()},
               "codes": {k: v.clone() for k, v in reference["codes"].items()}, "record": dict(reference["record"])}
    first_image, first_code = sorted(changed["images"])[0], sorted(changed["codes"])[0]
    changed["images"][first_image][0, 0, 0] ^= 1
    code = changed["codes"][first_code].view(-1)
    code[0] = torch.nextafter(code[0], torch.tensor(float("inf")))
    problems = compare(changed, reference)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"image {first_image}: 1 values differ, by up to 1")
    assert problems[1].startswith(f"code {first_code}:")
