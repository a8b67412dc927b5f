"""Transfer learning: start a run from a trained model (``molgen train DATA --from MODEL``).

The child keeps the parent's architecture, tokenizer and data-step settings. Its vocabulary is the
parent's with the new file's tokens appended, so every old token keeps its id and its learned
rows; the rows of new tokens are initialised from what the parent already knows:

- embedding: the mean of the parent's real-token embeddings (a new token starts as "a typical
  token" instead of random noise the GRUs have never seen), plus small noise so new tokens differ;
- output layer: the mean of the parent's real-token weight rows, and a bias at the parent's lowest
  real-token bias, so a new token starts about as likely as the parent's rarest one: the parent's
  predictions for old molecules barely move, and the new token is reachable from the first step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from molgen.errors import MolgenError
from molgen.tokenizer import SPECIAL_TOKENS, Vocabulary

BUNDLED = "bundled"
# Rows indexed by token id in a MoleculeVAE state dict: (key, kind).
_VOCAB_ROWS = (
    ("embedding.weight", "embedding"),
    ("output.weight", "output"),
    ("output.bias", "bias"),
)
INIT_SCHEMES = ("mean", "random")


@dataclass
class Parent:
    """A parent model read for fine-tuning.

    Attributes:
        path: The model file.
        sha256: The file's SHA-256 (recorded in the child's ``training``).
        content: The model file dict (see :func:`molgen.model.read_model_file`).
    """

    path: Path
    sha256: str
    content: dict[str, Any]

    @property
    def vocab(self) -> Vocabulary:
        """The parent's vocabulary."""
        return Vocabulary.from_dict(self.content["vocabulary"])

    @property
    def final_beta(self) -> float:
        """The KL weight the parent ended its training with (0.1 when it does not say)."""
        return trained_beta(self.content.get("training", {}))


def trained_beta(training: dict[str, Any]) -> float:
    """The final KL weight in a model file's ``training`` dict (0.1 when it does not say)."""
    return float(training.get("train_config", {}).get("beta_max", 0.1))


def resolve_parent_path(value: str | Path) -> Path:
    """``bundled`` -> the bundled default model; anything else is a model file path."""
    if str(value) == BUNDLED:
        from molgen.sampling import DEFAULT_MODEL

        return Path(DEFAULT_MODEL)
    return Path(value)


def load_parent(value: str | Path) -> Parent:
    """Read a parent model file (``bundled`` for the bundled default).

    Raises:
        MolgenError: not a readable molgen model file.
    """
    from molgen.model import read_model_file

    path = resolve_parent_path(value)
    content = read_model_file(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Parent(path=path, sha256=sha, content=content)


def extend_vocabulary(parent: Vocabulary, new_tokens: set[str] | list[str]) -> Vocabulary:
    """The parent's tokens in their order, then the tokens it lacks, sorted."""
    extra = sorted(set(new_tokens) - set(parent.tokens) - set(SPECIAL_TOKENS))
    return Vocabulary([*parent.tokens, *extra])


def extend_state_dict(
    state_dict: dict[str, torch.Tensor],
    old_size: int,
    new_size: int,
    scheme: str = "mean",
    seed: int = 0,
    target: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Grow the token-indexed rows of a MoleculeVAE state dict from ``old_size`` to ``new_size``.

    Old rows are copied exactly. New rows follow ``scheme``: ``mean`` (see the module docstring)
    or ``random`` (the freshly initialised rows of ``target``, a new model's state dict: what a
    model trained from scratch would start with).

    Args:
        state_dict: The parent's weights.
        old_size: The parent's vocabulary size.
        new_size: The child's vocabulary size (>= ``old_size``).
        scheme: ``mean`` or ``random``.
        seed: Seed of the small noise added to new embedding rows.
        target: A new model's state dict (needed for ``random``).

    Returns:
        A new state dict; other tensors are shared with ``state_dict``.
    """
    if new_size < old_size:
        raise MolgenError("the child vocabulary must contain the parent's.")
    if scheme not in INIT_SCHEMES:
        raise MolgenError(f"unknown initialisation {scheme!r}; choose {', '.join(INIT_SCHEMES)}.")
    out = dict(state_dict)
    extra = new_size - old_size
    if extra == 0:
        return out
    gen = torch.Generator().manual_seed(seed)
    real = slice(len(SPECIAL_TOKENS), old_size)  # rows of real tokens (specials are not tokens)
    for key, kind in _VOCAB_ROWS:
        old = state_dict[key]
        if scheme == "random":
            if target is None:
                raise MolgenError("random initialisation needs the new model's weights.")
            rows = target[key][old_size:new_size].clone()
        elif kind == "bias":
            rows = old[real].min().expand(extra).clone()
        else:
            mean = old[real].mean(dim=0, keepdim=True)
            rows = mean.expand(extra, -1).clone()
            if kind == "embedding":
                rows += 0.01 * old[real].std() * torch.randn(rows.shape, generator=gen)
        out[key] = torch.cat([old, rows.to(old.dtype)], dim=0)
    return out
