"""Entry point from a checkout: ``python cli.py --help`` runs the same app as the ``molgen`` script."""

from molgen.cli import main

if __name__ == "__main__":
    main()
