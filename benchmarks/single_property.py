"""The classic single-property tasks on ``molgen optimize``: QED, penalized logP, and penalized
logP under a similarity constraint.

* ``qed`` / ``plogp``: ``--budget`` calls per seed; the top-3 values and the top-10 mean of every
  seed (unconstrained, from the best of a prior sample).
* ``constrained``: the ``--starts`` molecules with the lowest penalized logP among the first
  ``--pool`` molecules of the MOSES test set;
  for each, ``--budget-each`` calls starting from its encoding, maximising plogp(x) - plogp(start)
  subject to Tanimoto(Morgan r2) >= ``--delta`` to the start. Reported: the success rate (an
  improved molecule within the constraint was found) and the mean improvement and similarity over
  the successes -- the protocol of Jin et al. 2018 (JT-VAE), on MOSES instead of ZINC.

    python benchmarks/single_property.py --out benchmarks/results/single_property.json --threads 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from molgen.objectives import ScoreRecord, build_objective  # noqa: E402
from molgen.objectives.builtins import penalized_logp  # noqa: E402
from molgen.optimize import DEFAULT_SEARCH, OptimizeConfig, optimize  # noqa: E402
from molgen.sampling import load_model  # noqa: E402


def _plogp(smiles: str) -> float | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else float(penalized_logp(mol))


def _tanimoto(a: str, b: str) -> float:
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fa, fb = (gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in (a, b))
    return float(DataStructs.TanimotoSimilarity(fa, fb))


@dataclass
class Improvement:
    """plogp(x) - plogp(start) when similar enough to the start, else a failure."""

    start: str
    delta: float

    def __post_init__(self) -> None:
        self.base = _plogp(self.start)

    def score(self, smiles: list[str]) -> list[ScoreRecord]:
        """One record per molecule (similarity below delta: a very low score, not a failure)."""
        out = []
        for s in smiles:
            p, sim = _plogp(s), _tanimoto(s, self.start)
            if p is None or self.base is None:
                out.append(ScoreRecord(None, {}, {}, "unparsable"))
                continue
            gain = p - self.base if sim >= self.delta else -100.0
            out.append(ScoreRecord(gain, {"plogp": p, "sim": sim}, {"plogp": p, "sim": sim}))
        return out


def unconstrained(model, name: str, budget: int, seeds: int, search: str) -> dict:
    """Top-3 and top-10 mean per seed for a built-in objective."""
    objective = build_objective(name)
    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        config = OptimizeConfig(budget=budget, seed=seed, search=search)
        res = optimize(model, objective, config, progress=False)
        top = [f.score for f in res.top]
        runs.append(
            {
                "seed": seed,
                "top3": top[:3],
                "top10_mean": float(np.mean(top[:10])),
                "best_smiles": res.top[0].smiles,
                "calls": res.stats.calls,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(name, runs[-1], flush=True)
    return {"budget": budget, "runs": runs}


def constrained(model, starts: int, budget: int, delta: float, pool_size: int, search: str) -> dict:
    """The similarity-constrained plogp improvement task from the lowest-plogp MOSES molecules."""
    with gzip.open(ROOT / "data" / "moses" / "test.csv.gz", "rt") as handle:
        lines = handle.read().splitlines()
    col = lines[0].split(",").index("SMILES")
    pool = [line.split(",")[col] for line in lines[1 : pool_size + 1]]
    scored = sorted((p, s) for s in pool if (p := _plogp(s)) is not None)[:starts]
    rows = []
    for i, (base, start) in enumerate(scored):
        res = optimize(
            model,
            Improvement(start, delta),
            OptimizeConfig(budget=budget, seed=i, population=20, offspring=50, search=search),
            seeds=[start],
            progress=False,
        )
        best = res.top[0] if res.top else None
        ok = best is not None and best.score is not None and best.score > 0
        rows.append(
            {
                "start": start,
                "start_plogp": base,
                "best": best.smiles if best else None,
                "improvement": best.score if ok else 0.0,
                "similarity": best.raw.get("sim") if ok else None,
                "success": ok,
                "calls": res.stats.calls,
            }
        )
        print("constrained", i, rows[-1], flush=True)
    wins = [r for r in rows if r["success"]]
    return {
        "delta": delta,
        "pool": pool_size,
        "budget_each": budget,
        "starts": len(rows),
        "success_rate": len(wins) / max(len(rows), 1),
        "mean_improvement": float(np.mean([r["improvement"] for r in wins])) if wins else 0.0,
        "sd_improvement": float(np.std([r["improvement"] for r in wins])) if wins else 0.0,
        "mean_similarity": float(np.mean([r["similarity"] for r in wins])) if wins else None,
        "rows": rows,
    }


def main() -> None:
    """Run the tasks and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default="qed,plogp,constrained")
    p.add_argument("--budget", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--starts", type=int, default=20)
    p.add_argument("--budget-each", type=int, default=300)
    p.add_argument("--delta", type=float, default=0.4)
    p.add_argument("--pool", type=int, default=20_000)
    p.add_argument("--model", default=None)
    p.add_argument("--search", default=DEFAULT_SEARCH)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/single_property.json")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    results: dict = {"model": str(model.path), "threads": args.threads, "search": args.search}
    for task in args.tasks.split(","):
        if task == "constrained":
            results[task] = constrained(
                model, args.starts, args.budget_each, args.delta, args.pool, args.search
            )
        else:
            results[task] = unconstrained(model, task, args.budget, args.seeds, args.search)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
