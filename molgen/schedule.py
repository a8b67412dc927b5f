"""Schedules that know the training budget: learning rate and KL weight.

Progress through a run is the largest of three fractions: optimizer steps of ``max_steps``,
epochs of ``epochs``, and training time of ``max_time`` (summed over every ``--resume``). A
schedule written in progress rather than in steps fits any budget: a 10-minute run on a small
file decays its learning rate and finishes its KL ramp just as a 2-hour MOSES run does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

LR_SCHEDULES = ("constant", "cosine")


def budget_progress(
    step: int,
    elapsed_s: float,
    max_steps: int = -1,
    max_time_s: float | None = None,
    total_epoch_steps: int | None = None,
) -> float:
    """Fraction of the training budget used, in [0, 1] (0 when the run has no limit).

    Args:
        step: Optimizer steps done.
        elapsed_s: Training seconds so far (all starts).
        max_steps: Step limit (-1: none).
        max_time_s: Time limit in seconds (None: none).
        total_epoch_steps: Steps in all the allowed epochs (None: no epoch limit).
    """
    parts = [0.0]
    if max_steps and max_steps > 0:
        parts.append(step / max_steps)
    if max_time_s:
        parts.append(elapsed_s / max_time_s)
    if total_epoch_steps:
        parts.append(step / total_epoch_steps)
    return min(1.0, max(parts))


def lr_factor(
    schedule: str, step: int, progress: float, warmup_steps: int, final_ratio: float
) -> float:
    """Learning-rate multiplier: linear warm-up over steps, then constant or cosine to the end.

    Args:
        schedule: ``constant`` or ``cosine`` (decays to ``final_ratio`` at progress 1).
        step: Optimizer steps done.
        progress: :func:`budget_progress`.
        warmup_steps: Steps of the linear warm-up from near zero.
        final_ratio: Multiplier at the end of the budget (cosine).
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        return warm * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose {LR_SCHEDULES}")


class BudgetSchedule(pl.Callback):
    """Sets the learning rate before every optimizer step and keeps the run's progress.

    Args:
        base_lr: The configured learning rate (the multiplier's 1).
        schedule: ``constant`` or ``cosine``.
        warmup_steps: Learning-rate warm-up steps.
        final_ratio: Final multiplier of the cosine schedule.
        max_steps: Step limit (-1: none).
        max_time_s: Time limit in seconds (None: none).
        total_epoch_steps: Steps in all allowed epochs.
        elapsed_s: Callable giving the training seconds so far (all starts).
    """

    def __init__(
        self,
        base_lr: float,
        schedule: str,
        warmup_steps: int,
        final_ratio: float,
        max_steps: int,
        max_time_s: float | None,
        total_epoch_steps: int | None,
        elapsed_s: Callable[[], float],
    ) -> None:
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose {LR_SCHEDULES}")
        self.base_lr = base_lr
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.final_ratio = final_ratio
        self.max_steps = max_steps
        self.max_time_s = max_time_s
        self.total_epoch_steps = total_epoch_steps
        self.elapsed_s = elapsed_s
        self.progress = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Update progress and the optimizer's learning rate."""
        step = trainer.global_step
        self.progress = budget_progress(
            step, self.elapsed_s(), self.max_steps, self.max_time_s, self.total_epoch_steps
        )
        # the KL schedule reads it too; torch types Module.__setattr__ for Tensor | Module values
        # only, though any value is stored as a plain attribute
        pl_module.progress = self.progress  # type: ignore[assignment]
        lr = self.base_lr * lr_factor(
            self.schedule, step, self.progress, self.warmup_steps, self.final_ratio
        )
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        pl_module.log("lr", lr, batch_size=1)
