"""molgen.train: choosing the checkpoint to export."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from molgen.train import _verified_best
from molgen.train_config import TrainConfig


class _Module:
    """Stands in for VAEModule: its 'validity' is whatever the loaded checkpoint says."""

    def __init__(self) -> None:
        self.weights = {"w": torch.zeros(1)}
        self.seeds: list[int] = []

    def state_dict(self):
        return dict(self.weights)

    def load_state_dict(self, state):
        self.weights = dict(state)

    def prior_validity(self, n: int, seed: int = 1234) -> float:
        self.seeds.append(seed)
        return float(self.weights["w"])


def _kept(tmp_path, validities_by_score):
    models = {}
    for i, (score, validity) in enumerate(validities_by_score):
        path = tmp_path / f"best-step={i}.ckpt"
        torch.save({"state_dict": {"w": torch.tensor([validity])}, "global_step": i}, path)
        models[str(path)] = torch.tensor(score)
    return SimpleNamespace(best_k_models=models)


def test_the_best_fitting_checkpoint_that_holds_its_validity_is_exported(tmp_path):
    # lowest val_select first: 0.78 fails the 0.80 floor on fresh codes, 0.81 passes
    best = _kept(tmp_path, [(20.0, 0.78), (21.0, 0.81), (22.0, 0.90)])
    module = _Module()
    chosen, checks = _verified_best(module, best, TrainConfig(min_validity=0.8))
    assert chosen.name == "best-step=1.ckpt"
    assert [c["validity"] for c in checks] == [0.78, 0.81]  # stops at the first that passes
    assert set(module.seeds) == {4321}  # fresh codes, not the validation's
    assert float(module.weights["w"]) == 0.0  # the module's own weights are put back


def test_when_none_holds_the_most_valid_is_exported(tmp_path):
    best = _kept(tmp_path, [(20.0, 0.70), (21.0, 0.76), (22.0, 0.72)])
    chosen, checks = _verified_best(_Module(), best, TrainConfig(min_validity=0.8))
    assert chosen.name == "best-step=1.ckpt" and len(checks) == 3
