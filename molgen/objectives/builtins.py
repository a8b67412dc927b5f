"""Built-in objectives (one registration each) and building single-valued specs."""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors

from molgen.errors import MolgenError
from molgen.objectives.base import (
    BUILTINS,
    Outcome,
    Scorer,
    SingleObjective,
    available_objectives,
    describe,
    outcome,
    per_molecule,
    reference_mol,
    register_objective,
    tanimoto_to,
    valid_only,
)
from molgen.objectives.user import USER_SPEC, load_user_function, user_scorer


@register_objective("qed")
def _qed() -> Scorer:
    return per_molecule(QED.qed)


@register_objective("logp")
def _logp() -> Scorer:
    return per_molecule(Crippen.MolLogP)  # type: ignore[attr-defined]


@register_objective("tpsa")
def _tpsa() -> Scorer:
    return per_molecule(Descriptors.TPSA)  # type: ignore[attr-defined]


@register_objective("mw")
def _mw() -> Scorer:
    return per_molecule(Descriptors.MolWt)  # type: ignore[attr-defined]


@functools.cache
def sascorer() -> Any:
    """RDKit's contributed SA score module (``Contrib/SA_Score/sascorer.py``)."""
    from rdkit import RDConfig

    folder = str(Path(RDConfig.RDContribDir) / "SA_Score")
    if not Path(folder, "sascorer.py").is_file():
        raise MolgenError(f"the SA score needs RDKit's Contrib SA_Score, not found in {folder}.")
    if folder not in sys.path:
        sys.path.append(folder)
    import sascorer as module  # type: ignore[import-not-found]

    return module


@register_objective("sa")
def _sa() -> Scorer:
    return per_molecule(sascorer().calculateScore)


def penalized_logp(mol: Chem.Mol) -> float:
    """Unnormalised penalized logP: ``MolLogP - SA - max(largest ring size - 6, 0)``.

    The form of most published tables (MolDQN, GraphAF, JT-VAE's constrained optimisation),
    not JT-VAE's z-scored variant; rings are RDKit's (SSSR).
    """
    largest = max((len(ring) for ring in mol.GetRingInfo().AtomRings()), default=0)
    logp = Crippen.MolLogP(mol)  # type: ignore[attr-defined]
    return logp - sascorer().calculateScore(mol) - max(largest - 6, 0)


@register_objective("plogp")
def _plogp() -> Scorer:
    return per_molecule(penalized_logp)


@register_objective("similarity", argument="SMILES")
def _similarity(smiles: str) -> Scorer:
    return per_molecule(tanimoto_to(reference_mol(smiles, "similarity objective")))


@register_objective("smarts", argument="PATTERN")
def _smarts(pattern: str) -> Scorer:
    with rdBase.BlockLogs():
        query = Chem.MolFromSmarts(pattern)
    if query is None:
        raise MolgenError(f"smarts objective: {pattern!r} is not a valid SMARTS pattern.")
    return per_molecule(lambda mol: float(mol.HasSubstructMatch(query)))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("-", " minus ")).strip("_")


@functools.cache
def guacamol_objectives() -> dict[str, Any]:
    """GuacaMol goal-directed objectives (``ScoringFunction``) by slugified benchmark name.

    Plain names are the v2 suite plus the v1-only benchmarks; ``v1_NAME`` is the v1 definition
    of a name both suites have (e.g. v1's ``osimertinib_mpo`` uses an arithmetic mean).
    """
    from molgen.guacamol_adapter import apply_guacamol_shims

    apply_guacamol_shims()  # before guacamol's goal-directed modules are imported
    from guacamol.benchmark_suites import goal_directed_suite_v1, goal_directed_suite_v2

    v2 = {_slug(b.name): b.objective for b in goal_directed_suite_v2()}
    table = dict(v2)
    for bench in goal_directed_suite_v1():
        slug = _slug(bench.name)
        table[f"v1_{slug}" if slug in v2 else slug] = bench.objective
    return dict(sorted(table.items()))


@register_objective("guacamol", argument="NAME")
def _guacamol(name: str) -> Scorer:
    table = guacamol_objectives()
    if name not in table:
        raise MolgenError(
            f"unknown GuacaMol objective {name!r}; choose one of: {', '.join(table)}."
        )
    function = table[name]

    def one(smiles: str) -> Outcome:
        try:
            return outcome(function.score(smiles))
        except Exception as exc:
            return None, describe(exc)

    def batch(smiles: list[str]) -> list[Outcome]:
        try:  # -1 for a parsable molecule GuacaMol rejects is its score, passed through
            return [outcome(v) for v in function.score_list(smiles)]
        except Exception:  # isolate the molecule that breaks the batch
            return [one(s) for s in smiles]

    return valid_only(batch)


def single_objective(spec: str, where: str | None = None) -> SingleObjective:
    """Build a built-in or user-function objective (error messages prefixed with ``where``).

    Raises:
        MolgenError: Unknown name, bad argument, or a user function that cannot be loaded.
    """
    try:
        head, sep, argument = spec.partition(":")
        if head in BUILTINS:
            builtin = BUILTINS[head]
            if builtin.argument is None:
                if sep:
                    raise MolgenError(f"objective {head!r} takes no argument (got {spec!r}).")
                return SingleObjective(spec, spec, builtin.factory())
            if not argument:
                raise MolgenError(
                    f"objective {head!r} needs an argument: {head}:{builtin.argument}."
                )
            return SingleObjective(spec, spec, builtin.factory(argument))
        if user := USER_SPEC.match(spec):
            fn = load_user_function(user["path"], user["func"])
            return SingleObjective(spec, user["func"], user_scorer(fn))
        raise MolgenError(
            f"unknown objective {spec!r}; use one of {', '.join(available_objectives())}, "
            "a profile path/to/profile.toml or a function path/to/file.py:function."
        )
    except MolgenError as exc:
        if where is None:
            raise
        raise MolgenError(f"{where}: {exc}") from exc
