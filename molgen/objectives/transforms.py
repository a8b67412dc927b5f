"""Desirability transforms (registry; REINVENT4's names, parameters and formulas).

REINVENT4 (``reinvent/scoring/transforms``: ``sigmoids.py``, ``sigmoid_functions.py``,
``double_sigmoid.py``, ``steps.py``, ``exponential_decay.py``) uses the base-10 logistic
``s(h) = 1 / (1 + 10**-h)``:

* ``sigmoid(low, high, k)``: ``s(10 k (x - (low + high)/2) / (high - low))``, a hard step at the
  midpoint when ``low == high``; ``reverse_sigmoid``: ``1 - sigmoid``.
* ``double_sigmoid(low, high, coef_div=100, coef_si=150, coef_se=150)``: below the midpoint of
  [low, high] ``s(coef_si / coef_div (x - low))``, from it on
  ``1 - s(coef_se / coef_div (x - high))``.
* ``step(low, high)``: 1 if ``low <= x <= high``; ``left_step(low)``: 1 if ``x <= low``;
  ``right_step(high)``: 1 if ``x >= high``; ``exponential_decay(k)``: 1 for x < 0, else exp(-k x).
* ``gaussian(mu, sigma)``: ``exp(-((x - mu) / sigma)**2 / 2)`` (not in REINVENT4).

Outputs are clipped to [0, 1]. Parameters are checked when a profile is built; molgen also
requires ``low <= high``, ``k > 0``, positive coefficients and ``sigma > 0``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from molgen.errors import MolgenError

TransformFn = Callable[..., np.ndarray]


@dataclass
class TransformEntry:
    """A registered transform: its function, parameters (-> default, None: required), check."""

    fn: TransformFn
    params: dict[str, float | None]
    check: Callable[..., str | None] | None


TRANSFORMS: dict[str, TransformEntry] = {}


def register_transform(
    name: str, check: Callable[..., str | None] | None = None
) -> Callable[[TransformFn], TransformFn]:
    """Register a transform ``fn(x, **params)`` vectorised over a float array.

    Args:
        name: The ``type`` in a profile.
        check: Gets the parameters, returns an error message for invalid ones (or None).

    Returns:
        A decorator; parameters and defaults are read from the signature (after ``x``).
    """

    def decorator(fn: TransformFn) -> TransformFn:
        params = list(inspect.signature(fn).parameters.values())[1:]
        defaults = {p.name: None if p.default is p.empty else p.default for p in params}
        TRANSFORMS[name] = TransformEntry(fn, defaults, check)
        return fn

    return decorator


def available_transforms() -> list[str]:
    """Registered transform types."""
    return sorted(TRANSFORMS)


def _logistic10(h: np.ndarray) -> np.ndarray:
    """``1 / (1 + 10**-h)`` without overflow (tanh form)."""
    return 0.5 * (1.0 + np.tanh(0.5 * math.log(10.0) * h))


def _ordered(low: float, high: float, **_: float) -> str | None:
    return None if low <= high else f"low ({low}) must be <= high ({high})"


def _sigmoid_check(low: float, high: float, k: float) -> str | None:
    return _ordered(low, high) or (None if k > 0 else f"k ({k}) must be > 0")


def _positive(*names: str) -> Callable[..., str | None]:
    def check(**params: float) -> str | None:
        bad = [n for n in names if not params[n] > 0]
        if bad:
            return f"{', '.join(bad)} must be > 0"
        return _ordered(**params) if "low" in params else None

    return check


@register_transform("sigmoid", check=_sigmoid_check)
def sigmoid(x: np.ndarray, low: float, high: float, k: float) -> np.ndarray:
    """Rising sigmoid, 0.5 at the midpoint of [low, high]."""
    centred = x - (low + high) / 2
    if high == low:
        return (centred > 0).astype(float)
    return _logistic10(10.0 * k * centred / (high - low))


@register_transform("reverse_sigmoid", check=_sigmoid_check)
def reverse_sigmoid(x: np.ndarray, low: float, high: float, k: float) -> np.ndarray:
    """Falling sigmoid: ``1 - sigmoid``."""
    return 1.0 - sigmoid(x, low, high, k)


@register_transform("double_sigmoid", check=_positive("coef_div", "coef_si", "coef_se"))
def double_sigmoid(
    x: np.ndarray,
    low: float,
    high: float,
    coef_div: float = 100.0,
    coef_si: float = 150.0,
    coef_se: float = 150.0,
) -> np.ndarray:
    """About 1 inside [low, high] (0.5 at each edge), falling to 0 outside."""
    left = _logistic10(coef_si / coef_div * (x - low))
    right = 1.0 - _logistic10(coef_se / coef_div * (x - high))
    return np.where(x < (low + high) / 2, left, right)


@register_transform("gaussian", check=_positive("sigma"))
def gaussian(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """Gaussian bump, 1 at ``mu``."""
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


@register_transform("step", check=_ordered)
def step(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """1 inside [low, high], else 0."""
    return ((x >= low) & (x <= high)).astype(float)


@register_transform("left_step")
def left_step(x: np.ndarray, low: float) -> np.ndarray:
    """1 for ``x <= low``, else 0."""
    return (x <= low).astype(float)


@register_transform("right_step")
def right_step(x: np.ndarray, high: float) -> np.ndarray:
    """1 for ``x >= high``, else 0."""
    return (x >= high).astype(float)


@register_transform("exponential_decay", check=_positive("k"))
def exponential_decay(x: np.ndarray, k: float) -> np.ndarray:
    """1 for ``x < 0``, else ``exp(-k x)``."""
    return np.where(x < 0, 1.0, np.exp(-k * np.maximum(x, 0.0)))


def make_transform(table: Any, where: str) -> Callable[[np.ndarray], np.ndarray]:
    """Validate a profile's transform table (``{ type = ..., params... }``), bind its parameters.

    Args:
        table: The parsed TOML value.
        where: Prefix of error messages (names the component).

    Returns:
        A function from raw values to transformed values in [0, 1].

    Raises:
        MolgenError: Not a table, unknown type, or missing/unknown/invalid parameters.
    """
    if not isinstance(table, dict):
        raise MolgenError(f'{where}: transform must be a table like {{ type = "sigmoid", ... }}.')
    params = dict(table)
    kind = params.pop("type", None)
    if not isinstance(kind, str) or kind not in TRANSFORMS:
        choices = ", ".join(available_transforms())
        raise MolgenError(f"{where}: unknown transform type {kind!r}; choose one of: {choices}.")
    entry = TRANSFORMS[kind]
    unknown = sorted(set(params) - set(entry.params))
    missing = [p for p, default in entry.params.items() if default is None and p not in params]
    if unknown or missing:
        bad = f"unknown parameter(s) {unknown}" if unknown else f"missing parameter(s) {missing}"
        takes = ", ".join(entry.params)
        raise MolgenError(f"{where}: transform {kind!r} has {bad}; it takes {takes}.")
    for key, value in params.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise MolgenError(f"{where}: transform {kind!r}: {key} must be a finite number.")
    defaults = {p: default for p, default in entry.params.items() if default is not None}
    bound: dict[str, float] = {**defaults, **{k: float(v) for k, v in params.items()}}
    if entry.check is not None and (problem := entry.check(**bound)):
        raise MolgenError(f"{where}: transform {kind!r}: {problem}.")
    return lambda x: np.clip(entry.fn(np.asarray(x, dtype=float), **bound), 0.0, 1.0)
