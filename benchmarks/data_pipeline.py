"""Benchmark: read + validate + canonicalize + tokenize a SMILES file (default: full MOSES train).

Prints a Markdown table (optionally also written to --output): wall time and rows/s of
``molgen.data.prepare_dataset`` end to end, peak memory (ru_maxrss of this process and of its
largest worker), and where the time goes (single-process per-molecule costs on a sample).

    python benchmarks/data_pipeline.py                      # full MOSES train, all cores
    python benchmarks/data_pipeline.py --jobs 2 --output BENCHMARKS_data.md
    python benchmarks/data_pipeline.py --jobs 2 --floor-only   # RDKit's own cost: the floor
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from molgen.data import (
    DEFAULT_DATA,
    DataConfig,
    _canonical_from_mol,
    _resolve_jobs,
    prepare_dataset,
)
from molgen.readers import read_smiles_file
from molgen.tokenizer import get_tokenizer


def _maxrss_mib(who: int) -> float:
    # Linux reports kilobytes (macOS bytes); this project runs on Linux.
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(r.ru_utime + r.ru_stime for r in usage)


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def stage_costs(path: Path, sample: int, representation: str) -> list[tuple[str, float]]:
    """Per-molecule cost (microseconds) of each step, single process, on the first rows."""
    from rdkit import Chem, rdBase

    t0 = time.perf_counter()
    values, _ = read_smiles_file(path)
    t_read = time.perf_counter() - t0
    n_all = len(values)
    values = [v.strip() for v in values[:sample]]
    tokenize = get_tokenizer(representation).tokenize
    with rdBase.BlockLogs():
        t0 = time.perf_counter()
        mols = [Chem.MolFromSmiles(v) for v in values]
        t_parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        canonical = [
            _canonical_from_mol(m, v, True, True) for m, v in zip(mols, values, strict=True)
        ]
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in canonical:
            tokenize(s)
        t_tok = time.perf_counter() - t0
    n = len(values)
    return [
        (f"read file ({n_all:,} rows, pandas), per row", t_read / n_all * 1e6),
        ("RDKit MolFromSmiles (parse + sanitize), per molecule", t_parse / n * 1e6),
        ("largest fragment + MolToSmiles (canonical), per molecule", t_write / n * 1e6),
        (f"tokenize ({representation}), per molecule", t_tok / n * 1e6),
    ]


def rdkit_floor(values: list[str], sample: int, jobs: int) -> str:
    """Best-of-3 per-molecule cost of RDKit's own steps, and the wall time they imply.

    The lower bound any pipeline that validates and canonicalizes with RDKit meets on ``jobs``
    cores, even with perfect parallelism and nothing else to do. Also times the cheapest
    validating parse found (no sanitization in the parser, then ``SanitizeMol``), which molgen
    does not use because its canonical output differs from ``MolFromSmiles``'s on some rows.
    """
    from rdkit import Chem, rdBase

    n_rows = len(values)
    values = [v.strip() for v in values[:sample]]

    def best(fn: Any) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times) / len(values) * 1e6, out

    def parse_then_sanitize() -> list[Any]:
        mols = []
        for v in values:
            m = Chem.MolFromSmiles(v, sanitize=False)
            if m is not None:
                try:
                    Chem.SanitizeMol(m)
                except Exception:  # noqa: BLE001 - invalid rows are simply not valid here
                    m = None
            mols.append(m)
        return mols

    with rdBase.BlockLogs():
        t_full, mols = best(lambda: [Chem.MolFromSmiles(v) for v in values])
        t_raw, _ = best(lambda: [Chem.MolFromSmiles(v, sanitize=False) for v in values])
        t_cheap, cheap = best(parse_then_sanitize)
        t_write, ref = best(lambda: [Chem.MolToSmiles(m) if m else None for m in mols])
        alt = [Chem.MolToSmiles(m) if m else None for m in cheap]
    differ = sum(a != b for a, b in zip(ref, alt, strict=True))
    bound = (t_full + t_write) * n_rows / 1e6 / jobs
    bound_cheap = (t_cheap + t_write) * n_rows / 1e6 / jobs
    rows = [
        ("MolFromSmiles (parse + sanitize + stereo), per molecule", f"{t_full:.1f} µs"),
        (
            "MolFromSmiles(sanitize=False) (parse only: validates nothing), per molecule",
            f"{t_raw:.1f} µs",
        ),
        ("parse only + SanitizeMol (cheapest validating parse), per molecule", f"{t_cheap:.1f} µs"),
        ("MolToSmiles (canonical), per molecule", f"{t_write:.1f} µs"),
        (
            "canonical SMILES where the cheapest parse differs from MolFromSmiles",
            f"{differ} of {len(values):,}",
        ),
        (f"MolFromSmiles + MolToSmiles, {n_rows:,} rows on {jobs} ideal cores", f"{bound:.0f} s"),
        (
            f"cheapest parse + MolToSmiles, {n_rows:,} rows on {jobs} ideal cores",
            f"{bound_cheap:.0f} s",
        ),
    ]
    return "| RDKit step (best of 3, 1 process) | value |\n|---|---|\n" + "".join(
        f"| {a} | {b} |\n" for a, b in rows
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="SMILES file (default: MOSES train)"
    )
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (0: all cores)")
    ap.add_argument("--representation", default="smiles", choices=["smiles", "selfies"])
    ap.add_argument("--sample", type=int, default=20000, help="rows for the per-step breakdown")
    ap.add_argument(
        "--limit", type=int, default=0, help="use only the header + first N lines (0: all)"
    )
    ap.add_argument("--output", type=Path, default=None, help="also write the table here")
    ap.add_argument(
        "--floor-only",
        action="store_true",
        help="only time RDKit's own per-molecule steps and the wall-time floor they imply",
    )
    args = ap.parse_args()
    if args.floor_only:
        jobs = _resolve_jobs(args.jobs)
        table = rdkit_floor(read_smiles_file(args.data)[0], args.sample, jobs)
        table += f"\nLoad average (1/5/15 min) after: {_loadavg()}\n"
        print(table)
        if args.output:
            args.output.write_text(table, encoding="utf-8")
        return

    load_before = _loadavg()
    config = DataConfig(representation=args.representation, n_jobs=args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.limit:  # the header and first N lines, streamed (keeps peak memory honest)
            data = Path(tmp) / args.data.name.removesuffix(".gz")
            opener = gzip.open if args.data.name.endswith(".gz") else open
            with opener(args.data, "rt", encoding="utf-8") as src, open(data, "w") as dst:
                dst.writelines(itertools.islice(src, args.limit + 1))
        cache = Path(tmp) / "cache"
        before = _cpu_s()
        t0 = time.perf_counter()
        prepared = prepare_dataset(
            data, config, out_dir=Path(tmp) / "cold", progress=sys.stderr.isatty(), cache=cache
        )
        wall = time.perf_counter() - t0
        cpu_s = _cpu_s() - before
        rss_self = _maxrss_mib(resource.RUSAGE_SELF)
        rss_child = _maxrss_mib(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        warm = prepare_dataset(
            data, config, out_dir=Path(tmp) / "warm", progress=False, cache=cache
        )
        wall_warm = time.perf_counter() - t0
        assert warm.cache_file is not None or prepared.n_read < 50_000
        assert warm.train == prepared.train and warm.vocab == prepared.vocab
    load_after = _loadavg()
    costs = stage_costs(args.data, min(args.sample, args.limit or args.sample), args.representation)
    per_mol = sum(c for name, c in costs if "per molecule" in name)
    jobs = _resolve_jobs(args.jobs)

    rows = [
        (
            "input",
            f"`{args.data.name}`"
            + (f" (first {args.limit:,} rows)" if args.limit else "")
            + f", {prepared.n_read:,} rows",
        ),
        ("representation", args.representation),
        ("worker processes", str(jobs)),
        (
            "kept / dropped",
            f"{prepared.n_kept:,} / {prepared.n_rejected:,} "
            + str({k: v for k, v in prepared.rejected_counts.items() if v}),
        ),
        ("wall time, end to end (read .. write files), first run", f"{wall:.1f} s"),
        ("throughput, first run", f"{prepared.n_read / wall:,.0f} rows/s"),
        ("CPU time, first run (main + workers)", f"{cpu_s:.0f} s"),
        ("wall time, repeat run (per-row checks from the cache)", f"{wall_warm:.1f} s"),
        ("peak RSS, main process", f"{rss_self:,.0f} MiB"),
        ("peak RSS, largest worker", f"{rss_child:,.0f} MiB"),
    ]
    rows += [
        (
            f"{name} (1 process, {args.sample:,} rows)" if "per molecule" in name else name,
            f"{cost:.1f} µs",
        )
        for name, cost in costs
    ]
    rows += [
        (
            "RDKit + tokenize, whole file, 1 core (from the row above)",
            f"{per_mol * prepared.n_read / 1e6:.0f} s",
        ),
        (
            f"... divided by {jobs} workers (ideal)",
            f"{per_mol * prepared.n_read / 1e6 / jobs:.0f} s",
        ),
        (
            "machine",
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
        ),
        ("load average (1/5/15 min) before / after", f"{load_before} / {load_after}"),
    ]
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    print(table)
    if args.output:
        args.output.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
