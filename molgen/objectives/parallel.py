"""Scoring with several processes, each rebuilding the objective from its spec."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from molgen.errors import MolgenError
from molgen.objectives.base import Objective, ScoreRecord, describe
from molgen.objectives.build import build_objective

_WORKER_OBJECTIVE: Objective | None = None


def _worker_init(spec: str, similar_to: str | None, min_similarity: float | None) -> None:
    global _WORKER_OBJECTIVE
    _WORKER_OBJECTIVE = build_objective(spec, similar_to, min_similarity)


def _worker_score(smiles: list[str]) -> list[ScoreRecord]:
    if _WORKER_OBJECTIVE is None:
        raise RuntimeError("scoring worker was not initialised")
    return _WORKER_OBJECTIVE.score(smiles)


class ParallelScorer:
    """Score with ``jobs`` processes (``jobs == 1``: in this process). A context manager.

    The objective is built here first, so spec errors surface at once; then each worker rebuilds
    it from the spec (user functions loaded from a file do not pickle by reference). Workers are
    spawned, not forked (the parent may hold torch threads), once, and serve every :meth:`score`
    call until :meth:`close`. Batches are split into ``jobs`` even chunks; order is kept.

    Attributes:
        objective: The objective built in this process.
        jobs: Number of worker processes.
    """

    def __init__(
        self,
        spec: str,
        jobs: int = 1,
        similar_to: str | None = None,
        min_similarity: float | None = None,
    ) -> None:
        if jobs < 1:
            raise MolgenError(f"jobs must be >= 1, got {jobs}.")
        self.objective = build_objective(spec, similar_to, min_similarity)
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            self._pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(spec, similar_to, min_similarity),
            )

    @property
    def spec(self) -> str:
        """The objective's spec."""
        return self.objective.spec

    @property
    def name(self) -> str:
        """The objective's display name."""
        return self.objective.name

    @property
    def component_names(self) -> list[str]:
        """The objective's component names (CSV columns)."""
        return self.objective.component_names

    def score(self, smiles: Sequence[str]) -> list[ScoreRecord]:
        """Score molecules: one record per input string, in order.

        Raises:
            MolgenError: A worker process died (e.g. a user function crashed the interpreter).
        """
        smiles = list(smiles)
        if self._pool is None or len(smiles) < 2:
            return self.objective.score(smiles)
        bounds = np.linspace(0, len(smiles), min(self.jobs, len(smiles)) + 1).round().astype(int)
        chunks = [smiles[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        try:
            results = list(self._pool.map(_worker_score, chunks))
        except BrokenProcessPool as exc:
            raise MolgenError(f"a scoring worker process died: {describe(exc)}") from exc
        return [record for chunk in results for record in chunk]

    def close(self) -> None:
        """Shut the worker processes down (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ParallelScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
