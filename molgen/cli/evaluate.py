"""``molgen evaluate``: GuacaMol and MOSES metrics for a model or a file."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app
from molgen.cli.options import _sep
from molgen.cli.params import SEED_MAX, finite, integer, torch_device
from molgen.errors import MolgenError


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
    sep: str | None = typer.Option(
        None, parser=_sep, help="Delimiter of the --samples file (default: sniff)."
    ),
    n: int = typer.Option(
        10000,
        "-n",
        parser=integer(1, 10**8),
        help="Molecules to sample (or to take from --samples).",
    ),
    seed: int = typer.Option(
        0,
        parser=integer(0, SEED_MAX),
        help="Seed (sampling, reconstruction/interpolation subsets).",
    ),
    temperature: float = typer.Option(
        1.0, parser=finite(0.0, 100.0), help="Sampling temperature (0: greedy)."
    ),
    max_retries: int | None = typer.Option(
        None,
        "--max-retries",
        parser=integer(0, 1000),
        help="Run GuacaMol on the sampler that re-decodes invalid codes up to K times (default: "
        "the single-pass decoder). Validity is always reported single-pass.",
    ),
    beam: int = typer.Option(
        1,
        "--beam",
        parser=integer(1, 100),
        help="Beams for reconstruction and interpolation (1: greedy).",
    ),
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
    n_recon: int = typer.Option(
        1000,
        parser=integer(0, 10**7),
        help="Reference molecules for reconstruction accuracy.",
    ),
    n_interp: int = typer.Option(
        50, parser=integer(0, 10**6), help="Random reference pairs for interpolation quality."
    ),
    interp_steps: int = typer.Option(
        10, parser=integer(2, 1000), help="Points per interpolation path."
    ),
    guacamol: bool = typer.Option(
        True, "--guacamol/--no-guacamol", help="Run GuacaMol's benchmarks."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", parser=integer(1, 1024), help="Worker processes (default: all cores)."
    ),
    device: str = typer.Option(
        "cpu", parser=torch_device(), help="Model device: cpu, cuda, cuda:N or auto."
    ),
) -> None:
    """Score a model or a file of SMILES: MOSES metrics, GuacaMol scores, model metrics."""
    from molgen.evaluate import EvaluateConfig
    from molgen.evaluate import evaluate as run_evaluation
    from molgen.evaluate_report import format_table, report_pictures, write_json, write_markdown
    from molgen.outputs import check_output_path

    if reference is None:
        raise MolgenError("--reference FILE is required (e.g. --reference data/moses/test.csv.gz).")
    if (model is None) == (samples is None):
        raise MolgenError("give exactly one of MODEL or --samples FILE to evaluate.")
    inputs = (model, samples, reference, train)
    if json_out is not None:
        check_output_path(json_out, "--json", inputs=inputs, create_parent=True)
    if report is not None:
        check_output_path(report, "--report", inputs=(*inputs, json_out), create_parent=True)
        for picture in report_pictures(report):  # written beside the report
            check_output_path(picture, "--report", inputs=(*inputs, json_out))
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise MolgenError(f"--cache-dir {cache_dir} is a file; give a folder (or leave it out).")
    config = EvaluateConfig(
        n=n,
        seed=seed,
        temperature=temperature,
        max_retries=max_retries,
        beam=beam,
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
    for warning in result.report.get("warnings", []):
        typer.echo(f"Warning: {warning}.", err=True)
    if json_out is not None:
        typer.echo(f"JSON -> {write_json(result.report, json_out)}")
    if report is not None:
        written = write_markdown(result, report)
        typer.echo(f"report -> {written[0]} (+ {', '.join(p.name for p in written[1:])})")
