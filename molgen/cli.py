"""The ``molgen`` command line: thin Typer commands that parse options and call the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional  # noqa: F401  (Optional: the mnist command)

import typer

from molgen.errors import MolgenError

app = typer.Typer(
    name="molgen",
    help="Molecule generation with a hyperspherical (spherical Cauchy) VAE.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Where the bundled files live (a checkout or an editable install; the Docker image copies data/).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _version(value: bool) -> None:
    if value:
        from molgen import __version__

        typer.echo(f"molgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Molecule generation with a hyperspherical (spherical Cauchy) VAE."""


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


# ---- options shared by the commands that run the data step (prepare, train) -------------------
DataArg = Annotated[
    Path | None,
    typer.Argument(
        help="Molecule file (.csv/.tsv/.smi/.txt, optionally .gz). Default: MOSES train set."
    ),
]
SmilesColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="Column holding SMILES (default: a 'smiles' column, or the one that parses)."
    ),
]
SepOpt = Annotated[str | None, typer.Option(help="Delimiter: ',', ';' or tab (default: sniffed).")]
RepresentationOpt = Annotated[str, typer.Option(help="Tokens: smiles or selfies.")]
MaxLengthOpt = Annotated[int, typer.Option(help="Drop molecules longer than this many tokens.")]
NoStereoOpt = Annotated[bool, typer.Option("--no-stereo", help="Remove stereochemistry.")]
KeepFragmentsOpt = Annotated[
    bool,
    typer.Option(
        "--keep-fragments", help="Keep all fragments (default: largest only, salts dropped)."
    ),
]
ValidFractionOpt = Annotated[float, typer.Option(help="Validation share (a count if > 1).")]
TestFractionOpt = Annotated[float, typer.Option(help="Test share (a count if > 1).")]
AugmentOpt = Annotated[int, typer.Option(help="Randomized SMILES added per training molecule.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (0: all cores).")]


def _data_config(
    smiles_column: str | None,
    sep: str | None,
    representation: str,
    max_length: int,
    no_stereo: bool,
    keep_fragments: bool,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    augment: int,
    jobs: int,
) -> Any:
    from molgen.data import DataConfig

    return DataConfig(
        smiles_column=smiles_column,
        sep=sep,
        representation=representation,
        max_length=max_length,
        largest_fragment=not keep_fragments,
        stereo=not no_stereo,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        seed=seed,
        augment=augment,
        n_jobs=jobs,
    )


# ---- prepare (data pipeline) ------------------------------------------------------------------
@app.command()
def prepare(
    data: DataArg = None,
    smiles_column: SmilesColumnOpt = None,
    sep: SepOpt = None,
    representation: RepresentationOpt = "smiles",
    max_length: MaxLengthOpt = 100,
    no_stereo: NoStereoOpt = False,
    keep_fragments: KeepFragmentsOpt = False,
    valid_fraction: ValidFractionOpt = 0.05,
    test_fraction: TestFractionOpt = 0.0,
    augment: AugmentOpt = 0,
    out: Path = typer.Option(Path("runs/prepared"), "--out", "-o", help="Output folder."),
    seed: int = typer.Option(0, help="Seed of the split and the augmentation."),
    jobs: JobsOpt = 0,
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Redo the per-molecule checks even if a cached result exists."
    ),
) -> None:
    """Validate, canonicalize and split a molecule file (no training).

    Writes OUT/train.smi, valid.smi (test.smi), rejected.csv and vocab.json, and prints a summary.
    """
    from molgen.data import DEFAULT_DATA, format_summary, prepare_dataset

    config = _data_config(
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
    )
    prepared = prepare_dataset(
        data or DEFAULT_DATA, config, out_dir=out, progress=True, cache=not no_cache
    )
    typer.echo(format_summary(prepared))


# ---- end prepare ------------------------------------------------------------------------------

# ---- train / sample / interpolate (VAE) -------------------------------------------------------
LATENTS = "spcauchy|vmf|power|gaussian"


@app.command()
def train(
    data: Path | None = typer.Argument(
        None, help="Molecule file (csv/tsv/smi, optionally .gz). Default: bundled MOSES train set."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory for model.pt, metrics, plots."
    ),
    preset: str = typer.Option(
        "small", help="tiny (seconds), small (~1 h on 2 CPU cores), moses (GPU)."
    ),
    latent: str | None = typer.Option(None, help=f"Latent family: {LATENTS} (default spcauchy)."),
    latent_dim: int | None = typer.Option(None, help="AMBIENT latent dimension (z on S^(d-1))."),
    representation: RepresentationOpt = "smiles",
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    max_steps: int | None = typer.Option(None, help="Maximum optimizer steps."),
    max_time: str | None = typer.Option(None, help="Wall-time limit, e.g. 30m, 1h, DD:HH:MM:SS."),
    batch_size: int | None = typer.Option(None, help="Molecules per batch (per device)."),
    lr: float | None = typer.Option(None, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed: same seed, same machine -> same model."),
    beta_max: float | None = typer.Option(None, help="Final KL weight."),
    beta_warmup_steps: int | None = typer.Option(None, help="Steps with KL weight 0."),
    beta_ramp_steps: int | None = typer.Option(None, help="Steps of the linear KL ramp."),
    word_dropout: float | None = typer.Option(None, help="Decoder word-dropout probability."),
    embedding_dim: int | None = typer.Option(None, help="Token embedding size."),
    encoder_hidden: int | None = typer.Option(None, help="Encoder GRU size (per direction)."),
    encoder_layers: int | None = typer.Option(None, help="Encoder GRU layers."),
    decoder_hidden: int | None = typer.Option(None, help="Decoder GRU size."),
    decoder_layers: int | None = typer.Option(None, help="Decoder GRU layers."),
    dropout: float | None = typer.Option(None, help="Dropout on embeddings / between layers."),
    early_stopping_patience: int | None = typer.Option(
        None, help="Validation checks without improvement before stopping (0: off)."
    ),
    accelerator: str = typer.Option("auto", help="auto, cpu or gpu."),
    devices: str = typer.Option("auto", help="Devices per node (number or auto)."),
    num_nodes: int = typer.Option(1, help="Number of nodes."),
    strategy: str = typer.Option("auto", help="auto or ddp."),
    precision: str = typer.Option("32-true", help="Lightning precision, e.g. bf16-mixed on GPUs."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    smiles_column: SmilesColumnOpt = None,
    sep: SepOpt = None,
    max_length: MaxLengthOpt = 100,
    no_stereo: NoStereoOpt = False,
    keep_fragments: KeepFragmentsOpt = False,
    valid_fraction: ValidFractionOpt = 0.05,
    test_fraction: TestFractionOpt = 0.0,
    augment: AugmentOpt = 0,
    jobs: JobsOpt = 0,
) -> None:
    """Train a VAE on a molecule file and write RUN_DIR/model.pt, metrics.csv and curves."""
    from molgen.data import DEFAULT_DATA, DataConfig
    from molgen.train import load_run_config, resolve_configs
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
        seed=seed,
        beta_max=beta_max,
        beta_warmup_steps=beta_warmup_steps,
        beta_ramp_steps=beta_ramp_steps,
        word_dropout=word_dropout,
        early_stopping_patience=early_stopping_patience,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
    )
    if resume:
        saved = load_run_config(out)
        data_path = Path(saved.data_path)
        data_config = DataConfig(**saved.data)
        model_settings = {
            k: v for k, v in saved.model.items() if k not in ("vocab_size", "max_length")
        }
        limits = {
            k: v
            for k, v in dict(epochs=epochs, max_steps=max_steps, max_time=max_time).items()
            if v is not None
        }
        _, train_config = resolve_configs(saved.preset, {}, {**saved.train, **limits})
        preset = saved.preset
    else:
        data_path = data or DEFAULT_DATA
        data_config = _data_config(
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
        )
        model_settings, train_config = resolve_configs(preset, model_overrides, train_overrides)
    family = model_settings.get("latent", "spcauchy")
    typer.echo(f"Training a {family} VAE ({preset} preset) on {data_path}")
    result = run_training(
        data_path, out, data_config, model_settings, train_config, preset=preset, resume=resume
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
    typer.echo(f"  model:    {result.model_path}")
    typer.echo(f"  metrics:  {result.metrics_path}")
    if result.curves_path:
        typer.echo(f"  curves:   {result.curves_path}")
    typer.echo(f"  rejected: {out / 'rejected.csv'}")


@app.command()
def sample(
    model: Path | None = typer.Argument(None, help="Model file (default: the bundled model)."),
    n: int = typer.Option(100, "-n", help="Number of molecules (after filters)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="CSV to write (default: stdout)."
    ),
    temperature: float | None = typer.Option(
        None, help="Softmax temperature; 0 = greedy. Default 1 (prior), 0 (--around)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
    around: str | None = typer.Option(None, help="Sample analogues around this SMILES."),
    rho: float = typer.Option(
        0.9, help="With --around: concentration in [0, 1); near 1 = close analogues."
    ),
    valid_only: bool = typer.Option(False, "--valid-only", help="Keep only valid molecules."),
    unique: bool = typer.Option(False, "--unique", help="Keep only distinct molecules."),
    novel_against: Path | None = typer.Option(
        None, help="Molecule file: mark novelty and keep only molecules not in it."
    ),
    batch_size: int = typer.Option(512, help="Codes decoded per batch."),
    max_attempts: int | None = typer.Option(
        None, help="Cap on decoded candidates (default 20n+1000)."
    ),
    image: Path | None = typer.Option(None, help="Draw the first molecules to this PNG."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Sample molecules from the prior, or analogues around a molecule (--around SMILES --rho R)."""
    from molgen.sampling import (
        SampleRequest,
        SampleStats,
        draw_grid,
        generate_rows,
        load_model,
        write_rows,
    )

    m = load_model(model, device=device)
    novel_set = None
    if novel_against is not None:
        from molgen.data import canonicalize, read_smiles_file

        raw, _ = read_smiles_file(novel_against)
        novel_set = {c for c in (canonicalize(s) for s in raw) if c}
    req = SampleRequest(
        n=n,
        temperature=(0.0 if around else 1.0) if temperature is None else temperature,
        seed=seed,
        batch_size=batch_size,
        around=around,
        rho=rho,
        valid_only=valid_only,
        unique=unique,
        novel_against=novel_set,
        novel_only=novel_set is not None,
        max_attempts=max_attempts,
    )
    stats = SampleStats()
    first = write_rows(
        generate_rows(m, req, stats, progress=output is not None), output, keep_first=30
    )
    msg = f"{stats.written} molecules ({stats.valid} valid) from {stats.attempts} decoded"
    typer.echo(msg + (f" -> {output}" if output else ""), err=output is None)
    if stats.cap_hit:
        typer.echo(
            f"Warning: only {stats.written} of {n} molecules met the filters after "
            f"{stats.attempts} attempts (the cap); relax the filters or raise --max-attempts.",
            err=True,
        )
    if image is not None:
        legends = [
            f"sim {r['similarity']:.2f}" if around and r.get("similarity") != "" else f"#{i + 1}"
            for i, r in enumerate(first)
        ]
        keep = [i for i, r in enumerate(first) if r["valid"]]
        if keep:
            draw_grid([first[i]["smiles"] for i in keep], [legends[i] for i in keep], image)
            typer.echo(f"grid -> {image}", err=output is None)
        else:
            typer.echo(
                "Warning: no valid molecule among the first rows; no image written.", err=True
            )


@app.command()
def interpolate(
    args: list[str] = typer.Argument(
        ..., help="[MODEL] SMILES_A SMILES_B", metavar="[MODEL] SMILES_A SMILES_B"
    ),
    steps: int = typer.Option(10, help="Points on the path, endpoints included."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="CSV to write (default: stdout)."
    ),
    image: Path | None = typer.Option(None, help="Draw the path to this PNG."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Walk the great circle between two molecules and decode each point (greedy)."""
    from molgen.sampling import draw_grid, interpolation_rows, load_model, write_rows

    if len(args) not in (2, 3):
        _fail(
            "interpolate takes [MODEL] SMILES_A SMILES_B (two molecules, optionally a model first)."
        )
    model_path = Path(args[0]) if len(args) == 3 else None
    smiles_a, smiles_b = args[-2], args[-1]
    m = load_model(model_path, device=device)
    rows = interpolation_rows(m, smiles_a, smiles_b, steps)
    write_rows(iter(rows), output)
    n_valid = sum(bool(r["valid"]) for r in rows)
    n_distinct = len({r["smiles"] for r in rows if r["valid"]})
    typer.echo(
        f"{n_valid}/{len(rows)} valid, {n_distinct} distinct molecules on the path"
        + (f" -> {output}" if output else ""),
        err=output is None,
    )
    if image is not None:
        draw_grid(
            [str(r["smiles"]) for r in rows],
            [f"t={r['t']:.2f}" for r in rows],
            image,
            per_row=steps,
        )
        typer.echo(f"path -> {image}", err=output is None)


# ---- end train / sample / interpolate ---------------------------------------------------------


# ---- evaluate ---------------------------------------------------------------------------------
@app.command()
def evaluate(
    model: Path | None = typer.Argument(None, help="Model file to sample from (or --samples)."),
    reference: Path | None = typer.Option(
        None, "--reference", "-r", help="Reference molecules, e.g. data/moses/test.csv.gz."
    ),
    samples: Path | None = typer.Option(
        None, "--samples", help="File of generated SMILES to score instead of a model."
    ),
    smiles_column: str | None = typer.Option(
        None, help="SMILES column of the --samples file (default: detected)."
    ),
    sep: str | None = typer.Option(None, help="Delimiter of the --samples file (default: sniff)."),
    n: int = typer.Option(10000, "-n", help="Molecules to sample (or to take from --samples)."),
    seed: int = typer.Option(0, help="Seed (sampling, reconstruction/interpolation subsets)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    train: Path | None = typer.Option(
        None, help="Training set for novelty (default: the model's; MOSES: data/moses/train.csv.gz)"
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write every number and setting here."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write a Markdown report here (PNG pictures beside it)."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Cache for reference statistics (default ~/.cache/molgen; safe to delete)."
    ),
    n_recon: int = typer.Option(1000, help="Reference molecules for reconstruction accuracy."),
    n_interp: int = typer.Option(50, help="Random reference pairs for interpolation quality."),
    interp_steps: int = typer.Option(10, help="Points per interpolation path."),
    guacamol: bool = typer.Option(
        True, "--guacamol/--no-guacamol", help="Run GuacaMol's benchmarks."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", help="Worker processes (default: all cores)."
    ),
    device: str = typer.Option("cpu", help="Model device: cpu, cuda or auto."),
) -> None:
    """Score a model or a file of SMILES: MOSES metrics, GuacaMol scores, model metrics."""
    from molgen.evaluate import EvaluateConfig, format_table, write_json, write_markdown
    from molgen.evaluate import evaluate as run_evaluation

    if reference is None:
        raise MolgenError("--reference FILE is required (e.g. --reference data/moses/test.csv.gz).")
    if (model is None) == (samples is None):
        raise MolgenError("give exactly one of MODEL or --samples FILE to evaluate.")
    config = EvaluateConfig(
        n=n,
        seed=seed,
        temperature=temperature,
        n_recon=n_recon,
        n_interp=n_interp,
        interp_steps=interp_steps,
        guacamol=guacamol,
        n_jobs=jobs,
        cache_dir=str(cache_dir) if cache_dir else None,
        progress=True,
    )
    loaded = None
    if model is not None:
        from molgen.sampling import load_model

        loaded = load_model(model, device=device)
    result = run_evaluation(
        reference,
        model=loaded,
        samples_path=samples,
        train_path=train,
        config=config,
        model_path=model,
        smiles_column=smiles_column,
        sep=sep,
    )
    typer.echo(format_table(result.report))
    if json_out is not None:
        typer.echo(f"JSON -> {write_json(result.report, json_out)}")
    if report is not None:
        written = write_markdown(result, report)
        typer.echo(f"report -> {written[0]} (+ {', '.join(p.name for p in written[1:])})")


# ---- end evaluate -----------------------------------------------------------------------------


# ---- mnist ------------------------------------------------------------------------------------
@app.command("mnist")
def mnist(
    latent: str = typer.Option(
        "spcauchy", "--latent", help="Latent family: spcauchy, vmf, power or gaussian."
    ),
    dim: int = typer.Option(
        2, "--dim", help="The paper's d: sphere S^d in R^(d+1), or R^d for gaussian."
    ),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs (the paper uses 40)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (runs are deterministic on CPU)."),
    out: Path = typer.Option(
        Path("runs/mnist"), "--out", help="Output folder for results.json and the PNGs."
    ),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per training step."),
    lr: float = typer.Option(3e-4, "--lr", help="AdamW learning rate."),
    lr_warmup_steps: int = typer.Option(
        250, "--lr-warmup-steps", help="Linear learning-rate ramp over the first steps."
    ),
    train_subset: int | None = typer.Option(
        None, "--train-subset", help="Train on the first N training images only."
    ),
    test_subset: int | None = typer.Option(
        None, "--test-subset", help="Evaluate on the first N test images only."
    ),
    ll_samples: int = typer.Option(
        500, "--ll-samples", help="Importance samples per image for the log-likelihood."
    ),
    ll_images: int = typer.Option(
        500, "--ll-images", help="Test images for the log-likelihood estimate (0 skips it)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with the four MNIST IDX files (default: bundled copy)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (1 is fastest on a crowded machine)."
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


# ---- end mnist --------------------------------------------------------------------------------


# ---- latent-demo (foundation) -----------------------------------------------------------------
@app.command("latent-demo")
def latent_demo(
    dim: int = typer.Option(64, "--dim", help="Ambient latent dimension (z has DIM entries)."),
    n: int = typer.Option(5, "--n", help="Concentrations per family (mean cosine 0.1 to 0.99)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    samples: int = typer.Option(2000, "--samples", help="Samples per row for the mean cosine."),
) -> None:
    """Show each latent family at a few concentrations: KL to the prior and sampled cosines."""
    from molgen.latent import format_latent_demo
    from molgen.latent import latent_demo as run_demo

    rows = run_demo(dim=dim, levels=n, seed=seed, samples=samples)
    typer.echo(format_latent_demo(rows, dim=dim, samples=samples))


# ---- end latent-demo --------------------------------------------------------------------------


def main() -> None:
    """Run the app; library errors become one ``Error: ...`` line and exit code 1."""
    try:
        app()
    except MolgenError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("Error: interrupted.", err=True)
        sys.exit(130)


__all__ = ["app", "main", "DATA_DIR"]
