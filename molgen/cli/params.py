"""Option parsers that check values where the command line is read, before any work.

Each factory returns a parser for ``typer.Option(parser=...)``: it turns the text into the value
or raises ``typer.BadParameter`` with what was given and what is allowed, which typer prefixes
with the option's name (``Invalid value for '--rho': ...``) and ``molgen.cli.app.main`` prints as
one ``Error:`` line with exit code 1. Floats must be finite (``float("nan")`` and ``inf`` parse
as floats, and click's ranges let them through), integers and floats can be bounded,
enumerations are case-insensitive, and devices, durations and Lightning's ``--devices`` have
their own forms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import typer

#: Seeds: what numpy, torch and Python's random all accept.
SEED_MAX = 2**32 - 1


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(
    low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> str:
    if low is None:
        return "" if high is None else f" {'<' if high_open else '<='} {_num(high)}"
    if high is None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return f" in {left}{_num(low)}, {_num(high)}{right}"


def _inside(
    x: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and (x < low or (low_open and x == low)):
        return False
    return not (high is not None and (x > high or (high_open and x == high)))


def finite(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """A parser of finite floats, optionally bounded (bounds closed unless ``*_open``).

    Args:
        low: Lower bound, or None.
        high: Upper bound, or None.
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.

    Returns:
        The parser.
    """
    allowed = "a finite number" + _bounds(low, high, low_open, high_open)

    def parse_finite(text: str) -> float:
        try:
            x = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a number; use {allowed}.") from None
        if not math.isfinite(x) or not _inside(x, low, high, low_open, high_open):
            raise typer.BadParameter(f"{text} is not allowed; use {allowed}.")
        return x

    return parse_finite


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers, optionally bounded (both bounds included).

    Args:
        low: Smallest value, or None.
        high: Largest value, or None.

    Returns:
        The parser.
    """
    allowed = "a whole number" + _bounds(low, high)

    def parse_integer(text: str) -> int:
        try:
            x = int(str(text).strip().replace("_", ""))
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a whole number; use {allowed}.") from None
        if not _inside(x, low, high, False, False):
            raise typer.BadParameter(f"{text} is out of range; use {allowed}.")
        return x

    return parse_integer


def share(allow_zero: bool) -> Callable[[str], float]:
    """A parser of ``--valid-fraction`` / ``--test-fraction``: a fraction or a whole count > 1.

    Args:
        allow_zero: Whether 0 (no such split) is allowed.

    Returns:
        The parser.
    """
    rule = f"use a fraction in {'[0' if allow_zero else '(0'}, 1] or a whole count of molecules > 1"

    def parse_share(text: str) -> float:
        try:
            x = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a number; {rule}.") from None
        if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
            raise typer.BadParameter(f"{text} is not allowed; {rule}.")
        if x > 1 and x != int(x):
            raise typer.BadParameter(f"{text} is neither a fraction nor a count; {rule}.")
        return x

    return parse_share


def choice(*values: str) -> Callable[[str], str]:
    """A parser of one of ``values`` (case-insensitive; returns the value as listed).

    Args:
        *values: The allowed values.

    Returns:
        The parser.
    """
    lookup = {v.lower(): v for v in values}

    def parse_choice(text: str) -> str:
        found = lookup.get(str(text).strip().lower())
        if found is None:
            raise typer.BadParameter(f"{text!r} is not one of {', '.join(values)}.")
        return found

    return parse_choice


def torch_device(allow_index: bool = True) -> Callable[[str], str]:
    """A parser of torch devices: ``auto``, ``cpu``, ``cuda`` and (``allow_index``) ``cuda:N``.

    Whether the device exists is checked when the model is put on it.
    """
    pattern = re.compile(r"cpu|auto|cuda(:\d{1,3})?" if allow_index else r"cpu|auto|cuda")
    allowed = "auto, cpu, cuda or cuda:N" if allow_index else "auto, cpu or cuda"

    def parse_device(text: str) -> str:
        value = str(text).strip().lower()
        if not pattern.fullmatch(value):
            raise typer.BadParameter(f"{text!r} is not a device; use {allowed}.")
        return value

    return parse_device


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longest duration accepted (a larger one would overflow Python's timedelta).
DURATION_MAX_DAYS = 3650


def duration_seconds(text: str) -> float | None:
    """Seconds in ``90s``, ``30m``, ``1.5h``, ``2d`` or ``DD:HH:MM:SS``; None if not a duration."""
    m = _DURATION.fullmatch(text)
    if m:
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    parts = text.strip().split(":")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 9 for p in parts):
        d, h, mi, s = (int(p) for p in parts)
        return float(((d * 24 + h) * 60 + mi) * 60 + s)
    return None


def duration(text: str) -> str:
    """Parse a positive wall time (``--max-time``); returns the text as written.

    ``molgen.train_config.parse_max_time`` reads it later; only its form and size are checked.
    """
    seconds = duration_seconds(str(text))
    if seconds is None:
        raise typer.BadParameter(
            f"{text!r} is not a duration; use e.g. 90s, 30m, 1h or DD:HH:MM:SS."
        )
    if seconds <= 0 or seconds > DURATION_MAX_DAYS * 86400:
        raise typer.BadParameter(
            f"{text!r} is not allowed; use a duration above 0 and at most {DURATION_MAX_DAYS} days."
        )
    return str(text)


def lightning_devices(text: str) -> str:
    """Parse Lightning's ``--devices``: ``auto``, a count >= 1, ``-1`` (all) or indices ``0,1``."""
    value = str(text).strip()
    if value in ("auto", "-1") or re.fullmatch(r"[1-9]\d{0,3}", value):
        return value
    if re.fullmatch(r"\d{1,4}(,\d{1,4})+,?", value):
        return value
    raise typer.BadParameter(
        f"{text!r} is not a device count; use auto, a number >= 1, -1 (all) or device indices "
        "like 0,1."
    )


def check_smiles_option(text: str, option: str) -> str:
    """Check a SMILES given on the command line before any model is loaded.

    Args:
        text: The SMILES.
        option: The option or argument's name for messages.

    Returns:
        The SMILES, stripped.

    Raises:
        MolgenError: empty, longer than ``molgen.data.MAX_SMILES_CHARS``, more atoms than
            ``molgen.data.MAX_ATOMS``, or not parseable by RDKit.
    """
    from molgen.data import MAX_ATOMS, MAX_SMILES_CHARS, parse_smiles, smiles_size_problem
    from molgen.errors import MolgenError

    smiles = text.strip()
    if not smiles:
        raise MolgenError(f"{option}: an empty SMILES was given; pass a molecule.")
    if smiles_size_problem(smiles):
        raise MolgenError(
            f"{option}: the SMILES has {len(smiles)} characters; molgen reads at most "
            f"{MAX_SMILES_CHARS}."
        )
    if parse_smiles(smiles) is None:
        big = parse_smiles(smiles, max_atoms=10**9)  # only when it failed: why?
        if big is not None:
            raise MolgenError(
                f"{option}: the molecule has {big.GetNumAtoms()} atoms; molgen reads at most "
                f"{MAX_ATOMS}."
            )
        shown = smiles if len(smiles) <= 80 else smiles[:80] + "..."
        raise MolgenError(f"{option}: {shown!r} is not a valid SMILES (RDKit cannot parse it).")
    return smiles


__all__ = [
    "SEED_MAX",
    "check_smiles_option",
    "choice",
    "torch_device",
    "duration",
    "duration_seconds",
    "finite",
    "integer",
    "lightning_devices",
    "share",
]
