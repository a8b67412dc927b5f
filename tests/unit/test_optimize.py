"""molgen.optimize: the budgeted cached oracle, decoding, the searches, streaming and Ctrl-C."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from molgen.errors import MolgenError
from molgen.objectives import ScoreRecord
from molgen.optimize import (
    SEARCHES,
    OptimizeConfig,
    Oracle,
    ResultSink,
    decode_codes,
    format_top,
    normalize,
    optimize,
    slerp,
    spcauchy_around,
)

# Alkanes and alcohols: the "molecule" of a code is the one whose direction it is closest to.
MOLECULES = [("C" * k) + ("O" if k % 2 else "") for k in range(1, 25)]
BROKEN = {3, 10}  # codes mapping here decode greedily to an invalid string


class StubModel:
    """Decodes a code to one of MOLECULES (argmax of a fixed projection); sampling re-decodes
    the broken ones to a valid molecule, greedy never does."""

    spherical = True
    latent_dim = 5

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = normalize(torch.randn(len(MOLECULES), self.latent_dim, generator=g))
        self.decode_calls: list[tuple[int, bool]] = []

    def _index(self, z: torch.Tensor) -> list[int]:
        return (normalize(z) @ self.w.T).argmax(-1).tolist()

    def decode(self, z: torch.Tensor, greedy: bool = True, temperature: float = 1.0) -> list[str]:
        self.decode_calls.append((len(z), greedy))
        out = []
        for i in self._index(z):
            if i in BROKEN and greedy:
                out.append("C1CC")  # unclosed ring
            else:
                out.append(MOLECULES[i])
        return out

    def prior_z(self, n: int) -> torch.Tensor:
        return normalize(torch.randn(n, self.latent_dim))

    def encode(self, smiles: list[str]) -> torch.Tensor:
        return torch.stack([self.w[MOLECULES.index(s)] for s in smiles])


class CarbonScorer:
    """Score = number of carbons; molecules listed in ``fail`` fail; counts what it saw."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.seen: list[str] = []
        self.component_names = ["carbons"]

    def score(self, smiles):
        self.seen += list(smiles)
        out = []
        for s in smiles:
            if s in self.fail:
                out.append(ScoreRecord(None, {"carbons": None}, {"carbons": None}, "boom"))
            else:
                c = float(s.count("C"))
                out.append(ScoreRecord(c, {"carbons": c}, {"carbons": c}))
        return out


def test_oracle_scores_each_molecule_once_and_stops_at_the_budget():
    scorer = CarbonScorer()
    oracle = Oracle(scorer, budget=3)
    assert oracle(["CC", "CC", "C", None], 0) == [2.0, 2.0, 1.0, None]
    assert oracle.stats.calls == 2 and oracle.stats.repeats == 1
    scores = oracle(["C", "CCC", "CCCC"], 1)
    assert scores == [1.0, 3.0, None]  # CCCC is past the budget: not scored, no call
    assert scorer.seen == ["CC", "C", "CCC"]
    assert oracle.exhausted and oracle.best is not None and oracle.best.smiles == "CCC"
    assert [f.smiles for f in oracle.top(5)] == ["CCC", "CC", "C"]


def test_oracle_counts_failures_as_calls_and_never_ranks_them():
    oracle = Oracle(CarbonScorer(fail={"CCCCC"}), budget=10)
    assert oracle(["CCCCC", "CC"], 0) == [None, 2.0]
    assert oracle.stats.calls == 2 and oracle.stats.failures == 1
    assert oracle.stats.failure_examples == ["CCCCC: boom"]
    assert [f.smiles for f in oracle.top(5)] == ["CC"]


def test_sink_streams_rows_with_components_and_errors():
    buf = io.StringIO()
    oracle = Oracle(CarbonScorer(fail={"CO"}), 10, ResultSink(buf, ["carbons"]))
    oracle(["CCC", "CO"], 4)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0] == {
        "smiles": "CCC", "score": "3", "call": "1", "generation": "4",
        "carbons_raw": "3", "carbons": "3", "error": "",
    }  # fmt: skip
    assert rows[1]["score"] == "" and rows[1]["error"] == "boom"


def test_decode_codes_retries_only_invalid_greedy_strings_by_sampling():
    model = StubModel()
    z = torch.stack([model.w[0], model.w[3], model.w[5]])
    smiles, decodings = decode_codes(model, z, max_retries=2, retry_seed=0)
    assert smiles == ["CO", "CCCC", "CCCCCC"]  # code 3: greedy string invalid, sampled valid
    assert decodings == 4
    assert model.decode_calls == [(3, True), (1, False)]
    none, n = decode_codes(model, z, max_retries=0, retry_seed=0)
    assert none[1] is None and n == 3


def test_sphere_helpers():
    a = normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(a.norm(dim=-1), torch.ones(2))
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0]])
    mid = slerp(x, y, torch.tensor([0.5]))
    assert torch.allclose(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)
    assert torch.allclose(slerp(x, y, torch.tensor([0.0])), x, atol=1e-6)
    torch.manual_seed(0)
    loc = normalize(torch.randn(2, 8)).repeat_interleave(2000, 0)
    rho = torch.tensor([0.5, 0.95]).repeat_interleave(2000)
    draws = spcauchy_around(loc, rho)
    cos = (draws * loc).sum(-1)
    assert torch.allclose(draws.norm(dim=-1), torch.ones(4000), atol=1e-5)
    assert cos[2000:].median() > cos[:2000].median()  # rho near 1: closer to loc


@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_optimize_spends_the_budget_and_returns_the_best_scored(search):
    model = StubModel()
    scorer = CarbonScorer(fail={"CCCCCCCO"})
    config = OptimizeConfig(budget=15, search=search, population=5, offspring=8, start_size=6)
    res = optimize(model, scorer, config, top_n=4, progress=False)
    assert res.stats.calls == len(set(scorer.seen)) == len(scorer.seen) <= 15
    assert res.stats.calls == 15 or "converged" in res.stats.stop_reason
    scores = [f.score for f in res.top]
    assert scores == sorted(scores, reverse=True)
    for f in res.top:  # the reported score is the objective's value for that molecule
        assert f.score == f.smiles.count("C")
    assert res.curve[-1][1] == res.top[0].score
    again = optimize(StubModel(), CarbonScorer(fail={"CCCCCCCO"}), config, progress=False)
    assert [f.smiles for f in again.top[:4]] == [f.smiles for f in res.top]  # seeded


def test_optimize_from_seed_molecules_scores_them_first():
    scorer = CarbonScorer()
    config = OptimizeConfig(budget=6, population=3, offspring=4)
    res = optimize(StubModel(), scorer, config, seeds=["CCCO", "OCCC", "CCCC"], progress=False)
    assert scorer.seen[:2] == ["CCCO", "CCCC"]  # canonical and de-duplicated
    assert res.start == "2 seed molecules"


def test_optimize_stops_when_nothing_new_is_found():
    config = OptimizeConfig(
        budget=10_000, population=3, offspring=4, stall_generations=3, retrain={"every": 0}
    )  # the stub has no network to retrain
    res = optimize(StubModel(), CarbonScorer(), config, progress=False)
    assert res.stats.calls < 10_000 and "converged" in res.stats.stop_reason


def test_ctrl_c_keeps_what_was_written():
    class Interrupting(CarbonScorer):
        def score(self, smiles):
            if len(self.seen) >= 5:
                raise KeyboardInterrupt
            return super().score(smiles)

    buf = io.StringIO()
    config = OptimizeConfig(budget=1000, population=3, offspring=4, start_size=5)
    res = optimize(
        StubModel(), Interrupting(), config, sink=ResultSink(buf, ["carbons"]), progress=False
    )
    assert res.stats.interrupted and res.stats.stop_reason == "interrupted"
    assert len(buf.getvalue().splitlines()) == 1 + res.stats.calls > 1


def test_config_errors():
    with pytest.raises(MolgenError, match="Unknown search"):
        OptimizeConfig(search="annealing").check()
    with pytest.raises(MolgenError, match="budget"):
        OptimizeConfig(budget=0).check()
    with pytest.raises(MolgenError, match="rho"):
        OptimizeConfig(rho=1.0).check()


def test_format_top_lists_rank_score_and_smiles():
    oracle = Oracle(CarbonScorer(), 10)
    oracle(["CCC", "C"], 0)
    text = format_top(oracle.top(2), ["carbons"])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "carbons"]
    assert lines[1].split()[0] == "1" and lines[1].endswith("CCC")
