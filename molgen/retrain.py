"""Retraining the model on its best molecules during a search (weighted retraining).

A latent-space search can only go where the decoder goes: a model trained on MOSES decodes
MOSES-like molecules from everywhere on the sphere. Weighted retraining (Tripp, Daxberger and
Hernandez-Lobato, NeurIPS 2020) fine-tunes the VAE every so often on the molecules scored so far,
drawn with rank-based weights ``1 / (k N + rank)``, so that more of the sphere decodes to
molecules like the best ones and the search can move past them. After each round the search
re-encodes its population, because the codes of known molecules have moved.

The rounds change the weights of the model object in place; :class:`EliteTrainer` keeps a copy
of the original weights and puts them back when the search ends (:meth:`EliteTrainer.restore`),
so one loaded model can serve many searches (GuacaMol runs 20).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from molgen.errors import MolgenError
from molgen.finetune import trained_beta
from molgen.inputs import InputChecker, pad_ids


@dataclass
class RetrainConfig:
    """Settings of the retraining rounds (plain types, part of ``OptimizeConfig``).

    Attributes:
        every: Oracle calls between rounds (0: never retrain).
        steps: Optimizer steps per round.
        batch_size: Molecules per step, drawn with the rank weights.
        lr: Adam learning rate (the optimizer's state carries over between rounds).
        k: Rank-weight sharpness: weights ``1 / (k N + rank)`` over the N molecules scored so far
            (smaller favours the very best more).
        part: What a round trains: ``all`` (encoder and decoder) or ``decoder`` (the decoder GRU,
            its initial-state layer and the output layer; the encoder and the shared token
            embedding stay as they are, so known molecules keep their codes).
    """

    every: int = 1000
    steps: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    k: float = 1e-2
    part: str = "all"

    def check(self) -> None:
        """Raise MolgenError for settings that cannot run."""
        if self.every < 0:
            raise MolgenError(f"--retrain-every must be 0 (off) or more calls, got {self.every}.")
        if self.steps < 1 or self.batch_size < 1:
            raise MolgenError("retraining needs at least 1 step of at least 1 molecule.")
        if not self.lr > 0 or not self.k > 0:
            raise MolgenError("retraining's learning rate and k must be positive.")
        if self.part not in TRAINED_PARTS:
            raise MolgenError(
                f"retraining part must be one of {', '.join(TRAINED_PARTS)}, got {self.part!r}."
            )


#: Modules of a ``MoleculeVAE`` a round trains, by ``RetrainConfig.part``.
TRAINED_PARTS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "decoder": ("decoder", "latent_to_hidden", "output"),
}


def trained_parameters(vae: torch.nn.Module, part: str) -> list[torch.nn.Parameter]:
    """The parameters a round of ``part`` updates (all of them for ``all``)."""
    names = TRAINED_PARTS[part]
    if names is None:
        return list(vae.parameters())
    return [p for name in names for p in getattr(vae, name).parameters()]


def rank_weights(scores: Sequence[float], k: float) -> np.ndarray:
    """Sampling weights ``1 / (k N + rank)`` (rank 0 = best), normalised to sum to 1."""
    n = len(scores)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.arange(n)
    w = 1.0 / (k * n + ranks)
    return w / w.sum()


class EliteTrainer:
    """Fine-tunes a ``MolGenModel``'s VAE on scored molecules, and restores it afterwards.

    Args:
        model: A ``molgen.sampling.MolGenModel`` (its ``vae`` is trained in place).
        config: Round settings.
        seed: Seed of the batch draws.
    """

    def __init__(self, model: Any, config: RetrainConfig, seed: int) -> None:
        self.model = model
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.original = copy.deepcopy(model.vae.state_dict())
        self.params = trained_parameters(model.vae, config.part)
        trained = {id(p) for p in self.params}
        self.frozen = [  # no gradient for these, so no backward pass through the encoder
            p for p in model.vae.parameters() if id(p) not in trained and p.requires_grad
        ]
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        self.beta = trained_beta(model.summary)  # the KL weight it was trained at
        self.checker = InputChecker.for_model(model)
        self.ids: dict[str, list[int] | None] = {}  # token ids per molecule, checked once
        self.rounds = 0
        self.skipped = 0  # rounds with nothing to learn (every score equal)
        self.seconds = 0.0
        self.losses: list[float] = []

    def _ids(self, smiles: str) -> list[int] | None:
        if smiles not in self.ids:
            self.ids[smiles] = self.checker.check(smiles).ids
        return self.ids[smiles]

    def round(self, smiles: Sequence[str], scores: Sequence[float]) -> None:
        """``config.steps`` optimizer steps on batches drawn from the molecules by rank weight.

        Molecules the model cannot spell (none, for molecules it decoded itself) are left out.
        When every score is the same there is no best to move towards (Valsartan SMARTS scores 0
        almost everywhere): the round is skipped and counted in ``skipped``.
        """
        t0 = time.perf_counter()
        rows = [self._ids(s) for s in smiles]
        keep = [i for i, r in enumerate(rows) if r is not None]
        kept_scores = [scores[i] for i in keep]
        if not keep or max(kept_scores) == min(kept_scores):
            self.skipped += 1
            return
        w = rank_weights(kept_scores, self.config.k)
        vae = self.model.vae
        for p in self.frozen:
            p.requires_grad_(False)
        vae.train()
        try:
            for _ in range(self.config.steps):
                pick = self.rng.choice(len(keep), size=self.config.batch_size, p=w)
                batch = [rows[keep[i]] for i in pick]
                ids, lengths = pad_ids(batch, self.model.vocab.pad_id)  # type: ignore[arg-type]
                out = vae(ids.to(self.model.device), lengths.to(self.model.device), beta=self.beta)
                self.optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.losses.append(float(out["loss"].detach()))
        finally:
            vae.eval()
            for p in self.frozen:
                p.requires_grad_(True)
        self.rounds += 1
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def codes(self, smiles: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """Posterior modes under the current weights of the molecules it can spell.

        Uses the token ids checked for the rounds, so re-encoding a population costs no RDKit work.

        Returns:
            The molecules encoded (in order) and their (n, latent_dim) codes.
        """
        known = [s for s in smiles if self._ids(s) is not None]
        if not known:
            return [], torch.empty(0, self.model.latent_dim)
        rows = [self._ids(s) for s in known]
        ids, lengths = pad_ids(rows, self.model.vocab.pad_id)  # type: ignore[arg-type]
        device = self.model.device
        posterior, _ = self.model.vae.encode(ids.to(device), lengths.to(device))
        return known, self.model.vae.latent.mode(posterior).float().cpu()

    def restore(self) -> None:
        """Put the model's original weights back."""
        self.model.vae.load_state_dict(self.original)
        self.model.vae.eval()
