"""What the SMILES syntax mask does to single-pass validity, per model, and what it costs.

For each model: N prior codes (seeded) decoded once at temperature 1 with the mask (what every
molgen command does) and the same codes decoded once without it (``--no-syntax``). Each invalid
string is classified the way RDKit rejects it: ``syntax`` (does not parse at all: brackets, ring
labels, a stray bond), ``valence`` (parses, an atom has too many bonds) or ``kekulize``
(aromaticity RDKit cannot assign). Decoding time is the median of ``--repeats`` timings.

    python benchmarks/syntax_mask.py data/pretrained/moses-spcauchy-small.pt \\
        runs/transfer/scratch/model.pt --n 2000 --json benchmarks/results/syntax_mask.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any


def classify(smiles: str) -> str:
    """valid, empty, syntax, valence, kekulize or other (RDKit's reason to reject)."""
    from rdkit import Chem

    if not smiles:
        return "empty"
    if Chem.MolFromSmiles(smiles) is not None:
        return "valid"
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return "syntax"
    try:
        Chem.SanitizeMol(mol)
    except Chem.AtomValenceException:
        return "valence"
    except Chem.KekulizeException:
        return "kekulize"
    except Exception:
        return "other"
    return "other"


def measure(path: str, n: int, seed: int, repeats: int) -> dict[str, Any]:
    import torch

    from molgen.sampling import load_model

    m = load_model(path)
    syntax = m.syntax
    out: dict[str, Any] = {"model": path}
    for name, mask in (("with_mask", syntax), ("without_mask", None)):
        m.syntax = mask
        times, strings = [], []
        for _ in range(repeats):
            torch.manual_seed(seed)
            z = m.prior_z(n)
            t0 = time.perf_counter()
            strings = m.decode(z, greedy=False, temperature=1.0)
            times.append(time.perf_counter() - t0)
        kinds = Counter(classify(s) for s in strings)
        out[name] = {
            "validity": kinds["valid"] / n,
            "rejected_as": {k: v / n for k, v in sorted(kinds.items()) if k != "valid"},
            "decode_s": statistics.median(times),
            "molecules_per_s": n / statistics.median(times),
        }
    m.syntax = syntax
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    torch.set_num_threads(args.threads)
    results = {
        "n": args.n,
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "models": [measure(p, args.n, args.seed, args.repeats) for p in args.models],
        "load_after": os.getloadavg(),
    }
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
