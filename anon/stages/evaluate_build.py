"""Building the evaluate stage from its Hydra config (``conf/evaluate.yaml``): evaluators, the expression
classifier, identity labels, the rendered inversions and the Trainer."""
from __future__ import annotations

from pathlib import Path

from anon.errors import ConfigError, find_cause
from anon.metrics.detection import MemoDetector
from anon.stages.evaluate_inputs import done_records

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def build_evaluators(cfg) -> tuple[dict, dict[str, str], object]:
    """``cfg.evaluators`` (names of ``conf/evaluator/*.yaml``) -> ``({name: evaluator}, cache keys, detector)``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from anon.metrics.evaluators import FaceCropper, as_evaluator
    from anon.runtime.run_id import config_hash
    from anon.stages.common import pick_device

    device = pick_device(cfg.device)
    detector = MemoDetector(instantiate(cfg.detector)) if cfg.get("detector") else None
    crop = FaceCropper(detector, **cfg.face_crop) if detector is not None and cfg.get("face_crop") else None
    root = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    evaluators, keys = {}, {}
    for name in cfg.evaluators:
        path = Path(CONFIG_DIR) / "evaluator" / f"{name}.yaml"
        if not path.is_file():
            choices = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
            raise ConfigError(f"no evaluator config {path.name} in conf/evaluator/ (choices: {choices})")
        root[f"_evaluator_{name}"] = OmegaConf.load(path)
        node = root[f"_evaluator_{name}"]
        evaluators[name] = as_evaluator(instantiate(node), crop=crop, batch_size=cfg.batch_size, device=device)
        keys[name] = f"{name}-{config_hash(node, cfg.get('face_crop'), cfg.get('detector'))}"
    return evaluators, keys, detector


def build_expression(cfg, detector=None):
    """``cfg.expression`` (null or a classifier node, e.g. ``conf/expression/mini_xception.yaml``) ->
    ``(ExpressionScorer, None)``, or ``(None, reason)`` when the classifier's optional package is not
    installed (the report then says so), or ``(None, None)`` when none is configured.

    Faces are the MTCNN crops of ``cfg.face_crop`` (the identity evaluators' crops) when a detector is
    configured, else whole images.
    """
    from hydra.utils import instantiate

    from anon.lite.packages import MissingPackageError
    from anon.metrics.evaluators import FaceCropper
    from anon.metrics.expression import ExpressionScorer
    from anon.stages.common import pick_device

    if not cfg.get("expression"):
        return None, None
    try:
        net = instantiate(cfg.expression)
    except Exception as err:  # Hydra wraps the loader's error
        cause = find_cause(err, MissingPackageError)
        if cause is None:
            raise
        print(f"[anon] expression agreement not measured: {cause}", flush=True)
        return None, str(cause)
    crop = FaceCropper(detector, **cfg.face_crop) if detector is not None and cfg.get("face_crop") else None
    return ExpressionScorer(net, crop=crop, batch_size=cfg.batch_size, device=pick_device(cfg.device)), None


def run_identities(cfg):
    """``identity_labels: auto`` on a run whose dataset knows who is who (CelebA-HQ with
    ``dataset.identities``): its ``identity(id)``; otherwise the setting as is (:func:`identity_labels`)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    setting = cfg.get("identity_labels", "auto")
    config = Path(cfg.run_dir) / "config.yaml"
    if setting != "auto" or not config.is_file():
        return setting
    dataset = OmegaConf.select(OmegaConf.load(config), "dataset")
    if dataset is None or not dataset.get("identities"):
        return setting
    data = instantiate(dataset)
    if not callable(getattr(data, "identity", None)):
        return setting

    def person(image_id: str):
        try:
            return data.identity(image_id)
        except (KeyError, ValueError):
            return f"unknown:{image_id}"  # not in the identity file: its own person

    person.description = f"dataset identities ({dataset.identities})"
    return person


def resolve_inversions(cfg) -> tuple[Path | None, str | None]:
    """``inversion_dir``: ``auto`` renders the run's inversion codes (:mod:`anon.stages.inversion_images`),
    a path uses ``<id>.png`` images there, null scores no inversion."""
    from anon.stages.common import pick_device
    from anon.stages.inversion_images import render_inversions

    setting = cfg.get("inversion_dir", "auto")
    if setting is None:
        return None, None
    if setting != "auto":
        return Path(setting), f"images in {setting}"
    folder, description = render_inversions(cfg.run_dir, [r["id"] for r in done_records(cfg.run_dir)],
                                            batch_size=cfg.batch_size, device=pick_device(cfg.device))
    if folder is None:
        print(f"[anon] inversion not scored: {description}", flush=True)
    return folder, description


def build_trainer(cfg):
    """``cfg.trainer`` (``conf/trainer/``: cpu, ddp_cpu, gpu, slurm) without a logger; a one-process CPU
    Trainer when the config has none."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
             "enable_checkpointing": False}
    if cfg.get("trainer") is None:
        return pl.Trainer(accelerator="cpu", devices=1, **quiet)
    return instantiate(cfg.trainer, **quiet)


__all__ = ["CONFIG_DIR", "build_evaluators", "build_expression", "run_identities", "resolve_inversions",
           "build_trainer"]
