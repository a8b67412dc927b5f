"""``molgen train``: train a VAE (from scratch, resumed, or from a parent model)."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app, remember_run_dir
from molgen.cli.options import (
    AugmentOpt,
    JobsOpt,
    KeepFragmentsOpt,
    MaxCharsOpt,
    MaxLengthOpt,
    NoStereoOpt,
    RepresentationOpt,
    SepOpt,
    SmilesColumnOpt,
    TestFractionOpt,
    TrainValidFractionOpt,
    build_data_config,
)
from molgen.cli.params import SEED_MAX, choice, duration, finite, integer, lightning_devices

LATENTS = "spcauchy|vmf|power|gaussian"
#: Lightning's accelerators, strategies (xla/TPU ones left out) and precisions.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "ddp_find_unused_parameters_false",
    "fsdp",
    "deepspeed",
    "single_device",
)
PRECISIONS = (
    "32-true",
    "32",
    "64-true",
    "64",
    "16-mixed",
    "16-true",
    "16",
    "bf16-mixed",
    "bf16-true",
    "bf16",
    "transformer-engine",
    "transformer-engine-float16",
)


@app.command()
def train(
    data: Path | None = typer.Argument(
        None, help="Molecule file (csv/tsv/smi, optionally .gz). Default: bundled MOSES train set."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        callback=remember_run_dir,
        help="Run directory for model.pt, metrics, plots.",
    ),
    preset: str | None = typer.Option(
        None,
        parser=choice("tiny", "small", "moses", "finetune"),
        help="tiny (seconds), small (~1 h on 2 CPU cores; the default), moses (GPU), "
        "finetune (the default with --from).",
    ),
    latent: str | None = typer.Option(
        None,
        parser=choice(*LATENTS.split("|")),
        help=f"Latent family: {LATENTS} (default spcauchy).",
    ),
    latent_dim: int | None = typer.Option(
        None, parser=integer(2, 4096), help="AMBIENT latent dimension (z on S^(d-1))."
    ),
    representation: RepresentationOpt = "smiles",
    epochs: int | None = typer.Option(None, parser=integer(1, 10**6), help="Maximum epochs."),
    max_steps: int | None = typer.Option(
        None, parser=integer(1, 10**10), help="Maximum optimizer steps."
    ),
    max_time: str | None = typer.Option(
        None, parser=duration, help="Wall-time limit, e.g. 30m, 1h, DD:HH:MM:SS."
    ),
    batch_size: int | None = typer.Option(
        None, parser=integer(1, 65536), help="Molecules per batch (per device)."
    ),
    lr: float | None = typer.Option(
        None, parser=finite(0.0, 10.0, low_open=True), help="Adam learning rate."
    ),
    seed: int = typer.Option(
        0, parser=integer(0, SEED_MAX), help="Seed: same seed, same machine -> same model."
    ),
    beta_max: float | None = typer.Option(
        None, parser=finite(0.0, 1000.0), help="Final KL weight."
    ),
    beta_warmup_steps: int | None = typer.Option(
        None, parser=integer(0, 10**10), help="Steps with KL weight 0."
    ),
    beta_ramp_steps: int | None = typer.Option(
        None, parser=integer(0, 10**10), help="Steps of the linear KL ramp."
    ),
    word_dropout: float | None = typer.Option(
        None, parser=finite(0.0, 1.0), help="Decoder word-dropout probability."
    ),
    embedding_dim: int | None = typer.Option(
        None, parser=integer(1, 8192), help="Token embedding size."
    ),
    encoder_hidden: int | None = typer.Option(
        None, parser=integer(1, 16384), help="Encoder GRU size (per direction)."
    ),
    encoder_layers: int | None = typer.Option(
        None, parser=integer(1, 64), help="Encoder GRU layers."
    ),
    decoder_hidden: int | None = typer.Option(
        None, parser=integer(1, 16384), help="Decoder GRU size."
    ),
    decoder_layers: int | None = typer.Option(
        None, parser=integer(1, 64), help="Decoder GRU layers."
    ),
    dropout: float | None = typer.Option(
        None,
        parser=finite(0.0, 1.0, high_open=True),
        help="Dropout on embeddings / between layers.",
    ),
    early_stopping_patience: int | None = typer.Option(
        None,
        parser=integer(0, 10**6),
        help="Validation checks without improvement before stopping (0: off).",
    ),
    min_validity: float | None = typer.Option(
        None,
        parser=finite(0.0, 1.0),
        help="Export the best-fitting checkpoint whose single-pass prior samples are at least "
        "this valid (finetune preset: 0.8).",
    ),
    accelerator: str = typer.Option("auto", parser=choice(*ACCELERATORS), help="auto, cpu or gpu."),
    devices: str = typer.Option(
        "auto", parser=lightning_devices, help="Devices per node (number or auto)."
    ),
    num_nodes: int = typer.Option(1, parser=integer(1, 10_000), help="Number of nodes."),
    strategy: str = typer.Option("auto", parser=choice(*STRATEGIES), help="auto or ddp."),
    precision: str = typer.Option(
        "32-true", parser=choice(*PRECISIONS), help="Lightning precision, e.g. bf16-mixed on GPUs."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    parent: str | None = typer.Option(
        None,
        "--from",
        help="Start from this model file (or 'bundled'): transfer learning (finetune preset).",
    ),
    init: str = typer.Option(
        "mean",
        parser=choice("mean", "random"),
        help="With --from: new tokens' rows start as the mean of the parent's, or random.",
    ),
    lr_schedule: str | None = typer.Option(
        None,
        parser=choice("constant", "cosine"),
        help="constant, or cosine (warm-up, then decay to the end of the budget).",
    ),
    lr_warmup_steps: int | None = typer.Option(
        None, parser=integer(0, 10**10), help="Learning-rate warm-up steps."
    ),
    bucket_batches: int | None = typer.Option(
        None, parser=integer(0, 10**6), help="Batches per length-sorted chunk (0: random batches)."
    ),
    threads: int | None = typer.Option(
        None,
        parser=integer(0, 1024),
        help="CPU threads for torch (default 0: the cores that are idle at the start).",
    ),
    smiles_column: SmilesColumnOpt = None,
    sep: SepOpt = None,
    max_length: MaxLengthOpt = 100,
    max_chars: MaxCharsOpt = 2000,
    no_stereo: NoStereoOpt = False,
    keep_fragments: KeepFragmentsOpt = False,
    valid_fraction: TrainValidFractionOpt = 0.05,
    test_fraction: TestFractionOpt = 0.0,
    augment: AugmentOpt = 0,
    jobs: JobsOpt = 0,
) -> None:
    """Train a VAE on a molecule file and write RUN_DIR/model.pt, metrics.csv and curves.

    With --from MODEL (or --from bundled) the run starts from a trained model: its architecture,
    tokens and data settings, with the new file's tokens added (the finetune preset).
    """
    from molgen.runs import plan_run
    from molgen.train import train as run_training

    model_overrides = dict(
        latent=latent,
        latent_dim=latent_dim,
        embedding_dim=embedding_dim,
        encoder_hidden=encoder_hidden,
        encoder_layers=encoder_layers,
        decoder_hidden=decoder_hidden,
        decoder_layers=decoder_layers,
        dropout=dropout,
    )
    train_overrides = dict(
        epochs=epochs,
        max_steps=max_steps,
        max_time=max_time,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        lr_warmup_steps=lr_warmup_steps,
        seed=seed,
        beta_max=beta_max,
        beta_warmup_steps=beta_warmup_steps,
        beta_ramp_steps=beta_ramp_steps,
        word_dropout=word_dropout,
        early_stopping_patience=early_stopping_patience,
        min_validity=min_validity,
        bucket_batches=bucket_batches,
        threads=threads,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
    )
    data_config = build_data_config(
        smiles_column,
        sep,
        representation,
        max_length,
        no_stereo,
        keep_fragments,
        valid_fraction,
        test_fraction,
        seed,
        augment,
        jobs,
        max_chars=max_chars,
    )
    plan = plan_run(
        out,
        data,
        data_config,
        preset,
        model_overrides,
        train_overrides,
        resume=resume,
        parent=parent,
        init_scheme=init,
    )
    family = plan.model_settings.get("latent", "spcauchy")
    start = f"from {plan.parent}" if plan.parent else family
    typer.echo(f"Training a VAE ({start}, {plan.preset} preset) on {plan.data_path}")
    result = run_training(
        plan.data_path,
        out,
        plan.data_config,
        plan.model_settings,
        plan.train_config,
        preset=plan.preset,
        resume=resume,
        parent=plan.parent,
        init_scheme=plan.init_scheme,
        say=lambda message: typer.echo(message, err=True),
    )
    if result.curves_path is None and not result.model_path.exists():
        return  # a non-zero DDP rank: rank 0 reports
    summary = result.summary
    final = summary["final_metrics"]
    took = f"{summary['wall_time_s']:.0f} s"
    if summary["resumed"]:
        took += f" ({summary['training_time_s']:.0f} s over all starts)"
    typer.echo(
        f"Done in {took}, {summary['global_step']} steps; "
        + ", ".join(f"{k}={v:.4g}" for k, v in sorted(final.items()) if k.startswith("val_"))
    )
    typer.echo(
        f"  prior validity (500 single-pass samples): {summary['final_prior_validity']:.3f}; "
        f"exported weights: {summary['exported']}"
    )
    if summary.get("export_checks"):
        from molgen.train import VERIFY_SAMPLES

        checked = ", ".join(
            f"step {c['step']}: {c['validity']:.3f}" for c in summary["export_checks"]
        )
        typer.echo(
            f"  validity of the best-fitting checkpoints on {VERIFY_SAMPLES:,} fresh prior codes: "
            + checked
        )
    for warning in summary["warnings"]:
        typer.echo(f"Warning: {warning}", err=True)
    typer.echo(f"  model:    {result.model_path}")
    typer.echo(f"  metrics:  {result.metrics_path}")
    if result.curves_path:
        typer.echo(f"  curves:   {result.curves_path}")
    typer.echo(f"  rejected: {out / 'rejected.csv'}")
