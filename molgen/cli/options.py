"""Options shared by several commands (the data-step options of prepare and train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from molgen.cli.params import choice, integer, share


def _sep(text: str) -> str:
    """Parse ``--sep``: one character, or tab, comma, semicolon, space, pipe."""
    from molgen.errors import MolgenError
    from molgen.readers import normalize_sep

    try:
        normalize_sep(text)
    except MolgenError:
        raise typer.BadParameter(
            f"{text!r} is not a delimiter; use one character, or tab, comma or semicolon."
        ) from None
    return text


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
SepOpt = Annotated[
    str | None,
    typer.Option(parser=_sep, help="Delimiter: ',', ';' or tab (default: sniffed)."),
]
RepresentationOpt = Annotated[
    str, typer.Option(parser=choice("smiles", "selfies"), help="Tokens: smiles or selfies.")
]
MaxLengthOpt = Annotated[
    int,
    typer.Option(parser=integer(1, 10_000), help="Drop molecules longer than this many tokens."),
]
NoStereoOpt = Annotated[bool, typer.Option("--no-stereo", help="Remove stereochemistry.")]
KeepFragmentsOpt = Annotated[
    bool,
    typer.Option(
        "--keep-fragments", help="Keep all fragments (default: largest only, salts dropped)."
    ),
]
ValidFractionOpt = Annotated[
    float,
    typer.Option(parser=share(allow_zero=True), help="Validation share (a count if > 1)."),
]
# Training needs validation rows: with none it would validate on its own training rows.
TrainValidFractionOpt = Annotated[
    float,
    typer.Option(parser=share(allow_zero=False), help="Validation share (a count if > 1)."),
]
TestFractionOpt = Annotated[
    float, typer.Option(parser=share(allow_zero=True), help="Test share (a count if > 1).")
]
AugmentOpt = Annotated[
    int,
    typer.Option(parser=integer(0, 100), help="Randomized SMILES added per training molecule."),
]
JobsOpt = Annotated[
    int,
    typer.Option("--jobs", "-j", parser=integer(0, 1024), help="Worker processes (0: all cores)."),
]
MaxCharsOpt = Annotated[
    int,
    typer.Option(
        parser=integer(1, 1_000_000),
        help="Reject SMILES lines longer than this many characters, unparsed (default 2000).",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(parser=integer(0, 2**32 - 1), help="Seed of the split and the augmentation."),
]


def build_data_config(
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
    max_chars: int | None = None,
) -> Any:
    """The data-step settings from the shared options."""
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
        **({} if max_chars is None else {"max_chars": max_chars}),
    )
