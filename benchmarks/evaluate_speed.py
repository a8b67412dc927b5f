"""Time `molgen evaluate` on a samples file against a large reference, cold and warm cache.

Default: 10,000 molecules of the MOSES test-scaffolds set as "samples" against the 176k MOSES
test set as reference (no model needed), all metrics and GuacaMol's benchmarks. The first run
uses an empty cache folder (reference statistics computed), the second the filled one.

    python benchmarks/evaluate_speed.py --output /tmp/evaluate_speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from molgen.evaluate import EvaluateConfig, evaluate

REPO = Path(__file__).resolve().parent.parent


def _run(args: argparse.Namespace, cache: Path) -> tuple[float, dict]:
    config = EvaluateConfig(
        n=args.n,
        seed=0,
        guacamol=not args.no_guacamol,
        n_jobs=args.jobs,
        cache_dir=str(cache),
        progress=not args.quiet,
    )
    start = time.perf_counter()
    result = evaluate(
        Path(args.reference), samples_path=Path(args.samples), train_path=args.train, config=config
    )
    return time.perf_counter() - start, result.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=str(REPO / "data/moses/test.csv.gz"))
    parser.add_argument("--samples", default=str(REPO / "data/moses/test_scaffolds.csv.gz"))
    parser.add_argument("--train", type=Path, default=None, help="training set for novelty")
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--no-guacamol", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp) / "cache"
        cold_s, cold = _run(args, cache)
        warm_s, warm = _run(args, cache)
    load_after = os.getloadavg()

    stages = list(dict.fromkeys([*cold["timings_s"], *warm["timings_s"]]))
    lines = [
        f"Samples: `{Path(args.samples).name}` (first {cold['metrics']['n']}), reference: "
        f"`{Path(args.reference).name}` ({cold['inputs']['reference']['n']} molecules), "
        f"training set: `{args.train.name if args.train else 'none'}`, "
        f"GuacaMol: {'off' if args.no_guacamol else 'on'}.",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f}.",
        "",
        "| stage | cold cache (s) | warm cache (s) |",
        "|---|---|---|",
    ]
    for stage in stages:
        c, w = cold["timings_s"].get(stage, "-"), warm["timings_s"].get(stage, "-")
        lines.append(f"| {stage} | {c} | {w} |")
    for part, c in cold["timings_moses_metrics_s"].items():
        w = warm["timings_moses_metrics_s"].get(part, "-")
        lines.append(f"| &nbsp;&nbsp;of which MOSES {part} | {c} | {w} |")
    lines.append(f"| **wall clock** | **{cold_s:.0f}** | **{warm_s:.0f}** |")
    lines += ["", "| metric | value |", "|---|---|"]
    for key in ("validity", "uniqueness", "novelty", "fcd", "snn", "frag", "scaf", "intdiv1",
                "intdiv2", "filters", "filters_reference"):  # fmt: skip
        value = warm["metrics"][key]
        lines.append(f"| {key} | {'n/a' if value is None else f'{value:.4f}'} |")
    if warm["guacamol"]:
        for name, res in warm["guacamol"]["results"].items():
            score = res["score"]
            lines.append(f"| GuacaMol {name} | {'n/a' if score is None else f'{score:.4f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
