"""``anon pipeline``: fakes -> invert -> pair -> anonymize (-> publish), each stage cached.

Stage folders are named by hashes of the config values that produce them (see ``conf/pipeline.yaml``),
so a new loss weight re-runs only ``anonymize``; a new generator re-runs everything.
Under a multi-process launcher (torchrun, srun) every rank takes its share of ``fakes`` and
``invert`` and waits for the others through the stage's ``DONE.json``.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from anon.runtime.baseline_run import is_baseline
from anon.runtime.compose import build_network
from anon.errors import ConfigError
from anon.runtime.manifest import ManifestWriter, done_ids
from anon.runtime.run import CONFIG_DIR, anonymize, one_line_errors, resolve_run_dir
from anon.seeding import built_seeded
from anon.stages.align import read_alignment
from anon.stages.common import is_done, pick_device, rank_and_world
from anon.stages.invert import missing
from anon.stages.pair import read_json


def wait_for(ready, what: str, timeout_s: float = 7 * 24 * 3600, poll_s: float = 2.0) -> None:
    """Other ranks' share of a stage: wait until ``ready()`` (immediately true in a single process)."""
    deadline = time.time() + timeout_s
    while not ready():
        if time.time() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")
        time.sleep(poll_s)


def build_inverter(cfg: DictConfig, generator):
    """The inverter (an encoder, or optimisation into ``generator``), seeded like every network.

    The generator is frozen first (``requires_grad=False``; nothing trains it): an optimisation
    inversion then back-propagates to its code (and a pivotal one to its offsets) without also
    computing a gradient for every generator weight -- the same codes, about a third less work."""
    generator.requires_grad_(False)

    def build():
        inverter = instantiate(cfg.inverter)
        return inverter(generator=generator) if isinstance(inverter, functools.partial) else inverter
    return built_seeded(int(cfg.get("seed", 0)), "inverter", build)


STAGES = ("align", "fakes", "invert", "pair", "anonymize")


def run_pipeline(cfg: DictConfig) -> dict:
    """Run every stage, or only ``cfg.only`` (whose inputs must then be in the caches already)."""
    only = cfg.get("only")
    if only is not None and only not in STAGES:
        raise ConfigError(f"only={only!r}: choose one of {', '.join(STAGES)}")
    runs = lambda name: only is None or only == name  # noqa: E731
    device = pick_device(cfg.device)
    rank, world = rank_and_world()
    stages = cfg.stages
    data = cfg.dataset
    images = instantiate(cfg.dataset).image_paths()
    baseline = is_baseline(cfg)  # blur / pixelate / mask: only align (if configured) and anonymize run
    if baseline and only in ("fakes", "invert", "pair"):
        raise ConfigError(f"only={only}: method={cfg.method._target_.rsplit('.', 1)[-1]} needs no {only} stage")
    # The same (seeded) networks as the anonymisation builds: random tiny weights agree across stages and runs.
    generator = build_network(cfg, "generator") if only in (None, "fakes", "invert") and not baseline else None
    features = build_network(cfg, "attribute") if only in (None, "fakes", "pair") and not baseline else None
    aligned_dir = None
    sources = images  # before alignment (pair.originals=unaligned embeds these)
    if cfg.get("align"):
        if runs("align") or only == "invert":
            print(f"[anon] align   -> {stages.align_dir}", flush=True)
            if not cfg.get("detector"):
                raise ConfigError("align needs a face detector: add detector=mtcnn")
            instantiate(cfg.align)(instantiate(cfg.detector), sources, stage_dir=stages.align_dir, rank=rank, world=world)
            wait_for(lambda: set(sources) <= set(read_alignment(stages.align_dir)), f"alignment in {stages.align_dir}")
        elif not set(sources) <= set(read_alignment(stages.align_dir)):
            raise ConfigError(f"only={only}: the alignment in {stages.align_dir} is incomplete; run only=align first")
        images = run_align_records_to_manifest(cfg, sources, Path(stages.align_dir))
        aligned_dir = Path(stages.align_dir) / "aligned"
        if only == "align":
            return {"stage_dir": stages.align_dir}
    if baseline:
        print("[anon] anonymize (baseline: no fakes, inversion or pairing)", flush=True)
        return anonymize(cfg, images=aligned_dir)

    if runs("fakes"):
        print(f"[anon] fakes   -> {stages.fakes_dir}", flush=True)
        instantiate(cfg.fakes)(generator, features, stage_dir=stages.fakes_dir, device=device, rank=rank, world=world)
        if only == "fakes":
            return {"stage_dir": stages.fakes_dir}
    if runs("invert"):
        print(f"[anon] invert  -> {stages.invert_dir}", flush=True)
        instantiate(cfg.invert)(build_inverter(cfg, generator), images, stage_dir=stages.invert_dir,
                                image_size=data.image_size, device=device, rank=rank, world=world)
        if only == "invert":
            return {"stage_dir": stages.invert_dir}
    require(only, lambda: is_done(Path(stages.fakes_dir)), f"fakes in {stages.fakes_dir}", "fakes")
    require(only, lambda: not missing(Path(stages.invert_dir), sorted(images)), f"inversions in {stages.invert_dir}",
            "invert")
    inverted = {i: p for i, p in images.items() if (Path(stages.invert_dir) / "codes" / f"{i}.pt").exists()}
    if runs("pair") and rank == 0:
        print(f"[anon] pair    -> {stages.pair_dir}", flush=True)
        instantiate(cfg.pair)(features, inverted, stages.fakes_dir, stage_dir=stages.pair_dir,
                              image_size=data.image_size, device=device, unaligned=sources)
    require(only if only != "pair" else None, lambda: set(inverted) <= set(read_json(Path(stages.pair_dir) / "pairs.json")),
            f"pairs in {stages.pair_dir}", "pair")
    if only == "pair":
        return {"stage_dir": stages.pair_dir}
    print("[anon] anonymize", flush=True)
    return publish_stage(cfg, anonymize(cfg, images=aligned_dir))


def publish_stage(cfg: DictConfig, result: dict) -> dict:
    """``publish_to=DIR``: after the anonymisation, publish only its verified images (:mod:`anon.publish`)."""
    if not cfg.get("publish_to") or rank_and_world()[0] != 0:
        return result
    from anon.publish.stage import compose_publish, run_publish

    print(f"[anon] publish -> {cfg.publish_to}", flush=True)
    overrides = [f"run_dir={result['run_dir']}", f"out={cfg.publish_to}", f"output_root={cfg.output_root}",
                 *list(cfg.get("publish_overrides") or [])]
    return {**result, "publish": run_publish(compose_publish(overrides))}


def require(only: str | None, ready, what: str, stage: str) -> None:
    """All stages in one go: wait for the other ranks' share. One stage alone: its inputs must exist."""
    if only is None:
        wait_for(ready, what)
    elif not ready():
        raise ConfigError(f"only={only}: {what} are missing or incomplete; run only={stage} first")


def run_align_records_to_manifest(cfg: DictConfig, sources: dict, align_dir: Path) -> dict[str, Path]:
    """Images the alignment skipped or could not read go into the run manifest as failed (once);
    returns ``{id: aligned crop}`` for the rest."""
    records = read_alignment(align_dir)
    lost = [r for i, r in sorted(records.items()) if i in sources and r["status"] in ("skipped", "failed")]
    run_dir = resolve_run_dir(cfg)
    if lost and rank_and_world()[0] == 0:
        already = done_ids(run_dir)
        ManifestWriter(run_dir, 0).append([
            {"id": r["id"], "source": r["source"], "status": "failed", "rank": 0,
             "error": f"alignment {r['status']}: {r.get('reason')}"} for r in lost if r["id"] not in already])
    return {i: align_dir / "aligned" / f"{i}.png" for i in sorted(sources)
            if records.get(i, {}).get("status") in ("aligned", "unaligned")}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pipeline")
def pipeline_entry(cfg: DictConfig) -> None:
    with one_line_errors():
        run_pipeline(cfg)


if __name__ == "__main__":
    pipeline_entry()
