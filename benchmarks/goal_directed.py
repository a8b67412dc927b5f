"""GuacaMol goal-directed suite at a fixed call budget: molgen optimize against two baselines.

Every method gets the same budget of oracle calls per benchmark (distinct molecules scored) and
the same MOSES data, and is run through guacamol's own harness (``molgen.goal_directed``):

* ``molgen``: ``molgen optimize`` on the bundled model (or ``--model``), search ``--search``
  (default cma, as ``molgen optimize``).
* ``moses``: best of MOSES -- the top scorers of a fixed random MOSES training subsample of the
  size of the budget.
* ``graph-ga``: Graph GA from the ``mol-ga`` package, started from a random MOSES subsample
  (``--ga-start`` molecules, part of the budget), with molecules beyond the budget left unscored.

    python benchmarks/goal_directed.py --methods molgen,moses,graph-ga --budget 10000 \\
        --out benchmarks/results/goal_directed_v2.json --threads 1

Each method's guacamol JSON goes beside ``--out``; the summary JSON (per-benchmark score, calls,
seconds) is rewritten after every benchmark, and ``--resume`` skips benchmarks already in it.

To use both cores, run two halves of the suite (``--only``) into two ``--out`` files at once, then
join them in suite order: ``--merge A.json,B.json --out ALL.json`` (each method's seconds are the
sum over its benchmarks, ``wall_seconds`` the longest half).
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# molgen.goal_directed applies guacamol's shims before importing guacamol's modules.
from molgen.goal_directed import GoalDirectedGenerator, run_goal_directed  # noqa: E402

MOSES_TRAIN = ROOT / "data" / "moses" / "train.csv.gz"
# Published GuacaMol v2 totals (Brown et al. 2019, ChEMBL-based, unlimited calls).
PUBLISHED_V2 = {
    "Graph GA (ChEMBL)": 17.983,
    "SMILES LSTM (ChEMBL)": 17.341,
    "Best of ChEMBL": 12.144,
}


def moses_smiles() -> list[str]:
    """The MOSES training SMILES (column ``SMILES``)."""
    with gzip.open(MOSES_TRAIN, "rt") as handle:
        lines = handle.read().splitlines()
    col = lines[0].split(",").index("SMILES")
    return [line.split(",")[col] for line in lines[1:]]


def moses_subsample(n: int, seed: int) -> list[str]:
    """A fixed random subsample of the MOSES training set."""
    pool = moses_smiles()
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]


class BestOfMoses(GoalDirectedGenerator):  # type: ignore[misc]
    """Scores a fixed MOSES subsample of the budget's size and returns its top scorers."""

    def __init__(self, budget: int, seed: int) -> None:
        self.pool = moses_subsample(budget, seed)

    def generate_optimized_molecules(
        self, scoring_function: Any, number_molecules: int, starting_population: Any = None
    ) -> list[str]:
        """Top ``number_molecules`` of the subsample."""
        scores = scoring_function.score_list(self.pool)
        ranked = sorted(zip(scores, self.pool, strict=True), reverse=True)
        return [s for _, s in ranked[:number_molecules]]


class BudgetedFunction:
    """A batch scoring function that scores at most ``budget`` distinct molecules.

    Molecules past the budget are answered with -inf (left unscored: no oracle call), so the GA
    discards them; ``evaluated`` keeps the scored ones in order.
    """

    def __init__(self, scoring_function: Any, budget: int) -> None:
        self.f = scoring_function
        self.budget = budget
        self.evaluated: dict[str, float] = {}

    def __call__(self, smiles: list[str]) -> list[float]:
        """Scores (cached; -inf past the budget)."""
        new = [s for s in dict.fromkeys(smiles) if s not in self.evaluated]
        new = new[: max(self.budget - len(self.evaluated), 0)]
        if new:
            for s, v in zip(new, self.f.score_list(new), strict=True):
                self.evaluated[s] = float(v)
        return [self.evaluated.get(s, -float("inf")) for s in smiles]


class GraphGA(GoalDirectedGenerator):  # type: ignore[misc]
    """Graph GA (``mol-ga``) from a MOSES start population, within the call budget."""

    def __init__(self, budget: int, seed: int, start: int, population: int, offspring: int) -> None:
        self.budget = budget
        self.seed = seed
        self.start = moses_subsample(start, seed)
        self.population = population
        self.offspring = offspring

    def generate_optimized_molecules(
        self, scoring_function: Any, number_molecules: int, starting_population: Any = None
    ) -> list[str]:
        """Run the GA until the budget is spent; top scorers of everything it scored."""
        from mol_ga import default_ga

        f = BudgetedFunction(scoring_function, self.budget)
        start = list(starting_population) if starting_population else self.start
        generations = max(1, -(-(self.budget - len(start)) // self.offspring) + 5)
        default_ga(
            starting_population_smiles=start,
            scoring_function=f,
            max_generations=generations,
            offspring_size=self.offspring,
            population_size=self.population,
            rng=random.Random(self.seed),
        )
        best = heapq.nlargest(number_molecules, f.evaluated.items(), key=lambda kv: kv[1])
        return [s for s, _ in best]


def _method(name: str, args: argparse.Namespace) -> Any:
    if name == "moses":
        return BestOfMoses(args.budget, args.seed)
    if name == "graph-ga":
        return GraphGA(args.budget, args.seed, args.ga_start, args.ga_population, args.ga_offspring)
    from molgen.goal_directed import LatentGoalDirectedGenerator
    from molgen.optimize import OptimizeConfig
    from molgen.retrain import RetrainConfig
    from molgen.sampling import load_model

    config = OptimizeConfig(
        budget=args.budget,
        search=args.search,
        seed=args.seed,
        retrain=RetrainConfig(every=args.retrain_every),
    )
    return LatentGoalDirectedGenerator(load_model(args.model), config)


def merge(parts: list[Path], out: Path, suite_name: str) -> None:
    """Join summaries (and their guacamol JSONs) of disjoint benchmark sets, in suite order."""
    from molgen.goal_directed import benchmark_slug, suite

    order = {benchmark_slug(b.name): i for i, b in enumerate(suite(suite_name))}
    loaded = [json.loads(p.read_text()) for p in parts]
    summary = {k: v for k, v in loaded[0].items() if k != "methods"}
    summary["methods"] = {}
    summary["merged_from"] = [p.name for p in parts]
    for name in loaded[0]["methods"]:
        entries = [d["methods"][name] for d in loaded if name in d["methods"]]
        rows = sorted(
            (r for e in entries for r in e["rows"]),
            key=lambda r: order[benchmark_slug(r["benchmark"])],
        )
        summary["methods"][name] = {
            "rows": rows,
            "seconds": sum(e["seconds"] for e in entries),
            "wall_seconds": max(e["seconds"] for e in entries),
            "total": sum(r["score"] for r in rows),
            "settings": entries[0].get("settings"),
        }
        guaca = [p.with_name(f"{p.stem}_{name}_guacamol.json") for p in parts]
        payloads = [json.loads(g.read_text()) for g in guaca if g.exists()]
        if payloads:
            joined = payloads[0]
            joined["results"] = sorted(
                (r for pl in payloads for r in pl["results"]),
                key=lambda r: order[benchmark_slug(r["benchmark_name"])],
            )
            out.with_name(f"{out.stem}_{name}_guacamol.json").write_text(
                json.dumps(joined, indent=4)
            )
    out.write_text(json.dumps(summary, indent=2) + "\n")
    for name, entry in summary["methods"].items():
        print(f"{name}: total {entry['total']:.3f} ({len(entry['rows'])} benchmarks)")


def main() -> None:
    """Run the methods and write the summary JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="molgen,moses,graph-ga")
    p.add_argument("--suite", default="v2", choices=["v2", "v1", "trivial"])
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--only", default=None, help="Comma-separated benchmark names.")
    p.add_argument("--model", default=None)
    p.add_argument("--search", default="cma", choices=["cma", "spcauchy"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retrain-every", type=int, default=1000, help="molgen: calls between retraining rounds."
    )
    p.add_argument("--ga-start", type=int, default=1000)
    p.add_argument("--ga-population", type=int, default=1000)
    p.add_argument("--ga-offspring", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/goal_directed_v2.json")
    p.add_argument("--resume", action="store_true", help="Keep benchmarks already in --out.")
    p.add_argument("--merge", default=None, help="Comma-separated summaries to join into --out.")
    args = p.parse_args()
    if args.merge:
        merge([Path(x) for x in args.merge.split(",")], args.out, args.suite)
        return

    import torch

    torch.set_num_threads(args.threads)
    summary: dict[str, Any] = {"suite": args.suite, "budget": args.budget, "methods": {}}
    if args.resume and args.out.exists():
        summary = json.loads(args.out.read_text())
    summary["published_v2_totals"] = PUBLISHED_V2
    from molgen.goal_directed import benchmark_slug, select, suite

    names = [
        benchmark_slug(b.name)
        for b in select(suite(args.suite), args.only and args.only.split(","))
    ]
    for name in args.methods.split(","):
        entry = summary["methods"].setdefault(name, {"rows": [], "seconds": 0.0})
        done = {benchmark_slug(r["benchmark"]) for r in entry["rows"]}
        todo = [n for n in names if n not in done]
        if not todo:
            print(f"{name}: kept from {args.out}")
            continue
        generator = _method(name, args)
        guaca_json = args.out.with_name(f"{args.out.stem}_{name}_guacamol.json")
        merged = json.loads(guaca_json.read_text()) if guaca_json.exists() and done else None
        for bench in todo:  # one at a time, saved after each: a killed run loses one benchmark
            t0 = time.perf_counter()
            part = args.out.with_name(f"{args.out.stem}_{name}_part.json")
            report = run_goal_directed(
                generator, args.suite, part, only=[bench], budget=args.budget, search=name
            )
            payload = json.loads(part.read_text())
            part.unlink()
            if merged is None:
                merged = payload
            else:
                merged["results"] += payload["results"]
            guaca_json.write_text(json.dumps(merged, indent=4))
            entry["rows"] += report.rows
            entry["seconds"] += time.perf_counter() - t0
            entry["total"] = sum(r["score"] for r in entry["rows"])
            entry["settings"] = {
                "search": args.search if name == "molgen" else None,
                "retrain_every": args.retrain_every if name == "molgen" else None,
                "ga_start": args.ga_start if name == "graph-ga" else None,
                "ga_population": args.ga_population if name == "graph-ga" else None,
                "ga_offspring": args.ga_offspring if name == "graph-ga" else None,
                "seed": args.seed,
                "threads": args.threads,
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(summary, indent=2) + "\n")
            r = report.rows[0]
            print(
                f"{name} {r['benchmark']:<28} {r['score']:.3f} {r['calls']:6d} {r['seconds']:.0f}s",
                flush=True,
            )
        print(f"{name}: total {entry['total']:.3f} in {entry['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
