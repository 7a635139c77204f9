"""Behaviour unchanged: the tiny and the lite pipeline on two LFW faces (the lite one followed by the demo's
``anon evaluate``) give exactly the stored reference.

The reference (``tests/reference_run/``) was made by ``experiments/make_reference_run.py`` at the commit
its ``record.json`` names. Every image is compared pixel for pixel and every code and loss exactly:
both runs use one CPU thread (with two, the summation order and so the last bits may change between
runs), fixed seeds and explicit method settings. Exactness holds on one machine and torch build; another
CPU family (other SIMD kernels) or torch version may move the last bits -- then the assertion says
by how much, and the reference is regenerated there on purpose, not loosened.
"""
import json
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
    for key in ("pairs", "losses", "aligned_sha256", "inversion_sha256"):
        if result["record"][key] != reference["record"][key]:
            problems.append(f"{key}: {result['record'][key]} != {reference['record'][key]}")
    got, want = result["record"].get("evaluation", {}), reference["record"].get("evaluation", {})
    if sorted(got) != sorted(want):
        problems.append(f"evaluated ids {sorted(got)} != {sorted(want)}")
    for image_id in sorted(set(got) & set(want)):
        mine, theirs = got[image_id], want[image_id]
        changed = {k: (mine.get(k, "absent"), v) for k, v in theirs.items() if mine.get(k, "absent") != v}
        changed.update({k: (v, "absent") for k, v in mine.items() if k not in theirs})
        if changed:
            problems.append(f"evaluation of {image_id}: {len(changed)} values differ (got, reference): "
                            f"{dict(list(changed.items())[:6])}")
    return problems


@pytest.mark.parametrize("kind", ["tiny", "lite"])
def test_pipeline_gives_the_reference_run(kind, shared_data, tmp_path):
    if kind == "lite":
        lite_available()
    reference = load(REFERENCE_DIR / kind)
    assert len(reference["images"]) == 2 and len(reference["codes"]) == 2
    assert len(reference["record"]["inversion_sha256"]) == 2
    problems = compare(run_reference(kind, shared_data, tmp_path), reference)
    assert not problems, f"{kind} pipeline differs from tests/reference_run/{kind}:\n" + "\n".join(problems)


def test_compare_reports_one_changed_pixel_code_bit_and_evaluation_number():
    reference = load(REFERENCE_DIR / "lite")
    changed = {"images": {k: v.copy() for k, v in reference["images"].items()},
               "codes": {k: v.clone() for k, v in reference["codes"].items()},
               "record": json.loads(json.dumps(reference["record"]))}
    assert compare(changed, reference) == []
    first_image, first_code = sorted(changed["images"])[0], sorted(changed["codes"])[0]
    changed["images"][first_image][0, 0, 0] ^= 1
    code = changed["codes"][first_code].view(-1)
    code[0] = torch.nextafter(code[0], torch.tensor(float("inf")))
    changed["record"]["evaluation"][first_image]["/evaluators/dlib_resnet_crops/distance"] += 1e-12
    problems = compare(changed, reference)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"image {first_image}: 1 values differ, by up to 1")
    assert problems[1].startswith(f"code {first_code}:")
    assert problems[2].startswith(f"evaluation of {first_image}: 1 values differ")
