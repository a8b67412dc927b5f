"""Compare ``molgen optimize`` settings on a few GuacaMol v2 benchmarks at a small budget.

Each argument after the benchmark list is one ``OptimizeConfig`` as JSON; the script prints each
setting's guacamol score per benchmark (top-k scoring of the best molecules found) and the total.
It is how the default search settings were chosen (BENCHMARKS_goal.md):

    python benchmarks/optimize_variants.py \\
        celecoxib_rediscovery,albuterol_similarity,median_molecules_1,osimertinib_mpo \\
        '{"budget": 2000, "rho_jitter": 0, "temperature": 0}' '{"budget": 2000}' \\
        '{"budget": 2000, "search": "cma"}'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from molgen.goal_directed import GuacamolScorer, select, suite  # noqa: E402
from molgen.optimize import OptimizeConfig, optimize  # noqa: E402
from molgen.sampling import load_model  # noqa: E402


def main() -> None:
    """Run every setting on every named benchmark and print one line per setting."""
    from guacamol.goal_directed_score_contributions import compute_global_score

    torch.set_num_threads(1)
    model = load_model()
    benchmarks = select(suite("v2"), sys.argv[1].split(","))
    for text in sys.argv[2:]:
        config = json.loads(text)
        total, cells = 0.0, []
        for b in benchmarks:
            k = max(b.contribution_specification.top_counts)
            t0 = time.perf_counter()
            res = optimize(
                model, GuacamolScorer(b.objective), OptimizeConfig(**config), top_n=k,
                progress=False,
            )  # fmt: skip
            scores = [f.score for f in res.top] + [0.0] * (k - len(res.top))
            score, _ = compute_global_score(b.contribution_specification, scores)
            total += score
            rho = np.mean(res.rho_history[-10:]) if res.rho_history else float("nan")
            cells.append(f"{b.name}={score:.3f} ({time.perf_counter() - t0:.0f}s, rho {rho:.2f})")
        print(config, f"total={total:.3f}", *cells, flush=True)


if __name__ == "__main__":
    main()
