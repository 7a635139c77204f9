"""Pivotal-tuning offsets through the cache: the invert stage stores them beside the codes, the
dataset batches them, and the anonymisation renders every image with its own."""
from __future__ import annotations

import torch

from anon.data.codes import CodeFolder
from anon.data.dataset import AnonymizationItems, collate_items
from anon.data.images import to_uint8
from anon.nets.tuned import render
from anon.runtime.outputs import save_png
from anon.method.pivotal import PivotalInverter
from anon.runtime.run import build_module
from anon.stages.invert import run_invert
from tests.conftest import compose_config

DCGAN = ("generator=dcgan_face64", "generator.checkpoint=null", "latent=whole", "dataset.images=unused",
         "dataset.inversions=unused", "dataset.neighbours=unused", "module.steps=3")


def test_offsets_are_cached_batched_and_rendered_with(tmp_path):
    torch.manual_seed(0)
    module = build_module(compose_config(*DCGAN))
    g = module.generator
    with torch.no_grad():
        faces = to_uint8(g(torch.randn(3, 1, 100)))
    images = {}
    for i, face in enumerate(faces):
        images[f"p/{i}"] = tmp_path / "images" / f"{i}.png"
        save_png(face, images[f"p/{i}"])
    run_invert(PivotalInverter(g, steps=2, tune_steps=3), images, tmp_path / "invert", image_size=64, batch_size=2)
    inversions = CodeFolder(tmp_path / "invert" / "codes")
    assert set(inversions.load_offsets("p/1")) == {"main.9.weight", "main.10.weight", "main.10.bias", "main.12.weight"}

    (tmp_path / "invert" / "offsets" / "p" / "2.pt").write_bytes(b"not a tensor file")
    items = AnonymizationItems(sorted(images), images, inversions, inversions, 64, g.num_ws)
    batch = collate_items([items[i] for i in range(3)])
    assert batch["id"] == ["p/0", "p/1"] and [f["id"] for f in batch["failed"]] == ["p/2"]
    assert "bad latent code" in batch["failed"][0]["error"]
    assert batch["offsets"]["main.12.weight"].shape == (2, *g.main[12].weight.shape)

    result = module.optimise(batch["image"], batch["w_inversion"], batch["w_neighbour"], offsets=batch["offsets"])
    with torch.no_grad():
        torch.testing.assert_close(result["images"], render(g, result["ws"], batch["offsets"]))
        assert (result["images"] - g(result["ws"])).abs().max() > 1e-3  # the offsets were used
    alone = module.optimise(batch["image"][1:], batch["w_inversion"][1:], batch["w_neighbour"][1:],
                            offsets={k: v[1:] for k, v in batch["offsets"].items()})
    torch.testing.assert_close(alone["ws"][0], result["ws"][1], atol=1e-5, rtol=1e-4)


def test_an_item_without_the_batch_offsets_fails_alone():
    item = {"id": "a", "source": "a", "image": torch.zeros(3, 4, 4), "w_inversion": torch.zeros(1, 2),
            "w_neighbour": torch.zeros(1, 2)}
    batch = collate_items([{**item, "offsets": {"w": torch.ones(2)}}, {**item, "id": "b"}])
    assert batch["id"] == ["a"] and batch["failed"][0]["id"] == "b"
    assert "offsets" in batch["failed"][0]["error"]


def test_the_report_scores_the_pivotal_inversion_with_its_offsets(tmp_path):
    """``anon evaluate``'s inversion column renders each code with its own offsets, not z alone."""
    from omegaconf import OmegaConf

    from anon.nets.dcgan import DCGANGenerator
    from anon.stages.inversion_images import render_inversions

    torch.manual_seed(0)
    g = DCGANGenerator(checkpoint=None).requires_grad_(False).eval()
    codes_dir = tmp_path / "invert" / "codes"
    ws = torch.randn(2, 1, 100)
    offsets = {"main.12.weight": 3.0 * torch.randn(2, *g.main[12].weight.shape)}
    for i in range(2):
        (codes_dir / "p").mkdir(parents=True, exist_ok=True)
        torch.save(ws[i], codes_dir / "p" / f"{i}.pt")
    (tmp_path / "invert" / "offsets" / "p").mkdir(parents=True)
    torch.save({k: v[1] for k, v in offsets.items()}, tmp_path / "invert" / "offsets" / "p" / "1.pt")
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save({"dataset": {"inversions": str(codes_dir)},
                    "generator": {"_target_": "anon.nets.dcgan.DCGANGenerator", "checkpoint": None}}, run / "config.yaml")

    torch.manual_seed(0)  # the stage builds the same random generator
    folder, description = render_inversions(run, ["p/0", "p/1"])
    assert "offsets" in description
    from anon.data.images import load_rgb

    plain, tuned = to_uint8(g(ws)), to_uint8(render(g, ws, offsets))
    assert (tuned[1].astype(int) - plain[1]).__abs__().max() > 10  # the offsets change the picture
    assert (load_rgb(folder / "p" / "0.png") == plain[0]).all()     # no offsets: the plain generator
    got = load_rgb(folder / "p" / "1.png").astype(int)
    assert abs(got - tuned[1]).max() <= 1 and abs(got - plain[1]).max() > 10
