"""The ``molgen`` command line: thin Typer commands that parse options and call the library.

One module per command (or pair of close commands); each registers itself on the shared ``app``.
"""

from molgen.cli import encode, evaluate, mnist, optimize, prepare, sample, train  # noqa: F401
from molgen.cli.app import DATA_DIR, app, main

__all__ = ["app", "main", "DATA_DIR"]
