"""User objective functions: ``path/to/file.py:function``, a batch function of SMILES."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from molgen.errors import MolgenError
from molgen.objectives.base import Outcome, Scorer, describe, outcome, valid_only

USER_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<func>[A-Za-z_]\w*)$")


def load_user_function(path: str, function: str) -> Callable[..., Any]:
    """Import ``function`` from the Python file ``path`` (a fresh, uniquely named module).

    Raises:
        MolgenError: The file does not exist or cannot be imported, or has no such callable.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise MolgenError(f"objective file {path} does not exist.")
    file = file.resolve()
    # unique per path, and in sys.modules so that dataclasses and pickling inside it work
    module_name = "molgen_user_objective_" + hashlib.sha1(str(file).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise MolgenError(f"objective file {path} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise MolgenError(f"objective file {path} cannot be imported: {describe(exc)}") from exc
    if not hasattr(module, function):
        raise MolgenError(f"objective file {path} has no function {function!r}.")
    fn = getattr(module, function)
    if not callable(fn):
        raise MolgenError(f"{function!r} in objective file {path} is not callable.")
    return fn


def user_scorer(fn: Callable[..., Any]) -> Scorer:
    """A :data:`Scorer` around a user batch function ``fn(list_of_smiles) -> numbers``.

    Unparsable SMILES fail without reaching ``fn``. When a batch call raises or returns the wrong
    number of values, the molecules are scored one at a time, so only the molecules that raise
    fail (with the exception's message). NaN/inf/non-numbers fail those molecules.
    """

    def call(batch: list[str]) -> list[Outcome]:
        try:
            values = list(fn(list(batch)))
        except (Exception, SystemExit) as exc:  # a user error must never escape score()
            if len(batch) == 1:
                return [(None, describe(exc))]
            return [o for s in batch for o in call([s])]
        if len(values) != len(batch):
            if len(batch) == 1:
                return [(None, f"returned {len(values)} values for 1 molecule")]
            return [o for s in batch for o in call([s])]
        return [outcome(v) for v in values]

    return valid_only(call)
