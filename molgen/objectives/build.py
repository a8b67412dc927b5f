"""Building an objective from its spec, and the similarity constraint."""

from __future__ import annotations

from collections.abc import Sequence

from molgen.errors import MolgenError
from molgen.objectives.base import (
    BUILTINS,
    Objective,
    ScoreRecord,
    per_molecule,
    reference_mol,
    tanimoto_to,
)
from molgen.objectives.builtins import single_objective
from molgen.objectives.profile import load_profile

SIMILARITY_COLUMN = "similarity"


class ConstrainedObjective(Objective):
    """An objective whose aggregate is 0 (not a failure) below a similarity to a reference.

    The Tanimoto similarity (Morgan radius 2, 2048 bits) is the extra component ``similarity``
    (raw = transformed).

    Attributes:
        inner: The unconstrained objective.
        similar_to: The reference SMILES.
        min_similarity: The threshold in [0, 1].
    """

    def __init__(self, inner: Objective, similar_to: str, min_similarity: float) -> None:
        if SIMILARITY_COLUMN in inner.component_names:
            raise MolgenError(
                f"component name {SIMILARITY_COLUMN!r} is reserved for the similarity constraint."
            )
        self._similarity = per_molecule(tanimoto_to(reference_mol(similar_to, "similar_to")))
        self.inner = inner
        self.spec = inner.spec
        self.similar_to = similar_to
        self.min_similarity = min_similarity
        self.name = f"{inner.name} (similarity >= {min_similarity:g})"
        self.component_names = [*inner.component_names, SIMILARITY_COLUMN]

    def score(self, smiles: Sequence[str]) -> list[ScoreRecord]:
        """Score molecules: one record per input string, in order."""
        smiles = list(smiles)
        records = self.inner.score(smiles)
        for rec, (sim, _) in zip(records, self._similarity(smiles), strict=True):
            rec.raw[SIMILARITY_COLUMN] = rec.transformed[SIMILARITY_COLUMN] = sim
            if rec.score is not None and sim is not None and sim < self.min_similarity:
                rec.score = 0.0
        return records


def build_objective(
    spec: str, similar_to: str | None = None, min_similarity: float | None = None
) -> Objective:
    """Build an objective from its spec, validating everything now (before any scoring).

    Args:
        spec: ``qed``, ``similarity:SMILES``, ``guacamol:NAME``, ``path/to/profile.toml``,
            ``path/to/file.py:function``, ... (see :mod:`molgen.objectives`).
        similar_to: Reference SMILES of the similarity constraint (needs ``min_similarity``).
        min_similarity: Minimum Tanimoto to ``similar_to``, in [0, 1]; below it the score is 0.
            0 only reports the similarity column.

    Returns:
        The objective.

    Raises:
        MolgenError: Any problem with the spec or the constraint options.
    """
    spec = spec.strip()
    if similar_to is None and min_similarity is not None:
        raise MolgenError("min_similarity needs similar_to (the reference molecule).")
    if similar_to is not None and min_similarity is None:
        raise MolgenError("similar_to needs min_similarity (0 only reports the similarity).")
    if min_similarity is not None and not 0.0 <= min_similarity <= 1.0:
        raise MolgenError(f"min_similarity must be in [0, 1], got {min_similarity}.")
    inner: Objective
    if spec.endswith(".toml") and spec.partition(":")[0] not in BUILTINS:
        inner = load_profile(spec)
    else:
        inner = single_objective(spec)
    if similar_to is None or min_similarity is None:
        return inner
    return ConstrainedObjective(inner, similar_to, float(min_similarity))
