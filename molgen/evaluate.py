"""Evaluate a generator: MOSES metrics, GuacaMol distribution-learning scores, model-only metrics.

What is computed (see ``molgen.metrics`` for the MOSES definitions):

* MOSES metrics of the samples against a reference set (validity, uniqueness, novelty, FCD, SNN,
  Frag, Scaf, IntDiv1/2, filters, property Wasserstein distances). Reference statistics
  (fingerprints, fragment and scaffold counts, ChemNet mean/covariance, a property subsample) are
  computed once per reference file and cached, keyed by the file's SHA-256 and the settings.
* GuacaMol's five distribution-learning benchmarks, run by the ``guacamol`` package's own
  benchmark classes on a GuacaMol ``DistributionMatchingGenerator``.
* For a model: reconstruction accuracy, prior validity at temperature 1, interpolation quality,
  and the sampler's figures: validity when a code whose string is invalid is decoded again (up
  to a retry limit) and decodings per molecule. ``validity`` itself is always the single-pass
  decoder's, comparable with MOSES and GuacaMol tables.

The samples come from a model (``molgen.guacamol_adapter.MolgenGenerator``) or from a file
(``molgen.guacamol_adapter.ListGenerator``). This module holds the settings, the cached reference
and training-set statistics, the metric computation and :func:`evaluate`; the GuacaMol adapters and
benchmarks are in ``molgen.guacamol_adapter``, the table, JSON and Markdown reports in
``molgen.evaluate_report``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from molgen import metrics
from molgen.data import DATA_DIR, DEFAULT_DATA, default_cache_dir
from molgen.errors import MolgenError
from molgen.evaluate_report import _plain
from molgen.guacamol_adapter import (
    GUACAMOL_STANDARD_SAMPLES,
    ListGenerator,
    MolgenGenerator,
    guacamol_scores,
)

if TYPE_CHECKING:
    from guacamol.distribution_matching_generator import DistributionMatchingGenerator

# ---- settings and cached reference statistics ----------------------------------------------
MOSES_TRAIN = DEFAULT_DATA
_CACHE_FORMAT = 1


@dataclass
class EvaluateConfig:
    """Settings of one evaluation (all recorded in the JSON report).

    Attributes:
        n: Molecules to sample from a model, or to take from the start of a samples file.
        seed: Seed for sampling and for the reconstruction/interpolation subsets.
        temperature: Sampling temperature for the evaluated samples.
        max_retries: None: GuacaMol's benchmarks run on the single-pass decoder; K: on the
            sampler that re-decodes a code with an invalid string up to K times. The sampler's
            validity is reported either way (at K, or at the ``molgen sample`` default).
        beam: Beams for reconstruction and interpolation (1: greedy decoding).
        n_recon: Reference molecules used for reconstruction accuracy.
        n_interp: Random reference pairs for interpolation quality.
        interp_steps: Points per interpolation path (endpoints included).
        n_prior: Prior samples at temperature 1 when ``temperature`` is not 1.
        ref_property_sample: Reference molecules (random, seed 0) whose properties and filter
            flags are computed (QED and the filter catalogs are slow on 176k molecules).
        filter_catalogs: RDKit FilterCatalog names for the filters metric.
        guacamol: Run the GuacaMol benchmarks.
        n_jobs: Worker processes for RDKit work (None: all cores).
        batch_size: Model sampling batch size.
        cache_dir: Reference/training-set cache (None: ``$XDG_CACHE_HOME/molgen`` or
            ``~/.cache/molgen``). Safe to delete.
        progress: Show progress bars.
    """

    n: int = 10_000
    seed: int = 0
    temperature: float = 1.0
    max_retries: int | None = None
    beam: int = 1
    n_recon: int = 1000
    n_interp: int = 50
    interp_steps: int = 10
    n_prior: int = 1000
    ref_property_sample: int = 10_000
    filter_catalogs: tuple[str, ...] = metrics.DEFAULT_FILTER_CATALOGS
    guacamol: bool = True
    n_jobs: int | None = None
    batch_size: int = 512
    cache_dir: str | None = None
    progress: bool = True


def _cache_dir(config: EvaluateConfig) -> Path:
    path = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MolgenError(
            f"cannot create the cache folder {path} ({exc.strerror}); pass a writable --cache-dir."
        ) from None
    return path


def _key(file_sha: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"file": file_sha, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _library_versions() -> dict[str, str]:
    import fcd
    import guacamol
    import rdkit
    import scipy
    import torch

    from molgen import __version__

    return {
        "molgen": __version__,
        "rdkit": rdkit.__version__,
        "torch": torch.__version__,
        "guacamol": guacamol.__version__,
        "fcd": fcd.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


@dataclass
class ReferenceStats:
    """What the metrics need from a reference set, computed once per file and cached.

    Attributes:
        sha256: SHA-256 of the reference file.
        n_input: Strings read from the file.
        n_valid: Valid molecules among them.
        fingerprints: Packed Morgan fingerprints of the valid molecules.
        fragments: BRICS fragment counts.
        scaffolds: Scaffold counts.
        chemnet: ChemNet activation statistics (canonical SMILES).
        properties: Property arrays of a random subsample.
        filters: Filter flags of the same subsample.
        from_cache: Whether this came from the cache.
    """

    sha256: str
    n_input: int
    n_valid: int
    fingerprints: np.ndarray
    fragments: Counter[str]
    scaffolds: Counter[str]
    chemnet: metrics.ChemNetStats
    properties: dict[str, np.ndarray]
    filters: np.ndarray
    from_cache: bool = False


def _reference_settings(config: EvaluateConfig) -> dict[str, Any]:
    import fcd
    import rdkit

    return {
        "format": _CACHE_FORMAT,
        "morgan": [metrics.MORGAN_RADIUS, metrics.MORGAN_BITS],
        "scaffold_min_rings": metrics.SCAFFOLD_MIN_RINGS,
        "filters": list(config.filter_catalogs),
        "property_sample": config.ref_property_sample,
        "rdkit": rdkit.__version__,
        "fcd": fcd.__version__,
    }


def _counter_arrays(counts: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
    keys = list(counts)
    return np.array(keys, dtype=str), np.array([counts[k] for k in keys], dtype=np.int64)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Write then rename, so a concurrent or interrupted run never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def reference_statistics(
    smiles: Sequence[str], sha256: str, config: EvaluateConfig
) -> ReferenceStats:
    """Reference statistics, from the cache when this file was seen with these settings.

    Args:
        smiles: The reference molecules (as read from the file).
        sha256: The file's SHA-256 (the cache key, with the settings).
        config: Settings (cache folder, property subsample size, filters, jobs, progress).
    """
    cache = _cache_dir(config)
    path = cache / f"reference-{sha256[:12]}-{_key(sha256, _reference_settings(config))}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return ReferenceStats(
                    sha256=sha256,
                    n_input=int(data["n_input"]),
                    n_valid=int(data["n_valid"]),
                    fingerprints=data["fingerprints"],
                    fragments=Counter(
                        dict(
                            zip(
                                data["frag_keys"].tolist(),
                                data["frag_counts"].tolist(),
                                strict=True,
                            )
                        )
                    ),
                    scaffolds=Counter(
                        dict(
                            zip(
                                data["scaf_keys"].tolist(),
                                data["scaf_counts"].tolist(),
                                strict=True,
                            )
                        )
                    ),
                    chemnet=metrics.ChemNetStats(
                        data["fcd_mu"], data["fcd_sigma"], int(data["fcd_n"])
                    ),
                    properties={
                        name: data["properties"][:, i]
                        for i, name in enumerate(metrics.PROPERTY_NAMES)
                    },
                    filters=data["filters"],
                    from_cache=True,
                )
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache entry: recompute and overwrite it
    rng = np.random.default_rng(0)
    k = min(config.ref_property_sample, len(smiles))
    extra = np.zeros(len(smiles), dtype=bool)
    extra[rng.choice(len(smiles), size=k, replace=False)] = True
    feats = metrics.molecule_features(
        smiles,
        extra_for=extra.tolist(),
        filter_catalogs=config.filter_catalogs,
        n_jobs=config.n_jobs,
        progress=config.progress,
        desc="reference molecules",
    )
    if feats.n_valid < 2:
        raise MolgenError(
            f"the reference has {feats.n_valid} valid molecule(s); it needs at least 2."
        )
    chemnet = metrics.chemnet_statistics(
        feats.canonical, canonicalize=False, progress=config.progress
    )
    stats = ReferenceStats(
        sha256=sha256,
        n_input=feats.n_input,
        n_valid=feats.n_valid,
        fingerprints=feats.fingerprints,
        fragments=feats.fragments,
        scaffolds=feats.scaffolds,
        chemnet=chemnet,
        properties=feats.properties,
        filters=feats.filters,
    )
    frag_keys, frag_counts = _counter_arrays(stats.fragments)
    scaf_keys, scaf_counts = _counter_arrays(stats.scaffolds)
    props = np.stack([stats.properties[n] for n in metrics.PROPERTY_NAMES], axis=1)
    _save_npz(
        path,
        {
            "n_input": np.array(stats.n_input),
            "n_valid": np.array(stats.n_valid),
            "fingerprints": stats.fingerprints,
            "frag_keys": frag_keys,
            "frag_counts": frag_counts,
            "scaf_keys": scaf_keys,
            "scaf_counts": scaf_counts,
            "fcd_mu": chemnet.mu,
            "fcd_sigma": chemnet.sigma,
            "fcd_n": np.array(chemnet.n),
            "properties": props,
            "filters": stats.filters,
        },
    )
    return stats


@dataclass
class TrainingSet:
    """Canonical SMILES of a training set, for novelty.

    Attributes:
        path: The training file.
        sha256: Its SHA-256.
        n_input: Strings read.
        isomeric: Isomeric canonical SMILES (MOSES novelty).
        flat: Non-isomeric canonical SMILES (GuacaMol novelty).
        reason: Why this set was used.
        from_cache: Whether this came from the cache.
    """

    path: Path
    sha256: str
    n_input: int
    isomeric: set[str]
    flat: set[str]
    reason: str
    from_cache: bool = False


def load_training_set(path: Path, config: EvaluateConfig, reason: str = "") -> TrainingSet:
    """Read and canonicalize a training file (cached per file SHA-256 and RDKit version)."""
    import gzip

    import rdkit

    from molgen.readers import file_fingerprint, read_smiles_file

    _require_file(path, "training")
    sha = file_fingerprint(path)
    settings = {"format": _CACHE_FORMAT, "kind": "train", "rdkit": rdkit.__version__}
    cache = _cache_dir(config) / f"train-{sha[:12]}-{_key(sha, settings)}.tsv.gz"
    if cache.exists():
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as fh:
                n_input = int(fh.readline().strip())
                iso: set[str] = set()
                flat: set[str] = set()
                for line in fh:
                    a, _, b = line.rstrip("\n").partition("\t")
                    iso.add(a)
                    flat.add(b or a)
            return TrainingSet(path, sha, n_input, iso, flat, reason, from_cache=True)
        except (OSError, ValueError, EOFError):
            pass  # damaged cache entry: rebuild it
    smiles, _ = read_smiles_file(path)
    forms = metrics.canonical_forms(
        smiles, n_jobs=config.n_jobs, progress=config.progress, desc="training set"
    )
    pairs = {f for f in forms if f is not None}
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
        fh.write(f"{len(smiles)}\n")
        for a, b in pairs:
            fh.write(f"{a}\t{b if b != a else ''}\n")
    os.replace(tmp, cache)
    return TrainingSet(path, sha, len(smiles), {a for a, _ in pairs}, {b for _, b in pairs}, reason)


def resolve_training_file(
    train: Path | None, model_summary: dict[str, Any] | None
) -> tuple[Path | None, str]:
    """Which training set novelty is measured against, and why.

    Order: ``--train``; for a model whose training data was MOSES (its summary's
    ``data_source`` names MOSES, or its ``data_fingerprint`` is the bundled file's), the full
    bundled MOSES training set (what MOSES' novelty uses); the model's own ``data_source`` file
    (as written, or relative to the molgen checkout) when its SHA-256 still matches; otherwise
    none: novelty is then not reported rather than measured against a set the model never saw.
    """
    from molgen.readers import file_fingerprint

    if train is not None:
        return train, "--train"
    if not model_summary:
        return None, "no --train given: novelty not computed"
    source = model_summary.get("data_source")
    if isinstance(source, dict):
        source = source.get("path")
    fingerprint = model_summary.get("data_fingerprint")
    if MOSES_TRAIN.exists():
        if source and "moses" in str(source).lower():
            return MOSES_TRAIN, f"model trained on MOSES data ({source}): full MOSES training set"
        if fingerprint and fingerprint == file_fingerprint(MOSES_TRAIN):
            return MOSES_TRAIN, "model trained on the bundled MOSES training set"
    changed = None
    for candidate in [Path(source), DATA_DIR.parent / source] if source else []:
        if candidate.is_file():
            if fingerprint and file_fingerprint(candidate) != fingerprint:
                changed = candidate
                continue
            return candidate, "the model's training data file (summary data_source)"
    if changed is not None:
        return None, (
            f"the model's training data file {changed} changed since training (SHA-256 differs) "
            "and no --train was given: novelty not computed"
        )
    return None, (
        f"the model's training data ({source}) was not found and no --train was given: "
        "novelty not computed"
    )


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise MolgenError(f"{what} file {path} does not exist; check the path.")
    if path.is_dir():
        raise MolgenError(f"{what} file {path} is a folder; pass a molecule file.")


# ---- metrics of a sample set ------------------------------------------------------------------
def sample_metrics(
    feats: metrics.SetFeatures,
    ref: ReferenceStats,
    train: TrainingSet | None,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """MOSES-style metrics of a sample set (features from ``metrics.molecule_features``).

    Everything after validity uses the valid molecules, duplicates included, as MOSES does.
    ``timings``, when given, receives the seconds spent on FCD, SNN and IntDiv.
    """
    timings = {} if timings is None else timings
    clock = time.perf_counter()
    out: dict[str, Any] = {
        "n": feats.n_input,
        "n_valid": feats.n_valid,
        "validity": feats.n_valid / feats.n_input if feats.n_input else math.nan,
    }
    unique = set(feats.canonical)
    out["n_unique"] = len(unique)
    out["uniqueness"] = len(unique) / feats.n_valid if feats.n_valid else math.nan
    if train is not None:
        novel = unique - train.isomeric
        out["n_novel"] = len(novel)
        out["novelty"] = len(novel) / len(unique) if unique else math.nan
    else:
        out["n_novel"] = None
        out["novelty"] = None
    if feats.n_valid >= 2:
        gen_stats = metrics.chemnet_statistics(
            feats.canonical, canonicalize=False, progress=progress
        )
        out["fcd"] = metrics.frechet_distance(gen_stats, ref.chemnet)
    else:
        out["fcd"] = math.nan
    timings["FCD"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    out["snn"] = metrics.snn_from_fingerprints(feats.fingerprints, ref.fingerprints, packed=True)
    timings["SNN"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    out["frag"] = metrics.count_cosine_similarity(ref.fragments, feats.fragments)
    out["scaf"] = metrics.count_cosine_similarity(ref.scaffolds, feats.scaffolds)
    out["intdiv1"] = metrics.internal_diversity_from_fingerprints(feats.fingerprints, packed=True)
    out["intdiv2"] = metrics.internal_diversity_from_fingerprints(
        feats.fingerprints, p=2, packed=True
    )
    timings["Frag, Scaf, IntDiv"] = round(time.perf_counter() - clock, 2)
    out["filters"] = float(feats.filters.mean()) if len(feats.filters) else math.nan
    out["filters_reference"] = float(ref.filters.mean()) if len(ref.filters) else math.nan
    out["wasserstein"] = {
        name: metrics.wasserstein(feats.properties[name], ref.properties[name])
        for name in metrics.PROPERTY_NAMES
    }
    return out


# ---- model-only metrics --------------------------------------------------------------------
def _encodable(model: Any, smiles: list[str]) -> tuple[list[str], int]:
    """The molecules the model can encode (unknown tokens, too long...), and how many were not."""
    try:
        model.encode(smiles)
        return smiles, 0
    except MolgenError:
        pass
    ok = []
    for s in smiles:
        try:
            model.encode([s])
            ok.append(s)
        except MolgenError:
            continue
    return ok, len(smiles) - len(ok)


def model_metrics(
    model: Any,
    reference: Sequence[str],
    config: EvaluateConfig,
    samples_validity: float | None = None,
) -> dict[str, Any]:
    """Reconstruction, prior validity at temperature 1 and interpolation quality of a model.

    * Reconstruction on ``n_recon`` random reference molecules: exact match of the canonical
      (isomeric) SMILES of greedy decoding from the posterior mode (with ``config.beam`` > 1:
      the most likely valid string of that many beams), and teacher-forced per-token accuracy.
      Molecules the model cannot encode (unknown tokens, too long) are skipped and counted.
    * Prior validity: validity of samples at temperature 1 (the evaluated samples when they were
      drawn at temperature 1, else ``n_prior`` new ones).
    * Interpolation: for ``n_interp`` random pairs of those reference molecules, greedy (or
      beam) decodes at ``interp_steps`` points of the slerp path (endpoints included); reported
      are the mean fraction of valid points and of distinct valid molecules per path.
    """
    rng = np.random.default_rng(config.seed)
    pool = [s for s in dict.fromkeys(reference) if metrics.to_mol(s) is not None]
    k = min(config.n_recon, len(pool))
    subset = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else []
    subset, skipped = _encodable(model, subset)
    out: dict[str, Any] = {
        "decoding": "greedy" if config.beam <= 1 else f"beam search, {config.beam} beams",
        "n_recon": len(subset),
        "n_recon_skipped": skipped,
    }
    if subset:
        recon = model.reconstruct(subset, beam=config.beam)
        wanted = [metrics.canonical_smiles(s) for s in subset]
        got = [metrics.canonical_smiles(r) for r in recon]
        out["reconstruction_exact"] = float(
            np.mean([g is not None and g == w for g, w in zip(got, wanted, strict=True)])
        )
        out["reconstruction_valid"] = float(np.mean([g is not None for g in got]))
        out["token_accuracy"] = float(model.token_accuracy(subset))
    else:
        out.update(reconstruction_exact=math.nan, reconstruction_valid=math.nan)
        out["token_accuracy"] = math.nan
    if samples_validity is not None and config.temperature == 1.0:
        out["prior_validity_t1"] = samples_validity
        out["prior_validity_t1_n"] = config.n
    else:
        prior = model.sample(config.n_prior, temperature=1.0, seed=config.seed, progress=False)
        out["prior_validity_t1"] = metrics.validity(prior) if prior else math.nan
        out["prior_validity_t1_n"] = len(prior)
    valid_frac, distinct_frac = [], []
    if len(subset) >= 2 and config.n_interp > 0:
        pairs = []
        for _ in range(config.n_interp):
            i, j = rng.choice(len(subset), size=2, replace=False)
            pairs.append((subset[int(i)], subset[int(j)]))
        iterator: Any = pairs
        if config.progress:
            from tqdm import tqdm

            iterator = tqdm(pairs, desc="interpolation", unit="pair", leave=False)
        for a, b in iterator:
            path = model.interpolate(a, b, steps=config.interp_steps, beam=config.beam)
            if isinstance(path, tuple):  # (t values, strings)
                path = path[1]
            canon = [metrics.canonical_smiles(s) for s in path]
            valid = [c for c in canon if c is not None]
            valid_frac.append(len(valid) / len(path))
            distinct_frac.append(len(set(valid)) / len(path))
    out["n_interp"] = len(valid_frac)
    out["interp_steps"] = config.interp_steps
    out["interpolation_valid"] = float(np.mean(valid_frac)) if valid_frac else math.nan
    out["interpolation_distinct"] = float(np.mean(distinct_frac)) if distinct_frac else math.nan
    return out


# ---- the whole evaluation ------------------------------------------------------------------
@dataclass
class Evaluation:
    """Result of :func:`evaluate`: the report dict plus arrays for pictures.

    Attributes:
        report: Every number and setting (what goes into the JSON file).
        samples: The evaluated sample strings.
        sample_features: Their features (canonical SMILES, properties...).
        reference_properties: The reference property subsample (for histograms).
    """

    report: dict[str, Any]
    samples: list[str]
    sample_features: metrics.SetFeatures
    reference_properties: dict[str, np.ndarray] = field(default_factory=dict)


def _file_info(path: Path) -> dict[str, Any]:
    from molgen.readers import file_fingerprint

    return {"path": str(path), "sha256": file_fingerprint(path)}


#: Fewer valid reference molecules than this give a warning (distribution metrics unreliable).
SMALL_REFERENCE = 1000


def _too_long_lines(
    smiles: Sequence[str], lines: Sequence[int], drop: bool
) -> tuple[list[str], list[int]]:
    """Strings longer than ``molgen.data.MAX_SMILES_CHARS``, which RDKit must never see.

    Such a string can crash the process inside RDKit (guacamol and fcd parse the lists they are
    given themselves), so it is dropped (``drop``) or replaced by ``""``, an invalid molecule.

    Returns:
        (the strings kept or blanked, the line numbers of the long ones).
    """
    from molgen.data import smiles_size_problem

    out: list[str] = []
    long_lines: list[int] = []
    for text, line in zip(smiles, lines, strict=False):
        if isinstance(text, str) and smiles_size_problem(text):
            long_lines.append(line)
            if not drop:
                out.append("")
        else:
            out.append(text)
    return out, long_lines


def _too_long_warning(lines: Sequence[int], what: str, action: str) -> str:
    from molgen.data import MAX_SMILES_CHARS

    shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
    rows = "line" if len(lines) == 1 else "lines"
    return (
        f"{len(lines)} {rows} of the {what} longer than {MAX_SMILES_CHARS} characters "
        f"{action} ({rows} {shown})"
    )


def evaluate(
    reference_path: Path,
    model: Any | None = None,
    samples_path: Path | None = None,
    train_path: Path | None = None,
    config: EvaluateConfig | None = None,
    model_path: Path | None = None,
    smiles_column: str | None = None,
    sep: str | None = None,
) -> Evaluation:
    """Evaluate a model (sampled here) or a file of SMILES against a reference set.

    Args:
        reference_path: Reference molecule file (e.g. the MOSES test set).
        model: A loaded model (``molgen.sampling.load_model``); exclusive with ``samples_path``.
        samples_path: File of generated SMILES (from any generator); its first ``config.n``
            molecules are evaluated.
        train_path: Training set for novelty (default: see :func:`resolve_training_file`).
        config: Settings.
        model_path: The model's file (recorded with its SHA-256).
        smiles_column: SMILES column of the samples file (None: auto-detect).
        sep: Delimiter of the samples file (None: sniff).

    Returns:
        The evaluation.

    Raises:
        MolgenError: Both or neither of model and samples, missing or bad files, too few molecules.
    """
    from molgen.readers import read_smiles_file

    config = config or EvaluateConfig()
    if (model is None) == (samples_path is None):
        raise MolgenError("give exactly one of MODEL or --samples FILE to evaluate.")
    if config.n <= 0:
        raise MolgenError("-n must be a positive number of molecules.")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    _require_file(reference_path, "reference")
    reference, ref_lines = read_smiles_file(reference_path)
    warnings: list[str] = []
    reference, too_long = _too_long_lines(reference, ref_lines, drop=True)
    if too_long:
        warnings.append(_too_long_warning(too_long, f"reference file {reference_path}", "left out"))
    ref_info = _file_info(reference_path)
    inputs: dict[str, Any] = {"reference": {**ref_info, "n": len(reference)}}
    if too_long:
        inputs["reference"]["n_too_long"] = len(too_long)
    generator: DistributionMatchingGenerator
    sampler: dict[str, Any] | None = None
    if model is not None:
        from molgen.sampling import DEFAULT_MAX_RETRIES

        live = MolgenGenerator(
            model,
            seed=config.seed,
            temperature=config.temperature,
            batch_size=config.batch_size,
            max_retries=config.max_retries,
        )
        retries = DEFAULT_MAX_RETRIES if config.max_retries is None else config.max_retries
        decoded = live.decode(config.n, retries)
        # MOSES metrics and validity: the single pass; the retries only add the sampler figures
        samples = list(decoded.first)
        handed = samples if config.max_retries is None else decoded.sampler_strings()
        generator = ListGenerator(handed, fallback=live)
        sampler = {
            "max_retries": retries,
            "greedy": config.temperature <= 0,
            **decoded.counts.as_dict(),
        }
        inputs["model"] = {
            **(_file_info(model_path) if model_path is not None else {}),
            "data_source": (model.summary or {}).get("data_source"),
            "data_fingerprint": (model.summary or {}).get("data_fingerprint"),
        }
        inputs["samples"] = {"source": "model", "n": len(samples)}
        lap("sampling")
    else:
        assert samples_path is not None
        _require_file(samples_path, "samples")
        all_samples, sample_lines = read_smiles_file(
            samples_path, smiles_column=smiles_column, sep=sep
        )
        samples, too_long = _too_long_lines(all_samples[: config.n], sample_lines, drop=False)
        if too_long:
            what = f"samples file {samples_path}"
            warnings.append(_too_long_warning(too_long, what, "counted as invalid"))
        generator = ListGenerator(samples)
        inputs["samples"] = {
            **_file_info(samples_path),
            "n_read": len(all_samples),
            "n": len(samples),
        }
        lap("reading samples")
    ref = reference_statistics(reference, ref_info["sha256"], config)
    inputs["reference"]["n_valid"] = ref.n_valid
    if ref.n_valid < SMALL_REFERENCE:
        warnings.append(
            f"the reference has only {ref.n_valid} valid molecules: FCD, SNN, Frag, Scaf and "
            f"GuacaMol's KL and FCD scores are unreliable below {SMALL_REFERENCE:,} (FCD "
            "compares covariances of 512 ChemNet features; MOSES uses 10,000+ molecules)"
        )
    inputs["reference"]["statistics_from_cache"] = ref.from_cache
    lap("reference statistics")
    summary = getattr(model, "summary", None) if model is not None else None
    train_file, reason = resolve_training_file(train_path, summary)
    train = None
    if train_file is not None:
        train = load_training_set(train_file, config, reason)
        inputs["train"] = {
            "path": str(train.path),
            "sha256": train.sha256,
            "n": train.n_input,
            "n_canonical_unique": len(train.isomeric),
            "reason": reason,
            "from_cache": train.from_cache,
        }
        lap("training set")
    else:
        inputs["train"] = {"path": None, "reason": reason}
    feats = metrics.molecule_features(
        samples,
        filter_catalogs=config.filter_catalogs,
        n_jobs=config.n_jobs,
        progress=config.progress,
        desc="samples",
    )
    lap("sample features")
    detail: dict[str, float] = {}
    moses = sample_metrics(feats, ref, train, progress=config.progress, timings=detail)
    lap("MOSES metrics")
    guaca: dict[str, Any] | None = None
    if config.guacamol:
        number = min(len(samples), len(reference), GUACAMOL_STANDARD_SAMPLES)
        if model is not None:
            number = min(config.n, len(reference), GUACAMOL_STANDARD_SAMPLES)
        guaca = guacamol_scores(
            generator,
            reference,
            train.flat if train is not None else None,
            number_samples=number,
            progress=config.progress,
        )
        guaca["kl_fcd_reference"] = ref_info["path"]
        if model is not None:
            guaca["generator"] = live.description
        guaca["novelty_training_set"] = inputs["train"]["path"]
        if model is None:
            guaca["note"] = (
                "samples from a file: every benchmark reads the file from its start, so "
                "validity and uniqueness are those of the file (nothing can be resampled)"
            )
        lap("GuacaMol")
    model_out = None
    if model is not None:
        model_out = model_metrics(model, reference, config, samples_validity=moses["validity"])
        lap("model metrics")
    report = {
        "report": "molgen evaluate",
        "settings": _plain(asdict(config)),
        "inputs": inputs,
        "versions": _library_versions(),
        "metrics": _plain(moses),
        "sampler": _plain(sampler),
        "guacamol": _plain(guaca),
        "model": _plain(model_out),
        "timings_s": {**timings, "total": round(sum(timings.values()), 2)},
        "timings_moses_metrics_s": detail,
        "warnings": warnings,
    }
    return Evaluation(report, samples, feats, ref.properties)
