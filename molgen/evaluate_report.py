"""Reports of an evaluation: terminal table, JSON, Markdown with pictures.

:func:`format_table` (the terminal table), :func:`write_json` (every number and setting),
:func:`write_markdown` (with a molecule grid, :func:`draw_molecules`, and property histograms,
:func:`plot_properties`, beside it) turn a ``molgen.evaluate.Evaluation`` into output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from molgen import metrics
from molgen.outputs import atomic_output, atomic_path

if TYPE_CHECKING:
    from molgen.evaluate import Evaluation


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- output ----------------------------------------------------------------------------------
_ROWS: list[tuple[str, str, str]] = [
    # (label, section, key)
    ("Validity", "metrics", "validity"),
    ("Uniqueness (of valid)", "metrics", "uniqueness"),
    ("Novelty", "metrics", "novelty"),
    ("FCD (MOSES, lower is better)", "metrics", "fcd"),
    ("SNN", "metrics", "snn"),
    ("Frag", "metrics", "frag"),
    ("Scaf", "metrics", "scaf"),
    ("IntDiv1", "metrics", "intdiv1"),
    ("IntDiv2", "metrics", "intdiv2"),
    ("Filters (samples)", "metrics", "filters"),
    ("Filters (reference)", "metrics", "filters_reference"),
]
_MODEL_ROWS: list[tuple[str, str]] = [
    ("Reconstruction (exact)", "reconstruction_exact"),
    ("Per-token accuracy", "token_accuracy"),
    ("Prior validity (T=1)", "prior_validity_t1"),
    ("Interpolation: valid", "interpolation_valid"),
    ("Interpolation: distinct", "interpolation_distinct"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) rows of the headline numbers, in display order."""
    rows = [(label, _fmt(report[section].get(key))) for label, section, key in _ROWS]
    sampler = report.get("sampler")
    if sampler:
        rows[0] = ("Validity (single pass)", rows[0][1])
        k = sampler["max_retries"]
        rows[1:1] = [
            (f"Sampler validity (<= {k} retries)", _fmt(sampler.get("sampler_validity"))),
            ("Decodings per molecule (sampler)", _fmt(sampler.get("decodings_per_molecule"))),
        ]
    for name, value in (report["metrics"].get("wasserstein") or {}).items():
        rows.append((f"Wasserstein {name}", _fmt(value)))
    if report.get("guacamol"):
        for name, res in report["guacamol"]["results"].items():
            rows.append((f"GuacaMol {name}", _fmt(res["score"])))
    if report.get("model"):
        decoding = report["model"].get("decoding", "greedy")
        for label, key in _MODEL_ROWS:
            if decoding != "greedy" and key.startswith(("reconstruction", "interpolation")):
                label += f" [{decoding}]"
            rows.append((label, _fmt(report["model"].get(key))))
    return rows


def validity_note(report: dict[str, Any]) -> str | None:
    """Which validity is which, and which generator GuacaMol ran on (None for a samples file)."""
    sampler = report.get("sampler")
    if not sampler:
        return None
    text = (
        "Validity is the single-pass decoder's (each prior code decoded once), as MOSES and "
        f"GuacaMol tables count it; the sampler re-decodes a code with an invalid string up to "
        f"{sampler['max_retries']} times"
    )
    if sampler.get("greedy"):
        text += " (greedy decoding: no retries are made, it is deterministic)"
    guaca = report.get("guacamol")
    if guaca and guaca.get("generator"):
        text += f". GuacaMol ran on the {guaca['generator']}"
    return text + "."


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers for the terminal."""
    rows = metric_rows(report)
    width = max(len(label) for label, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    samples = report["inputs"]["samples"]
    lines.append("")
    lines.append(
        f"{samples['n']} samples vs {report['inputs']['reference']['n']} reference molecules; "
        f"novelty set: {report['inputs']['train']['reason']}"
    )
    if report.get("guacamol"):
        g = report["guacamol"]
        kind = "standard" if g["standard"] else "NOT the standard 10,000 (smaller sets)"
        generator = f"; generator: {g['generator']}" if g.get("generator") else ""
        lines.append(f"GuacaMol: {g['number_samples']} samples per benchmark, {kind}{generator}")
    note = validity_note(report)
    if note:
        lines.append(note)
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write the report as JSON (every number and setting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(report), indent=2, allow_nan=False) + "\n"
    with atomic_output(path) as handle:
        handle.write(text)
    return path


def plot_properties(
    sample_props: dict[str, np.ndarray], ref_props: dict[str, np.ndarray], out: Path
) -> Path:
    """Histograms of MW, logP, QED and TPSA: samples against the reference (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics.PROPERTY_NAMES), figsize=(16, 3.6))
    for ax, name in zip(axes, metrics.PROPERTY_NAMES, strict=True):
        ref = ref_props.get(name, np.zeros(0))
        gen = sample_props.get(name, np.zeros(0))
        both = np.concatenate([ref, gen])
        if both.size:
            lo, hi = np.percentile(both, [0.5, 99.5])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
            for values, label in ((ref, "reference"), (gen, "samples")):
                inside = values[(values >= bins[0]) & (values <= bins[-1])]
                if inside.size:  # density of an empty histogram divides by zero
                    ax.hist(
                        inside, bins=bins, density=True, alpha=0.5, label=f"{label} ({len(values)})"
                    )
        ax.set_title(name)
        ax.set_ylabel("density")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def draw_molecules(smiles: Sequence[str], out: Path, n: int = 24, per_row: int = 6) -> Path | None:
    """Grid picture of the first ``n`` distinct valid molecules (None when there is none)."""
    from rdkit.Chem import Draw

    mols, legends = [], []
    seen: set[str] = set()
    for s in smiles:
        mol = metrics.to_mol(s)
        if mol is None:
            continue
        canon = metrics.Chem.MolToSmiles(mol)
        if canon in seen:
            continue
        seen.add(canon)
        mols.append(mol)
        legends.append(str(len(mols)))
        if len(mols) >= n:
            break
    if not mols:
        return None
    img = Draw.MolsToGridImage(
        mols, molsPerRow=min(per_row, len(mols)), subImgSize=(220, 220), legends=legends
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        img.save(str(tmp))
    return out


def report_pictures(path: Path) -> tuple[Path, Path]:
    """The two pictures :func:`write_markdown` writes beside a report: molecules, properties."""
    path = Path(path)
    return (
        path.with_name(f"{path.stem}_molecules.png"),
        path.with_name(f"{path.stem}_properties.png"),
    )


def write_markdown(evaluation: Evaluation, path: Path) -> list[Path]:
    """Write the Markdown report, with a molecule grid and property histograms beside it.

    Returns:
        The files written (report first).
    """
    report = evaluation.report
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_path, hist_path = report_pictures(path)
    grid = draw_molecules(evaluation.samples, grid_path)
    hist = plot_properties(
        evaluation.sample_features.properties, evaluation.reference_properties, hist_path
    )
    inputs = report["inputs"]
    lines = ["# molgen evaluation", ""]
    if "model" in inputs:
        lines.append(f"- Model: `{inputs['model'].get('path', '(in memory)')}`")
    else:
        lines.append(f"- Samples: `{inputs['samples']['path']}` (first {inputs['samples']['n']})")
    lines.append(
        f"- Reference: `{inputs['reference']['path']}` ({inputs['reference']['n']} molecules)"
    )
    lines.append(
        f"- Novelty against: {inputs['train'].get('path') or 'none'} ({inputs['train']['reason']})"
    )
    lines.append(
        f"- Samples evaluated: {report['metrics']['n']}, seed {report['settings']['seed']}, "
        f"temperature {report['settings']['temperature']}"
    )
    lines += [f"- **Warning:** {w}." for w in report.get("warnings", [])]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in metric_rows(report)]
    lines.append("")
    lines.append(
        "MOSES definitions (Polykovskiy et al. 2020); FCD is the distance (lower is better), "
        "GuacaMol's FCD score is exp(-0.2 FCD) against its own random reference subset of the "
        "benchmark's sample size. Filters use "
        "RDKit's catalogs (" + ", ".join(report["settings"]["filter_catalogs"]) + "), not MOSES' "
        "MCF list, so compare the samples' value with the reference's."
    )
    if report.get("guacamol"):
        g = report["guacamol"]
        lines.append("")
        lines.append(
            f"GuacaMol ran its own benchmark classes with {g['number_samples']} samples"
            + ("" if g["standard"] else " (not the standard 10,000: a smaller set was given)")
            + "."
        )
        if g.get("note"):
            lines.append(f"Note: {g['note']}.")
    note = validity_note(report)
    if note:
        lines += ["", note]
    if grid is not None:
        lines += ["", "## Samples", "", f"![molecules]({grid.name})"]
    lines += ["", "## Properties (samples vs reference)", "", f"![properties]({hist.name})"]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in report["versions"].items()]
    with atomic_output(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return [path] + ([grid] if grid is not None else []) + [hist]
