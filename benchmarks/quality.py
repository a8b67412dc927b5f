"""Quality of the four latent families at one training budget, next to published baselines.

Trains each family (spcauchy, vmf, power, gaussian) with the same preset, budget and seed on the
bundled MOSES training set (`molgen train`), then scores each with `molgen evaluate` against the
MOSES test set with 10,000 samples, and writes one Markdown table. Already-trained models can be
scored instead of training (`--model spcauchy=data/pretrained/moses-spcauchy-small.pt`), and a
finished family is reused when its run directory already holds `model.pt` and `eval.json`.

    # the full `small` budget (1 h per family on 2 CPU cores):
    python benchmarks/quality.py --out runs/quality
    # the budget recorded in BENCHMARKS_quality.md (every family 1,000 steps, schedule scaled):
    python benchmarks/quality.py --out runs/quality-1k --max-steps 1000 --max-time 1h \
        --beta-warmup-steps 100 --beta-ramp-steps 500 \
        --model "spcauchy (bundled, 1 h)=data/pretrained/moses-spcauchy-small.pt"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("spcauchy", "vmf", "power", "gaussian")

# Published numbers (other data splits, budgets and hardware): label them as such in the table.
PUBLISHED = [
    # name, validity, uniqueness, novelty, KL score, FCD score, MOSES FCD/Test, SNN, IntDiv
    ("GuacaMol VAE (published)", 0.870, 0.999, 0.974, 0.982, 0.863, None, None, None),
    ("GuacaMol SMILES LSTM (published)", 0.959, 1.000, 0.912, 0.991, 0.913, None, None, None),
    ("MOSES VAE (published)", 0.977, 0.998, 0.695, None, None, 0.099, None, None),
    ("MOSES CharRNN (published)", 0.975, None, 0.842, None, None, 0.073, None, None),
]
TARGETS = {
    "validity": 0.90,
    "uniqueness": 0.99,
    "novelty": 0.90,
    "kl": 0.90,
    "fcd_score": 0.50,
    "recon": 0.60,
}


def _run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}); see {log}")


def train(family: str, out: Path, args: argparse.Namespace) -> Path:
    """Train one family with the shared budget unless its model already exists."""
    model = out / "model.pt"
    if model.exists():
        print(f"{family}: reusing {model}")
        return model
    cmd = [sys.executable, "cli.py", "train", str(args.data), "--out", str(out)]
    cmd += ["--preset", args.preset, "--latent", family, "--seed", str(args.seed)]
    for opt in ("max_steps", "max_time", "beta_warmup_steps", "beta_ramp_steps"):
        value = getattr(args, opt)
        if value is not None:
            cmd += [f"--{opt.replace('_', '-')}", str(value)]
    if out.exists() and (out / "checkpoints" / "last.ckpt").exists():
        cmd.append("--resume")
    _run(cmd, out.parent / f"{out.name}.train.log")
    return model


def evaluate(name: str, model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Score one model with `molgen evaluate` (reusing an existing report)."""
    report = out / "eval.json"
    if not report.exists():
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "cli.py", "evaluate", str(model), "--reference", str(args.reference)]
        cmd += ["-n", str(args.n), "--seed", str(args.seed), "--json", str(report)]
        cmd += ["--report", str(out / "eval.md")]
        start = time.perf_counter()
        _run(cmd, out / "eval.log")
        print(f"{name}: evaluated in {time.perf_counter() - start:.0f} s")
    return json.loads(report.read_text())


def _model_summary(model: Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(model, map_location="cpu", weights_only=True).get("training") or {})


def row(name: str, report: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers for one model."""
    results = {
        k.lower(): v.get("score")
        for k, v in (report.get("guacamol") or {}).get("results", {}).items()
    }

    def guaca(word: str) -> float | None:
        return next((v for k, v in results.items() if word in k), None)

    m = report["metrics"]
    model = report.get("model") or {}
    return {
        "name": name,
        "validity": guaca("validity"),
        "uniqueness": guaca("uniqueness"),
        "novelty": guaca("novelty"),
        "kl": guaca("kl divergence"),
        "fcd_score": guaca("chemnet"),
        "moses_fcd": m.get("fcd"),
        "snn": m.get("snn"),
        "intdiv": m.get("intdiv1"),
        "recon": model.get("reconstruction_exact"),
        "interp_valid": model.get("interpolation_valid"),
        "steps": summary.get("global_step"),
        "wall_min": (summary.get("training_time_s") or summary.get("wall_time_s") or 0) / 60
        or None,
    }


def _rel(path: Path) -> str:
    """A path relative to the checkout when inside it (what a reader can run)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One table: measured rows, then the published baselines."""
    head = (
        "# Model quality on MOSES (`benchmarks/quality.py`)\n\n"
        "| model | validity | uniqueness | novelty | KL score | FCD score | FCD/Test | SNN | "
        "IntDiv | recon. exact | interp. valid | steps | train min |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [r["name"]] + [
            _f(r[k])
            for k in (
                "validity",
                "uniqueness",
                "novelty",
                "kl",
                "fcd_score",
                "moses_fcd",
                "snn",
                "intdiv",
                "recon",
                "interp_valid",
            )
        ]
        cells += [_f(r["steps"]), _f(r["wall_min"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, *vals in PUBLISHED:
        cells = [name] + [_f(v) for v in vals] + ["–"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    budget = ", ".join(
        f"--{k.replace('_', '-')} {getattr(args, k)}"
        for k in ("max_steps", "max_time", "beta_warmup_steps", "beta_ramp_steps")
        if getattr(args, k) is not None
    )
    notes = [
        f"Measured: `{shlex.join(['python', 'benchmarks/quality.py', *sys.argv[1:]])}`.",
        f"Training: `molgen train --preset {args.preset} --seed {args.seed}` "
        f"{budget or '(preset budget)'} on `{_rel(args.data)}`; evaluation: "
        f"`molgen evaluate -n {args.n} --reference {_rel(args.reference)}`.",
        "GuacaMol columns (validity ... FCD score) are guacamol 0.5.5's own benchmarks; "
        "FCD/Test, SNN and IntDiv are the MOSES definitions against the test set; recon. exact "
        "is greedy decoding of the posterior mean of 1,000 test molecules; interp. valid is the "
        "valid fraction along 50 slerp paths of 10 points.",
        "Published rows come from the GuacaMol (Brown et al. 2019) and MOSES (Polykovskiy et "
        "al. 2020) papers: other data splits, budgets (GPU days) and hardware; they are "
        "context, not a same-budget comparison.",
        "Targets for the bundled spCauchy model: "
        + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items())
        + ".",
    ]
    return head + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "quality")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "moses" / "train.csv.gz")
    ap.add_argument("--reference", type=Path, default=REPO / "data" / "moses" / "test.csv.gz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=10000, help="samples per evaluation")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--max-time")
    ap.add_argument("--beta-warmup-steps", type=int)
    ap.add_argument("--beta-ramp-steps", type=int)
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also score an existing model file (repeatable)",
    )
    ap.add_argument("--table", type=Path, default=REPO / "BENCHMARKS_quality.md")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        model = Path(path)
        slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
        report = evaluate(name, model, args.out / f"model-{slug}", args)
        rows.append(row(name, report, _model_summary(model)))
    for family in [f for f in args.families.split(",") if f]:
        if family not in FAMILIES:
            sys.exit(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        run = args.out / family
        model = train(family, run, args)
        report = evaluate(family, model, run, args)
        rows.append(row(family, report, _model_summary(model)))
        args.table.write_text(markdown(rows, args))  # keep partial results
    text = markdown(rows, args)
    args.table.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
