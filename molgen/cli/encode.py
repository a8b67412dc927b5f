"""``molgen encode`` and ``molgen score``: latent vectors and likelihoods of a molecule file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from molgen.cli.app import app, fail
from molgen.cli.options import SepOpt, SmilesColumnOpt
from molgen.cli.params import SEED_MAX, integer, torch_device

_ARGS_HELP = "[MODEL] FILE: the model (default: the bundled model) and the molecule file."
IdColumnOpt = typer.Option(
    None,
    "--id-column",
    help="Input column to copy to the output (repeat for several; default: all but SMILES).",
)
DeviceOpt = typer.Option("cpu", parser=torch_device(), help="cpu, cuda, cuda:N or auto.")


def _model_and_file(args: list[str], command: str) -> tuple[Path | None, Path]:
    if len(args) not in (1, 2):
        fail(f"{command} takes [MODEL] FILE (a molecule file, optionally a model first).")
    return (Path(args[0]) if len(args) == 2 else None), Path(args[-1])


def _progress(desc: str, size: int) -> tuple[Any, Any]:
    from tqdm import tqdm

    bar = tqdm(total=size, desc=desc, unit="B", unit_scale=True, leave=False)

    def update(position: int) -> None:
        bar.update(max(0, min(position, size) - bar.n))

    return bar, update


def _report(stats: Any, what: str, output: Path, checker: Any, data: Path) -> None:
    from molgen.encode import rejected_path, summary_lines, warning_lines

    for line in warning_lines(stats, checker, data):
        typer.echo(line, err=True)
    for line in summary_lines(stats, what, output):
        typer.echo(line)
    if stats.done == 0:
        fail(
            f"none of the {stats.read:,} rows of {data} could be {what}; see "
            f"{rejected_path(output)} for each row's reason."
        )


@app.command()
def encode(
    args: list[str] = typer.Argument(..., help=_ARGS_HELP, metavar="[MODEL] FILE"),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output: .csv, .parquet or .npy (rejected rows beside it)."
    ),
    smiles_column: SmilesColumnOpt = None,
    sep: SepOpt = None,
    id_column: list[str] | None = IdColumnOpt,
    batch_size: int = typer.Option(
        512, parser=integer(1, 1_000_000), help="Molecules per encoder batch."
    ),
    device: str = DeviceOpt,
) -> None:
    """Encode each molecule of a file: posterior mean (mu) and concentration (rho for spCauchy).

    Writes OUT (.csv/.parquet: line, kept columns, smiles, concentration, mu_0..; .npy: the mu
    matrix, with OUT.rows.csv beside it) and OUT.rejected.csv (line, smiles, reason, detail).
    """
    from molgen.encode import ENCODE_SUFFIXES, EncodeOptions, encode_file, output_paths
    from molgen.inputs import InputChecker
    from molgen.sampling import load_model

    model_path, data = _model_and_file(args, "encode")
    output_paths(output, [data, model_path], ENCODE_SUFFIXES)  # before loading anything
    model = load_model(model_path, device=device)
    options = EncodeOptions(
        smiles_column=smiles_column, sep=sep, id_columns=id_column or None, batch_size=batch_size
    )
    bar, update = _progress("encoding", data.stat().st_size if data.is_file() else 0)
    try:
        stats = encode_file(model, data, output, options, on_progress=update)
    finally:
        bar.close()
    _report(stats, "encoded", output, InputChecker.for_model(model), data)


@app.command()
def score(
    args: list[str] = typer.Argument(..., help=_ARGS_HELP, metavar="[MODEL] FILE"),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output: .csv or .parquet (rejected rows beside it)."
    ),
    samples: int = typer.Option(
        100,
        "--samples",
        "-k",
        parser=integer(1, 1_000_000),
        help="Importance samples per molecule (K).",
    ),
    seed: int = typer.Option(
        0, parser=integer(0, SEED_MAX), help="Seed of the samples: same seed, same scores."
    ),
    smiles_column: SmilesColumnOpt = None,
    sep: SepOpt = None,
    id_column: list[str] | None = IdColumnOpt,
    device: str = DeviceOpt,
) -> None:
    """Score each molecule of a file: log-likelihood (importance-sampled), ELBO, reconstruction.

    Writes OUT (line, kept columns, smiles, n_tokens, log_likelihood, log_likelihood_per_token,
    elbo, recon_nll, kl; in nats) and OUT.rejected.csv. Higher log_likelihood: a better fit.
    """
    from molgen.encode import TABLE_SUFFIXES, output_paths
    from molgen.inputs import InputChecker
    from molgen.sampling import load_model
    from molgen.score import ScoreOptions, score_file

    model_path, data = _model_and_file(args, "score")
    output_paths(output, [data, model_path], TABLE_SUFFIXES)
    model = load_model(model_path, device=device)
    options = ScoreOptions(
        samples=samples,
        seed=seed,
        smiles_column=smiles_column,
        sep=sep,
        id_columns=id_column or None,
    )
    bar, update = _progress("scoring", data.stat().st_size if data.is_file() else 0)
    try:
        stats = score_file(model, data, output, options, on_progress=update)
    finally:
        bar.close()
    _report(stats, "scored", output, InputChecker.for_model(model), data)
