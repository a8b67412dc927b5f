"""`molgen encode` speed and memory; how well `molgen score` tells in- from out-of-data molecules.

Encode: the first N molecules of the MOSES training set (10k and 100k by default) through
`molgen encode MODEL FILE -o OUT` in a child process with `--threads` torch threads (default 1):
wall time, CPU time, molecules/s and peak RSS (memory must not grow with N: rows are streamed).

Score: a random sample of MOSES test molecules (like the training data) and the approved drugs of
data/chembl_drugs/drugs.csv (unlike it: larger, charged, stereo; those the model can encode after
stereo removal) through `molgen score MODEL FILE -o OUT --samples K`. The separation is the ROC AUC
of "MOSES scores higher than a drug" (Mann-Whitney: P(score_moses > score_drug), ties count half),
for the total log-likelihood, the per-token log-likelihood (long molecules have lower totals; the
per-token figure shows what is left once length is set aside) and the ELBO. Drugs the model
rejects are counted by reason.

    python benchmarks/encode_score.py data/pretrained/moses-spcauchy-small.pt --out results.md
    python benchmarks/encode_score.py MODEL --encode-sizes 10000,100000 --samples 100 --moses 1000
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parent.parent
MOSES_TRAIN = REPO / "data" / "moses" / "train.csv.gz"
MOSES_TEST = REPO / "data" / "moses" / "test.csv.gz"
DRUGS = REPO / "data" / "chembl_drugs" / "drugs.csv"


def shown(args: list[str], work: Path) -> str:
    """The command as a user would type it (MODEL for the model, WORK/ for the scratch folder)."""
    text = " ".join(["molgen", args[0], "MODEL", *args[2:]])
    threads = os.environ.get("MOLGEN_BENCH_THREADS", "1")
    return f"OMP_NUM_THREADS={threads} " + text.replace(str(work), "WORK").replace(
        str(REPO) + "/", ""
    )


def run_child(args: list[str]) -> dict:
    """Run ``molgen ARGS`` (``--threads`` torch threads); wall and CPU s, peak RSS (MB), output."""
    threads = os.environ.get("MOLGEN_BENCH_THREADS", "1")
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = [sys.executable, "-c", "from molgen.cli import main; main()", *args]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"molgen {' '.join(args)} failed:\n{stderr[-2000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "stdout": stdout,
        "stderr": stderr.replace("\r", "\n"),
    }


def _run_seconds(stdout: str) -> float:
    """The run time `molgen` reports (reading, checking, encoding, writing; no start-up)."""
    found = re.search(r" in ([0-9.]+) s \(", stdout)
    return float(found.group(1)) if found else float("nan")


def write_head(src: Path, dest: Path, n: int) -> int:
    """The first ``n`` molecules of a MOSES csv.gz as a plain CSV; returns the rows written."""
    with gzip.open(src, "rt") as f, open(dest, "w") as out:
        out.write(f.readline())
        k = 0
        for k, line in enumerate(f, 1):
            out.write(line)
            if k >= n:
                break
    return k


def bench_encode(model: str, sizes: list[int], formats: list[str], work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        data = work / f"moses_train_{n}.csv"
        n = write_head(MOSES_TRAIN, data, n)
        for fmt in formats:
            out = work / f"encoded_{n}.{fmt}"
            args = ["encode", model, str(data), "-o", str(out)]
            load_before = os.getloadavg()[0]
            got = run_child(args)
            run_s = _run_seconds(got["stdout"])
            rows.append(
                {
                    "molecules": n,
                    "format": fmt,
                    "command": shown(args, work),
                    "wall_s": got["wall_s"],
                    "run_s": run_s,
                    "cpu_s": got["cpu_s"],
                    "mol_per_s_run": n / run_s,
                    "mol_per_s_cpu": n / got["cpu_s"],
                    "peak_rss_mb": got["peak_rss_mb"],
                    "load": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                }
            )
            print(rows[-1], flush=True)
    return rows


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC = P(positive > negative) + P(tie) / 2, by the Mann-Whitney rank sum."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n_p, n_n = len(positive), len(negative)
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def bench_score(model: str, n_moses: int, samples: int, seed: int, work: Path) -> dict:
    test = pd.read_csv(MOSES_TEST)
    column = "SMILES" if "SMILES" in test.columns else test.columns[0]
    picked = test.sample(n=min(n_moses, len(test)), random_state=seed)[[column]]
    moses_file = work / "moses_test_sample.csv"
    picked.rename(columns={column: "smiles"}).to_csv(moses_file, index=False)
    result: dict = {"samples": samples, "seed": seed}
    frames = {}
    for name, path in (("moses", moses_file), ("drugs", DRUGS)):
        out = work / f"scores_{name}.csv"
        args = ["score", model, str(path), "-o", str(out), "--samples", str(samples)]
        args += ["--seed", str(seed)]
        load_before = os.getloadavg()[0]
        got = run_child(args)
        frames[name] = pd.read_csv(out)
        rejected = pd.read_csv(out.with_name(out.stem + ".rejected.csv"), keep_default_na=False)
        stereo = re.search(r"stereochemistry removed from (\d+)", got["stderr"])
        unknown = re.search(r"never saw: (.*?)\. The model", got["stderr"])
        result[name] = {
            "command": shown(args, work),
            "rows": len(frames[name]) + len(rejected),
            "scored": len(frames[name]),
            "rejected": rejected["reason"].value_counts().to_dict(),
            "stereo_removed": int(stereo.group(1)) if stereo else 0,
            "unknown_tokens": unknown.group(1) if unknown else "",
            "run_s": _run_seconds(got["stdout"]),
            "cpu_s": got["cpu_s"],
            "peak_rss_mb": got["peak_rss_mb"],
            "load": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
            "mean": {
                c: float(frames[name][c].mean())
                for c in ("n_tokens", "log_likelihood", "log_likelihood_per_token", "elbo")
            },
        }
        print(name, result[name], flush=True)
    moses, drugs = frames["moses"], frames["drugs"]
    result["auc"] = {
        c: auc(moses[c].to_numpy(), drugs[c].to_numpy())
        for c in ("log_likelihood", "log_likelihood_per_token", "elbo")
    }
    # length set aside another way: only drugs within the MOSES length range
    lo, hi = moses["n_tokens"].min(), moses["n_tokens"].max()
    alike = drugs[(drugs["n_tokens"] >= lo) & (drugs["n_tokens"] <= hi)]
    result["auc_length_matched"] = {
        "drugs": len(alike),
        "log_likelihood": auc(
            moses["log_likelihood"].to_numpy(), alike["log_likelihood"].to_numpy()
        ),
    }
    return result


def markdown(model: str, encode: list[dict], score: dict | None, command: str, uptime: str) -> str:
    import torch

    lines = [
        "# Encode and score (benchmarks/encode_score.py)",
        "",
        f"Command: `{command}`  ",
        f"Model: `{model}`; torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; every `molgen` run is a child process with "
        f"OMP_NUM_THREADS={os.environ.get('MOLGEN_BENCH_THREADS', '1')}.  ",
        f"Machine load (`uptime` at the start): `{uptime}`",
        "",
    ]
    if encode:
        lines += [
            "## `molgen encode`: throughput and memory",
            "",
            "run s: the time `molgen` reports (read, check, encode, write; start-up excluded). "
            "CPU s: user + system time of the process (all of it, start-up included).",
            "",
            "| molecules | output | run s | mol/s (run) | CPU s | mol/s (CPU) | peak RSS "
            "| load 1 min |",
            "|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in encode:
            lines.append(
                f"| {r['molecules']:,} | .{r['format']} | {r['run_s']:.1f} | "
                f"{r['mol_per_s_run']:,.0f} | {r['cpu_s']:.1f} | {r['mol_per_s_cpu']:,.0f} | "
                f"{r['peak_rss_mb']:.0f} MB | {r['load']} |"
            )
        lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in encode] + [""]
    if score:
        k = score["samples"]
        lines += [
            f"## `molgen score`: MOSES test molecules against approved drugs (K = {k})",
            "",
            "| set | rows | scored | rejected | stereo removed | mean tokens | mean log p(x) | "
            "mean per token | mean ELBO | run s | peak RSS |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("moses", "drugs"):
            s = score[name]
            rejected = ", ".join(f"{n} {r}" for r, n in s["rejected"].items()) or "0"
            m = s["mean"]
            lines.append(
                f"| {name} | {s['rows']} | {s['scored']} | {rejected} | {s['stereo_removed']} | "
                f"{m['n_tokens']:.1f} | {m['log_likelihood']:.2f} | "
                f"{m['log_likelihood_per_token']:.3f} | {m['elbo']:.2f} | {s['run_s']:.0f} | "
                f"{s['peak_rss_mb']:.0f} MB |"
            )
        a = score["auc"]
        lm = score["auc_length_matched"]
        lines += [
            "",
            "ROC AUC of MOSES-test over drugs (1 = every MOSES molecule scores above every drug):",
            "",
            "| score | AUC |",
            "|---|---:|",
            f"| log_likelihood (importance-sampled log p(x)) | {a['log_likelihood']:.3f} |",
            f"| log_likelihood_per_token | {a['log_likelihood_per_token']:.3f} |",
            f"| elbo | {a['elbo']:.3f} |",
            f"| log_likelihood, drugs within the MOSES token-length range ({lm['drugs']} drugs) | "
            f"{lm['log_likelihood']:.3f} |",
            "",
            "Tokens the model never saw (drugs, rows per token): "
            + score["drugs"]["unknown_tokens"],
            "",
            "Commands:",
            "",
            f"    {score['moses']['command']}",
            f"    {score['drugs']['command']}",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="Model file (e.g. data/pretrained/moses-spcauchy-small.pt).")
    parser.add_argument("--encode-sizes", default="10000,100000", help="Comma list; '' to skip.")
    parser.add_argument("--formats", default="npy,csv", help="Encode outputs, e.g. npy,csv.")
    parser.add_argument("--moses", type=int, default=1000, help="MOSES test molecules to score.")
    parser.add_argument("--samples", type=int, default=100, help="K for molgen score; 0 skips.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per molgen run.")
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown here.")
    args = parser.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/encode_score.py " + shlex.join(sys.argv[1:])
    os.environ["MOLGEN_BENCH_THREADS"] = str(args.threads)
    sizes = [int(s) for s in args.encode_sizes.split(",") if s.strip()]
    formats = [f.strip().lstrip(".") for f in args.formats.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="molgen-bench-") as tmp:
        work = Path(tmp)
        encode = bench_encode(args.model, sizes, formats, work) if sizes else []
        score = (
            bench_score(args.model, args.moses, args.samples, args.seed, work)
            if args.samples
            else None
        )
    text = markdown(args.model, encode, score, command, uptime)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
