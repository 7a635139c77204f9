"""One rule for the two places a run's precision can be set: ``module.precision`` and ``trainer.precision``.

``module.precision`` (32 | tf32 | bf16) is what the latent loop does by itself, also without a Trainer
(benchmarks, the photo path); Lightning has no precision plugin for TF32. ``trainer.precision`` is
Lightning's: ``bf16-mixed`` gives exactly the module's bf16 behaviour (the networks autocast; the codes,
the optimiser, the reference and the final scores stay float32), ``32``/``32-true`` (or unset) leaves
``module.precision`` as it is. A contradiction (``tf32`` with ``bf16-mixed``) and the plugins the latent
loop cannot use (``16-mixed`` needs a gradient scaler, ``bf16-true``/``64-true`` cast the codes) are one-line
errors. The run folder hash sees the effective precision (:func:`effective_module`), so
``trainer.precision=bf16-mixed`` and ``module.precision=bf16`` are the same run.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anon.errors import ConfigError

TRAINER_DEFAULTS = (None, 32, "32", "32-true")


def effective_precision(module_precision: object, trainer_precision: object) -> str:
    """The ``module.precision`` a run with these two settings runs at."""
    module = str(module_precision)
    if trainer_precision in TRAINER_DEFAULTS:
        return module
    if str(trainer_precision) == "bf16-mixed":
        if module == "tf32":
            raise ConfigError("trainer.precision=bf16-mixed contradicts module.precision=tf32 "
                              "(choose one: bf16 autocasts the networks, tf32 keeps them float32 on TF32 cores)")
        return "bf16"
    raise ConfigError(f"trainer.precision={trainer_precision} is not supported by the latent loop "
                      "(use 32 or bf16-mixed, or module.precision=tf32)")


def effective_module(module: Mapping[Any, Any], trainer_precision: object) -> object:
    """The ``module`` config node as the run hash sees it: its ``precision`` replaced by the effective one
    (``${effective_module:${module},${oc.select:trainer.precision,null}}``; unchanged unless the trainer's
    precision sets it, so existing run folders keep their names). A contradiction leaves it as it is: the
    run reports it as one line (:func:`anon.runtime.run.check_run_config`), not Hydra while naming the folder."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(module, resolve=True) if OmegaConf.is_config(module) else dict(module)
    if isinstance(plain, dict) and "precision" in plain:  # a config node is always a dict here
        try:
            plain["precision"] = effective_precision(plain["precision"], trainer_precision)
        except ConfigError:
            pass
    return plain
