"""``molgen sample`` and ``molgen interpolate``: molecules from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from molgen.cli.app import app, fail
from molgen.cli.params import SEED_MAX, check_smiles_option, finite, integer, torch_device

#: Temperatures above this are as good as uniform sampling over the tokens.
TEMPERATURE_MAX = 100.0


@app.command()
def sample(
    model: Path | None = typer.Argument(None, help="Model file (default: the bundled model)."),
    n: int = typer.Option(
        100, "-n", parser=integer(1, 10**9), help="Number of molecules (after filters)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="CSV to write (default: stdout)."
    ),
    temperature: float | None = typer.Option(
        None,
        parser=finite(0.0, TEMPERATURE_MAX),
        help="Softmax temperature; 0 = greedy. Default 1 (prior), 0 (--around).",
    ),
    seed: int = typer.Option(0, parser=integer(0, SEED_MAX), help="Random seed."),
    around: str | None = typer.Option(None, help="Sample analogues around this SMILES."),
    rho: float = typer.Option(
        0.9,
        parser=finite(0.0, 1.0, high_open=True),
        help="With --around: concentration in [0, 1); near 1 = close analogues.",
    ),
    valid_only: bool = typer.Option(
        True,
        "--valid-only/--keep-invalid",
        help="Write valid molecules only (default), re-decoding a code whose string is invalid; "
        "--keep-invalid writes every code's single decoding with its valid flag.",
    ),
    max_retries: int | None = typer.Option(
        None,
        "--max-retries",
        parser=integer(0, 1000),
        help="Re-decodings of the same code when its string is invalid (default 3; 0 = single "
        "pass). Sampling only: greedy decoding is deterministic.",
    ),
    syntax: bool = typer.Option(
        True,
        "--syntax/--no-syntax",
        help="Mask each next token to those that keep the SMILES well formed (default); "
        "--no-syntax shows the decoder unconstrained.",
    ),
    beam: int = typer.Option(
        1,
        "--beam",
        parser=integer(1, 100),
        help="Greedy decoding (--temperature 0) only: most likely valid string of K beams.",
    ),
    unique: bool = typer.Option(False, "--unique", help="Keep only distinct molecules."),
    novel_against: Path | None = typer.Option(
        None, help="Molecule file: mark novelty and keep only molecules not in it."
    ),
    batch_size: int = typer.Option(
        512, parser=integer(1, 100_000), help="Codes decoded per batch."
    ),
    max_attempts: int | None = typer.Option(
        None, parser=integer(1, None), help="Cap on latent codes drawn (default 20n+1000)."
    ),
    image: Path | None = typer.Option(None, help="Draw the first molecules to this PNG."),
    device: str = typer.Option("cpu", parser=torch_device(), help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Sample molecules from the prior, or analogues around a molecule (--around SMILES --rho R)."""
    from molgen.outputs import check_output_path
    from molgen.sampling import (
        DEFAULT_MAX_RETRIES,
        DEFAULT_MODEL,
        SampleRequest,
        SampleStats,
        draw_grid,
        generate_rows,
        load_model,
        summary_line,
        write_rows,
    )

    if not valid_only and max_retries:
        fail(
            "--keep-invalid writes each code's single decoding; --max-retries applies to the "
            "default valid-only output."
        )
    inputs = (model or DEFAULT_MODEL, novel_against)
    if output is not None:
        check_output_path(output, "-o", inputs=inputs)
    if image is not None:
        check_output_path(image, "--image", inputs=(*inputs, output), suffixes=(".png",))
    if around is not None:
        around = check_smiles_option(around, "--around")
    m = load_model(model, device=device)
    if not syntax:
        m.syntax = None
    novel_set = None
    if novel_against is not None:
        from molgen.data import canonicalize
        from molgen.readers import read_smiles_file

        raw, _ = read_smiles_file(novel_against)
        novel_set = {c for c in (canonicalize(s) for s in raw) if c}
    req = SampleRequest(
        n=n,
        temperature=(0.0 if around else 1.0) if temperature is None else temperature,
        seed=seed,
        batch_size=batch_size,
        around=around,
        rho=rho,
        valid_only=valid_only,
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        beam=beam,
        unique=unique,
        novel_against=novel_set,
        novel_only=novel_set is not None,
        max_attempts=max_attempts,
    )
    req.check()
    stats = SampleStats()
    first = write_rows(
        generate_rows(m, req, stats, progress=output is not None),
        output,
        keep_first=30,
        columns=req.columns(),
    )
    msg = summary_line(req, stats)
    typer.echo(msg + (f" -> {output}" if output else ""), err=output is None)
    if stats.cap_hit:
        typer.echo(
            f"Warning: only {stats.written} of {n} molecules met the filters after "
            f"{stats.attempts} latent codes (the cap); relax the filters or raise "
            "--max-attempts.",
            err=True,
        )
    if image is not None:
        legends = [
            f"sim {r['similarity']:.2f}" if around and r.get("similarity") != "" else f"#{i + 1}"
            for i, r in enumerate(first)
        ]
        keep = [i for i, r in enumerate(first) if r["valid"]]
        if keep:
            draw_grid([first[i]["smiles"] for i in keep], [legends[i] for i in keep], image)
            typer.echo(f"grid -> {image}", err=output is None)
        else:
            typer.echo(
                "Warning: no valid molecule among the first rows; no image written.", err=True
            )


@app.command()
def interpolate(
    args: list[str] = typer.Argument(
        ..., help="[MODEL] SMILES_A SMILES_B", metavar="[MODEL] SMILES_A SMILES_B"
    ),
    steps: int = typer.Option(
        10, parser=integer(2, 1000), help="Points on the path, endpoints included."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="CSV to write (default: stdout)."
    ),
    image: Path | None = typer.Option(None, help="Draw the path to this PNG."),
    beam: int = typer.Option(
        1,
        "--beam",
        parser=integer(1, 100),
        help="Beams per point: the most likely valid string of K (1: greedy).",
    ),
    device: str = typer.Option("cpu", parser=torch_device(), help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Walk the great circle between two molecules and decode each point (greedy or --beam K)."""
    from molgen.outputs import check_output_path
    from molgen.sampling import (
        DEFAULT_MODEL,
        draw_grid,
        interpolation_rows,
        load_model,
        write_rows,
    )

    if len(args) not in (2, 3):
        fail(
            "interpolate takes [MODEL] SMILES_A SMILES_B (two molecules, optionally a model first)."
        )
    model_path = Path(args[0]) if len(args) == 3 else None
    smiles_a, smiles_b = args[-2], args[-1]
    if output is not None:
        check_output_path(output, "-o", inputs=(model_path or DEFAULT_MODEL,))
    if image is not None:
        check_output_path(
            image, "--image", inputs=(model_path or DEFAULT_MODEL, output), suffixes=(".png",)
        )
    smiles_a = check_smiles_option(smiles_a, "SMILES_A")
    smiles_b = check_smiles_option(smiles_b, "SMILES_B")
    m = load_model(model_path, device=device)
    rows = interpolation_rows(m, smiles_a, smiles_b, steps, beam=beam)
    write_rows(iter(rows), output)
    n_valid = sum(bool(r["valid"]) for r in rows)
    n_distinct = len({r["smiles"] for r in rows if r["valid"]})
    typer.echo(
        f"{n_valid}/{len(rows)} valid, {n_distinct} distinct molecules on the path"
        + (f" -> {output}" if output else ""),
        err=output is None,
    )
    if image is not None:
        draw_grid(
            [str(r["smiles"]) for r in rows],
            [f"t={r['t']:.2f}" for r in rows],
            image,
            per_row=min(steps, 10),
        )
        typer.echo(f"path -> {image}", err=output is None)
