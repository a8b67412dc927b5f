"""Your own small file: training from scratch against fine-tuning the bundled model.

The "user's own file" is `data/chembl_drugs/drugs.csv` (1,935 ChEMBL approved drugs; credit:
ChEMBL, EMBL-EBI). A fixed 90/10 split (seed 0) gives a training file and held-out drugs. Two runs
with the same wall-clock budget, one after the other:

- scratch:  `molgen train TRAIN --out RUN --max-time BUDGET` (the `small` preset)
- finetune: `molgen train TRAIN --from bundled --out RUN --max-time BUDGET` (the `finetune` preset)

and the bundled model untouched as a reference. Each model is scored on N prior samples at
temperature 1, decoded ONCE (single-pass validity, no retries; with the SMILES syntax mask that
every molgen decoding uses, and again without it for the raw decoder): validity, uniqueness, novelty
against the training split; FCD to the held-out drugs on the same number of valid samples for
every model (`--fcd-n`; FCD depends strongly on set size), with the FCD floor of this held-out set
(as many training-split molecules against the held-out drugs), mean
nearest-neighbour Tanimoto to the held-out drugs (SNN), exact greedy reconstruction of the held-out
drugs, and the share of held-out drugs each model cannot read (unknown tokens, too long).

It also measures how new tokens' rows should start (`--init mean` against `--init random`): the
held-out reconstruction NLL of the child model before any training step.

    python benchmarks/transfer.py --out runs/transfer --budget 10m --samples 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DRUGS = REPO / "data" / "chembl_drugs" / "drugs.csv"
BUNDLED = REPO / "data" / "pretrained" / "moses-spcauchy-small.pt"


def split(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Fixed 90/10 split of the drug file's rows."""
    rows = DRUGS.read_text().splitlines()
    header, body = rows[0], rows[1:]
    order = list(range(len(body)))
    random.Random(seed).shuffle(order)
    n_test = len(body) // 10
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    out.mkdir(parents=True, exist_ok=True)
    tr, te = out / "drugs_train.csv", out / "drugs_heldout.csv"
    tr.write_text("\n".join([header] + [body[i] for i in train]) + "\n")
    te.write_text("\n".join([header] + [body[i] for i in test]) + "\n")
    return tr, te


def run_train(args: list[str], log: Path) -> float:
    print("$ molgen train " + " ".join(args), flush=True)
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(
            ["molgen", "train", *args],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        sys.exit(f"training failed; see {log}")
    return time.time() - t0


def readable(model: Any, smiles: list[str]) -> tuple[list[str], dict[str, int]]:
    """The molecules a model can encode, and why the others were dropped."""
    from molgen.errors import MolgenError

    ok, why = [], {"unknown tokens": 0, "too long": 0, "other": 0}
    for s in smiles:
        try:
            model.to_ids([s])
            ok.append(s)
        except MolgenError as exc:
            text = str(exc)
            key = (
                "unknown tokens"
                if "never saw" in text
                else "too long"
                if "at most" in text
                else "other"
            )
            why[key] += 1
    return ok, why


def score(
    model_path: Path, train_smiles: list[str], heldout: list[str], n: int, seed: int, fcd_n: int
) -> dict[str, Any]:
    """Single-pass metrics on the first ``n`` prior samples; FCD and SNN on ``fcd_n`` valid ones.

    FCD depends strongly on the number of molecules, so every model is compared on the same
    number of valid samples (drawing more prior samples when needed, up to 100 x ``fcd_n``), and
    the floor (training-split molecules against the held-out drugs) uses that number too.
    """
    import torch

    from molgen import metrics
    from molgen.sampling import load_model

    torch.manual_seed(seed)
    m = load_model(model_path)
    samples: list[str] = []
    valid_all: list[str] = []
    while len(samples) < n or (len(valid_all) < fcd_n and len(samples) < 100 * fcd_n):
        batch = m.decode(m.prior_z(500), greedy=False, temperature=1.0)
        samples += batch
        valid_all += metrics.valid_canonical(batch)
    first = samples[:n]
    valid = metrics.valid_canonical(first)
    # the same codes decoded once more without the syntax mask: the raw decoder's validity
    torch.manual_seed(seed)
    syntax, m.syntax = m.syntax, None
    raw: list[str] = []
    while len(raw) < n:
        raw += m.decode(m.prior_z(500), greedy=False, temperature=1.0)
    m.syntax = syntax
    raw_validity = len(metrics.valid_canonical(raw[:n])) / n
    fcd_set = valid_all[:fcd_n]
    train_canon = set(metrics.valid_canonical(train_smiles))
    ok, why = readable(m, heldout)
    recon = m.reconstruct(ok) if ok else []
    exact = sum(
        metrics.canonical_smiles(a) == metrics.canonical_smiles(b)
        for a, b in zip(ok, recon, strict=True)
    )
    floor_ref = random.Random(seed).sample(sorted(train_canon), min(len(fcd_set), len(train_canon)))
    return {
        "model": str(model_path),
        "samples": n,
        "validity": len(valid) / n,
        "validity_without_syntax_mask": raw_validity,
        "uniqueness": metrics.uniqueness(first),
        "novelty": metrics.novelty(first, train_canon, train_is_canonical=True),
        "fcd_molecules": len(fcd_set),
        "fcd_heldout": metrics.fcd_distance(fcd_set, heldout) if len(fcd_set) > 1 else None,
        "fcd_floor": metrics.fcd_distance(floor_ref, heldout),
        "snn_heldout": metrics.snn(fcd_set, heldout) if fcd_set else None,
        "heldout_readable": len(ok),
        "heldout_dropped": why,
        "heldout_dropped_unknown_share": why["unknown tokens"] / len(heldout),
        "exact_reconstruction": exact / len(ok) if ok else None,
        "training": {
            k: m.summary.get(k)
            for k in (
                "global_step",
                "wall_time_s",
                "threads",
                "exported",
                "export_checks",
                "final_prior_validity",
            )
        },
    }


def init_nll(train_file: Path, heldout: list[str]) -> dict[str, float]:
    """Held-out reconstruction NLL of the child before training, per new-token initialisation."""
    import torch

    from molgen.data import DataConfig, prepare_dataset
    from molgen.finetune import extend_state_dict, extend_vocabulary, load_parent
    from molgen.model import ModelConfig, MoleculeVAE
    from molgen.sampling import MolGenModel

    parent = load_parent("bundled")
    cfg = DataConfig(**parent.content["data_config"])
    prepared = prepare_dataset(train_file, cfg, progress=False, cache=False)
    vocab = extend_vocabulary(parent.vocab, prepared.vocab.tokens)
    config = {**parent.content["config"], "vocab_size": len(vocab)}
    torch.manual_seed(0)
    fresh = MoleculeVAE(ModelConfig.from_dict(config)).state_dict()
    result = {}
    for scheme in ("mean", "random"):
        state = extend_state_dict(
            parent.content["state_dict"], len(parent.vocab), len(vocab), scheme, target=fresh
        )
        content = {
            **parent.content,
            "config": config,
            "vocabulary": vocab.to_dict(),
            "state_dict": state,
        }
        m = MolGenModel(content, parent.path)
        ok, _ = readable(m, heldout)
        new = set(vocab.tokens[len(parent.vocab) :])
        with_new = [s for s in ok if new & set(m.tokenizer.tokenize(m_canon(m, s)))]
        for label, mols in (("all", ok), ("with_new_tokens", with_new)):
            with torch.no_grad():
                ids, lengths = m.to_ids(mols)
                posterior, _ = m.vae.encode(ids, lengths)
                logits = m.vae.decode_logits(m.vae.latent.mode(posterior), ids[:, :-1])
                targets = ids[:, 1:]
                ce = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
                ).view_as(targets)
                nll = (ce * (targets != 0)).sum(1).mean()
            result[f"{scheme}_{label}"] = float(nll)
        result[f"n_{scheme}_with_new_tokens"] = len(with_new)
    return result


def m_canon(m: Any, s: str) -> str:
    from molgen.data import canonicalize

    return canonicalize(s, m.data_config.largest_fragment, m.data_config.stereo) or ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"))
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--fcd-n", type=int, default=1000, help="valid molecules per FCD")
    ap.add_argument("--extra", action="append", default=[], help="NAME=RUN_DIR: score another run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: auto)")
    ap.add_argument("--skip-init", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from molgen.readers import read_smiles_file

    train_file, heldout_file = split(args.out, args.seed)
    train_smiles, _ = read_smiles_file(train_file)
    heldout, _ = read_smiles_file(heldout_file)
    load_before = os.getloadavg()
    runs = {
        "scratch": ["--out", str(args.out / "scratch")],
        "finetune": ["--from", "bundled", "--out", str(args.out / "finetune")],
    }
    results: dict[str, Any] = {"load_before": load_before, "budget": args.budget}
    for name, extra in runs.items():
        run = Path(extra[extra.index("--out") + 1])
        if not (run / "model.pt").exists():
            wall = run_train(
                [
                    str(train_file),
                    *extra,
                    "--max-time",
                    args.budget,
                    "--threads",
                    str(args.threads),
                ],
                args.out / f"{name}.log",
            )
            results[f"{name}_process_wall_s"] = wall
        results[name] = score(
            run / "model.pt", train_smiles, heldout, args.samples, args.seed, args.fcd_n
        )
        print(json.dumps(results[name], indent=1), flush=True)
    for spec in args.extra:
        name, run = spec.split("=", 1)
        results[name] = score(
            Path(run) / "model.pt", train_smiles, heldout, args.samples, args.seed, args.fcd_n
        )
    results["bundled"] = score(BUNDLED, train_smiles, heldout, args.samples, args.seed, args.fcd_n)
    if not args.skip_init:
        results["init_nll"] = init_nll(train_file, heldout)
    results["load_after"] = os.getloadavg()
    path = args.json or args.out / "transfer.json"
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
