"""``molgen prepare``: check and split a molecule file."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app
from molgen.cli.options import (
    AugmentOpt,
    DataArg,
    JobsOpt,
    KeepFragmentsOpt,
    MaxCharsOpt,
    MaxLengthOpt,
    NoStereoOpt,
    RepresentationOpt,
    SeedOpt,
    SepOpt,
    SmilesColumnOpt,
    TestFractionOpt,
    ValidFractionOpt,
    build_data_config,
)


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
    seed: SeedOpt = 0,
    jobs: JobsOpt = 0,
    max_chars: MaxCharsOpt = 2000,
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Redo the per-molecule checks even if a cached result exists."
    ),
) -> None:
    """Validate, canonicalize and split a molecule file (no training).

    Writes OUT/train.smi, valid.smi (test.smi), rejected.csv and vocab.json, and prints a summary.
    """
    from molgen.data import DEFAULT_DATA, format_summary, prepare_dataset

    config = build_data_config(
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
    prepared = prepare_dataset(
        data or DEFAULT_DATA, config, out_dir=out, progress=True, cache=not no_cache
    )
    typer.echo(format_summary(prepared))
