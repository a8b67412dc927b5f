"""Does a small file train as fast per step as MOSES? `molgen train` on both, same lengths.

A small file has short epochs: whatever `molgen train` does per epoch or per validation (loader
restarts, validation, checkpoint writes) weighs more. This script trains the `small` preset for
the same number of steps on

- the ChEMBL approved drugs (`data/chembl_drugs/drugs.csv`, ~1,800 molecules after the data step;
  drugs longer than the longest MOSES molecule are left out so the lengths can match), and
- MOSES molecules drawn to the SAME token-length histogram (`--moses-size` of them, a long epoch),

alternating the two `--repeats` times in one process so both see the same machine load, and
reports optimizer steps per second of training (`wall_time_s` of the model file: fit time, data
step excluded) and their ratio.

    python benchmarks/small_file_speed.py --steps 200 --repeats 1 --threads 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def matched_files(work: Path, moses_size: int, seed: int) -> tuple[Path, Path, dict]:
    from molgen.data import canonicalize
    from molgen.tokenizer import get_tokenizer

    tok = get_tokenizer("smiles")
    drugs = []
    for line in (REPO / "data/chembl_drugs/drugs.csv").read_text().splitlines()[1:]:
        c = canonicalize(line)
        if c:
            drugs.append((c, len(tok.tokenize(c))))
    by_len: dict[int, list[str]] = defaultdict(list)
    with gzip.open(REPO / "data/moses/train.csv.gz", "rt") as fh:
        next(fh)
        for i, line in enumerate(fh):
            if i >= 400_000:
                break
            s = line.strip()
            by_len[len(tok.tokenize(s))].append(s)
    longest = max(by_len)
    kept = [(s, n) for s, n in drugs if n in by_len]
    rng = random.Random(seed)
    moses = [rng.choice(by_len[n]) for _, n in (rng.choice(kept) for _ in range(moses_size))]
    d, m = work / "drugs_matched.smi", work / "moses_matched.smi"
    d.write_text("\n".join(s for s, _ in kept) + "\n")
    m.write_text("\n".join(moses) + "\n")
    info = {
        "drugs_kept": len(kept),
        "drugs_dropped_longer_than_moses": sum(n > longest for _, n in drugs),
        "moses_molecules": len(moses),
        "mean_tokens_drugs": sum(n for _, n in kept) / len(kept),
        "mean_tokens_moses": sum(len(tok.tokenize(s)) for s in moses) / len(moses),
    }
    return d, m, info


def steps_per_second(data: Path, out: Path, steps: int, threads: int) -> dict:
    import torch

    cmd = ["molgen", "train", str(data), "--out", str(out), "--max-steps", str(steps),
           "--threads", str(threads)]  # fmt: skip
    load = os.getloadavg()[0]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    s = torch.load(out / "model.pt", weights_only=True)["training"]
    return {"steps": s["global_step"], "fit_s": s["wall_time_s"],
            "steps_per_s": s["global_step"] / s["wall_time_s"], "threads": s.get("threads"),
            "load_at_start": load}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="0: molgen's automatic choice")
    ap.add_argument("--moses-size", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="molgen-speed-"))
    drugs, moses, info = matched_files(work, args.moses_size, args.seed)
    rows = []
    t0 = time.time()
    for r in range(args.repeats):
        for name, path in (("drugs", drugs), ("moses", moses)):
            row = steps_per_second(path, work / f"{name}-{r}", args.steps, args.threads)
            rows.append({"file": name, "repeat": r, **row})
            print(json.dumps(rows[-1]), flush=True)
    rate = {n: sum(x["steps_per_s"] for x in rows if x["file"] == n) / args.repeats
            for n in ("drugs", "moses")}  # fmt: skip
    result = {**info, "runs": rows, "ratio_drugs_over_moses": rate["drugs"] / rate["moses"],
              "wall_s": round(time.time() - t0, 1)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
