"""Training settings: the optimisation dataclass, named presets and option parsing.

Plain types only: the settings are stored verbatim in run directories and model files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from molgen.errors import MolgenError
from molgen.model import ModelConfig


@dataclass
class TrainConfig:
    """Optimisation settings (plain types; stored in the run directory and the model file).

    Attributes:
        epochs: Maximum epochs.
        max_steps: Maximum optimizer steps (-1: no limit).
        max_time: Wall-time limit like ``"1h"``, ``"30m"``, ``"90s"`` or ``"DD:HH:MM:SS"``.
        batch_size: Molecules per batch (per device).
        lr: Adam learning rate.
        seed: Seed for the split, initialisation, shuffling and sampling in training.
        beta_max: Final KL weight.
        beta_warmup_steps: Steps with KL weight 0 at the start.
        beta_ramp_steps: Steps of the linear ramp from 0 to ``beta_max`` after the warm-up.
        word_dropout: Probability of replacing a decoder input token by ``unk``.
        grad_clip: Gradient-norm clipping value (0: off).
        val_every_steps: Validate (and checkpoint) every this many steps, or each epoch if sooner.
        val_batches: Validation batches per check (keeps checks cheap on big sets).
        early_stopping_patience: Validation checks without improvement before stopping (0: off).
        accelerator: Lightning accelerator (auto, cpu, gpu).
        devices: Devices per node (int or "auto").
        num_nodes: Number of nodes.
        strategy: Lightning strategy (auto, ddp).
        precision: Lightning precision (e.g. "32-true", "bf16-mixed" on GPUs).
        tune_malloc: Keep freed memory in the process (glibc) instead of returning it every step.
        lr_schedule: ``constant`` or ``cosine`` (decays to ``lr_final_ratio`` x ``lr`` at the end
            of the budget: ``max_steps``, ``epochs`` or ``max_time``, whichever comes first).
        lr_warmup_steps: Linear learning-rate warm-up steps.
        lr_final_ratio: Learning-rate multiplier at the end of a cosine schedule.
        beta_budget_fraction: If > 0, the KL ramp also ends by this fraction of the budget (so it
            never outlasts a short run); the weight is the larger of the step and budget ramps.
        bucket_batches: Batches per length-sorted chunk (0: plain random batches).
        threads: CPU threads for torch (0: chosen from the cores not busy when training starts).
        validity_samples: Prior samples decoded at each validation to log ``val_validity``
            (0: off).
        min_validity: Checkpoint choice: a validation whose ``val_validity`` is below this pays
            1,000 nats per missing unit in ``val_select`` (the monitored score), so the exported
            model is the best-fitting one that still samples valid molecules.
        export: Which weights become ``model.pt``: ``last`` or ``best`` (lowest ``val_select``).
    """

    epochs: int = 10
    max_steps: int = -1
    max_time: str | None = None
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    beta_max: float = 0.5
    beta_warmup_steps: int = 500
    beta_ramp_steps: int = 5000
    word_dropout: float = 0.0
    grad_clip: float = 5.0
    val_every_steps: int = 1000
    val_batches: int = 20
    early_stopping_patience: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    tune_malloc: bool = True
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_final_ratio: float = 0.05
    beta_budget_fraction: float = 0.0
    bucket_batches: int = 0
    threads: int = 0
    validity_samples: int = 0
    min_validity: float = 0.0
    export: str = "last"

    def beta(self, step: int, progress: float = 0.0) -> float:
        """KL weight: 0 for the warm-up, then a linear ramp to ``beta_max``.

        Args:
            step: Optimizer steps done.
            progress: Fraction of the budget used (see :mod:`molgen.schedule`); with
                ``beta_budget_fraction`` the ramp also runs from 10 % to 100 % of that fraction.
        """
        if step < self.beta_warmup_steps:
            by_step = 0.0
        elif self.beta_ramp_steps <= 0:
            by_step = self.beta_max
        else:
            by_step = self.beta_max * min(
                1.0, (step - self.beta_warmup_steps) / self.beta_ramp_steps
            )
        f = self.beta_budget_fraction
        if f <= 0:
            return by_step
        by_budget = self.beta_max * min(1.0, max(0.0, (progress - 0.1 * f) / (0.9 * f)))
        return max(by_step, by_budget)


@dataclass
class Preset:
    """A named starting point; explicit options override its values."""

    model: dict[str, Any]
    train: dict[str, Any]
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model=dict(embedding_dim=16, encoder_hidden=32, decoder_hidden=64, latent_dim=8),
        train=dict(
            epochs=2,
            batch_size=32,
            lr=3e-3,
            beta_warmup_steps=10,
            beta_ramp_steps=20,
            val_every_steps=8,
            val_batches=5,
        ),
        description="tests and smoke runs: trains in seconds",
    ),
    "small": Preset(
        model=dict(
            embedding_dim=64,
            encoder_hidden=256,
            decoder_hidden=512,
            decoder_layers=1,
            latent_dim=64,
        ),
        train=dict(
            epochs=100,
            max_time="1h",
            batch_size=128,
            lr=1e-3,
            # 11,638 steps fit in an hour on 2 idle cores (3,000-5,000 under load): the ramp
            # must end well inside that.
            beta_warmup_steps=250,
            beta_ramp_steps=2000,
            # At 0.5 the KL fell to ~15 nats by step 1,200 (token accuracy 0.83): too little
            # in z for exact reconstruction or close analogues. MOSES's VAE ends at 0.05.
            beta_max=0.1,
            val_every_steps=250,
            # Budget-aware recipe (BENCHMARKS_time_to_quality.md): length-bucketed batches, a
            # cosine learning rate that ends with the budget, and a KL ramp that ends by half of
            # the budget at the latest (a 10-minute run on a small file still reaches beta_max).
            lr_schedule="cosine",
            lr_warmup_steps=100,
            bucket_batches=50,
            beta_budget_fraction=0.5,
        ),
        description="a useful model on 2 CPU cores in about an hour",
    ),
    "finetune": Preset(
        # Sizes come from the parent (molgen train DATA --from MODEL); the KL weight starts at the
        # parent's final value (read from the parent file), so there is no warm-up.
        model=dict(),
        train=dict(
            epochs=200,
            max_time="10m",
            batch_size=64,
            # 5e-4 against 2e-4 on the drug file (10 min, 1 thread): FCD to held-out drugs 13.9
            # against 15.4 at the same validity (0.81 against 0.79; BENCHMARKS_transfer.md)
            lr=5e-4,
            lr_schedule="cosine",
            lr_warmup_steps=50,
            beta_warmup_steps=0,
            beta_ramp_steps=0,
            val_every_steps=50,
            val_batches=10,
            early_stopping_patience=8,
            bucket_batches=20,
            # 1,024 samples: at 512 the check's noise (+-0.018) let the chosen checkpoint sample
            # 0.78 on 2,000 fresh codes although it had passed 0.80
            validity_samples=1024,
            min_validity=0.8,
            export="best",
        ),
        description="fine-tuning a parent model on a small file (chosen by --from)",
    ),
    "moses": Preset(
        model=dict(
            embedding_dim=64,
            encoder_hidden=256,
            decoder_hidden=512,
            decoder_layers=3,
            latent_dim=128,
            dropout=0.1,
        ),
        train=dict(
            epochs=80,
            batch_size=512,
            lr=5e-4,
            beta_warmup_steps=2000,
            beta_ramp_steps=40000,
            beta_max=0.5,
            val_every_steps=2000,
            val_batches=50,
        ),
        description="MOSES-VAE scale (GRU 512 x 3 decoder, latent 128), for a GPU",
    ),
}


def resolve_configs(
    preset: str, model_overrides: dict[str, Any], train_overrides: dict[str, Any]
) -> tuple[dict[str, Any], TrainConfig]:
    """Merge a preset with explicit options (None values mean "not given").

    Returns:
        (model settings without vocab_size, TrainConfig).
    """
    if preset not in PRESETS:
        raise MolgenError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    p = PRESETS[preset]
    model = {**p.model, **{k: v for k, v in model_overrides.items() if v is not None}}
    known_model = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    unknown = set(model) - known_model
    if unknown:
        raise MolgenError(f"unknown model settings: {', '.join(sorted(unknown))}.")
    train_values = {**p.train, **{k: v for k, v in train_overrides.items() if v is not None}}
    if train_overrides.get("min_validity"):
        # a validity floor asks for validity checks and for the checkpoint they choose
        train_values["validity_samples"] = train_values.get("validity_samples") or 1024
        train_values["export"] = "best"
    return model, TrainConfig(**train_values)


def parse_max_time(value: str | None) -> timedelta | None:
    """Parse ``"90s"``, ``"30m"``, ``"1.5h"``, ``"2d"`` or Lightning's ``"DD:HH:MM:SS"``."""
    if value is None or value == "":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return timedelta(**{unit: float(m.group(1))})
    parts = value.split(":")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        d, h, mi, s = (int(p) for p in parts)
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise MolgenError(f"cannot read --max-time {value!r}; use e.g. 90s, 30m, 1h or DD:HH:MM:SS.")
