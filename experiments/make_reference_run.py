"""The behaviour-unchanged reference: the tiny pipeline and the lite pipeline on two shared LFW faces.

    python experiments/make_reference_run.py [--data ../shared/data] [--only tiny|lite]

Runs ``anon pipeline`` (fakes -> invert -> pair -> anonymize, plus MTCNN alignment for the lite set)
with fixed seeds, one CPU thread and every method setting spelled out (not the defaults, which may
move), and writes what a refactor must leave untouched to ``tests/reference_run/<kind>/``:

- ``images/<id>.png``: the anonymised images (compared pixel for pixel);
- ``codes.pt``: the final (anonymised) code of each face (compared exactly);
- ``record.json``: the pairs, each face's final and initial losses from the manifest, the sha256 of
  each aligned crop's pixels and of each face's inversion code (both stand for an LFW face: only their
  digests are kept in the repository),
  for the lite run the numbers of ``anon evaluate`` as the demo runs it (dlib's ResNet on the crops,
  MTCNN detection, pose, expression) from each face's ``verification.jsonl`` line, and the commit,
  torch version and settings it was made with.

``tests/test_reference_run.py`` reruns the same function and compares. Regenerate only on purpose,
when a change of behaviour is intended, and say so in the commit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "reference_run"
FACES = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg")

# The method's settings, spelled out: a changed default must not change the reference run.
TINY = ["generator=tiny", "identity=tiny_irse", "attribute=tiny_vit", "inverter=tiny_e4e", "latent=falco",
        "loss=falco", "optim=adam", "scheduler=falco", "module=falco", "method=falco",
        "dataset.image_size=64", "dataset.batch_size=2", "seed=0",
        "loss.margin=0.0", "loss.lambda_id=10.0", "loss.lambda_attr=0.1", "loss.target=aligned",
        "loss.official_value_ranges=false", "latent.trainable_layers=[3,8]", "latent.trainable_init=neighbour",
        "latent.frozen_source=inversion", "optim.lr=0.01", "scheduler.milestones=[0.75,0.9]", "scheduler.gamma=0.8",
        "module.steps=4", "module.loss_resolution=null", "module.early_stop_tolerance=null",
        "fakes.num_samples=32", "fakes.truncation_psi=0.7", "fakes.seed=0", "pair.k=1", "pair.originals=aligned"]
LITE = ["experiment=lite", "generator=dcgan_face64", "identity=mobilefacenet", "attribute=mobilefacenet_tokens",
        "inverter=optimisation", "latent=whole", "align=ffhq", "detector=mtcnn", "method=falco",
        "dataset.image_size=64", "dataset.batch_size=2", "align.size=64", "align.zoom=0.6", "seed=0",
        "loss.margin=0.0", "loss.lambda_id=10.0", "loss.lambda_attr=0.003", "loss.target=aligned",
        "loss.official_value_ranges=false", "latent.trainable_init=inversion", "optim.lr=0.01",
        "scheduler.milestones=[0.75,0.9]", "scheduler.gamma=0.8", "module.steps=10",
        "module.loss_resolution=null", "module.early_stop_tolerance=null",
        "inverter.steps=20", "inverter.lr=0.05", "inverter.init=random", "inverter.starts=1", "inverter.seed=0",
        "inverter.latent_reg=0.001", "fakes.num_samples=64", "fakes.truncation_psi=0.7", "fakes.seed=0",
        "pair.k=1", "pair.originals=aligned",
        # the lite default's additions since issue 16 (loss terms, relative offset lr), off as in the reference
        "~loss.terms", "~latent.offset_lr", "~latent.offset_lr_relative"]
SETTINGS = {"tiny": TINY, "lite": LITE}
# `anon evaluate` after the lite run, as `make demo` runs it (anon/demo.py).
EVALUATE = {"lite": ["evaluators=[dlib_resnet_crops]", "+thresholds.dlib_resnet_crops=null"]}


@contextmanager
def one_thread():
    """One intra-op thread: with two, summation order (and so the last bits) may differ run to run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def copy_faces(shared_data: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FACES:
        shutil.copyfile(shared_data / "lfw_sample" / name, folder / Path(name).name)
    return folder


def run_reference(kind: str, shared_data: Path, work: Path) -> dict:
    """Run the ``kind`` pipeline on the two faces under ``work``; what :func:`write` stores, in memory:
    ``{"images": {id: H x W x 3 uint8}, "codes": {name: tensor}, "record": {...}}``."""
    from hydra import compose, initialize_config_dir

    from anon.runtime.run import CONFIG_DIR
    from anon.stages.pipeline import run_pipeline

    images = copy_faces(shared_data, work / "photos")
    overrides = [*SETTINGS[kind], f"dataset.images={images}", f"output_root={work / 'out'}", "device=cpu"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides)
    with one_thread():
        summary = run_pipeline(cfg)
    run_dir = Path(summary["run_dir"])
    if kind in EVALUATE:
        evaluate_run(run_dir, work, EVALUATE[kind])
    manifest = [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    out = {"images": {}, "codes": {}, "record": {"pairs": json.loads(Path(cfg.stages.pair_dir, "pairs.json").read_text()),
                                                   "losses": {}, "aligned_sha256": {}, "inversion_sha256": {}}}
    for r in sorted(manifest, key=lambda r: r["id"]):
        assert r["status"] == "done", r
        out["images"][r["id"]] = np.asarray(Image.open(run_dir / r["image"]))
        out["codes"][f"final/{r['id']}"] = torch.load(run_dir / r["code"], weights_only=True)
        inversion = torch.load(Path(cfg.stages.invert_dir, "codes", f"{r['id']}.pt"), weights_only=True)
        out["record"]["inversion_sha256"][r["id"]] = tensor_sha256(inversion)
        out["record"]["losses"][r["id"]] = {"final": r["loss"], "initial": r["loss_initial"]}
        if cfg.get("align") is not None:
            crop = np.asarray(Image.open(r["source"]))
            out["record"]["aligned_sha256"][r["id"]] = hashlib.sha256(crop.tobytes()).hexdigest()
    if kind in EVALUATE:
        lines = [json.loads(x) for x in (run_dir / "verification.jsonl").read_text().splitlines()]
        out["record"]["evaluation"] = {r["id"]: numbers(r) for r in sorted(lines, key=lambda r: r["id"])}
    return out


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: equal digests, bitwise equal tensors."""
    data = tensor.detach().cpu().contiguous()
    head = f"{data.dtype} {tuple(data.shape)}\n".encode()
    return hashlib.sha256(head + data.view(torch.uint8).numpy().tobytes()).hexdigest()


def evaluate_run(run_dir: Path, work: Path, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from anon.runtime.run import CONFIG_DIR
    from anon.stages.evaluate import evaluate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"output_root={work / 'out'}"])
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    with one_thread():
        evaluate(cfg)


def numbers(record, prefix: str = "") -> dict:
    """The numeric, boolean and null leaves of a JSON record, by slash path (wording and paths left out)."""
    if isinstance(record, dict):
        return {k: v for key, value in record.items() for k, v in numbers(value, f"{prefix}/{key}").items()}
    if isinstance(record, list):
        return {k: v for i, value in enumerate(record) for k, v in numbers(value, f"{prefix}[{i}]").items()}
    return {prefix: record} if record is None or isinstance(record, (bool, int, float)) else {}


def write(kind: str, result: dict, folder: Path) -> None:
    from anon.runtime.outputs import save_png

    shutil.rmtree(folder, ignore_errors=True)
    for image_id, pixels in result["images"].items():
        save_png(pixels, folder / "images" / f"{image_id}.png")
    torch.save({k: v.clone() for k, v in result["codes"].items()}, folder / "codes.pt")
    import anon  # the code that made the run: the commit of the checkout it was imported from

    code = Path(anon.__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True,
                            text=True).stdout.strip()
    made = {"commit": commit, "torch": torch.__version__, "threads": 1, "settings": SETTINGS[kind]}
    (folder / "record.json").write_text(json.dumps({**result["record"], "made_with": made}, indent=1,
                                                   sort_keys=True) + "\n")


def load(folder: Path) -> dict:
    images = {p.stem: np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*.png"))}
    codes = torch.load(folder / "codes.pt", weights_only=True)
    record = json.loads((folder / "record.json").read_text())
    record.pop("made_with")
    return {"images": images, "codes": codes, "record": record}


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--only", choices=sorted(SETTINGS))
    args = parser.parse_args()
    for kind in [args.only] if args.only else sorted(SETTINGS, reverse=True):
        with tempfile.TemporaryDirectory() as work:
            write(kind, run_reference(kind, args.data, Path(work)), REFERENCE_DIR / kind)
        print(f"wrote {REFERENCE_DIR / kind}")


if __name__ == "__main__":
    main()
