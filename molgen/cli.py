"""The ``molgen`` command line: thin Typer commands that parse options and call the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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


# ---- prepare (data pipeline) ------------------------------------------------------------------
# ---- end prepare ------------------------------------------------------------------------------

# ---- train / sample / interpolate (VAE) -------------------------------------------------------
# ---- end train / sample / interpolate ---------------------------------------------------------

# ---- evaluate ---------------------------------------------------------------------------------
# ---- end evaluate -----------------------------------------------------------------------------

# ---- mnist ------------------------------------------------------------------------------------
# ---- end mnist --------------------------------------------------------------------------------

# ---- latent-demo (foundation) -----------------------------------------------------------------
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


__all__ = ["app", "main", "DATA_DIR", "Optional"]
