"""Training and sampling throughput of the `small` preset on this machine.

Training: molecules/s of a full Lightning training step (data loading, latent sampling, KL, loss,
optimizer, logging) divided by a bare torch.nn.GRU encoder/decoder forward+backward of the same
sizes on the same batches. Sampling: molecules/s decoded and validated with RDKit, and the peak
memory of `molgen sample -n 100000` streaming to a file (a child process).

    python benchmarks/throughput.py --molecules 20000 --steps 60 --out BENCHMARKS_throughput.md
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from molgen.batching import TokenDataset, encode_smiles  # noqa: E402
from molgen.data import DataConfig, prepare_dataset  # noqa: E402
from molgen.model import ModelConfig  # noqa: E402
from molgen.train import VAEModule, tune_malloc  # noqa: E402
from molgen.train_config import PRESETS, TrainConfig  # noqa: E402


class BareGRU(nn.Module):
    """The irreducible work: embeddings, the two GRUs, the output layer and the cross-entropy."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.enc = nn.GRU(
            c.embedding_dim,
            c.encoder_hidden,
            c.encoder_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.to_z = nn.Linear(2 * c.encoder_hidden, c.latent_dim)
        self.to_h = nn.Linear(c.latent_dim, c.decoder_layers * c.decoder_hidden)
        self.dec = nn.GRU(
            c.embedding_dim + c.latent_dim, c.decoder_hidden, c.decoder_layers, batch_first=True
        )
        self.out = nn.Linear(c.decoder_hidden, c.vocab_size)
        self.c = c

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(self.emb(ids[:, 1:]))
        z = self.to_z(torch.cat([h[-2], h[-1]], -1))
        h0 = torch.tanh(self.to_h(z)).view(-1, self.c.decoder_layers, self.c.decoder_hidden)
        inp = ids[:, :-1]
        x = torch.cat([self.emb(inp), z.unsqueeze(1).expand(-1, inp.shape[1], -1)], -1)
        o, _ = self.dec(x, h0.transpose(0, 1).contiguous())
        logits = self.out(o)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0
        )


class Interleaved(pl.Callback):
    """Times each full Lightning step, then a bare GRU fwd+bwd on the very same batch.

    Interleaving step by step makes the ratio immune to load drifting during the run (other
    jobs on a shared machine). A full step is measured from the end of the previous step's bare
    run to the end of this step, so it includes data loading and Lightning's loop.
    """

    def __init__(self, bare: BareGRU, warmup: int) -> None:
        self.bare, self.warmup = bare, warmup
        self.t_prev: float | None = None
        self.full: list[float] = []
        self.base: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        ids = batch[0]
        t0 = time.perf_counter()
        loss = self.bare(ids)
        loss.backward()
        self.bare.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        if self.t_prev is not None and trainer.global_step > self.warmup:
            self.full.append(now - self.t_prev)
            self.base.append(t1 - t0)
            self.sizes.append(ids.shape[0])
        self.t_prev = time.perf_counter()


def training_rates(
    c: ModelConfig, ds: TokenDataset, tc: TrainConfig, steps: int, warmup: int
) -> tuple[float, float]:
    pl.seed_everything(0, verbose=False)
    module = VAEModule(c.to_dict(), tc.__dict__)
    torch.manual_seed(0)
    cb = Interleaved(BareGRU(c), warmup)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=tc.batch_size, shuffle=True, collate_fn=lambda b: b
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps + warmup + 1,
            logger=pl.loggers.CSVLogger(tmp, name="", version=""),
            callbacks=[cb],
            enable_checkpointing=False,
            enable_progress_bar=True,
            enable_model_summary=False,
            gradient_clip_val=tc.grad_clip,
            limit_val_batches=0,
            log_every_n_steps=10,
        )
        trainer.fit(module, loader)
    n = sum(cb.sizes)
    return n / sum(cb.full), n / sum(cb.base)


def sampling_figures(
    model_path: Path | None, n_rate: int, n_peak: int, c: ModelConfig, vocab, tmp: Path
) -> dict:
    from molgen.data import canonicalize
    from molgen.model import MoleculeVAE, model_file_dict
    from molgen.sampling import load_model

    if model_path is None:
        vae = MoleculeVAE(c)
        model_path = tmp / "untrained.pt"
        torch.save(model_file_dict(vae, vocab.to_dict(), "smiles", {}, {}), model_path)
        label = "untrained small-preset weights"
    else:
        label = str(model_path)
    m = load_model(model_path)
    t0 = time.perf_counter()
    raw = m.sample(n_rate, seed=0, batch_size=1000)
    valid = sum(canonicalize(s, largest_fragment=False) is not None for s in raw if s)
    rate = n_rate / (time.perf_counter() - t0)
    out = tmp / "peak.csv"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "sample",
            str(model_path),
            "-n",
            str(n_peak),
            "-o",
            str(out),
            "--batch-size",
            "1000",
        ],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "model": label,
        "rate": rate,
        "validity": valid / n_rate,
        "peak_n": n_peak,
        "peak_mb": peak_mb,
        "peak_wall": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--model", type=Path, default=None, help="trained model for the sampling figures"
    )
    ap.add_argument("--sample-n", type=int, default=5000)
    ap.add_argument("--peak-n", type=int, default=100000)
    ap.add_argument("--no-tune-malloc", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    tuned = False if args.no_tune_malloc else tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS["small"]
    tc = TrainConfig(**{**preset.train, "max_time": None})
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        src = tmp / "mols.csv"
        import pandas as pd

        pd.read_csv(REPO / "data/moses/train.csv.gz", nrows=args.molecules).to_csv(src, index=False)
        prepared = prepare_dataset(src, DataConfig(valid_fraction=0.0), progress=False)
        ds = encode_smiles(prepared.train, prepared.vocab, "smiles", 100)
        c = ModelConfig(vocab_size=len(prepared.vocab), **preset.model)
        full, bare = training_rates(c, ds, tc, args.steps, args.warmup)
        samp = sampling_figures(args.model, args.sample_n, args.peak_n, c, prepared.vocab, tmp)

    lines = [
        f"Command: `python benchmarks/throughput.py {' '.join(sys.argv[1:])}`",
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, malloc tuned: {tuned}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| bare GRU enc/dec fwd+bwd, small preset, batch {tc.batch_size} | {bare:.1f} mol/s |",
        f"| full molgen training step (Lightning, interleaved) | {full:.1f} mol/s |",
        f"| ratio full / bare (target >= 0.85) | {full / bare:.3f} |",
        f"| sampling + RDKit validation ({samp['model']}) | {samp['rate']:.0f} mol/s "
        f"(validity {samp['validity']:.3f}) |",
        f"| `molgen sample -n {samp['peak_n']}` streamed to CSV: peak RSS "
        f"| {samp['peak_mb']:.0f} MB "
        f"({samp['peak_wall']:.0f} s) |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text("# Throughput (benchmarks/throughput.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
