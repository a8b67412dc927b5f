"""User-facing errors: the CLI prints them as one ``Error: ...`` line and exits non-zero."""


class MolgenError(Exception):
    """A problem the user can fix (bad input file, bad option, wrong model file).

    The message must say what is wrong and what to do; the CLI prints it without a traceback.
    """
