"""Entry point from a checkout: ``python cli.py --help`` runs the ``molgen`` script's app."""

from molgen.cli import main

if __name__ == "__main__":
    main()
