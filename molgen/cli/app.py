"""The shared Typer app, the ``Error:`` helper and the entry point of the ``molgen`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from molgen.errors import MolgenError

if TYPE_CHECKING:  # checked against the copy of click that typer >= 0.20 carries
    from typer._click import exceptions as _click_exceptions
else:
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as _click_exceptions
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as _click_exceptions


class _NeverRaised(Exception):
    def format_message(self) -> str:
        return str(self)


# click < 8.2 prints the help itself when no arguments are given
_NoArgsIsHelpError = getattr(_click_exceptions, "NoArgsIsHelpError", _NeverRaised)

app = typer.Typer(
    name="molgen",
    help="Molecule generation with a hyperspherical (spherical Cauchy) VAE.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Where the bundled files live (a checkout or an editable install; the Docker image copies data/).
DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"


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


def fail(message: str) -> None:
    """Print one ``Error:`` line and exit with code 1."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


# ---- Ctrl-C ---------------------------------------------------------------------------------
#: Where ``molgen train`` writes its run (set through :func:`set_run_dir`): a Ctrl-C then says
#: where the checkpoint Lightning's OnExceptionCheckpoint wrote is, and how to resume.
_RUN_DIR: list[Path | None] = [None]
_RUN_STARTED: list[float] = [0.0]
#: The checkpoint OnExceptionCheckpoint writes on Ctrl-C or a crash, inside the run directory.
INTERRUPTED_CHECKPOINT = Path("checkpoints") / "interrupted.ckpt"


def set_run_dir(run_dir: Path | str | None) -> None:
    """Record the run directory of a training run, for the message a Ctrl-C prints.

    Args:
        run_dir: The ``--out`` folder of ``molgen train`` (None: no run in progress).
    """
    import time

    _RUN_DIR[0] = None if run_dir is None else Path(run_dir)
    _RUN_STARTED[0] = time.time()


def remember_run_dir(value: Path | None) -> Path | None:
    """Typer callback of ``molgen train --out``: :func:`set_run_dir`, then the value unchanged."""
    set_run_dir(value)
    return value


def interrupt_message() -> str:
    """The one line printed on Ctrl-C (for a training run: the checkpoint and how to resume)."""
    run_dir = _RUN_DIR[0]
    if run_dir is None:
        return "Interrupted."
    checkpoint = run_dir / INTERRUPTED_CHECKPOINT
    # written by this run (not left over from an earlier interrupted one)
    if checkpoint.exists() and checkpoint.stat().st_mtime >= _RUN_STARTED[0] - 1:
        return (
            f"Interrupted: checkpoint saved as {checkpoint}; continue the run with "
            f"`molgen train --out {run_dir} --resume`."
        )
    return f"Interrupted before training wrote a checkpoint in {run_dir}; nothing to resume."


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _error(message: str) -> int:
    typer.echo(f"Error: {_one_line(message)}", err=True)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Run the app: every failure is one ``Error: ...`` line and exit code 1, never a traceback.

    Library errors (:class:`~molgen.errors.MolgenError`), click's usage errors (a bad option
    value, an unknown option, a missing argument) and operating-system errors (disk full, no
    permission) become one ``Error:`` line and exit code 1. Ctrl-C prints one line (see
    :func:`interrupt_message`) and exits with 130. ``--help`` and ``molgen`` alone print the help
    and exit with 0.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
    """
    import signal
    import threading

    interrupted = [False]

    def on_sigint(signum: int, frame: object) -> None:
        interrupted[0] = True
        raise KeyboardInterrupt

    # Remember a Ctrl-C even when a library turns it into another exit (Lightning exits with 1).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    code: int
    try:
        result = app(args=argv, standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except _NoArgsIsHelpError as exc:  # `molgen` alone: the help, on stdout
        typer.echo(exc.format_message())
        code = 0
    except _click_exceptions.ClickException as exc:  # usage: a bad option value, a missing arg
        code = _error(exc.format_message())
    except MolgenError as exc:
        code = _error(str(exc))
    except (KeyboardInterrupt, typer.Abort):
        interrupted[0] = True
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MemoryError:
        code = _error("out of memory; use smaller sizes (-n, --batch-size) or a larger machine.")
    except OSError as exc:  # disk full, permission denied, ... while reading or writing
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        code = _error(f"{exc.strerror or exc}{where}")
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted[0] or code == 130:
        typer.echo(interrupt_message(), err=True)
        code = 130
    set_run_dir(None)
    sys.exit(code)


__all__ = [
    "app",
    "main",
    "DATA_DIR",
    "fail",
    "interrupt_message",
    "remember_run_dir",
    "set_run_dir",
]
