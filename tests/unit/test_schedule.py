import math

import pytest

from molgen.schedule import budget_progress, lr_factor
from molgen.train_config import PRESETS, TrainConfig


def test_progress_is_the_most_advanced_limit() -> None:
    assert budget_progress(50, 10.0, max_steps=100) == 0.5
    assert budget_progress(50, 30.0, max_steps=100, max_time_s=40.0) == 0.75
    assert budget_progress(10, 0.0, total_epoch_steps=20) == 0.5
    assert budget_progress(500, 99.0, max_steps=100) == 1.0
    assert budget_progress(5, 5.0) == 0.0  # no limit: no decay


def test_cosine_decays_to_final_ratio_at_the_end_of_the_budget() -> None:
    assert lr_factor("cosine", 1000, 0.0, 0, 0.05) == pytest.approx(1.0)
    assert lr_factor("cosine", 1000, 0.5, 0, 0.05) == pytest.approx(0.525)
    assert lr_factor("cosine", 1000, 1.0, 0, 0.05) == pytest.approx(0.05)
    assert lr_factor("constant", 1000, 1.0, 0, 0.05) == 1.0


def test_warmup_is_linear_in_steps() -> None:
    assert lr_factor("constant", 0, 0.0, 100, 0.05) == pytest.approx(0.01)
    assert lr_factor("constant", 49, 0.0, 100, 0.05) == pytest.approx(0.5)
    assert lr_factor("constant", 500, 0.0, 100, 0.05) == 1.0


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError):
        lr_factor("linear-ish", 0, 0.0, 0, 0.1)


def test_kl_ramp_never_outlasts_the_budget() -> None:
    # A step schedule written for MOSES (warm-up 250, ramp 2,000) on a run that only has budget
    # for a few hundred steps: the budget ramp finishes it by half the budget.
    tc = TrainConfig(
        beta_max=0.1, beta_warmup_steps=250, beta_ramp_steps=2000, beta_budget_fraction=0.5
    )
    assert tc.beta(10, progress=0.01) == 0.0
    assert tc.beta(100, progress=0.5) == pytest.approx(0.1)
    assert 0 < tc.beta(50, progress=0.3) < 0.1
    # Long runs keep the step schedule (it is further along than the budget ramp).
    assert tc.beta(2250, progress=0.2) == pytest.approx(0.1)
    # Off: the step schedule alone, as before.
    assert TrainConfig(beta_max=0.1, beta_warmup_steps=250).beta(100, progress=0.9) == 0.0


def test_finetune_preset_starts_at_full_kl_weight() -> None:
    tc = TrainConfig(**PRESETS["finetune"].train)
    assert tc.beta(0) == tc.beta_max
    assert tc.lr_schedule == "cosine" and tc.export == "best"
    assert math.isclose(TrainConfig(**PRESETS["small"].train).beta_budget_fraction, 0.5)
