"""Sampling speed, memory and decoding statistics of a model (``molgen sample``, retries, beams).

Measures, for the model given on the command line (default: the bundled model):

1. ``molgen sample MODEL -n N -o FILE`` with default settings (valid molecules only, up to 3
   retries per code), run as a separate process at two sizes of N: wall time, valid molecules
   per second and peak memory (the process's own maximum RSS), to show memory is flat in N;
   plus the sampling loop alone in this process (no start-up) and the decoder loop old vs new.
2. Decoding statistics on prior samples: single-pass validity, validity with 1/2/3/5 retries,
   decodings per returned molecule and uniqueness (one run at the highest limit; the lower
   limits are exact sub-runs, ``DecodeResult.truncated``).
3. Beam search on greedy paths: exact reconstruction of MOSES test molecules and validity of
   interpolation paths at beam widths 1 (greedy), 3 and 5, with ``molgen evaluate``'s code.

    python benchmarks/sampling_speed.py data/pretrained/moses-spcauchy-small.pt \\
        --out BENCHMARKS_sampling.md

The machine's load (``uptime``) before and after is recorded. On a loaded machine pass
``--threads 1`` (the default picks 1 thread when the load is above half the cores). When the
output file exists, whatever follows its notes marker (``NOTES_MARK``) is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "data" / "pretrained" / "moses-spcauchy-small.pt"
DEFAULT_REFERENCE = REPO / "data" / "moses" / "test.csv.gz"
NOTES_MARK = "<!-- notes: everything below is kept when the script rewrites this file -->"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mb(model: Path, n: int, out: Path, threads: int) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of one ``molgen sample`` process (os.wait4), summary line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(REPO / "cli.py"), "sample", str(model), "-n", str(n), "-o", str(out)]
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        summary = log.read().strip()
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed with code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, summary


def count_valid_rows(path: Path) -> tuple[int, int]:
    """Rows of a sample CSV and how many are valid canonical SMILES (checked again with RDKit)."""
    import csv

    from molgen.decoding import canonical_or_none

    rows = valid = 0
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            valid += canonical_or_none(row["smiles"]) == row["smiles"]
    return rows, valid


def sampling_loop_rate(model, n: int) -> tuple[float, object]:
    from molgen.sampling import SampleRequest, SampleStats, generate_rows

    stats = SampleStats()
    start = time.perf_counter()
    for _ in generate_rows(model, SampleRequest(n=n), stats):
        pass
    return n / (time.perf_counter() - start), stats


def decoder_loop_rates(model, n: int, repeats: int = 3) -> tuple[float, float]:
    """Decodings per second of MoleculeVAE.generate (before) and decoding.generate_ids (now).

    The two alternate ``repeats`` times and the best time of each counts, so that a shared
    machine's load spikes hit both alike.
    """
    import torch

    from molgen.decoding import generate_ids

    torch.manual_seed(0)
    z = model.prior_z(n)
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((model.vae.generate, lambda c: generate_ids(model.vae, c))):
            start = time.perf_counter()
            for part in z.split(512):
                fn(part)
            best[i] = min(best[i], time.perf_counter() - start)
    return n / best[0], n / best[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def decoding_statistics(model, n: int, limits: list[int], seed: int) -> list[dict]:
    result = model.sample_decoded(n, seed=seed, max_retries=max(limits))
    rows = []
    for k in limits:
        cut = result.truncated(k)
        valid = [s for s in cut.smiles if s is not None]
        rows.append(
            {
                "max_retries": k,
                **cut.counts.as_dict(),
                "uniqueness": len(set(valid)) / len(valid) if valid else float("nan"),
            }
        )
    return rows


def beam_figures(model, reference: Path, n_recon: int, n_paths: int, widths: list[int]) -> list:
    import numpy as np

    from molgen.evaluate import EvaluateConfig, model_metrics
    from molgen.readers import read_smiles_file

    smiles, _ = read_smiles_file(reference)
    rng = np.random.default_rng(0)
    chosen = [smiles[i] for i in rng.choice(len(smiles), size=n_recon, replace=False)]
    rows = []
    for w in widths:
        config = EvaluateConfig(n_recon=n_recon, n_interp=n_paths, beam=w, progress=False)
        start = time.perf_counter()
        out = model_metrics(model, chosen, config, samples_validity=0.0)
        rows.append({"beam": w, "seconds": time.perf_counter() - start, **out})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10_000], help="two n")
    parser.add_argument("--stats-n", type=int, default=10_000)
    parser.add_argument("--limits", type=int, nargs="+", default=[0, 1, 2, 3, 5])
    parser.add_argument("--decoder-n", type=int, default=2048)
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--recon-n", type=int, default=1000)
    parser.add_argument("--paths", type=int, default=50)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--threads", type=int, default=None, help="default: 1 if loaded")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args()

    import torch

    from molgen.sampling import load_model

    cores = os.cpu_count() or 1
    load_before = uptime()
    loaded = os.getloadavg()[0] > cores / 2
    threads = args.threads or (1 if loaded else cores)
    torch.set_num_threads(threads)
    command = "python benchmarks/sampling_speed.py " + " ".join(sys.argv[1:])
    model = load_model(args.model)
    lines = [
        "# `molgen sample`: speed, memory and decoding statistics",
        "",
        f"Command: `{command}`",
        "",
        f"Model: `{args.model}`. Machine: {cores} CPU cores ({platform.machine()}, "
        f"{cpu_name()}), torch {torch.__version__}, {threads} torch "
        f"thread(s){' (the machine was loaded: 1 thread)' if loaded and not args.threads else ''}.",
        "",
        f"- load before: `{load_before}`",
    ]
    print("\n".join(lines), flush=True)

    # 1. the command, at two sizes
    speed = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            out = Path(tmp) / f"x{n}.csv"
            wall, rss, summary = peak_rss_mb(args.model, n, out, threads)
            rows, valid = count_valid_rows(out)
            summary = summary.split(" -> ")[0]  # without the temporary file's name
            speed.append((n, wall, rss, rows, valid, summary))
            print(f"n={n}: {wall:.1f}s, {rss:.0f} MB, {valid}/{rows} valid | {summary}", flush=True)
    loop_rate, loop_stats = sampling_loop_rate(model, args.sizes[-1])
    old_rate, new_rate = decoder_loop_rates(model, args.decoder_n)
    print(f"loop {loop_rate:.0f}/s; decoder old {old_rate:.0f}/s new {new_rate:.0f}/s", flush=True)
    lines += [
        "",
        "## Speed and memory of `molgen sample` (default settings: valid only, 3 retries)",
        "",
        "Each row is one `python cli.py sample MODEL -n N -o FILE` process (start-up, model "
        f"loading and writing included), with OMP_NUM_THREADS={threads}; peak memory is that "
        "process's maximum resident set size (`os.wait4`).",
        "",
        "| n | wall (s) | valid molecules / s | peak RSS (MB) | rows valid (RDKit) |",
        "|---|---|---|---|---|",
    ]
    for n, wall, rss, rows, valid, _ in speed:
        lines.append(f"| {n:,} | {wall:.1f} | {valid / wall:,.0f} | {rss:.0f} | {valid}/{rows} |")
    lines += ["", "Summary lines printed by the command:", ""]
    lines += [f"- n={n:,}: `{summary}`" for n, *_, summary in speed]
    d = loop_stats.decoding
    lines += [
        "",
        f"The sampling loop alone (`generate_rows`, in one process, no start-up), n="
        f"{args.sizes[-1]:,}: **{loop_rate:,.0f} valid molecules/s** ({d.decodings:,} decodings "
        f"for {loop_stats.written:,} molecules).",
        "",
        f"Decoder loop alone on {args.decoder_n:,} prior codes at temperature 1 (batches of "
        f"512, no RDKit, best of 3 alternating runs): `MoleculeVAE.generate` "
        f"{old_rate:,.0f} decodings/s, `molgen.decoding.generate_ids` {new_rate:,.0f} decodings/s "
        f"({new_rate / old_rate:.2f}x).",
    ]

    # 2. decoding statistics
    stats = decoding_statistics(model, args.stats_n, sorted(set(args.limits)), seed=0)
    lines += [
        "",
        f"## Decoding statistics on {args.stats_n:,} prior samples (temperature 1, seed 0)",
        "",
        "One run with the highest retry limit; each lower limit is the exact sub-run "
        "(`DecodeResult.truncated`: retry rounds are sequential and draw from their own streams).",
        "",
        "| max retries | single-pass validity | sampler validity | decodings per molecule "
        "| given up | uniqueness (of valid) |",
        "|---|---|---|---|---|---|",
    ]
    for r in stats:
        lines.append(
            f"| {r['max_retries']} | {r['single_pass_validity']:.4f} | "
            f"{r['sampler_validity']:.4f} | {r['decodings_per_molecule']:.3f} | "
            f"{r['given_up']} | {r['uniqueness']:.4f} |"
        )
    print("\n".join(lines[-len(stats) - 2 :]), flush=True)

    # 3. beam search
    if args.beams:
        beams = beam_figures(model, args.reference, args.recon_n, args.paths, args.beams)
        lines += [
            "",
            "## Beam search on greedy paths",
            "",
            f"{args.recon_n:,} random molecules of `{args.reference.name}` (seed 0; molecules the "
            f"model cannot encode skipped), {args.paths} interpolation paths of 10 points between "
            "random pairs of them, with `molgen evaluate`'s `model_metrics` at each `--beam` "
            "(1 = greedy). Beam K returns the most likely valid string among the K most likely.",
            "",
            "| beam | exact reconstruction | reconstruction valid | interpolation valid "
            "| interpolation distinct | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in beams:
            lines.append(
                f"| {r['beam']} | {r['reconstruction_exact']:.3f} | "
                f"{r['reconstruction_valid']:.3f} | {r['interpolation_valid']:.3f} | "
                f"{r['interpolation_distinct']:.3f} | {r['seconds']:.1f} |"
            )
        print("\n".join(lines[-len(beams) :]), flush=True)
    lines += ["", f"- load after: `{uptime()}`", ""]
    text = "\n".join(lines)
    if args.out is not None and args.out.exists():
        old = args.out.read_text()
        if NOTES_MARK in old:  # hand-written notes survive a re-run
            text += "\n" + old[old.index(NOTES_MARK) :]
    if args.out is not None:
        from molgen.outputs import atomic_output

        with atomic_output(args.out) as handle:
            handle.write(text)
    print(f"\n-> {args.out}" if args.out else "")


if __name__ == "__main__":
    main()
