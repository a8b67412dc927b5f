"""Run directories: what a run saves to restart, which checkpoint to resume, what may change.

``molgen train`` resolves its options here into a :class:`RunPlan`: a fresh run, a ``--resume`` of
a saved run (only limits and optimisation knobs may change), or a run ``--from`` a parent model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from molgen.data import DataConfig
from molgen.errors import MolgenError
from molgen.train_config import TrainConfig, resolve_configs

RUN_CONFIG = "run_config.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class RunConfig:
    """Everything needed to (re)start a run; written to ``RUN_DIR/run_config.json``."""

    data_path: str
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    preset: str = "small"
    parent: str | None = None
    init_scheme: str = "mean"


def checkpoint_position(path: Path) -> tuple[int, int]:
    """(optimizer step, epoch) stored in a checkpoint of our own run."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own run's checkpoint
    return int(state.get("global_step", 0)), int(state.get("epoch", 0))


def last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most optimizer steps (ties: the newest file)."""
    ckpts = list((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: (checkpoint_position(p)[0], p.stat().st_mtime))


def load_run_config(run_dir: Path) -> RunConfig:
    """Read ``RUN_DIR/run_config.json`` (written when the run started)."""
    path = run_dir / RUN_CONFIG
    if not path.exists():
        raise MolgenError(f"{run_dir} has no {RUN_CONFIG}: it is not a molgen run directory.")
    return RunConfig(**json.loads(path.read_text()))


# Files `train` writes into the run directory; a folder holding them that is not a run is refused.
_RUN_OUTPUTS = ("model.pt", "metrics.csv", "training_curves.png")


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start a run where it would overwrite something that is not a molgen run.

    Raises:
        MolgenError: resuming a folder with nothing to resume, starting over an existing run, or
            a non-run folder that holds files with the names a run writes.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MolgenError(f"--out {run_dir} is a file; give a folder for the run.")
    if resume:
        if last_checkpoint(run_dir) is None:
            raise MolgenError(f"nothing to resume in {run_dir}: it has no checkpoints.")
        return
    ckpts = run_dir / CHECKPOINT_DIR
    if ckpts.exists() and any(ckpts.iterdir()):
        raise MolgenError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out."
        )
    clash = [name for name in _RUN_OUTPUTS if (run_dir / name).exists()]
    if clash and not (run_dir / RUN_CONFIG).exists():
        raise MolgenError(
            f"--out {run_dir} is not a molgen run but holds {', '.join(clash)}, which training "
            "would overwrite; choose another --out."
        )


# ---- what a `molgen train` invocation means ------------------------------------------------------
# Options that may change when a run is resumed (limits and optimisation knobs); everything else
# (data, architecture, tokens) is fixed by the run and refused.
RESUME_OVERRIDABLE = (
    "epochs",
    "max_steps",
    "max_time",
    "lr",
    "early_stopping_patience",
    "threads",
    "val_every_steps",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
)


def _flags(names: Any) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in sorted(names))


@dataclass
class RunPlan:
    """Everything :func:`train` needs, resolved from the options, a saved run or a parent."""

    data_path: Path
    data_config: DataConfig
    model_settings: dict[str, Any]
    train_config: TrainConfig
    preset: str
    parent: str | None = None
    init_scheme: str = "mean"


def plan_run(
    run_dir: Path,
    data_path: Path | None,
    data_config: DataConfig,
    preset: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
    resume: bool = False,
    parent: str | None = None,
    init_scheme: str = "mean",
) -> RunPlan:
    """Resolve a run's settings: a fresh run, ``--resume`` of a saved one, or ``--from`` a parent.

    Args:
        run_dir: The run directory.
        data_path: The molecule file (None: the bundled MOSES set, or the saved run's file).
        data_config: Data-step settings from the options.
        preset: Preset name (None: ``finetune`` with a parent, else ``small``).
        model_overrides: Model options (None values: not given).
        train_overrides: Training options (None values: not given).
        resume: Continue the saved run in ``run_dir``.
        parent: Parent model file or ``bundled``.
        init_scheme: New-token initialisation with a parent.

    Raises:
        MolgenError: options that contradict the saved run or the parent.
    """
    from molgen.data import DEFAULT_DATA

    given_model = {k: v for k, v in model_overrides.items() if v is not None}
    given_train = {k: v for k, v in train_overrides.items() if v is not None}
    if resume:
        saved = load_run_config(run_dir)
        if parent is not None and parent != saved.parent:
            raise MolgenError("--from cannot change when resuming; the run keeps its parent.")
        if data_path is not None and Path(data_path).resolve() != Path(saved.data_path).resolve():
            raise MolgenError(
                f"--resume continues the run on {saved.data_path}; it cannot switch to "
                f"{data_path}. Start a new run (--out) to train on another file."
            )
        fixed_model = {k: v for k, v in given_model.items() if saved.model.get(k) != v}
        if fixed_model:
            raise MolgenError(
                f"--resume cannot change the model ({_flags(fixed_model)}); start a new "
                "run (--out) or continue with --from RUN_DIR/model.pt."
            )
        fixed_train = {
            k
            for k, v in given_train.items()
            if k not in RESUME_OVERRIDABLE and k != "seed" and saved.train.get(k) != v
        }
        if fixed_train:
            raise MolgenError(
                f"--resume cannot change {_flags(fixed_train)}; it may change "
                f"{_flags(RESUME_OVERRIDABLE)}."
            )
        overrides = {k: v for k, v in given_train.items() if k in RESUME_OVERRIDABLE}
        _, train_config = resolve_configs(saved.preset, {}, {**saved.train, **overrides})
        model_settings = {
            k: v for k, v in saved.model.items() if k not in ("vocab_size", "max_length")
        }
        return RunPlan(
            Path(saved.data_path),
            DataConfig(**saved.data),
            model_settings,
            train_config,
            saved.preset,
            saved.parent,
            saved.init_scheme,
        )
    if parent is None:
        model_settings, train_config = resolve_configs(
            preset or "small", model_overrides, train_overrides
        )
        return RunPlan(
            Path(data_path or DEFAULT_DATA),
            data_config,
            model_settings,
            train_config,
            preset or "small",
        )

    from molgen.finetune import load_parent

    if given_model:
        raise MolgenError(
            f"with --from the architecture is the parent's; drop {_flags(given_model)}."
        )
    if data_path is None:
        raise MolgenError(
            "--from needs a molecule file to fine-tune on: molgen train DATA --from MODEL."
        )
    par = load_parent(parent)
    pdata = par.content.get("data_config", {})
    for key in ("representation", "max_length", "stereo", "largest_fragment"):
        if key in pdata:
            setattr(data_config, key, pdata[key])
    train_defaults = {"beta_max": par.final_beta}
    _, train_config = resolve_configs(preset or "finetune", {}, {**train_defaults, **given_train})
    return RunPlan(
        Path(data_path), data_config, {}, train_config, preset or "finetune", parent, init_scheme
    )
