"""Molecular design on the latent sphere: ``molgen optimize``.

A search proposes latent codes, the model decodes them (greedy first, then the sampler's
retries for a code whose greedy string is invalid), and an :class:`Oracle` scores the molecules.
The oracle is where the budget lives: it scores each distinct canonical molecule once (a repeat
costs no call), streams every scored molecule to a sink as it is found, and keeps the best.

Searches are registered by name (:func:`register_search`):

* ``spcauchy``: an evolution strategy on the sphere. Children are drawn from
  ``SphericalCauchy(parent, rho)`` -- heavy tails, so mostly small steps and sometimes a big
  jump -- around a parent picked by rank, or around a point on the great circle between two
  parents (crossover). ``rho`` adapts to progress: more children that beat their parent than
  the 1/5 rule asks for widens the steps, fewer narrows them, and children that only
  rediscover known molecules widen them again; each child jitters its own rho around it.
  Children are decoded at temperature 0.5 (a code then yields nearby molecules, not one).
* ``cma`` (default: the better total on GuacaMol v2, see BENCHMARKS_goal.md): CMA-ES from the
  ``cma`` package on ambient vectors that are normalised onto the sphere before decoding,
  restarted from the next-best molecule when it converges.

Both start from the encodings of the user's seed molecules, or from the best of a prior sample.
With ``retrain.every`` set, the model is fine-tuned on the best molecules found every so many
calls (:mod:`molgen.retrain`), the search re-encodes its population, and the original weights
are put back when the run ends.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from molgen.decoding import canonical_or_none, decode_with_retries
from molgen.errors import MolgenError
from molgen.retrain import EliteTrainer, RetrainConfig

#: Searches by name (filled by :func:`register_search`).
SEARCHES: dict[str, type[Search]] = {}
DEFAULT_SEARCH = "cma"  # 11.999 vs 11.564 on GuacaMol v2 at 10k calls (BENCHMARKS_goal.md)


class Scorer(Protocol):
    """Anything that scores a batch of SMILES (``molgen.objectives`` scorers and objectives)."""

    def score(self, smiles: Sequence[str]) -> list[Any]:
        """One record per molecule with ``score`` (None = failed), ``raw``, ``transformed``."""
        ...


@dataclass
class OptimizeConfig:
    """Settings of one optimisation run (plain types, written into the run summary).

    Attributes:
        budget: Oracle calls: distinct molecules scored (seed molecules included).
        search: Registered search name (``spcauchy`` or ``cma``).
        seed: Random seed (torch and numpy streams).
        population: Molecules kept as parents.
        offspring: Codes proposed per generation.
        start_size: Prior codes decoded for the start when no seed molecules are given.
        rho: Starting concentration of the spCauchy mutations (adapted during the run).
        crossover: Share of children mutated from a point between two parents.
        max_retries: Sampled re-decodings of a code whose greedy string is invalid.
        stall_generations: Stop after this many generations that found no new molecule.
        rho_jitter: Spread of each child's own rho around the adapted one (on -log(1 - rho)):
            steps of several sizes in every generation.
        temperature: Decoding temperature of the children (0: greedy). Sampled decoding turns
            one code into nearby molecules; 0.5 beat greedy on the similarity benchmarks.
        retrain: Fine-tuning the model on the best molecules during the run
            (:class:`molgen.retrain.RetrainConfig`; ``every=0`` switches it off).
    """

    budget: int = 2000
    search: str = DEFAULT_SEARCH
    seed: int = 0
    population: int = 50
    offspring: int = 100
    start_size: int = 500
    rho: float = 0.8
    crossover: float = 0.3
    max_retries: int = 3
    stall_generations: int = 25
    rho_jitter: float = 0.7
    temperature: float = 0.5
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.retrain, dict):  # from JSON / asdict
            self.retrain = RetrainConfig(**self.retrain)

    def check(self) -> None:
        """Raise MolgenError for settings that cannot run."""
        self.retrain.check()
        if self.search not in SEARCHES:
            raise MolgenError(
                f"Unknown search {self.search!r}; choose one of {', '.join(sorted(SEARCHES))}."
            )
        if self.budget < 1:
            raise MolgenError(f"--budget must be at least 1 call, got {self.budget}.")
        for name in ("population", "offspring", "start_size", "stall_generations"):
            if getattr(self, name) < 1:
                raise MolgenError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 < self.rho < 1.0:
            raise MolgenError(f"rho must be in (0, 1), got {self.rho}.")
        if not 0.0 <= self.crossover <= 1.0:
            raise MolgenError(f"crossover must be in [0, 1], got {self.crossover}.")
        if self.max_retries < 0:
            raise MolgenError(f"--max-retries must be 0 or more, got {self.max_retries}.")


@dataclass
class Found:
    """One scored molecule."""

    smiles: str
    score: float | None
    call: int
    generation: int
    raw: dict[str, float | None] = field(default_factory=dict)
    transformed: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


@dataclass
class OptimizeStats:
    """Counters of a run: what was spent and what it bought."""

    calls: int = 0
    failures: int = 0
    repeats: int = 0
    codes: int = 0
    decodings: int = 0
    invalid_codes: int = 0
    generations: int = 0
    seconds: float = 0.0
    oracle_seconds: float = 0.0
    retrain_rounds: int = 0
    retrain_skipped: int = 0
    retrain_seconds: float = 0.0
    interrupted: bool = False
    stop_reason: str = ""
    failure_examples: list[str] = field(default_factory=list)


class ResultSink:
    """Streams scored molecules to a CSV as they are found (flushed per batch).

    Columns: smiles, score, call, generation, then ``<component>_raw`` and ``<component>`` for
    each objective component, then error. A failed molecule has an empty score and its error.
    """

    def __init__(self, handle: IO[str], components: Sequence[str]) -> None:
        self.handle = handle
        self.components = list(components)
        self.writer = csv.writer(handle)
        header = ["smiles", "score", "call", "generation"]
        for name in self.components:
            header += [f"{name}_raw", name]
        self.writer.writerow([*header, "error"])
        handle.flush()

    def write(self, rows: Sequence[Found]) -> None:
        """Append rows and flush, so an interrupted run keeps them."""
        for r in rows:
            line: list[Any] = [r.smiles, _fmt(r.score), r.call, r.generation]
            for name in self.components:
                line += [_fmt(r.raw.get(name)), _fmt(r.transformed.get(name))]
            self.writer.writerow([*line, r.error or ""])
        self.handle.flush()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


class Oracle:
    """Budgeted, cached scoring by canonical SMILES.

    Args:
        scorer: Scores a list of SMILES.
        budget: Calls allowed (distinct molecules scored).
        sink: Receives every scored molecule as soon as it is scored.
        on_scored: Called after each scored batch (for a progress bar).
    """

    def __init__(
        self,
        scorer: Scorer,
        budget: int,
        sink: ResultSink | None = None,
        on_scored: Callable[[Oracle], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.budget = budget
        self.sink = sink
        self.on_scored = on_scored
        self.cache: dict[str, Found] = {}
        self.stats = OptimizeStats()
        self.best: Found | None = None
        #: (calls, best score so far, mean score of the batch) after each scored batch.
        self.curve: list[tuple[int, float, float]] = []

    @property
    def remaining(self) -> int:
        """Calls left."""
        return self.budget - self.stats.calls

    @property
    def exhausted(self) -> bool:
        """True when no call is left."""
        return self.remaining <= 0

    def __call__(self, smiles: Sequence[str | None], generation: int) -> list[float | None]:
        """Scores of canonical SMILES (None: invalid, failed, or beyond the budget).

        Repeats (within the batch or of earlier calls) are answered from the cache.
        """
        new: list[str] = []
        seen: set[str] = set()
        for s in smiles:
            if s is None:
                continue
            if s in self.cache or s in seen:
                self.stats.repeats += 1
            else:
                seen.add(s)
                new.append(s)
        new = new[: max(self.remaining, 0)]
        if new:
            t0 = time.perf_counter()
            records = self.scorer.score(new)
            self.stats.oracle_seconds += time.perf_counter() - t0
            rows = []
            for s, rec in zip(new, records, strict=True):
                self.stats.calls += 1
                found = Found(
                    s,
                    rec.score,
                    self.stats.calls,
                    generation,
                    dict(rec.raw),
                    dict(rec.transformed),
                    rec.error,
                )
                if found.score is None:
                    self.stats.failures += 1
                    if len(self.stats.failure_examples) < 3 and rec.error:
                        self.stats.failure_examples.append(f"{s}: {rec.error}")
                elif self.best is None or found.score > (self.best.score or -math.inf):
                    self.best = found
                self.cache[s] = found
                rows.append(found)
            if self.sink is not None:
                self.sink.write(rows)
            scores = [r.score for r in rows if r.score is not None]
            best = self.best.score if self.best is not None else None
            self.curve.append(
                (
                    self.stats.calls,
                    math.nan if best is None else float(best),
                    float(np.mean(scores)) if scores else math.nan,
                )
            )
            if self.on_scored is not None:
                self.on_scored(self)
        return [self.cache[s].score if s in self.cache else None for s in smiles]

    def top(self, n: int) -> list[Found]:
        """The n best scored molecules, best first (ties: earlier call first)."""
        scored = [f for f in self.cache.values() if f.score is not None]
        scored.sort(key=lambda f: (-(f.score or 0.0), f.call))
        return scored[:n]


# ---- decoding ----------------------------------------------------------------------------------
def decode_codes(
    model: Any, z: Tensor, max_retries: int, retry_seed: int, temperature: float = 0.0
) -> tuple[list[str | None], int]:
    """Canonical SMILES per code, decoded at ``temperature`` with the sampler's retries.

    With ``temperature`` 0 a code's molecule is a function of the code (greedy), and a code
    whose greedy string is invalid gets up to ``max_retries`` sampled decodings; above 0 every
    decoding is sampled and an invalid one is re-decoded up to ``max_retries`` times.

    Args:
        model: A ``molgen.sampling.MolGenModel``.
        z: (n, latent_dim) codes.
        max_retries: Sampled decodings allowed after an invalid greedy string.
        retry_seed: Seed of the retries' own random stream.
        temperature: Decoding temperature (0: greedy).

    Returns:
        One canonical SMILES (None: given up) per code, and the number of decodings made.
    """
    if temperature > 0:
        res = decode_with_retries(model, z, temperature, max_retries, retry_seed=retry_seed)
        return res.smiles, res.counts.decodings
    out = [canonical_or_none(s) for s in model.decode(z, greedy=True)]
    decodings = len(out)
    failed = [i for i, s in enumerate(out) if s is None]
    if failed and max_retries > 0:
        index = torch.tensor(failed, dtype=torch.long, device=z.device)
        again = decode_with_retries(
            model, z.index_select(0, index), 1.0, max_retries - 1, retry_seed=retry_seed
        )
        for i, s in zip(failed, again.smiles, strict=True):
            out[i] = s
        decodings += again.counts.decodings
    return out, decodings


# ---- geometry on the sphere --------------------------------------------------------------------
def normalize(z: Tensor) -> Tensor:
    """Rows scaled to unit length (a zero row becomes the first basis vector)."""
    norm = z.norm(dim=-1, keepdim=True)
    safe = torch.where(norm > 1e-12, z / norm.clamp_min(1e-12), torch.zeros_like(z))
    safe[(norm <= 1e-12).squeeze(-1), 0] = 1.0
    return safe


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points a fraction ``t`` (n,) along the great circles from rows of a to rows of b."""
    cos = (a * b).sum(-1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    t = t.to(a.dtype)
    close = sin.abs() < 1e-6  # (nearly) the same point: linear blend then renormalise
    wa = torch.where(close, 1 - t, torch.sin((1 - t) * omega) / sin.where(~close, 1.0))
    wb = torch.where(close, t, torch.sin(t * omega) / sin.where(~close, 1.0))
    return normalize(wa.unsqueeze(-1) * a + wb.unsqueeze(-1) * b)


def spcauchy_around(loc: Tensor, rho: float | Tensor) -> Tensor:
    """One SphericalCauchy(loc_i, rho_i) draw per row of ``loc`` (rho: one or one per row)."""
    from molgen.distributions import SphericalCauchy

    r = torch.as_tensor(rho, dtype=torch.float64).expand(loc.shape[:-1])
    logit = (torch.log(r) - torch.log1p(-r)).to(loc.dtype)
    return SphericalCauchy(loc, rho_logit=logit.to(loc.device)).sample()


# ---- the searches ------------------------------------------------------------------------------
@dataclass
class Member:
    """A scored molecule with the code it came from."""

    score: float
    smiles: str
    z: Tensor
    new: bool = True


def register_search(name: str) -> Callable[[type[Search]], type[Search]]:
    """Class decorator registering a :class:`Search` under ``name``."""

    def decorate(cls: type[Search]) -> type[Search]:
        if name in SEARCHES:
            raise ValueError(f"search {name!r} is already registered")
        SEARCHES[name] = cls
        cls.name = name
        return cls

    return decorate


class Search:
    """Base class: proposes codes generation by generation until the oracle's budget is spent.

    Subclasses implement :meth:`propose` (codes for the next generation) and may use
    :meth:`observe` (the generation's results) to adapt.
    """

    name = ""

    def __init__(self, config: OptimizeConfig, dim: int, rng: np.random.Generator) -> None:
        self.config = config
        self.dim = dim
        self.rng = rng
        self.population: list[Member] = []

    def start(self, members: list[Member]) -> None:
        """Take the scored start molecules."""
        self.population = self._select(members)

    def _select(self, members: list[Member]) -> list[Member]:
        # Best first, one member per molecule: a duplicate would only skew the parent choice.
        seen: set[str] = set()
        keep = []
        for m in sorted(members, key=lambda m: -m.score):
            if m.smiles not in seen:
                seen.add(m.smiles)
                keep.append(m)
        return keep[: self.config.population]

    def propose(self) -> tuple[Tensor, list[int]]:
        """(codes (n, dim), parent index per code or -1)."""
        raise NotImplementedError

    def recode(self, codes: dict[str, Tensor]) -> None:
        """Take the population's codes after the model was retrained (its codes have moved).

        A member missing from ``codes`` (its canonical SMILES can have a token the model lacks,
        such as ``[SH]``) keeps its old code.
        """
        for m in self.population:
            if m.smiles in codes:
                m.z = codes[m.smiles]

    def observe(self, z: Tensor, parents: list[int], results: list[Member | None]) -> None:
        """Take one generation's results (None: invalid or failed) and update the population."""
        fresh = [m for m in results if m is not None]
        self.population = self._select(self.population + fresh)


@register_search("spcauchy")
class SphericalCauchySearch(Search):
    """Evolution strategy with SphericalCauchy mutations and great-circle crossover.

    rho is adapted on ``s = -log(1 - rho)``: a generation in which more than a fifth of the
    children beat their parent widens the steps (s down), fewer narrows them; a generation whose
    children mostly decode to molecules already known widens them too.
    """

    rho_min, rho_max = 0.3, 0.995

    def __init__(self, config: OptimizeConfig, dim: int, rng: np.random.Generator) -> None:
        super().__init__(config, dim, rng)
        self.s = -math.log1p(-config.rho)
        self.rho_history: list[float] = []

    @property
    def rho(self) -> float:
        """The current mutation concentration."""
        return 1.0 - math.exp(-self.s)

    def _parent_weights(self) -> np.ndarray:
        n = len(self.population)
        w = np.log(n + 0.5) - np.log(np.arange(1, n + 1))  # CMA-style rank weights
        return w / w.sum()

    def propose(self) -> tuple[Tensor, list[int]]:
        """Children of rank-weighted parents (some from a point between two parents)."""
        n = self.config.offspring
        pop = torch.stack([m.z for m in self.population])
        w = self._parent_weights()
        first = self.rng.choice(len(pop), size=n, p=w)
        base = pop[torch.as_tensor(first)]
        cross = self.rng.random(n) < self.config.crossover
        if cross.any() and len(pop) > 1:
            idx = np.flatnonzero(cross)
            second = self.rng.choice(len(pop), size=len(idx), p=w)
            t = torch.as_tensor(self.rng.random(len(idx)))
            base[torch.as_tensor(idx)] = slerp(
                base[torch.as_tensor(idx)], pop[torch.as_tensor(second)], t
            )
        self.rho_history.append(self.rho)
        if self.config.rho_jitter > 0:
            s = self.s + self.config.rho_jitter * self.rng.standard_normal(n)
            lo, hi = -math.log1p(-self.rho_min), -math.log1p(-self.rho_max)
            rho = torch.as_tensor(1.0 - np.exp(-np.clip(s, lo, hi)), dtype=base.dtype)
            return spcauchy_around(base, rho), [int(i) for i in first]
        return spcauchy_around(base, self.rho), [int(i) for i in first]

    def observe(self, z: Tensor, parents: list[int], results: list[Member | None]) -> None:
        """Adapt rho (1/5 success rule, plus a push outwards on repeats), then select."""
        better = known = 0
        for p, m in zip(parents, results, strict=True):
            if m is None:
                continue
            if not m.new:
                known += 1
            elif m.score > self.population[p].score:
                better += 1
        n = max(len(results), 1)
        self.s += -0.2 if better / n > 0.2 else 0.1
        if known / n > 0.5:
            self.s -= 0.2
        lo, hi = -math.log1p(-self.rho_min), -math.log1p(-self.rho_max)
        self.s = min(max(self.s, lo), hi)
        super().observe(z, parents, results)


@register_search("cma")
class CMASearch(Search):
    """CMA-ES (the ``cma`` package) on ambient vectors, normalised onto the sphere to decode.

    It starts at the best molecule's code with a step of about 0.5 rad, and restarts from the
    next-best population member not yet used when the strategy converges.
    """

    sigma_rad = 0.5

    def __init__(self, config: OptimizeConfig, dim: int, rng: np.random.Generator) -> None:
        super().__init__(config, dim, rng)
        self.es: Any = None
        self.asked: list[np.ndarray] = []
        self.used: set[str] = set()
        self.restarts = 0

    def _new_strategy(self) -> None:
        import cma

        start = next((m for m in self.population if m.smiles not in self.used), None)
        start = start or self.population[int(self.rng.integers(len(self.population)))]
        self.used.add(start.smiles)
        opts = {
            "popsize": self.config.offspring,
            "seed": int(self.rng.integers(1, 2**31 - 1)),
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        sigma = self.sigma_rad / math.sqrt(self.dim)  # per coordinate of a unit vector
        self.es = cma.CMAEvolutionStrategy(start.z.double().numpy(), sigma, opts)

    def recode(self, codes: dict[str, Tensor]) -> None:
        """Take the new codes, and start a fresh strategy at the best member's new code."""
        super().recode(codes)
        self.es = None
        self.used = set()

    def propose(self) -> tuple[Tensor, list[int]]:
        """One CMA-ES generation, normalised onto the sphere."""
        if self.es is None or self.es.stop():
            if self.es is not None:
                self.restarts += 1
            self._new_strategy()
        self.asked = self.es.ask()
        z = normalize(torch.as_tensor(np.array(self.asked), dtype=torch.float32))
        return z, [-1] * len(self.asked)

    def observe(self, z: Tensor, parents: list[int], results: list[Member | None]) -> None:
        """Tell CMA-ES the (negated) scores; invalid codes rank below every scored one."""
        scores = [m.score for m in results if m is not None]
        worst = min(scores + [m.score for m in self.population] + [0.0]) - 1.0
        fitness = [-(m.score if m is not None else worst) for m in results]
        self.es.tell(self.asked, fitness)
        super().observe(z, parents, results)


# ---- the run -----------------------------------------------------------------------------------
@dataclass
class OptimizeResult:
    """What a run found and what it cost."""

    top: list[Found]
    stats: OptimizeStats
    curve: list[tuple[int, float, float]]
    config: dict[str, Any]
    start: str
    rho_history: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain-type summary (for JSON)."""
        return {
            "config": self.config,
            "start": self.start,
            "stats": asdict(self.stats),
            "best": asdict(self.top[0]) if self.top else None,
        }


def _score_codes(
    model: Any, z: Tensor, oracle: Oracle, generation: int, config: OptimizeConfig
) -> list[Member | None]:
    seed = int(np.random.SeedSequence([config.seed, generation, 7]).generate_state(1)[0])
    smiles, decodings = decode_codes(model, z, config.max_retries, seed, config.temperature)
    oracle.stats.codes += len(smiles)
    oracle.stats.decodings += decodings
    oracle.stats.invalid_codes += sum(s is None for s in smiles)
    known = [s in oracle.cache for s in smiles]
    scores = oracle(smiles, generation)
    return [
        Member(sc, s, z[i], not known[i]) if s is not None and sc is not None else None
        for i, (s, sc) in enumerate(zip(smiles, scores, strict=True))
    ]


def _start_members(
    model: Any,
    oracle: Oracle,
    config: OptimizeConfig,
    seeds: Sequence[str] | None,
) -> tuple[list[Member], str]:
    if seeds:
        canon = list(dict.fromkeys(c for c in (canonical_or_none(s) for s in seeds) if c))
        if not canon:
            raise MolgenError("None of the seed molecules is a valid SMILES.")
        z = normalize(model.encode(canon).float().cpu())
        scores = oracle(canon, 0)
        members = [
            Member(sc, s, z[i])
            for i, (s, sc) in enumerate(zip(canon, scores, strict=True))
            if sc is not None
        ]
        # Seeds beyond the budget or failing the objective still seed the search (score: worst).
        if not members:
            members = [Member(0.0, s, z[i]) for i, s in enumerate(canon)]
        return members, f"{len(canon)} seed molecules"
    n = min(config.start_size, max(config.budget // 4, config.population))
    z = normalize(model.prior_z(n).float().cpu())
    members = [m for m in _score_codes(model, z, oracle, 0, config) if m is not None]
    if not members:
        raise MolgenError(
            f"No molecule of the {n} prior samples could be scored; check the objective."
        )
    return members, f"best of {n} prior samples"


def _retrain(trainer: EliteTrainer, oracle: Oracle, search: Search) -> None:
    scored = [f for f in oracle.cache.values() if f.score is not None]
    trainer.round([f.smiles for f in scored], [float(f.score or 0.0) for f in scored])
    known, z = trainer.codes([m.smiles for m in search.population])
    search.recode(dict(zip(known, normalize(z), strict=True)))


def optimize(
    model: Any,
    scorer: Scorer,
    config: OptimizeConfig,
    seeds: Sequence[str] | None = None,
    sink: ResultSink | None = None,
    top_n: int = 10,
    progress: bool = True,
) -> OptimizeResult:
    """Search the model's latent sphere for molecules that maximise the objective.

    Ctrl-C ends the search early and returns what was found (the sink already has every row).

    Args:
        model: A ``molgen.sampling.MolGenModel`` on a spherical latent.
        scorer: Scores batches of SMILES (``molgen.objectives``).
        config: Budget, search and its settings.
        seeds: Start from these molecules' encodings (else from the best prior samples).
        sink: Receives every scored molecule as it is scored.
        top_n: Molecules in ``result.top``.
        progress: Show a progress bar of calls with the best score.

    Returns:
        The best molecules, the run's counters and its score curve.
    """
    config.check()
    if not model.spherical:
        raise MolgenError("molgen optimize needs a model with a spherical latent space.")
    t0 = time.perf_counter()
    bar = tqdm(total=config.budget, desc="optimize", unit="call", disable=not progress)

    def on_scored(oracle: Oracle) -> None:
        bar.n = oracle.stats.calls
        if oracle.best is not None:
            bar.set_postfix(best=f"{oracle.best.score:.4g}", refresh=False)
        bar.refresh()

    oracle = Oracle(scorer, config.budget, sink, on_scored)
    rng = np.random.default_rng(config.seed)
    search = SEARCHES[config.search](config, model.latent_dim, rng)
    every = config.retrain.every
    # a round needs calls left after `every` of them; only then copy the weights
    trainer = (
        EliteTrainer(model, config.retrain, config.seed) if 0 < every < config.budget else None
    )
    next_round = every
    start = ""
    try:
        with _torch_seed(config.seed):
            members, start = _start_members(model, oracle, config, seeds)
            search.start(members)
            stall = 0
            generation = 0
            while not oracle.exhausted:
                generation += 1
                calls_before = oracle.stats.calls
                z, parents = search.propose()
                results = _score_codes(model, z, oracle, generation, config)
                search.observe(z, parents, results)
                oracle.stats.generations = generation
                if trainer and oracle.stats.calls >= next_round and not oracle.exhausted:
                    next_round = oracle.stats.calls + every
                    _retrain(trainer, oracle, search)
                stall = stall + 1 if oracle.stats.calls == calls_before else 0
                if stall >= config.stall_generations:
                    oracle.stats.stop_reason = (
                        f"no new molecule in {stall} generations (the search has converged)"
                    )
                    break
            else:
                oracle.stats.stop_reason = "budget spent"
    except KeyboardInterrupt:
        oracle.stats.interrupted = True
        oracle.stats.stop_reason = "interrupted"
    finally:
        bar.close()
        if trainer is not None:
            trainer.restore()
            oracle.stats.retrain_rounds = trainer.rounds
            oracle.stats.retrain_skipped = trainer.skipped
            oracle.stats.retrain_seconds = trainer.seconds
    oracle.stats.seconds = time.perf_counter() - t0
    return OptimizeResult(
        top=oracle.top(top_n),
        stats=oracle.stats,
        curve=oracle.curve,
        config=asdict(config),
        start=start,
        rho_history=list(getattr(search, "rho_history", [])),
    )


class _torch_seed:  # noqa: N801 - used like a function
    """Seed torch for the block without disturbing the caller's stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ctx: Any = None

    def __enter__(self) -> None:
        self.ctx = torch.random.fork_rng(devices=[])
        self.ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self.ctx.__exit__(*exc)


# ---- reports -----------------------------------------------------------------------------------
def plot_curve(result: OptimizeResult, path: Path, title: str = "") -> Path:
    """Best score so far and each batch's mean score against oracle calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molgen.outputs import atomic_path

    calls = [c[0] for c in result.curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(calls, [c[1] for c in result.curve], "-", lw=2, label="best so far")
    ax.plot(calls, [c[2] for c in result.curve], ".", ms=3, alpha=0.6, label="batch mean")
    ax.set_xlabel("oracle calls (distinct molecules scored)")
    ax.set_ylabel("score")
    ax.set_title(title or f"molgen optimize ({result.config['search']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def format_top(found: Sequence[Found], components: Sequence[str]) -> str:
    """A plain-text table of the best molecules with their component values."""
    shown = list(components)[:4]
    header = ["rank", "score", *shown, "call", "smiles"]
    rows = [header]
    for i, f in enumerate(found, 1):
        rows.append(
            [
                str(i),
                _fmt(f.score),
                *(_fmt(f.raw.get(c)) for c in shown),
                str(f.call),
                f.smiles,
            ]
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
