"""How well a model fits each molecule: importance-sampled log-likelihood, ELBO, reconstruction.

For a molecule x with posterior q(z|x), K samples z_k ~ q(z|x) give

* ``log_likelihood``: log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) (importance sampling
  with the posterior as proposal; a lower bound in expectation that tightens as K grows, and
  equals a single-sample ELBO estimate at K = 1);
* ``recon_nll``: -(1/K) sum_k log p(x|z_k), the reconstruction term of training (nats);
* ``kl``: KL(q(z|x) || p(z)), exact (the training KL);
* ``elbo``: -(recon_nll + kl).

log p(x|z) is the teacher-forced log-probability of the molecule's tokens and its end token.
All sums are accumulated in float64 with logsumexp. ``score_file`` streams a file like
``molgen.encode.encode_file`` and writes one row per molecule.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from molgen.encode import (
    TABLE_SUFFIXES,
    RejectedWriter,
    RunStats,
    TableWriter,
    encodable_chunks,
    length_sorted,
    output_names,
    output_paths,
)
from molgen.errors import MolgenError
from molgen.inputs import InputChecker, pad_ids
from molgen.latent import kl_to_prior
from molgen.outputs import atomic_output, atomic_path
from molgen.records import MoleculeFile, prefetched

SCORE_COLUMNS = (
    "log_likelihood",
    "log_likelihood_per_token",
    "elbo",
    "recon_nll",
    "kl",
)
MAX_SEQUENCES = 512  # decoder rows per forward pass (molecules x samples): bounds memory


@dataclass
class ImportanceTerms:
    """Per-sample terms of the estimate for a batch (shapes (K, B) unless noted), float64.

    Attributes:
        log_px: log p(x|z_k), teacher-forced.
        log_pz: log p(z_k) under the prior.
        log_qz: log q(z_k|x) under the posterior.
        kl: Exact KL(q(z|x) || p(z)), shape (B,).
    """

    log_px: Tensor
    log_pz: Tensor
    log_qz: Tensor
    kl: Tensor

    @property
    def log_weights(self) -> Tensor:
        """The log importance weights log p(x|z_k) + log p(z_k) - log q(z_k|x), shape (K, B)."""
        return self.log_px + self.log_pz - self.log_qz


@torch.inference_mode()
def importance_terms(
    vae: Any, ids: Tensor, lengths: Tensor, samples: int, max_sequences: int = MAX_SEQUENCES
) -> ImportanceTerms:
    """Sample z_k ~ q(z|x) and evaluate the terms of the estimate (uses torch's global RNG).

    Args:
        vae: A ``MoleculeVAE`` (eval mode).
        ids: (B, T) padded ids ``[bos, ..., eos, pad...]``.
        lengths: (B,) lengths including bos and eos.
        samples: K, samples per molecule (>= 1).
        max_sequences: Decoder rows per pass; samples are drawn in groups to stay under it.
    """
    if samples < 1:
        raise MolgenError(f"--samples must be at least 1, got {samples}.")
    posterior, prior = vae.encode(ids, lengths)
    kl = kl_to_prior(posterior, prior).double()
    batch = ids.shape[0]
    group = max(1, min(samples, max_sequences // max(batch, 1)))
    parts: dict[str, list[Tensor]] = {"px": [], "pz": [], "qz": []}
    done = 0
    while done < samples:
        k = min(group, samples - done)
        z = posterior.sample(torch.Size([k]))  # (k, B, d)
        parts["qz"].append(_event_log_prob(posterior, z).double())
        parts["pz"].append(_event_log_prob(prior, z).double())
        log_px = sequence_log_prob(vae, z.reshape(k * batch, -1), ids.repeat(k, 1))
        parts["px"].append(log_px.view(k, batch))
        done += k
    return ImportanceTerms(
        torch.cat(parts["px"]), torch.cat(parts["pz"]), torch.cat(parts["qz"]), kl
    )


@torch.inference_mode()
def sequence_log_prob(vae: Any, z: Tensor, ids: Tensor) -> Tensor:
    """Teacher-forced log p(x|z) of each sequence (its tokens and eos; padding ignored), float64.

    Args:
        vae: A ``MoleculeVAE``.
        z: (N, latent_dim) codes.
        ids: (N, T) padded ids ``[bos, ..., eos, pad...]``.
    """
    targets = ids[:, 1:]
    logits = vae.decode_logits(z, ids[:, :-1])
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    return -(ce.double() * (targets != vae.pad_id)).sum(-1)


def _event_log_prob(dist: Any, z: Tensor) -> Tensor:
    out = dist.log_prob(z)
    # a factorised distribution (a plain Normal) gives per-coordinate densities
    return out.sum(-1) if out.dim() == z.dim() else out


def scores_from_terms(terms: ImportanceTerms) -> dict[str, Tensor]:
    """log_likelihood, elbo, recon_nll and kl per molecule (float64, shape (B,))."""
    k = terms.log_px.shape[0]
    recon = -terms.log_px.mean(0)
    return {
        "log_likelihood": torch.logsumexp(terms.log_weights, 0) - math.log(k),
        "elbo": -(recon + terms.kl),
        "recon_nll": recon,
        "kl": terms.kl,
    }


def score_ids(
    model: Any, ids: Tensor, lengths: Tensor, samples: int, max_sequences: int = MAX_SEQUENCES
) -> dict[str, Tensor]:
    """Scores of a padded id batch (see the module docstring), on the CPU, float64."""
    terms = importance_terms(
        model.vae, ids.to(model.device), lengths.to(model.device), samples, max_sequences
    )
    return {k: v.cpu() for k, v in scores_from_terms(terms).items()}


def score_smiles(
    model: Any, smiles: list[str], samples: int = 100, seed: int = 0
) -> dict[str, Tensor]:
    """Scores of molecules that must all be encodable (a convenience for notebooks and tests).

    Raises:
        MolgenError: a molecule the model cannot encode.
    """
    rows, _ = InputChecker.for_model(model).to_ids(smiles)
    ids, lengths = pad_ids(rows, model.vocab.pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return score_ids(model, ids, lengths, samples)


@dataclass
class ScoreOptions:
    """Settings of :func:`score_file`.

    Attributes:
        samples: K, importance samples per molecule.
        seed: Seed of the samples (same file, options and seed: same scores).
        smiles_column: SMILES column (None: detected).
        sep: Delimiter (None: sniffed).
        id_columns: Input columns to copy to the output (None: all but the SMILES column).
        max_sequences: Decoder rows per pass (molecules x samples).
        chunk: Molecules read and written together.
    """

    samples: int = 100
    seed: int = 0
    smiles_column: str | None = None
    sep: str | None = None
    id_columns: list[str] | None = None
    max_sequences: int = MAX_SEQUENCES
    chunk: int = 256


def score_file(
    model: Any,
    path: Path | str,
    output: Path | str,
    options: ScoreOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Score every molecule of a file; write ``line``, kept columns, ``smiles`` and the scores.

    Rejected rows go to ``out.rejected.csv`` as for ``encode_file``; files replace existing ones
    only when the run succeeds.

    Args:
        model: A loaded ``MolGenModel``.
        path: The molecule file.
        output: ``.csv`` or ``.parquet``.
        options: Samples, seed, reading settings.
        on_progress: Called with the number of input bytes read so far, after each chunk.

    Returns:
        The run's counts (``done`` is 0 when no molecule could be scored: the files are written).

    Raises:
        MolgenError: unreadable input, or an output that cannot be written.
    """
    options = options or ScoreOptions()
    if options.samples < 1:
        raise MolgenError(f"--samples must be at least 1, got {options.samples}.")
    output = Path(output)
    paths = output_paths(output, [path, getattr(model, "path", None)], TABLE_SUFFIXES)
    checker = InputChecker.for_model(model)
    stats = RunStats()
    batch = max(1, options.max_sequences // options.samples)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(
            MoleculeFile(path, options.smiles_column, options.sep, options.id_columns)
        )
        rejected = RejectedWriter(stack.enter_context(atomic_output(paths[1], newline="")))
        names = output_names(["line"], source.columns, ["smiles", "n_tokens", *SCORE_COLUMNS])
        kinds = ["int"] + ["str"] * (len(source.columns) + 1) + ["int"]
        kinds += ["f8"] * len(SCORE_COLUMNS)
        if output.suffix.lower() == ".parquet":
            target: Any = stack.enter_context(atomic_path(output))
        else:
            target = stack.enter_context(atomic_output(output, newline=""))
        table = TableWriter(target, names, kinds)
        stack.enter_context(torch.random.fork_rng(devices=[]))
        torch.manual_seed(options.seed)
        chunks = encodable_chunks(iter(source), checker, stats, rejected, options.chunk)
        for chunk in prefetched(chunks):
            n = len(chunk)
            result = {name: torch.empty(n, dtype=torch.float64) for name in SCORE_COLUMNS}
            for positions, rows in length_sorted(chunk, batch):
                ids, lengths = pad_ids(rows, model.vocab.pad_id)
                got = score_ids(model, ids, lengths, options.samples, options.max_sequences)
                index = torch.tensor(positions)
                n_tokens = (lengths - 1).double()  # the tokens and eos: what the decoder predicts
                got["log_likelihood_per_token"] = got["log_likelihood"] / n_tokens
                for name in SCORE_COLUMNS:
                    result[name][index] = got[name]
            columns: list[Any] = [[r.line for r, _ in chunk]]
            columns += [[r.columns[j] for r, _ in chunk] for j in range(len(source.columns))]
            columns += [[item.smiles for _, item in chunk]]
            columns += [[len(item.ids or ()) - 1 for _, item in chunk]]
            columns += [result[name].numpy() for name in SCORE_COLUMNS]
            table.write(columns)
            stats.done += n
            if on_progress is not None:
                on_progress(source.bytes_read)
        table.close()
        stats.seconds = time.perf_counter() - start
    return stats


__all__ = [
    "SCORE_COLUMNS",
    "ImportanceTerms",
    "ScoreOptions",
    "importance_terms",
    "score_file",
    "score_ids",
    "score_smiles",
    "scores_from_terms",
    "sequence_log_prob",
]
