"""The paper's MNIST table with our code: test reconstruction loss per latent family and d.

Runs d x family x seed MNIST VAEs, then writes a Markdown table next to Sablica & Hornik's
numbers (40 epochs, 5 seeds). Runs go seed-major (all configurations for seed 0 first), the table
is rewritten after every run, and finished runs are reused from --runs-dir, so a killed job loses
at most one run. Two protocols (``--protocol``):

* ``molgen`` (default, ``molgen.mnist``): binarized MNIST, molgen's architecture; the table shows
  the minimum-over-epochs test reconstruction. Not the paper's setup, so not directly comparable.
* ``paper`` (``molgen.mnist_paper``): the authors' own protocol (grey-level targets, their
  architecture, lr and warm-up per d, test-set checkpoint selection); the table shows recon, KL
  and -ELBO of the selected checkpoint and of the last epoch, next to the paper's recon mean +- sd
  and -ELBO. Runs made separately with
  ``molgen mnist --protocol paper --out runs/mnist_paper/<family>_d<d>_s<seed>`` are collected
  from --runs-dir (any folder below it whose results.json matches the settings).

A saved run is reused only for its own protocol.

The paper protocol, one worker per core on CPU:

    python benchmarks/mnist_table.py --protocol paper --workers 2 --threads 1 \
        --out BENCHMARKS_mnist_paper.md

The paper's full protocol (40 epochs, 5 seeds, all 60,000 training images) on a GPU:

    python benchmarks/mnist_table.py --epochs 40 --seeds 5 --device cuda \
        --out BENCHMARKS_mnist_full.md

On CPU, the glibc allocator settings from FIELD_NOTES.md make training ~1.4x faster:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
        python benchmarks/mnist_table.py --epochs 3 --seeds 1 ...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from molgen.mnist import FAMILIES, MnistConfig, ambient_dim, load_mnist, run_mnist
from molgen.mnist_paper import (
    PAPER_BATCH_SIZE,
    PaperMnistConfig,
    paper_lr,
    paper_warmup_steps,
    run_paper,
)

PROTOCOLS = ("molgen", "paper")
# Test reconstruction loss of the selected checkpoint (mean, sd over 5 seeds) and -ELBO, after
# 40 epochs (arXiv 2506.21278).
PAPER_FULL = {
    2: {
        "gaussian": (133.07, 0.59, 140.00),
        "power": (132.53, 0.82, 139.29),
        "spcauchy": (130.29, 0.40, 137.95),
        "vmf": (132.03, 1.32, 138.84),
    },
    3: {
        "gaussian": (118.65, 1.07, 127.80),
        "power": (119.04, 0.48, 128.00),
        "spcauchy": (116.44, 0.63, 126.29),
        "vmf": (118.25, 0.37, 127.29),
    },
    5: {
        "gaussian": (102.40, 1.25, 114.92),
        "power": (106.09, 0.65, 118.20),
        "spcauchy": (100.22, 0.21, 113.46),
        "vmf": (104.55, 0.44, 116.84),
    },
    10: {
        "gaussian": (81.07, 0.23, 100.47),
        "power": (84.12, 0.54, 103.70),
        "spcauchy": (80.30, 0.38, 100.73),
        "vmf": (83.38, 0.36, 102.97),
    },
    20: {
        "gaussian": (75.08, 0.27, 98.28),
        "power": (82.29, 6.02, 108.07),
        "spcauchy": (74.43, 0.30, 101.80),
        "vmf": (97.25, 45.06, 118.82),
    },
}
# Paper protocol: a cell is within target when |ours - paper| <= max(2 nats, 2 x paper's sd).
TARGET_NATS = 2.0
PAPER = {d: {f: v[0] for f, v in row.items()} for d, row in PAPER_FULL.items()}
NAMES = {"gaussian": "Gaussian", "power": "Power Spherical", "spcauchy": "spCauchy", "vmf": "vMF"}
# Settings that must match for a saved run to be reused (protocol molgen: in its config).
MATCH_KEYS = (
    "latent",
    "dim",
    "epochs",
    "seed",
    "batch_size",
    "lr",
    "lr_warmup_steps",
    "train_subset",
    "test_subset",
)
# Protocol paper: these in the saved config, and the effective settings in PAPER_EFFECTIVE_KEYS.
PAPER_CONFIG_KEYS = ("latent", "dim", "epochs", "seed", "train_subset", "test_subset")
PAPER_EFFECTIVE_KEYS = ("batch_size", "lr", "lr_warmup_steps", "reset_lr_every_step")
DEFAULT_RUNS_DIR = {"molgen": Path("runs/mnist_table"), "paper": Path("runs/mnist_paper")}


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="molgen",
        help="molgen: binarized, molgen's model; paper: the authors' own protocol",
    )
    p.add_argument("--epochs", type=int, default=40, help="epochs per run (paper: 40)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..k-1 per configuration (paper: 5)")
    p.add_argument("--dims", type=_ints, default=[2, 3, 5, 10, 20], help="comma-separated d")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated latent families")
    p.add_argument("--train-subset", type=int, default=None, help="first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="first N test images")
    fixed = " (molgen protocol only; the paper protocol fixes it)"
    p.add_argument("--batch-size", type=int, default=None, help="default 128" + fixed)
    p.add_argument("--lr", type=float, default=None, help="default 3e-4" + fixed)
    p.add_argument(
        "--lr-warmup-steps", type=int, default=None, help="linear lr ramp, default 250" + fixed
    )
    p.add_argument(
        "--ll-images", type=int, default=None, help="test images for the IS log-lik." + fixed
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="per-run results.json, reused when settings and protocol match (default: "
        "runs/mnist_table for molgen, runs/mnist_paper for paper)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    args = p.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; choose from {FAMILIES}")
    molgen_only = {
        "--batch-size": args.batch_size,
        "--lr": args.lr,
        "--lr-warmup-steps": args.lr_warmup_steps,
        "--ll-images": args.ll_images,
    }
    if args.protocol == "paper":
        given = [flag for flag, value in molgen_only.items() if value is not None]
        if given:
            p.error(f"{', '.join(given)}: fixed by (or not part of) --protocol paper; drop them")
    else:
        defaults = {"batch_size": 128, "lr": 3e-4, "lr_warmup_steps": 250, "ll_images": 0}
        for key, value in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.runs_dir is None:
        args.runs_dir = DEFAULT_RUNS_DIR[args.protocol]
    return args


def _paper_effective(config: PaperMnistConfig) -> dict:
    """The settings a paper-protocol run with ``config`` actually uses (None -> the paper's)."""
    return {
        "batch_size": config.batch_size or PAPER_BATCH_SIZE,
        "lr": config.lr if config.lr is not None else paper_lr(config.dim),
        "lr_warmup_steps": (
            config.lr_warmup_steps
            if config.lr_warmup_steps is not None
            else paper_warmup_steps(config.dim)
        ),
        "reset_lr_every_step": config.reset_lr_every_step,
    }


def _matches(saved: dict, config: MnistConfig | PaperMnistConfig) -> bool:
    """Whether a saved results.json is a finished run of ``config`` under the same protocol."""
    want = asdict(config)
    saved_config = saved.get("config") or {}
    if isinstance(config, PaperMnistConfig):
        if saved.get("protocol") != "paper":
            return False
        effective = _paper_effective(config)
        return all(saved_config.get(k) == want[k] for k in PAPER_CONFIG_KEYS) and all(
            saved.get(k) == effective[k] for k in PAPER_EFFECTIVE_KEYS
        )
    # Results written before the protocol field existed are molgen's.
    if saved.get("protocol", "molgen") != "molgen":
        return False
    return all(saved_config.get(k) == want[k] for k in MATCH_KEYS)


def _load(path: Path) -> dict | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _saved(
    path: Path, config: MnistConfig | PaperMnistConfig, others: list[dict] | None = None
) -> dict | None:
    """The saved run of ``config``: its own folder first, then any other results.json given."""
    if path.is_file():
        saved = _load(path)
        if saved is not None and _matches(saved, config):
            return saved
    for saved in others or []:
        if _matches(saved, config):
            return saved
    return None


def _cell(runs: list[dict]) -> str:
    values = [r["test_reconstruction"] for r in runs]
    if not values:
        return "—"
    collapsed = sum(bool(r.get("collapsed")) for r in runs)
    note = f"n={len(values)}" + (f", {collapsed} collapsed" if collapsed else "")
    if len(values) == 1:
        return f"{values[0]:.2f} ({note})"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({note})"


def render(
    results: list[dict], args: argparse.Namespace, command: str, wall: float, done: bool
) -> str:
    by = {}
    for r in results:
        by.setdefault((r["dim"], r["latent"]), []).append(r)
    train = results[0]["train_size"] if results else args.train_subset
    test = results[0]["test_size"] if results else args.test_subset
    lines = [
        "## MNIST, protocol molgen: minimum test reconstruction loss (nats per image, lower is"
        " better)",
        "",
        f"Ours: {args.epochs} epochs, seeds 0..{args.seeds - 1}, {train} training / {test} test"
        f" images, batch {args.batch_size}, AdamW lr {args.lr} (linear warm-up over"
        f" {args.lr_warmup_steps} steps), KL weight 1, dynamic binarization (train),"
        " fixed binarization (test). Paper: 40 epochs, 5 seeds, full MNIST, its own protocol"
        " (see --protocol paper), so these numbers are not directly comparable.",
        "d is the paper's d: the spherical latents live on S^d in R^(d+1), the Gaussian in R^d.",
        "",
        "| d (ambient sphere / Gaussian) | "
        + " | ".join(f"{NAMES[f]} ours | {NAMES[f]} paper" for f in args.families)
        + " |",
        "|---|" + "---|---|" * len(args.families),
    ]
    for d in args.dims:
        cells = []
        for f in args.families:
            paper = PAPER.get(d, {}).get(f)
            cells += [_cell(by.get((d, f), [])), f"{paper:.2f}" if paper is not None else "—"]
        amb = f"{ambient_dim('spcauchy', d)} / {ambient_dim('gaussian', d)}"
        lines.append(f"| {d} ({amb}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Final-epoch test metrics (mean over seeds): reconstruction / KL / ELBO.",
        "",
        "| d | " + " | ".join(NAMES[f] for f in args.families) + " |",
        "|---|" + "---|" * len(args.families),
    ]
    for d in args.dims:
        cells = []
        for f in args.families:
            rs = by.get((d, f), [])
            if not rs:
                cells.append("—")
                continue
            m = {
                k: statistics.mean(r[k] for r in rs)
                for k in ("test_reconstruction_final", "test_kl", "test_elbo")
            }
            cells.append(
                f"{m['test_reconstruction_final']:.1f} / {m['test_kl']:.1f} / {m['test_elbo']:.1f}"
            )
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "Checks against the brief's targets:", ""]
    for d in args.dims:
        sc = [r["test_reconstruction"] for r in by.get((d, "spcauchy"), [])]
        ga = [r["test_reconstruction"] for r in by.get((d, "gaussian"), [])]
        parts = []
        if sc and d in PAPER:
            gap = statistics.mean(sc) - PAPER[d]["spcauchy"]
            parts.append(
                f"spCauchy − paper = {gap:+.2f} nats ({'within' if abs(gap) <= 2 else 'outside'} 2)"
            )
        if sc and ga and d <= 10:
            diff = statistics.mean(sc) - statistics.mean(ga)
            parts.append(f"spCauchy − Gaussian = {diff:+.2f} ({'<' if diff < 0 else '>='} 0)")
        vm = [r["test_reconstruction"] for r in by.get((d, "vmf"), [])]
        if vm and d == 20:
            spread = statistics.stdev(vm) if len(vm) > 1 else float("nan")
            parts.append(f"vMF sd over seeds = {spread:.2f} (paper ±45)")
        if parts:
            lines.append(f"- d={d}: " + "; ".join(parts))
    n_runs = len(args.dims) * len(args.families) * args.seeds
    threads = args.threads or (1 if args.workers > 1 else torch.get_num_threads())
    lines += [
        "",
        f"Runs: {len(results)} of {n_runs}{'' if done else ' (in progress)'}; "
        f"wall time {wall / 60:.1f} min on {results[0]['device'] if results else args.device}"
        f" ({args.workers} worker process(es) x {threads} torch thread(s)).",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
    ]
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render_paper(
    results: list[dict], args: argparse.Namespace, command: str, wall: float, done: bool
) -> str:
    """The paper-protocol table: one row per (d, family), ours next to the paper's."""
    by: dict[tuple[int, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["dim"], r["latent"]), []).append(r)
    train = results[0]["train_size"] if results else args.train_subset or 60000
    test = results[0]["test_size"] if results else args.test_subset or 10000
    lines = [
        "## MNIST, protocol paper: test losses of the selected checkpoint and the last epoch"
        " (nats per image, lower is better)",
        "",
        f"Ours: protocol paper (`molgen.mnist_paper`, the authors' code's setup: grey-level"
        f" targets, their architecture, AdamW with weight decay 0.01, batch 128, lr 3e-4 with a"
        f" 200-step warm-up for d <= 3, else 1e-4), {args.epochs} epochs, seeds"
        f" 0..{args.seeds - 1}, {train} training / {test} test images. Paper: 40 epochs,"
        " 5 seeds, full MNIST, the same protocol.",
        "Selected = the epoch with the lowest test reconstruction (the paper's selection, made"
        " on the test set), re-scored after re-seeding; last = the final epoch, re-scored the"
        " same way. Cells: mean ± sd over seeds. d is the paper's d: spherical latents on S^d"
        " in R^(d+1), the Gaussian in R^d.",
        f"Within target: |ours − paper| <= max({TARGET_NATS:g} nats, 2 × the paper's sd) for the"
        " selected reconstruction.",
        "",
        "| d | family | n | recon ours (selected) | recon paper | Δ recon | within target"
        " | −ELBO ours (selected) | −ELBO paper | Δ −ELBO | KL ours (selected)"
        " | recon (last) | KL (last) | −ELBO (last) | selected epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in args.dims:
        for f in args.families:
            rs = by.get((d, f), [])
            paper = PAPER_FULL.get(d, {}).get(f)
            p_recon = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "—"
            p_elbo = f"{paper[2]:.2f}" if paper else "—"
            if not rs:
                cells = ["0", "—", p_recon, "—", "—", "—", p_elbo] + ["—"] * 6
            else:
                recon = [r["selected_reconstruction"] for r in rs]
                neg_elbo = [r["selected_neg_elbo"] for r in rs]
                d_recon = statistics.mean(recon) - paper[0] if paper else None
                d_elbo = statistics.mean(neg_elbo) - paper[2] if paper else None
                within = "—"
                if paper and d_recon is not None:
                    ok = abs(d_recon) <= max(TARGET_NATS, 2 * paper[1])
                    within = "yes" if ok else "no"
                collapsed = sum(bool(r.get("collapsed")) for r in rs)
                cells = [
                    str(len(rs)) + (f" ({collapsed} collapsed)" if collapsed else ""),
                    _mean_sd(recon),
                    p_recon,
                    f"{d_recon:+.2f}" if d_recon is not None else "—",
                    within,
                    _mean_sd(neg_elbo),
                    p_elbo,
                    f"{d_elbo:+.2f}" if d_elbo is not None else "—",
                    _mean_sd([r["selected_kl"] for r in rs]),
                    _mean_sd([r["last_reconstruction"] for r in rs]),
                    _mean_sd([r["last_kl"] for r in rs]),
                    _mean_sd([r["last_neg_elbo"] for r in rs]),
                    ", ".join(str(r["best_epoch"]) for r in sorted(rs, key=lambda r: r["seed"])),
                ]
            lines.append(f"| {d} | {NAMES[f]} | " + " | ".join(cells) + " |")
    n_runs = len(args.dims) * len(args.families) * args.seeds
    threads = args.threads or (1 if args.workers > 1 else torch.get_num_threads())
    lines += [
        "",
        f"Runs: {len(results)} of {n_runs}{'' if done else ' (in progress)'}; "
        f"wall time {wall / 60:.1f} min on {results[0]['device'] if results else args.device}"
        f" ({args.workers} worker process(es) x {threads} torch thread(s)); per-run"
        f" results.json under {args.runs_dir}.",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
    ]
    return "\n".join(lines)


_DATA = None


def _init_worker(data_dir: Path | None, threads: int | None) -> None:
    global _DATA
    if threads:
        torch.set_num_threads(threads)
    _DATA = load_mnist(data_dir)


def _run_one(config: MnistConfig | PaperMnistConfig) -> dict:
    if isinstance(config, PaperMnistConfig):
        return asdict(run_paper(config, _DATA))
    return asdict(run_mnist(config, _DATA))


def _configs(args: argparse.Namespace) -> list[MnistConfig | PaperMnistConfig]:
    jobs = [(s, d, f) for s in range(args.seeds) for d in args.dims for f in args.families]
    configs: list[MnistConfig | PaperMnistConfig] = []
    for seed, d, fam in jobs:
        if args.protocol == "paper":
            configs.append(
                PaperMnistConfig(
                    latent=fam,
                    dim=d,
                    epochs=args.epochs,
                    seed=seed,
                    train_subset=args.train_subset,
                    test_subset=args.test_subset,
                    device=args.device,
                    progress=False,
                    plots=False,
                    # the folder `molgen mnist --protocol paper` uses by default
                    out=str(args.runs_dir / f"{fam}_d{d}_s{seed}"),
                )
            )
            continue
        configs.append(
            MnistConfig(
                latent=fam,
                dim=d,
                epochs=args.epochs,
                seed=seed,
                batch_size=args.batch_size,
                lr=args.lr,
                lr_warmup_steps=args.lr_warmup_steps,
                train_subset=args.train_subset,
                test_subset=args.test_subset,
                ll_images=args.ll_images,
                device=args.device,
                progress=False,
                plots=False,
                out=str(args.runs_dir / f"{fam}_d{d}_seed{seed}"),
            )
        )
    return configs


def _describe(saved: dict) -> str:
    head = f"{saved['latent']:9s} d={saved['dim']:<3d} seed={saved['seed']}"
    if saved.get("protocol") == "paper":
        return (
            f"{head}  selected (epoch {saved['best_epoch']}) recon"
            f" {saved['selected_reconstruction']:.2f} -ELBO {saved['selected_neg_elbo']:.2f}"
            f"  last recon {saved['last_reconstruction']:.2f}"
            f" -ELBO {saved['last_neg_elbo']:.2f}  ({saved['wall_seconds']:.0f} s)"
        )
    return (
        f"{head}  min test recon {saved['test_reconstruction']:.2f}"
        f"  final {saved['test_reconstruction_final']:.2f}  KL {saved['test_kl']:.2f}"
        f"  ({saved['wall_seconds']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/mnist_table.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    table = render_paper if args.protocol == "paper" else render
    configs = _configs(args)
    results: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(configs), desc=f"MNIST table runs (protocol {args.protocol})")

    def record(saved: dict) -> None:
        results.append(saved)
        bar.update()
        tqdm.write(_describe(saved))
        if args.out:
            text = table(results, args, command, time.perf_counter() - t0, done=False)
            args.out.write_text(text)

    # Runs saved anywhere under --runs-dir (e.g. by `molgen mnist --out ...`) are reused too.
    others = [s for p in sorted(args.runs_dir.rglob("results.json")) if (s := _load(p))]
    todo = []
    for config in configs:
        saved = _saved(Path(config.out or "") / "results.json", config, others)
        if saved is not None:
            record(saved)
        else:
            todo.append(config)
    if args.workers <= 1:
        _init_worker(args.data_dir, args.threads)
        for config in todo:
            record(_run_one(config))
    else:
        # Separate processes with 1 thread each: on a crowded CPU, one process with several
        # OpenMP threads spends its time waiting for the slowest thread.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            args.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(args.data_dir, args.threads or 1),
        ) as pool:
            for future in as_completed([pool.submit(_run_one, c) for c in todo]):
                record(future.result())
    bar.close()
    text = table(results, args, command, time.perf_counter() - t0, done=True)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
