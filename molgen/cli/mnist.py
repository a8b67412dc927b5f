"""``molgen mnist`` and ``molgen latent-demo``: checks of the latent layer."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app
from molgen.cli.params import SEED_MAX, choice, finite, integer, torch_device
from molgen.errors import MolgenError

LATENT_FAMILIES = ("spcauchy", "vmf", "power", "gaussian")


#: Options that ``--protocol paper`` fixes (or does not use): given explicitly, they are an error.
PAPER_FIXED_OPTIONS = {
    "batch_size": "--batch-size",
    "lr": "--lr",
    "lr_warmup_steps": "--lr-warmup-steps",
    "ll_samples": "--ll-samples",
    "ll_images": "--ll-images",
}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command("mnist")
def mnist(
    ctx: typer.Context,
    protocol: str = typer.Option(
        "molgen",
        "--protocol",
        parser=choice("molgen", "paper"),
        help=(
            "molgen: binarized MNIST, molgen's architecture. paper: Sablica & Hornik's own "
            "protocol (grey-level targets, their architecture, 40 epochs, lr 3e-4 with a "
            "200-step warm-up for d <= 3 else 1e-4, batch 128, test-set checkpoint selection); "
            "it fixes --lr, --lr-warmup-steps and --batch-size and has no log-likelihood, so "
            "those options and --ll-* are errors with it."
        ),
    ),
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
        10,
        "--epochs",
        parser=integer(1, 10_000),
        help="Training epochs (default 10; 40 with --protocol paper).",
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        parser=integer(0, SEED_MAX),
        help="Random seed (runs are deterministic on CPU).",
    ),
    out: Path = typer.Option(
        Path("runs/mnist"),
        "--out",
        help=(
            "Output folder for results.json and the PNGs (with --protocol paper the default is "
            "runs/mnist_paper/<latent>_d<dim>_s<seed>)."
        ),
    ),
    batch_size: int = typer.Option(
        128,
        "--batch-size",
        parser=integer(1, 60_000),
        help="Images per training step (protocol molgen only).",
    ),
    lr: float = typer.Option(
        3e-4,
        "--lr",
        parser=finite(0.0, 10.0, low_open=True),
        help="AdamW learning rate (protocol molgen only).",
    ),
    lr_warmup_steps: int = typer.Option(
        250,
        "--lr-warmup-steps",
        parser=integer(0, 10**7),
        help="Linear learning-rate ramp over the first steps (protocol molgen only).",
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
    if protocol == "paper":
        given = [flag for name, flag in PAPER_FIXED_OPTIONS.items() if _given(ctx, name)]
        if given:
            raise MolgenError(
                f"{', '.join(given)} cannot be used with --protocol paper (it fixes batch 128 "
                "and the lr per d, and has no log-likelihood); drop "
                f"{'it' if len(given) == 1 else 'them'} or use --protocol molgen."
            )
        _mnist_paper(
            latent=latent,
            dim=dim,
            epochs=epochs if _given(ctx, "epochs") else None,
            seed=seed,
            out=out if _given(ctx, "out") else None,
            train_subset=train_subset,
            test_subset=test_subset,
            data_dir=data_dir,
            device=device,
            threads=threads,
        )
        return
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


def _mnist_paper(
    latent: str,
    dim: int,
    epochs: int | None,
    seed: int,
    out: Path | None,
    train_subset: int | None,
    test_subset: int | None,
    data_dir: Path | None,
    device: str,
    threads: int | None,
) -> None:
    from molgen.mnist import ambient_dim
    from molgen.mnist_paper import (
        PAPER_EPOCHS,
        PaperEpochStats,
        PaperMnistConfig,
        format_paper_result,
        run_paper,
    )

    amb = ambient_dim(latent, dim)
    if out is None:
        out = Path("runs/mnist_paper") / f"{latent}_d{dim}_s{seed}"

    def _show(s: PaperEpochStats) -> None:
        if s.epoch == 1:  # printed late so that a bad option or file gives only the error line
            typer.echo(
                f"MNIST VAE, protocol paper: latent {latent}, d={dim} "
                f"(latent vector of {amb} entries)"
            )
            typer.echo(
                "epoch  train -ELBO  test recon  test KL  test -ELBO  concentration  lr       sec"
            )
        conc = "-" if s.mean_concentration is None else f"{s.mean_concentration:.4g}"
        typer.echo(
            f"{s.epoch:5d}  {s.train_loss:11.2f}  {s.test_reconstruction:10.2f}  "
            f"{s.test_kl:7.2f}  {s.test_neg_elbo:10.2f}  {conc:>13}  {s.lr:.1e}  {s.seconds:5.1f}"
        )

    config = PaperMnistConfig(
        latent=latent,
        dim=dim,
        epochs=epochs if epochs is not None else PAPER_EPOCHS,
        seed=seed,
        train_subset=train_subset,
        test_subset=test_subset,
        device=device,
        threads=threads,
        data_dir=str(data_dir) if data_dir is not None else None,
        out=str(out),
    )
    result = run_paper(config, on_epoch=_show)
    typer.echo(format_paper_result(result))


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
