"""molgen.retrain: rank weights, a round that fits the best molecules, and restoring the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molgen.errors import MolgenError
from molgen.objectives import ScoreRecord
from molgen.optimize import OptimizeConfig, optimize
from molgen.retrain import EliteTrainer, RetrainConfig, rank_weights
from molgen.sampling import load_model
from tests.conftest import random_model_file

ELITES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccccc1", "CCN(CC)CC", "OCC(O)CO"]


@pytest.fixture
def model(tmp_path):
    return load_model(random_model_file(tmp_path / "m.pt"))


def _nll(model, smiles):
    ids, lengths = model.to_ids(smiles, warn=False)
    with torch.no_grad():
        torch.manual_seed(0)
        return float(model.vae(ids, lengths, beta=0.0)["reconstruction"])


def test_rank_weights_favour_the_best_and_sum_to_one():
    w = rank_weights([0.1, 0.9, 0.5, 0.9], k=0.01)
    assert w.sum() == pytest.approx(1.0)
    assert w[1] > w[3] > w[2] > w[0]  # ties: the earlier one ranks first
    flat = rank_weights([0.1, 0.9, 0.5], k=100.0)  # a large k weighs everything about equally
    assert flat.max() / flat.min() < 1.01


def test_a_round_fits_the_best_molecules_and_restore_gives_the_weights_back(model):
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    nll_before = _nll(model, ELITES[:2])
    trainer = EliteTrainer(model, RetrainConfig(every=1, steps=40, lr=1e-2), seed=0)
    scores = [5.0, 4.0, 0.1, 0.1, 0.1]
    trainer.round([*ELITES, "not a molecule", "C[Si](C)C"], [*scores, 3.0, 9.0])
    assert trainer.rounds == 1 and len(trainer.losses) == 40
    assert _nll(model, ELITES[:2]) < nll_before - 1.0
    assert not model.vae.training
    trainer.restore()
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_optimize_retrains_during_the_run_and_leaves_the_model_as_it_was(model):
    class Length:
        component_names = ["length"]

        def score(self, smiles):
            return [ScoreRecord(len(s), {"length": len(s)}, {"length": len(s)}) for s in smiles]

    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    config = OptimizeConfig(
        budget=60, population=8, offspring=16, start_size=20, seed=1,
        retrain={"every": 20, "steps": 2, "batch_size": 8},
    )  # fmt: skip
    assert isinstance(config.retrain, RetrainConfig)
    result = optimize(model, Length(), config, progress=False)
    assert result.stats.retrain_rounds >= 1
    assert result.stats.retrain_seconds > 0
    assert result.config["retrain"]["every"] == 20
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_retrain_settings_are_checked():
    with pytest.raises(MolgenError, match="retrain-every"):
        OptimizeConfig(retrain={"every": -1}).check()
    with pytest.raises(MolgenError, match="learning rate"):
        RetrainConfig(every=5, lr=0.0).check()
    assert np.isfinite(rank_weights([1.0], 0.01)).all()


def test_a_round_with_every_score_equal_is_skipped(model):
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    trainer = EliteTrainer(model, RetrainConfig(every=1, steps=5), seed=0)
    trainer.round(ELITES, [0.0] * len(ELITES))  # nothing is better than anything else
    assert (trainer.rounds, trainer.skipped, trainer.losses) == (0, 1, [])
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, before[key]), key
    trainer.round(ELITES, [0.0, 0.0, 0.0, 0.0, 1.0])
    assert (trainer.rounds, trainer.skipped) == (1, 1)


def test_a_decoder_round_leaves_the_encoder_and_its_codes_alone(model):
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    _, codes_before = EliteTrainer(model, RetrainConfig(), seed=0).codes(ELITES)
    trainer = EliteTrainer(model, RetrainConfig(steps=10, lr=1e-2, part="decoder"), seed=0)
    trainer.round(ELITES, [5.0, 4.0, 0.1, 0.1, 0.1])
    changed = {k for k, v in model.vae.state_dict().items() if not torch.equal(v, before[k])}
    trained = ("decoder", "latent_to_hidden", "output")
    assert changed and all(k.split(".")[0] in trained for k in changed)
    _, codes_after = trainer.codes(ELITES)
    assert torch.equal(codes_before, codes_after)
    assert all(p.requires_grad for p in model.vae.parameters())  # the flags are put back
    with pytest.raises(MolgenError, match="part"):
        RetrainConfig(part="encoder").check()


def test_optimize_counts_and_reports_skipped_rounds(model):
    from molgen.design import summary_lines

    class Flat:
        component_names = ["flat"]

        def score(self, smiles):
            return [ScoreRecord(0.0, {"flat": 0.0}, {"flat": 0.0}) for _ in smiles]

    config = OptimizeConfig(
        budget=60, population=8, offspring=16, start_size=20, seed=1,
        retrain={"every": 20, "steps": 2, "batch_size": 8},
    )  # fmt: skip
    result = optimize(model, Flat(), config, progress=False)
    assert result.stats.retrain_rounds == 0 and result.stats.retrain_skipped >= 1
    assert any("rounds skipped" in line for line in summary_lines(result, {}))
