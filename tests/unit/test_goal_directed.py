"""molgen.goal_directed: benchmark names, the guacamol scorer, the generator's molecule count."""

from __future__ import annotations

import pytest

from molgen.errors import MolgenError
from molgen.goal_directed import (
    GuacamolScorer,
    LatentGoalDirectedGenerator,
    benchmark_slug,
    select,
    suite,
)
from molgen.optimize import OptimizeConfig
from tests.unit.test_optimize import StubModel


def test_slugs_and_selection():
    assert benchmark_slug("Osimertinib MPO") == "osimertinib_mpo"
    assert benchmark_slug("C9H10N2O2PF2Cl") == "c9h10n2o2pf2cl"
    v2 = suite("v2")
    assert len(v2) == 20
    picked = select(v2, ["deco_hop", "Celecoxib rediscovery"])
    assert [b.name for b in picked] == ["Celecoxib rediscovery", "Deco Hop"]  # suite order
    with pytest.raises(MolgenError, match="median_molecules_1"):
        select(v2, ["median_molecules_9"])
    with pytest.raises(MolgenError, match="Unknown suite"):
        suite("v3")


class FakeScoring:
    """guacamol-like: -1 for what it cannot parse; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def score_list(self, smiles):
        self.calls += len(smiles)
        return [-1.0 if "X" in s else len(s) / 100 for s in smiles]


def test_scorer_maps_guacamol_failures():
    records = GuacamolScorer(FakeScoring()).score(["CCO", "X"])
    assert records[0].score == pytest.approx(0.03) and records[0].error is None
    assert records[1].score is None and records[1].error


def test_generator_returns_exactly_the_molecules_asked_for():
    scoring = FakeScoring()
    gen = LatentGoalDirectedGenerator(
        StubModel(), OptimizeConfig(budget=12, population=4, offspring=6, start_size=5)
    )
    out = gen.generate_optimized_molecules(scoring, number_molecules=3)
    assert len(out) == len(set(out)) == 3
    assert scoring.calls <= 12  # the budget holds
    assert gen.runs[0].calls == scoring.calls
