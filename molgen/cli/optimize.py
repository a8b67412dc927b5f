"""``molgen optimize`` and ``molgen benchmark goal-directed``: design on the latent sphere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molgen.cli.app import app
from molgen.cli.params import SEED_MAX, check_smiles_option, choice, finite, integer

# = RetrainConfig().every; kept here so that --help does not import torch
DEFAULT_RETRAIN_EVERY = 1000
RetrainEveryOpt = Annotated[
    int,
    typer.Option(
        "--retrain-every",
        parser=integer(0, 10**8),
        help="Fine-tune the model on the best molecules found every this many calls (0: never).",
    ),
]

benchmark_app = typer.Typer(help="Benchmarks run through their own harness (GuacaMol).")
app.add_typer(benchmark_app, name="benchmark")

OBJECTIVE_HELP = (
    "What to maximise: qed, logp, sa, tpsa, mw, plogp, similarity:SMILES, smarts:PATTERN, "
    "guacamol:NAME, a TOML profile (profile.toml) or a function (file.py:function)."
)


@app.command()
def optimize(
    model: Path | None = typer.Argument(None, help="Model file (default: the bundled model)."),
    objective: str = typer.Option(..., "--objective", help=OBJECTIVE_HELP),
    budget: int = typer.Option(
        2000, "--budget", parser=integer(1, 10**8), help="Oracle calls (distinct molecules)."
    ),
    top_n: int = typer.Option(10, "-n", parser=integer(1, 100_000), help="Best molecules shown."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="CSV of every scored molecule, written as they are found."
    ),
    seeds: Path | None = typer.Option(
        None, "--seeds", help="Molecule file whose encodings start the search."
    ),
    seed: int = typer.Option(0, "--seed", parser=integer(0, SEED_MAX), help="Random seed."),
    jobs: int = typer.Option(1, "--jobs", "-j", parser=integer(1, 1024), help="Scoring processes."),
    image: Path | None = typer.Option(None, "--image", help="PNG grid of the best molecules."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Score-curve PNG (default with -o: <stem>_curve.png beside it)."
    ),
    similar_to: str | None = typer.Option(
        None, "--similar-to", help="Constraint: stay similar to this SMILES."
    ),
    min_similarity: float | None = typer.Option(
        None,
        "--min-similarity",
        parser=finite(0.0, 1.0),
        help="With --similar-to: score 0 below this Tanimoto (Morgan r2).",
    ),
    search: str = typer.Option(
        "cma",
        "--search",
        parser=choice("cma", "spcauchy"),
        help="cma (CMA-ES on the sphere) or spcauchy (spherical Cauchy evolution strategy).",
    ),
    population: int = typer.Option(
        50, "--population", parser=integer(1, 100_000), help="Parents kept."
    ),
    offspring: int = typer.Option(
        100, "--offspring", parser=integer(1, 100_000), help="Codes per generation."
    ),
    max_retries: int = typer.Option(
        3,
        "--max-retries",
        parser=integer(0, 1000),
        help="Sampled re-decodings of a code whose greedy string is invalid.",
    ),
    retrain_every: RetrainEveryOpt = DEFAULT_RETRAIN_EVERY,
) -> None:
    """Design molecules: search the model's latent sphere for high scores of an objective."""
    from molgen.design import DesignRequest, run_design, summary_lines
    from molgen.errors import MolgenError
    from molgen.optimize import OptimizeConfig, format_top
    from molgen.retrain import RetrainConfig

    if similar_to is not None:
        similar_to = check_smiles_option(similar_to, "--similar-to")
    if min_similarity is not None and similar_to is None:
        raise MolgenError("--min-similarity needs --similar-to.")
    if similar_to is not None and min_similarity is None:
        min_similarity = 0.4  # the classic constrained-optimisation threshold
    req = DesignRequest(
        objective=objective,
        model=str(model) if model else None,
        output=str(output) if output else None,
        plot=str(plot) if plot else None,
        image=str(image) if image else None,
        seeds_file=str(seeds) if seeds else None,
        top_n=top_n,
        jobs=jobs,
        similar_to=similar_to,
        min_similarity=min_similarity,
        config=OptimizeConfig(
            budget=budget,
            search=search,
            seed=seed,
            population=population,
            offspring=offspring,
            max_retries=max_retries,
            retrain=RetrainConfig(every=retrain_every),
        ),
    )
    result = run_design(req)
    components = list(result.top[0].raw) if result.top else []
    typer.echo(format_top(result.top, components))
    for line in summary_lines(result, req.paths()):
        typer.echo(line, err=True)
    if result.stats.interrupted:
        raise KeyboardInterrupt


@benchmark_app.command("goal-directed")
def goal_directed(
    model: Path | None = typer.Argument(None, help="Model file (default: the bundled model)."),
    suite: str = typer.Option(
        "v2", "--suite", parser=choice("v2", "v1", "trivial"), help="GuacaMol suite version."
    ),
    budget: int = typer.Option(
        10_000, "--budget", parser=integer(1, 10**8), help="Oracle calls per benchmark."
    ),
    only: str | None = typer.Option(
        None, "--only", help="Comma-separated benchmark names (e.g. osimertinib_mpo,deco_hop)."
    ),
    json_out: Path = typer.Option(
        Path("goal_directed.json"), "--json", help="guacamol's JSON results."
    ),
    search: str = typer.Option(
        "cma",
        "--search",
        parser=choice("cma", "spcauchy"),
        help="cma (CMA-ES on the sphere) or spcauchy (spherical Cauchy evolution strategy).",
    ),
    seed: int = typer.Option(0, "--seed", parser=integer(0, SEED_MAX), help="Random seed."),
    retrain_every: RetrainEveryOpt = DEFAULT_RETRAIN_EVERY,
) -> None:
    """Run GuacaMol's goal-directed suite on molgen optimize with a call budget per benchmark."""
    from molgen.goal_directed import (
        LatentGoalDirectedGenerator,
        format_report,
        run_goal_directed,
        select,
    )
    from molgen.goal_directed import (
        suite as get_suite,
    )
    from molgen.optimize import OptimizeConfig
    from molgen.outputs import check_output_path
    from molgen.retrain import RetrainConfig
    from molgen.sampling import DEFAULT_MODEL, load_model

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    select(get_suite(suite), names)  # an unknown name fails before any work
    check_output_path(json_out, "--json", inputs=(model or DEFAULT_MODEL,), suffixes=(".json",))
    generator = LatentGoalDirectedGenerator(
        load_model(model),
        OptimizeConfig(
            budget=budget, search=search, seed=seed, retrain=RetrainConfig(every=retrain_every)
        ),
        progress=True,
    )
    report = run_goal_directed(generator, suite, json_out, names, budget, search)
    typer.echo(format_report(report))
    typer.echo(f"guacamol JSON -> {json_out}", err=True)
