"""Score records, the Objective base class, the built-in registry and per-molecule helpers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator

from molgen.errors import MolgenError

#: One molecule's value from a single scorer: ``(value, None)`` or ``(None, error)``.
Outcome = tuple[float | None, str | None]
#: A single-valued scorer: SMILES in, one outcome per SMILES out (never raises for a molecule).
Scorer = Callable[[list[str]], list[Outcome]]

UNPARSABLE = "unparsable SMILES"
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


@dataclass
class ScoreRecord:
    """The score of one molecule.

    Attributes:
        score: The aggregate (maximised); None when the molecule failed.
        raw: Component name -> raw value (None where that component failed).
        transformed: Component name -> value after its transform (== raw without a transform).
        error: Short reason when the molecule failed.
    """

    score: float | None
    raw: dict[str, float | None]
    transformed: dict[str, float | None]
    error: str | None = None


class Objective:
    """A scoring objective built from a text spec (see :mod:`molgen.objectives`).

    Attributes:
        spec: The text it was built from (workers rebuild it with ``build_objective``).
        name: Short display name.
        component_names: Component names in a stable order (CSV columns of ``raw``/``transformed``).
    """

    spec: str
    name: str
    component_names: list[str]

    def score(self, smiles: Sequence[str]) -> list[ScoreRecord]:
        """Score molecules: one record per input string, in order; never raises for a molecule."""
        raise NotImplementedError


class SingleObjective(Objective):
    """A single-valued objective (a built-in or a user function): one component, score == raw."""

    def __init__(self, spec: str, name: str, scorer: Scorer) -> None:
        self.spec = spec
        self.name = name
        self.component_names = [name]
        self._scorer = scorer

    def score(self, smiles: Sequence[str]) -> list[ScoreRecord]:
        """Score molecules: one record per input string, in order."""
        records = []
        for value, error in self._scorer(list(smiles)):
            records.append(ScoreRecord(value, {self.name: value}, {self.name: value}, error))
        return records


# ---------------------------------------------------------------------------------------------
# Registry of built-in objectives
# ---------------------------------------------------------------------------------------------


@dataclass
class Builtin:
    """A registered built-in objective.

    Attributes:
        factory: Returns the :data:`Scorer` (called with the argument text when it takes one).
        argument: Placeholder of the text after ``name:`` (e.g. ``SMILES``); None: no argument.
    """

    factory: Callable[..., Scorer]
    argument: str | None


BUILTINS: dict[str, Builtin] = {}


def register_objective(name: str, argument: str | None = None) -> Callable[[Any], Any]:
    """Register a built-in objective: a factory returning a :data:`Scorer`.

    Example:
        >>> @register_objective("heavy_atoms")
        ... def _heavy_atoms() -> Scorer:
        ...     return per_molecule(lambda mol: mol.GetNumHeavyAtoms())

    Args:
        name: The spec name (the text before ``:``).
        argument: Placeholder for the text after ``name:`` (e.g. ``"SMILES"``); None when the
            objective takes no argument. With one, the factory is called with that text and must
            raise :class:`MolgenError` for a bad one (so it is caught at build time).

    Returns:
        A decorator registering the factory and returning it unchanged.
    """

    def decorator(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        BUILTINS[name] = Builtin(factory, argument)
        return factory

    return decorator


def available_objectives() -> list[str]:
    """Built-in spec forms, e.g. ``['guacamol:NAME', 'logp', ..., 'similarity:SMILES', ...]``."""
    return sorted(n if b.argument is None else f"{n}:{b.argument}" for n, b in BUILTINS.items())


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """A one-line, bounded description of an exception for ``ScoreRecord.error``."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def outcome(value: Any) -> Outcome:
    """Check a scorer's value: a finite real number, else a failure."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if not isinstance(value, numbers.Real):  # bools count as 0/1
        return None, f"not a number: {type(value).__name__}"
    number = float(value)
    return (number, None) if math.isfinite(number) else (None, f"not finite: {number}")


def parse(smiles: Sequence[Any]) -> list[Chem.Mol | None]:
    """RDKit molecules (None for anything that is not a parsable, non-empty SMILES string)."""
    mols: list[Chem.Mol | None] = []
    with rdBase.BlockLogs():  # invalid strings are expected: fail them, do not spam stderr
        for text in smiles:
            mol = Chem.MolFromSmiles(text) if isinstance(text, str) and text.strip() else None
            mols.append(mol if mol is not None and mol.GetNumAtoms() > 0 else None)
    return mols


def per_molecule(fn: Callable[[Chem.Mol], Any]) -> Scorer:
    """A :data:`Scorer` from a function of one RDKit molecule (its exceptions become failures)."""

    def scorer(smiles: list[str]) -> list[Outcome]:
        out: list[Outcome] = []
        for mol in parse(smiles):
            if mol is None:
                out.append((None, UNPARSABLE))
                continue
            try:
                out.append(outcome(fn(mol)))
            except Exception as exc:  # a descriptor failing on one molecule fails that molecule
                out.append((None, describe(exc)))
        return out

    return scorer


def valid_only(batch_scorer: Callable[[list[str]], list[Outcome]]) -> Scorer:
    """A :data:`Scorer` that fails unparsable SMILES and hands only the others to a batch scorer."""

    def scorer(smiles: list[str]) -> list[Outcome]:
        mols = parse(smiles)
        valid = [s for s, m in zip(smiles, mols, strict=True) if m is not None]
        scored = iter(batch_scorer(valid) if valid else [])
        return [(None, UNPARSABLE) if m is None else next(scored) for m in mols]

    return scorer


def tanimoto_to(reference: Chem.Mol) -> Callable[[Chem.Mol], float]:
    """Tanimoto similarity (Morgan radius 2, 2048 bits) of a molecule to ``reference``."""
    ref_fp = _MORGAN.GetFingerprint(reference)
    return lambda mol: DataStructs.TanimotoSimilarity(ref_fp, _MORGAN.GetFingerprint(mol))


def reference_mol(smiles: str, what: str) -> Chem.Mol:
    """Parse a reference SMILES given by the user.

    Raises:
        MolgenError: It does not parse.
    """
    mol = parse([smiles])[0]
    if mol is None:
        raise MolgenError(f"{what}: {smiles!r} is not a valid SMILES.")
    return mol
