"""``molgen mnist`` and ``molgen latent-demo``: checks of the latent layer."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app
from molgen.cli.params import SEED_MAX, choice, finite, integer, torch_device

LATENT_FAMILIES = ("spcauchy", "vmf", "power", "gaussian")


@app.command("mnist")
def mnist(
    latent: str = typer.Option(
        "spcauchy",
        "--latent",
        parser=choice(*LATENT_FAMILIES),
        help="Latent family: spcauchy, vmf, power or gaussian.",
    ),
    dim: int = typer.Option(
        2,
        "--dim",
        parser=integer(1, 1023),
        help="The paper's d: sphere S^d in R^(d+1), or R^d for gaussian.",
    ),
    epochs: int = typer.Option(
        10, "--epochs", parser=integer(1, 10_000), help="Training epochs (the paper uses 40)."
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        parser=integer(0, SEED_MAX),
        help="Random seed (runs are deterministic on CPU).",
    ),
    out: Path = typer.Option(
        Path("runs/mnist"), "--out", help="Output folder for results.json and the PNGs."
    ),
    batch_size: int = typer.Option(
        128, "--batch-size", parser=integer(1, 60_000), help="Images per training step."
    ),
    lr: float = typer.Option(
        3e-4, "--lr", parser=finite(0.0, 10.0, low_open=True), help="AdamW learning rate."
    ),
    lr_warmup_steps: int = typer.Option(
        250,
        "--lr-warmup-steps",
        parser=integer(0, 10**7),
        help="Linear learning-rate ramp over the first steps.",
    ),
    train_subset: int | None = typer.Option(
        None,
        "--train-subset",
        parser=integer(1, None),
        help="Train on the first N training images only.",
    ),
    test_subset: int | None = typer.Option(
        None,
        "--test-subset",
        parser=integer(1, None),
        help="Evaluate on the first N test images only.",
    ),
    ll_samples: int = typer.Option(
        500,
        "--ll-samples",
        parser=integer(1, 100_000),
        help="Importance samples per image for the log-likelihood.",
    ),
    ll_images: int = typer.Option(
        500,
        "--ll-images",
        parser=integer(0, 10_000),
        help="Test images for the log-likelihood estimate (0 skips it).",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with the four MNIST IDX files (default: bundled copy)."
    ),
    device: str = typer.Option(
        "auto", "--device", parser=torch_device(allow_index=False), help="auto, cpu or cuda."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        parser=integer(1, 1024),
        help="CPU threads for torch (1 is fastest on a crowded machine).",
    ),
) -> None:
    """Train the image VAE on MNIST: the paper's sanity check of the latent layer."""
    from molgen.mnist import EpochStats, MnistConfig, ambient_dim, format_result, run_mnist

    amb = ambient_dim(latent, dim)

    def _show(s: EpochStats) -> None:
        if s.epoch == 1:  # printed late so that a bad option or file gives only the error line
            typer.echo(f"MNIST VAE: latent {latent}, d={dim} (latent vector of {amb} entries)")
            typer.echo(
                "epoch  train -ELBO  test recon  test KL  test ELBO  concentration  lr       sec"
            )
        typer.echo(
            f"{s.epoch:5d}  {s.train_loss:11.2f}  {s.test_reconstruction:10.2f}  "
            f"{s.test_kl:7.2f}  {s.test_elbo:9.2f}  {s.mean_concentration:13.4g}  "
            f"{s.lr:.1e}  {s.seconds:5.1f}"
        )

    config = MnistConfig(
        latent=latent,
        dim=dim,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        lr_warmup_steps=lr_warmup_steps,
        train_subset=train_subset,
        test_subset=test_subset,
        ll_samples=ll_samples,
        ll_images=ll_images,
        device=device,
        threads=threads,
        data_dir=str(data_dir) if data_dir is not None else None,
        out=str(out),
    )
    result = run_mnist(config, on_epoch=_show)
    typer.echo(format_result(result))


@app.command("latent-demo")
def latent_demo(
    dim: int = typer.Option(
        64,
        "--dim",
        parser=integer(2, 1024),
        help="Ambient latent dimension (z has DIM entries).",
    ),
    n: int = typer.Option(
        5,
        "--n",
        parser=integer(1, 100),
        help="Concentrations per family (mean cosine 0.1 to 0.99).",
    ),
    seed: int = typer.Option(0, "--seed", parser=integer(0, SEED_MAX), help="Random seed."),
    samples: int = typer.Option(
        2000,
        "--samples",
        parser=integer(10, 100_000),
        help="Samples per row for the mean cosine.",
    ),
) -> None:
    """Show each latent family at a few concentrations: KL to the prior and sampled cosines."""
    from molgen.latent import format_latent_demo
    from molgen.latent import latent_demo as run_demo

    rows = run_demo(dim=dim, levels=n, seed=seed, samples=samples)
    typer.echo(format_latent_demo(rows, dim=dim, samples=samples))
