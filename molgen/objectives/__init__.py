"""Scoring objectives for latent-space molecular design (``molgen optimize``). Scores are MAXIMISED.

An objective is built from a text spec with :func:`build_objective`; every user error (unknown
name, bad SMILES/SMARTS, malformed profile, missing user function) is a
:class:`~molgen.errors.MolgenError` raised at build time, before any optimisation work.
:meth:`Objective.score` never raises for a molecule: it returns one :class:`ScoreRecord` per input
string, in order, with ``score=None`` and a short ``error`` for a molecule that failed
(unparsable SMILES, the scorer raised, or returned NaN/inf/a non-number).

Specs:

* Built-ins (see :func:`available_objectives`): ``qed`` (RDKit ``QED.qed``), ``logp`` (Crippen
  ``MolLogP``), ``sa`` (RDKit Contrib SA score, 1 = easy .. 10 = hard), ``tpsa``, ``mw``
  (``Descriptors.MolWt``), ``plogp``, ``similarity:SMILES`` (Tanimoto on Morgan radius 2,
  2048 bits), ``smarts:PATTERN`` (1.0 on a match, else 0.0) and ``guacamol:NAME``, every GuacaMol
  goal-directed benchmark of the v1 and v2 suites by slugified name (``osimertinib_mpo``,
  ``celecoxib_rediscovery``, ``logp_target_minus_1_0``, ...; plain names are the v2 suite plus
  v1-only benchmarks, ``v1_NAME`` is the v1 definition of a name both suites have). GuacaMol scores
  an invalid molecule -1: only unparsable SMILES are failures, other scores pass through.
* ``plogp`` is the UNNORMALISED penalized logP of most published tables (e.g. MolDQN, GraphAF,
  JT-VAE's constrained-optimisation numbers): ``MolLogP - SA - max(largest ring size - 6, 0)``,
  rings from RDKit's ring perception (SSSR). JT-VAE's training-set z-scored variant is not used.
* ``path/to/file.py:function``: a user function taking a list of SMILES and returning as many
  numbers. Unparsable SMILES are failures and are not passed to it. If a batch call raises or
  returns the wrong number of values, the molecules are scored one at a time, so only the molecules
  that raise fail (with the exception's message). NaN/inf/non-numbers are failures. Its name
  and column is the function's name. The file is imported when the objective is built.
* ``path/to/profile.toml``: a weighted profile of components (REINVENT4-flavoured)::

    aggregate = "geometric"      # or "arithmetic" (default "geometric")

    [[component]]
    objective = "qed"            # any spec above except another .toml
    name = "QED"                 # optional, unique column name (default: the objective text)
    weight = 1.0                 # > 0, default 1
    transform = { type = "sigmoid", low = 0.3, high = 0.9, k = 0.5 }   # optional

    [[component]]
    objective = "smarts:[N+](=O)[O-]"   # 1.0 when the molecule has a nitro group
    transform = { type = "left_step", low = 0.5 }   # so 1.0 when it has none
    filter = true                # aggregate = 0 when the transformed value is 0; not in the mean

    [[component]]
    objective = "mw"
    [component.transform]        # the same as an inline table (which must fit on one line)
    type = "double_sigmoid"
    low = 200
    high = 450
    coef_div = 500
    coef_si = 20
    coef_se = 20

  Keys are exactly those above (anything else is an error). A relative ``file.py:function`` path
  in a profile is relative to the profile's folder. The aggregate is the weighted mean of the
  transformed non-filter components (a component without ``transform`` enters raw):
  arithmetic ``sum(w t) / sum(w)``, geometric ``exp(sum(w log t) / sum(w))``, which is exactly 0
  when any component is 0 (REINVENT4 floors at 1e-8 instead) and a failure for a negative value.
  A filter's transformed value must be exactly 0 to veto, so give filters a step transform or a
  0/1 objective. If ANY component fails for a molecule, the molecule fails (``score=None``).

Transforms (``type`` = ``sigmoid``, ``reverse_sigmoid``, ``double_sigmoid``, ``gaussian``, ``step``,
``left_step``, ``right_step``, ``exponential_decay``) follow REINVENT4's names, parameters and
formulas; see :mod:`molgen.objectives.transforms`. Unknown types, missing, unknown or invalid
parameters are errors when the profile is built.

``build_objective(spec, similar_to=S, min_similarity=m)`` adds the classic similarity constraint:
the aggregate becomes 0 (not a failure) when Tanimoto(Morgan r2, 2048 bits) to ``S`` is below
``m``; the similarity is an extra component ``similarity``.

:class:`ParallelScorer` scores with ``jobs`` processes, each rebuilding the objective from its spec.
A new built-in is one :func:`register_objective` registration (see ``builtins.py``); a new
transform one :func:`register_transform`.
"""

from molgen.objectives.base import (
    Objective,
    Outcome,
    Scorer,
    ScoreRecord,
    SingleObjective,
    available_objectives,
    per_molecule,
    register_objective,
)
from molgen.objectives.build import SIMILARITY_COLUMN, ConstrainedObjective, build_objective
from molgen.objectives.builtins import guacamol_objectives, penalized_logp, single_objective
from molgen.objectives.parallel import ParallelScorer
from molgen.objectives.profile import Component, ProfileObjective, load_profile
from molgen.objectives.transforms import available_transforms, register_transform
from molgen.objectives.user import load_user_function, user_scorer

__all__ = [
    "SIMILARITY_COLUMN",
    "Component",
    "ConstrainedObjective",
    "Objective",
    "Outcome",
    "ParallelScorer",
    "ProfileObjective",
    "ScoreRecord",
    "Scorer",
    "SingleObjective",
    "available_objectives",
    "available_transforms",
    "build_objective",
    "guacamol_objectives",
    "load_profile",
    "load_user_function",
    "penalized_logp",
    "per_molecule",
    "register_objective",
    "register_transform",
    "single_objective",
    "user_scorer",
]
