"""Which training recipe reaches quality fastest on CPUs: equal wall-clock budgets, same seed.

Each recipe trains from scratch on the bundled MOSES training set with the `small` preset's model
for the same `--budget`, one after the other (one training at a time, `--threads` torch threads),
and is scored with `molgen evaluate -n 10000 --no-guacamol` against the MOSES test set: single-pass
validity (temperature 1), FCD/Test, exact reconstruction of 1,000 test molecules, and the
optimizer steps the budget allowed. Writes a Markdown table, a JSON file and a plot.

Recipes (all other settings are the `small` preset's):
- `seed`:   the landed recipe: constant learning rate, random batches, KL ramp in steps only
- `budget`: the new `small` preset: length-bucketed batches, cosine learning rate to the end of
            the budget, KL ramp that ends by half the budget at the latest
- `budget-b64`: the same with batch 64 (more, cheaper steps in the same time)

    python benchmarks/time_to_quality.py --out runs/ttq --budget 20m --recipes seed,budget
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES: dict[str, dict[str, Any]] = {
    "seed": dict(lr_schedule="constant", lr_warmup_steps=0, bucket_batches=0,
                 beta_budget_fraction=0.0),
    "budget": dict(),  # the small preset as it is now
    "budget-b64": dict(batch_size=64),
}  # fmt: skip


def train_recipe(name: str, out: Path, budget: str, threads: int, seed: int) -> Path:
    from molgen.data import DEFAULT_DATA, DataConfig
    from molgen.train import train
    from molgen.train_config import resolve_configs

    run = out / name
    if (run / "model.pt").exists():
        return run / "model.pt"
    overrides = {**RECIPES[name], "max_time": budget, "threads": threads, "seed": seed}
    model, config = resolve_configs("small", {}, overrides)
    print(f"== {name}: {json.dumps(asdict(config))}", flush=True)
    train(DEFAULT_DATA, run, DataConfig(seed=seed), model, config, preset="small", progress=False)
    return run / "model.pt"


def evaluate(model: Path, n: int) -> dict[str, Any]:
    out = model.parent / "eval.json"
    if not out.exists():
        cmd = ["molgen", "evaluate", str(model), "--reference", "data/moses/test.csv.gz",
               "-n", str(n), "--no-guacamol", "--n-interp", "0", "--json", str(out)]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def pick(report: dict[str, Any], *names: str) -> Any:
    """First value found under any of ``names`` anywhere in the nested report."""
    stack = [report]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name in names:
                if name in node and not isinstance(node[name], dict):
                    return node[name]
            stack.extend(node.values())
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/ttq"))
    ap.add_argument("--budget", default="20m")
    ap.add_argument("--recipes", default="seed,budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=10000)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    rows = []
    for name in args.recipes.split(","):
        t0 = time.time()
        load0 = os.getloadavg()[0]
        model = train_recipe(name, args.out, args.budget, args.threads, args.seed)
        summary = torch.load(model, weights_only=True)["training"]
        report = evaluate(model, args.n)
        rows.append({
            "recipe": name,
            "budget": args.budget,
            "steps": summary["global_step"],
            "train_s": summary["training_time_s"],
            "load_at_start": load0,
            "validity": pick(report, "validity"),
            "fcd_test": pick(report, "fcd", "FCD/Test", "fcd_test"),
            "exact_reconstruction": pick(report, "exact_reconstruction", "reconstruction_exact"),
            "wall_s": round(time.time() - t0, 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "ttq.json").write_text(json.dumps(rows, indent=1))
    lines = ["| recipe | budget | steps | validity (1 pass) | FCD/Test | exact recon. |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['budget']} | {r['steps']} | {r['validity']:.3f} | "
            f"{r['fcd_test']:.2f} | {r['exact_reconstruction']:.3f} |"
        )
    (args.out / "ttq.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(
        axes, ("validity", "fcd_test", "exact_reconstruction"),
        ("single-pass validity", "FCD/Test (lower is better)", "exact reconstruction"),
        strict=True,
    ):  # fmt: skip
        ax.bar([r["recipe"] for r in rows], [r[key] for r in rows], color="tab:blue")
        ax.set_title(f"{title}\n({args.budget} of training each)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "ttq.png", dpi=110)


if __name__ == "__main__":
    main()
