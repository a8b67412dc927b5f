"""TOML scoring profiles: a weighted mean of transformed components, with filters.

The format is documented in :mod:`molgen.objectives`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from molgen.errors import MolgenError
from molgen.objectives.base import BUILTINS, Objective, ScoreRecord, describe
from molgen.objectives.builtins import single_objective
from molgen.objectives.transforms import make_transform
from molgen.objectives.user import USER_SPEC

NEGATIVE_IN_GEOMETRIC = "negative value in a geometric mean: give that component a transform"


def arithmetic_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted arithmetic mean over components; ``values`` is (components, molecules)."""
    return weights @ values / weights.sum()


def geometric_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted geometric mean over components; exactly 0 when any value is 0 (values >= 0)."""
    with np.errstate(divide="ignore"):  # log(0) = -inf -> exp(-inf) = 0, as wanted
        return np.exp(weights @ np.log(values) / weights.sum())


AGGREGATES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "geometric": geometric_mean,
    "arithmetic": arithmetic_mean,
}
PROFILE_KEYS = ("aggregate", "component")
COMPONENT_KEYS = ("objective", "name", "weight", "transform", "filter")


@dataclass
class Component:
    """One profile component.

    Attributes:
        name: Column name (unique in the profile).
        objective: A single-valued objective.
        weight: Weight in the mean (> 0).
        transform: Raw values -> [0, 1]; None: the raw value enters the mean.
        filter: A veto (aggregate 0 when its transformed value is 0), not part of the mean.
    """

    name: str
    objective: Objective
    weight: float = 1.0
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    filter: bool = False


class ProfileObjective(Objective):
    """Weighted mean of transformed components, with filters; a failed component fails all."""

    def __init__(self, spec: str, components: list[Component], aggregate: str) -> None:
        self.spec = spec
        self.name = Path(spec).name
        self.components = components
        self.component_names = [c.name for c in components]
        self.aggregate = aggregate

    def score(self, smiles: Sequence[str]) -> list[ScoreRecord]:
        """Score molecules: one record per input string, in order."""
        smiles = list(smiles)
        n = len(smiles)
        raw = np.full((len(self.components), n), np.nan)
        errors: list[str | None] = [None] * n
        for row, comp in enumerate(self.components):
            for i, rec in enumerate(comp.objective.score(smiles)):
                if rec.score is None:
                    errors[i] = errors[i] or f"{comp.name}: {rec.error}"
                else:
                    raw[row, i] = rec.score
        trans = np.stack(
            [c.transform(raw[r]) if c.transform else raw[r] for r, c in enumerate(self.components)]
        )
        trans[np.isnan(raw)] = np.nan  # a failed component has no transformed value either
        is_filter = np.array([c.filter for c in self.components])
        weights = np.array([c.weight for c in self.components if not c.filter])
        if self.aggregate == "geometric":
            for j in np.flatnonzero((trans[~is_filter] < 0).any(axis=0)):
                errors[j] = errors[j] or NEGATIVE_IN_GEOMETRIC
        ok = np.array([e is None for e in errors], dtype=bool)
        totals = np.zeros(n)
        if ok.any():
            vetoed = (trans[is_filter][:, ok] == 0).any(axis=0)
            mean = AGGREGATES[self.aggregate](trans[~is_filter][:, ok], weights)
            totals[ok] = np.where(vetoed, 0.0, mean)
        return [
            ScoreRecord(
                None if errors[i] else float(totals[i]),
                {name: _plain(raw[r, i]) for r, name in enumerate(self.component_names)},
                {name: _plain(trans[r, i]) for r, name in enumerate(self.component_names)},
                errors[i],
            )
            for i in range(n)
        ]


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def load_profile(path: str) -> ProfileObjective:
    """Read and validate a TOML profile.

    Raises:
        MolgenError: Unreadable file, malformed TOML (with its line and column), unknown keys,
            bad values or transforms, duplicate names, no components, or a nested profile.
    """
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MolgenError(f"profile {path} does not exist.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MolgenError(f"profile {path} is not valid TOML: {exc}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MolgenError(f"profile {path} cannot be read: {describe(exc)}.") from exc
    where = f"profile {path}"
    _check_keys(data, PROFILE_KEYS, where)
    aggregate = data.get("aggregate", "geometric")
    if aggregate not in AGGREGATES:
        choices = ", ".join(AGGREGATES)
        raise MolgenError(f"{where}: aggregate must be one of {choices}, got {aggregate!r}.")
    tables = data.get("component")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise MolgenError(f"{where}: needs at least one [[component]] table.")
    components = [
        _component(table, f"{where}, component {index}", file.parent)
        for index, table in enumerate(tables, 1)
    ]
    names = [c.name for c in components]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise MolgenError(f"{where}: component names must be unique; repeated: {repeated}.")
    if all(c.filter for c in components):
        raise MolgenError(f"{where}: needs at least one component that is not a filter.")
    return ProfileObjective(path, components, aggregate)


def _check_keys(table: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    if unknown := sorted(set(table) - set(allowed)):
        raise MolgenError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}.")


def _component(table: dict[str, Any], where: str, folder: Path) -> Component:
    _check_keys(table, COMPONENT_KEYS, where)
    objective = table.get("objective")
    if not isinstance(objective, str) or not objective.strip():
        raise MolgenError(f"{where}: 'objective' must be a non-empty string.")
    objective = objective.strip()
    name = table.get("name", objective)
    if not isinstance(name, str) or not name:
        raise MolgenError(f"{where}: 'name' must be a non-empty string.")
    where = f"{where} ({name})"
    if objective.endswith(".toml") and objective.partition(":")[0] not in BUILTINS:
        raise MolgenError(f"{where}: a component cannot be another profile ({objective}).")
    weight = table.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
        raise MolgenError(f"{where}: 'weight' must be a finite number > 0, got {weight!r}.")
    is_filter = table.get("filter", False)
    if not isinstance(is_filter, bool):
        raise MolgenError(f"{where}: 'filter' must be true or false.")
    user = USER_SPEC.match(objective)
    if user and objective.partition(":")[0] not in BUILTINS:
        file = Path(user["path"]).expanduser()
        if not file.is_absolute():  # relative to the profile, not to where molgen runs
            objective = f"{folder / file}:{user['func']}"
    transform = table.get("transform")
    return Component(
        name=name,
        objective=single_objective(objective, where=where),
        weight=float(weight),
        transform=None if transform is None else make_transform(transform, where),
        filter=is_filter,
    )
