"""One ``molgen optimize`` run with its files: the streamed CSV, the score curve, the top grid.

:func:`run_design` checks everything that can be checked (objective, seed file, output paths)
before any work, then runs :func:`molgen.optimize.optimize` with rows streamed to the CSV as they
are scored, so a Ctrl-C keeps every result already found.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molgen.errors import MolgenError
from molgen.optimize import OptimizeConfig, OptimizeResult, ResultSink, optimize


@dataclass
class DesignRequest:
    """What ``molgen optimize`` was asked for (plain types).

    Attributes:
        objective: Objective spec (``molgen.objectives``).
        model: Model file (None: the bundled model).
        output: CSV of every scored molecule (None: no CSV).
        plot: Score-curve PNG (None: beside the CSV as ``<stem>_curve.png``, or none).
        image: PNG grid of the top molecules (None: none).
        seeds_file: Molecule file whose encodings start the search.
        top_n: Molecules in the final table (and the grid).
        jobs: Scoring processes.
        similar_to: Similarity constraint's reference molecule.
        min_similarity: Its threshold.
        summary: JSON summary (None: beside the CSV as ``<stem>_summary.json``, or none).
        config: The search's settings.
    """

    objective: str
    model: str | None = None
    output: str | None = None
    plot: str | None = None
    image: str | None = None
    seeds_file: str | None = None
    top_n: int = 10
    jobs: int = 1
    similar_to: str | None = None
    min_similarity: float | None = None
    summary: str | None = None
    config: OptimizeConfig = field(default_factory=OptimizeConfig)

    def paths(self) -> dict[str, Path]:
        """The files this run writes, by role."""
        out: dict[str, Path] = {}
        if self.output:
            csv_path = Path(self.output)
            out["csv"] = csv_path
            out["plot"] = (
                Path(self.plot) if self.plot else csv_path.with_name(f"{csv_path.stem}_curve.png")
            )
            out["summary"] = (
                Path(self.summary)
                if self.summary
                else csv_path.with_name(f"{csv_path.stem}_summary.json")
            )
        else:
            if self.plot:
                out["plot"] = Path(self.plot)
            if self.summary:
                out["summary"] = Path(self.summary)
        if self.image:
            out["image"] = Path(self.image)
        return out


def read_seeds(path: Path, model: Any) -> tuple[list[str], list[str]]:
    """Seed molecules the model can read, and the ones it cannot (with why).

    Raises:
        MolgenError: the file cannot be read or holds no molecule the model can read.
    """
    from molgen.inputs import InputChecker
    from molgen.readers import read_smiles_file

    raw, _ = read_smiles_file(path)
    checker = InputChecker.for_model(model)
    ok, skipped = [], []
    for s in raw:
        item = checker.check(s)
        if item.ok:
            ok.append(s)
        else:
            skipped.append(checker.error_message(item))
    if not ok:
        why = f" (first: {skipped[0]})" if skipped else ""
        raise MolgenError(f"--seeds {path}: no molecule this model can read{why}.")
    return ok, skipped


def run_design(req: DesignRequest, progress: bool = True) -> OptimizeResult:
    """Run one optimisation with its files; every check happens before the search starts.

    Args:
        req: The request.
        progress: Show the progress bar.

    Returns:
        The result (its ``stats.interrupted`` says whether Ctrl-C ended it).
    """
    from molgen.objectives import ParallelScorer
    from molgen.outputs import check_output_path
    from molgen.sampling import DEFAULT_MODEL, load_model

    req.config.check()
    if req.top_n < 1:
        raise MolgenError(f"-n must be at least 1, got {req.top_n}.")
    paths = req.paths()
    inputs = tuple(Path(p) for p in (req.model or DEFAULT_MODEL, req.seeds_file) if p)
    suffixes = {"csv": None, "plot": (".png",), "image": (".png",), "summary": (".json",)}
    for role, path in paths.items():
        others = [p for r, p in paths.items() if r != role]
        if path in others:
            raise MolgenError(f"{path} is given for two outputs; choose different paths.")
        check_output_path(path, f"--{role}", inputs=inputs, suffixes=suffixes[role])
    scorer = ParallelScorer(req.objective, req.jobs, req.similar_to, req.min_similarity)
    try:
        model = load_model(req.model)
        seeds = None
        if req.seeds_file:
            seeds, skipped = read_seeds(Path(req.seeds_file), model)
            if skipped:
                print(
                    f"Warning: {len(skipped)} seed molecules skipped (the model cannot read "
                    f"them; first: {skipped[0]})",
                    file=sys.stderr,
                )
        handle = None
        if "csv" in paths:
            paths["csv"].parent.mkdir(parents=True, exist_ok=True)
            handle = open(paths["csv"], "w", newline="")  # noqa: SIM115 - streamed as found
        try:
            sink = ResultSink(handle, scorer.component_names) if handle else None
            result = optimize(
                model,
                scorer,
                req.config,
                seeds=seeds,
                sink=sink,
                top_n=req.top_n,
                progress=progress,
            )
        finally:
            if handle is not None:
                handle.close()
    finally:
        scorer.close()
    write_reports(req, result, paths, scorer.component_names)
    return result


def write_reports(
    req: DesignRequest,
    result: OptimizeResult,
    paths: dict[str, Path],
    components: Sequence[str],
) -> None:
    """The curve, the grid of the best molecules and the JSON summary (what was asked for)."""
    from molgen.optimize import plot_curve
    from molgen.outputs import atomic_output
    from molgen.sampling import draw_grid

    if "plot" in paths and result.curve:
        plot_curve(result, paths["plot"], title=f"molgen optimize: {req.objective}")
    if "image" in paths and result.top:
        legends = [f"#{i} {f.score:.3f}" for i, f in enumerate(result.top, 1)]
        draw_grid([f.smiles for f in result.top], legends, paths["image"])
    if "summary" in paths:
        payload = result.summary()
        payload["objective"] = req.objective
        payload["components"] = list(components)
        payload["top"] = [
            {"smiles": f.smiles, "score": f.score, "call": f.call, "raw": f.raw} for f in result.top
        ]
        payload["files"] = {role: str(p) for role, p in paths.items()}
        with atomic_output(paths["summary"]) as handle:
            handle.write(json.dumps(payload, indent=2) + "\n")


def summary_lines(result: OptimizeResult, paths: dict[str, Path]) -> list[str]:
    """What the run spent and found, and where its files are."""
    s = result.stats
    best = f"{result.top[0].score:.4g}" if result.top else "none"
    lines = [
        f"{s.calls} calls ({s.repeats} repeats answered from the cache), {s.generations} "
        f"generations, {s.decodings} decodings of {s.codes} codes ({s.invalid_codes} given up), "
        f"{s.seconds:.1f} s; start: {result.start}; best {best}; stopped: {s.stop_reason}",
    ]
    if s.retrain_rounds:
        lines.append(
            f"model fine-tuned on the best molecules {s.retrain_rounds} times "
            f"({s.retrain_seconds:.1f} s; its original weights are back)"
        )
    if s.retrain_skipped:
        lines.append(
            f"{s.retrain_skipped} retraining rounds skipped: every molecule scored the same"
        )
    if s.failures:
        lines.append(
            f"{s.failures} molecules failed to score (counted as calls, never selected); "
            f"e.g. {s.failure_examples[0] if s.failure_examples else ''}"
        )
    lines += [f"{role} -> {path}" for role, path in paths.items()]
    return lines
