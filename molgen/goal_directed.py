"""GuacaMol's goal-directed suites run on ``molgen optimize``: ``molgen benchmark goal-directed``.

:class:`LatentGoalDirectedGenerator` is a ``guacamol.goal_directed_generator.GoalDirectedGenerator``
around :func:`molgen.optimize.optimize`; :func:`run_goal_directed` runs it through guacamol's own
harness (``assess_goal_directed_generation`` for a whole suite, its ``_evaluate_goal_directed_
benchmarks`` for a subset) with the suite version passed explicitly, and records per benchmark the
oracle calls and wall time that the harness itself does not limit.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from molgen.errors import MolgenError
from molgen.guacamol_adapter import apply_guacamol_shims
from molgen.optimize import OptimizeConfig, optimize

apply_guacamol_shims()  # before any guacamol module: they import fcd and scipy.histogram

from guacamol.goal_directed_generator import GoalDirectedGenerator  # noqa: E402

SUITES = ("v2", "v1", "trivial")


def benchmark_slug(name: str) -> str:
    """``'Osimertinib MPO'`` -> ``'osimertinib_mpo'`` (the names ``--only`` takes)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def suite(version: str) -> list[Any]:
    """GuacaMol's goal-directed benchmarks of a suite version (``v2``, ``v1`` or ``trivial``)."""
    if version not in SUITES:
        raise MolgenError(f"Unknown suite {version!r}; choose one of {', '.join(SUITES)}.")
    from guacamol.benchmark_suites import goal_directed_benchmark_suite

    return list(goal_directed_benchmark_suite(version_name=version))


def select(benchmarks: Sequence[Any], only: Sequence[str] | None) -> list[Any]:
    """The benchmarks named in ``only`` (slugs, in suite order); all when None.

    Raises:
        MolgenError: a name is not in the suite (the message lists the names).
    """
    if not only:
        return list(benchmarks)
    by_slug = {benchmark_slug(b.name): b for b in benchmarks}
    wanted = [benchmark_slug(n) for n in only]
    unknown = [n for n in wanted if n not in by_slug]
    if unknown:
        shown = ", ".join(n if len(n) <= 40 else n[:40] + "..." for n in unknown[:3])
        raise MolgenError(f"Unknown benchmark {shown}; choose from: {' '.join(by_slug)}")
    return [b for slug, b in by_slug.items() if slug in wanted]


@dataclass
class _Record:
    score: float | None
    raw: dict[str, float | None]
    transformed: dict[str, float | None]
    error: str | None = None


class GuacamolScorer:
    """guacamol's ``ScoringFunction`` as a molgen scorer (a score below 0 means unparsable)."""

    def __init__(self, scoring_function: Any) -> None:
        self.scoring_function = scoring_function

    def score(self, smiles: Sequence[str]) -> list[_Record]:
        """Score a batch through guacamol's ``score_list`` (which counts the calls)."""
        values = self.scoring_function.score_list(list(smiles))
        return [
            _Record(float(v), {"score": float(v)}, {"score": float(v)})
            if v is not None and v >= 0
            else _Record(None, {}, {}, "guacamol could not score it")
            for v in values
        ]


@dataclass
class BenchmarkRun:
    """What the optimizer spent on one benchmark."""

    benchmark: str
    calls: int
    decodings: int
    seconds: float
    best: float | None
    stop_reason: str
    retrain_seconds: float = 0.0
    retrain_rounds: int = 0


def _stereo_free(smiles: str) -> str | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol, isomericSmiles=False) if mol is not None else None


class LatentGoalDirectedGenerator(GoalDirectedGenerator):  # type: ignore[misc]
    """A GuacaMol ``GoalDirectedGenerator`` that runs ``molgen optimize`` per benchmark.

    It returns exactly the number of molecules asked for, distinct after guacamol's own
    stereo-free canonicalisation (so no extra molecule can lift a top-k score).

    Args:
        model: A ``molgen.sampling.MolGenModel``.
        config: The optimizer's settings (``budget`` is the calls per benchmark).
        progress: Show each run's progress bar.
    """

    def __init__(self, model: Any, config: OptimizeConfig, progress: bool = False) -> None:
        self.model = model
        self.config = config
        self.progress = progress
        self.runs: list[BenchmarkRun] = []
        self.current = ""

    def generate_optimized_molecules(
        self,
        scoring_function: Any,
        number_molecules: int,
        starting_population: list[str] | None = None,
    ) -> list[str]:
        """Optimise the benchmark's scoring function within the call budget."""
        t0 = time.perf_counter()
        result = optimize(
            self.model,
            GuacamolScorer(scoring_function),
            self.config,
            seeds=starting_population or None,
            top_n=max(number_molecules * 3, number_molecules + 50),
            progress=self.progress,
        )
        out: list[str] = []
        seen: set[str] = set()
        for f in result.top:
            key = _stereo_free(f.smiles)
            if key is not None and key not in seen:
                seen.add(key)
                out.append(f.smiles)
            if len(out) == number_molecules:
                break
        self.runs.append(
            BenchmarkRun(
                self.current,
                result.stats.calls,
                result.stats.decodings,
                time.perf_counter() - t0,
                result.top[0].score if result.top else None,
                result.stats.stop_reason,
                result.stats.retrain_seconds,
                result.stats.retrain_rounds,
            )
        )
        return out


@dataclass
class GoalDirectedReport:
    """A suite's results: guacamol's per-benchmark scores with calls and times."""

    suite: str
    budget: int
    search: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the benchmark scores (GuacaMol's suite total)."""
        return sum(r["score"] for r in self.rows)


def run_goal_directed(
    generator: Any,
    version: str,
    json_path: Path,
    only: Sequence[str] | None = None,
    budget: int | None = None,
    search: str = "",
) -> GoalDirectedReport:
    """Run a goal-directed generator through guacamol's harness and write guacamol's JSON.

    Args:
        generator: Any GuacaMol ``GoalDirectedGenerator`` (records ``runs`` if it has them).
        version: Suite version, passed to guacamol explicitly.
        json_path: guacamol's JSON output.
        only: Benchmark names (slugs) to run; all of the suite when None.
        budget: Calls per benchmark (for the report).
        search: Search name (for the report).

    Returns:
        The per-benchmark rows (score, calls counted by guacamol, seconds) and the total.
    """
    from guacamol.assess_goal_directed_generation import (
        _evaluate_goal_directed_benchmarks,
        assess_goal_directed_generation,
    )

    benchmarks = select(suite(version), only)
    t0 = time.perf_counter()
    if only:
        results = []
        for b in benchmarks:
            generator.current = b.name
            results.extend(_evaluate_goal_directed_benchmarks(generator, [b]))
        payload = _guacamol_payload(version, results)
        json_path.write_text(json.dumps(payload, indent=4))
    else:
        names = iter(b.name for b in benchmarks)
        _NamingGenerator.wrap(generator, names)
        assess_goal_directed_generation(
            generator, json_output_file=str(json_path), benchmark_version=version
        )
        payload = json.loads(json_path.read_text())
    report = GoalDirectedReport(version, budget or 0, search, seconds=time.perf_counter() - t0)
    runs = {r.benchmark: r for r in getattr(generator, "runs", [])}
    for res in payload["results"]:
        run = runs.get(res["benchmark_name"])
        report.rows.append(
            {
                "benchmark": res["benchmark_name"],
                "score": float(res["score"]),
                "calls": int(res["number_scoring_function_calls"]),
                "seconds": float(res["execution_time"]),
                "decodings": run.decodings if run else None,
                "stop": run.stop_reason if run else "",
                "retrain_seconds": run.retrain_seconds if run else None,
                "retrain_rounds": run.retrain_rounds if run else None,
            }
        )
    return report


class _NamingGenerator:
    """Tells a generator which benchmark it is on (guacamol does not say)."""

    @staticmethod
    def wrap(generator: Any, names: Any) -> None:
        inner = generator.generate_optimized_molecules

        def named(*args: Any, **kwargs: Any) -> list[str]:
            generator.current = next(names, "")
            return inner(*args, **kwargs)

        generator.generate_optimized_molecules = named


def _guacamol_payload(version: str, results: Sequence[Any]) -> dict[str, Any]:
    # The same JSON as guacamol's assess_goal_directed_generation writes.
    import guacamol
    from guacamol.utils.data import get_time_string

    return {
        "guacamol_version": guacamol.__version__,
        "benchmark_suite_version": version,
        "timestamp": get_time_string(),
        "results": [vars(r) for r in results],
    }


def format_report(report: GoalDirectedReport) -> str:
    """A plain-text table: score, calls and seconds per benchmark, and the total."""
    lines = [f"GuacaMol goal-directed {report.suite} ({report.search}, {report.budget} calls each)"]
    width = max([len(r["benchmark"]) for r in report.rows] + [9])
    lines.append(f"{'benchmark'.ljust(width)}  score   calls  seconds")
    for r in report.rows:
        lines.append(
            f"{r['benchmark'].ljust(width)}  {r['score']:.3f}  {r['calls']:6d}  {r['seconds']:7.1f}"
        )
    lines.append(f"{'total'.ljust(width)}  {report.total:.3f}  {'':6}  {report.seconds:7.1f}")
    return "\n".join(lines)


def report_dict(report: GoalDirectedReport) -> dict[str, Any]:
    """Plain-type report (for JSON)."""
    out = asdict(report)
    out["total"] = report.total
    return out


def with_budget(config: OptimizeConfig, budget: int) -> OptimizeConfig:
    """A copy of ``config`` with another call budget."""
    return replace(config, budget=budget)
