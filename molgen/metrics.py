"""Distribution metrics for sets of molecules: SMILES lists in, numbers out.

The definitions follow MOSES (Polykovskiy et al. 2020, "Molecular Sets (MOSES): A Benchmarking
Platform for Molecular Generation Models", Front. Pharmacol. 11:565644) and its reference code
(``moses.metrics``); every function says where it differs. Chemistry is RDKit; the Fréchet ChemNet
Distance uses the ``fcd`` package (1.2.2) and its ChemNet weights.

Cheap per-molecule work (parsing, fingerprints, fragments, scaffolds, properties, filters) is done
once per set by :func:`molecule_features`, optionally in worker processes; the set-level metrics
then work on those features, so a large reference set can be summarised once and cached.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import QED, AllChem, Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams
from rdkit.Chem.Scaffolds import MurckoScaffold

from molgen.data import MAX_ATOMS, MAX_SMILES_CHARS

# Invalid generated SMILES are expected; RDKit would print an error for each one.
RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]

#: Morgan fingerprint settings of MOSES (SNN, IntDiv): radius 2, 1024 bits, no chirality.
MORGAN_RADIUS = 2
MORGAN_BITS = 1024
#: MOSES counts scaffolds with at least this many rings (``compute_scaffolds(min_rings=2)``).
SCAFFOLD_MIN_RINGS = 2
#: RDKit FilterCatalog catalogs used by :func:`passes_filters` (MOSES uses its own MCF + PAINS).
DEFAULT_FILTER_CATALOGS: tuple[str, ...] = ("PAINS", "BRENK")
#: Atoms MOSES allows in its filter (the MOSES data set's own element set).
MOSES_ALLOWED_ATOMS: frozenset[str] = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
#: Properties returned by :func:`properties` (name -> what it is).
PROPERTY_NAMES: tuple[str, ...] = ("MW", "logP", "QED", "TPSA")

# Below this many molecules worker processes cost more than they save.
_PARALLEL_MIN = 2000
_CHUNK = 500


# ---- single molecules ------------------------------------------------------------------------
def to_mol(smiles: str) -> Chem.Mol | None:
    """Parse a SMILES the way MOSES' ``get_mol`` does; None when it is not a valid molecule.

    Empty strings and molecules without atoms are invalid (``Chem.MolFromSmiles('')`` returns an
    empty molecule, not None).
    """
    # Strings and molecules beyond molgen's size bounds are invalid too: RDKit crashes the
    # process canonicalizing a long enough chain (see molgen.data.MAX_ATOMS).
    if not isinstance(smiles, str) or not smiles or len(smiles) > MAX_SMILES_CHARS:
        return None
    # MolFromSmiles sanitizes already; MOSES' extra SanitizeMol call cannot fail after it.
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumAtoms() > MAX_ATOMS:
        return None
    return mol


def canonical_smiles(smiles: str, isomeric: bool = True) -> str | None:
    """RDKit canonical SMILES, or None for an invalid input."""
    mol = to_mol(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=isomeric)


@lru_cache(maxsize=4)
def _morgan_generator(radius: int, n_bits: int) -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def _fingerprint(mol: Chem.Mol, radius: int = MORGAN_RADIUS, n_bits: int = MORGAN_BITS) -> Any:
    # Same bits as AllChem.GetMorganFingerprintAsBitVect(mol, radius, nBits), which MOSES uses.
    return _morgan_generator(radius, n_bits).GetFingerprintAsNumPy(mol)


def _fragments(mol: Chem.Mol) -> list[str]:
    # MOSES' fragmenter: cut the BRICS bonds and keep every piece (with its dummy atoms).
    pieces = AllChem.FragmentOnBRICSBonds(mol)  # type: ignore[attr-defined]
    return Chem.MolToSmiles(pieces).split(".")


def _scaffold(mol: Chem.Mol, min_rings: int = SCAFFOLD_MIN_RINGS) -> str | None:
    # MOSES' compute_scaffold: Bemis-Murcko framework, dropped when it has < min_rings rings.
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if smiles == "" or scaffold.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


def _properties(mol: Chem.Mol) -> tuple[float, float, float, float]:
    return (
        Descriptors.MolWt(mol),  # type: ignore[attr-defined]
        Crippen.MolLogP(mol),  # type: ignore[attr-defined]
        QED.qed(mol),
        rdMolDescriptors.CalcTPSA(mol),
    )


@lru_cache(maxsize=4)
def _filter_catalog(catalogs: tuple[str, ...]) -> FilterCatalog:
    params = FilterCatalogParams()
    for name in catalogs:
        try:
            params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
        except AttributeError:
            raise ValueError(f"unknown RDKit filter catalog {name!r}") from None
    return FilterCatalog(params)


def _passes(
    mol: Chem.Mol,
    catalogs: tuple[str, ...] = DEFAULT_FILTER_CATALOGS,
    allowed_atoms: frozenset[str] | None = MOSES_ALLOWED_ATOMS,
) -> bool:
    # MOSES' structural rules first (cheap), then the substructure catalogs.
    ring_info = mol.GetRingInfo()
    if any(len(ring) >= 8 for ring in ring_info.AtomRings()):
        return False
    if any(atom.GetFormalCharge() != 0 for atom in mol.GetAtoms()):
        return False
    if allowed_atoms is not None and any(
        atom.GetSymbol() not in allowed_atoms for atom in mol.GetAtoms()
    ):
        return False
    return not (catalogs and _filter_catalog(catalogs).HasMatch(mol))


def passes_filters(
    smiles: Sequence[str],
    catalogs: Sequence[str] = DEFAULT_FILTER_CATALOGS,
    allowed_atoms: Iterable[str] | None = MOSES_ALLOWED_ATOMS,
) -> list[bool]:
    """Whether each molecule passes the medicinal-chemistry filters (invalid: False).

    MOSES' ``mol_passes_filters`` rejects rings of 8+ atoms, charged atoms, atoms outside the
    MOSES element set, and matches of its own MCF and PAINS SMARTS lists. Here the structural
    rules are the same, but the SMARTS come from RDKit's FilterCatalog (default: PAINS A/B/C and
    Brenk's unwanted groups), because the MOSES lists ship only inside the ``molsets`` package.
    Brenk is stricter than MCF: about 10% of the MOSES test set matches it, whereas the MOSES
    data was built to pass MOSES' own filters, so compare a model's value with the reference
    set's value rather than with 1.

    Args:
        smiles: Molecules.
        catalogs: RDKit ``FilterCatalogs`` names (e.g. "PAINS", "BRENK", "NIH", "ZINC").
        allowed_atoms: Element symbols allowed (None: any element).

    Returns:
        One bool per input.
    """
    cats = tuple(catalogs)
    allowed = None if allowed_atoms is None else frozenset(allowed_atoms)
    out = []
    for s in smiles:
        mol = to_mol(s)
        out.append(mol is not None and _passes(mol, cats, allowed))
    return out


def fraction_passes_filters(smiles: Sequence[str], **kwargs: Any) -> float:
    """Fraction of the VALID molecules that pass :func:`passes_filters` (MOSES "Filters").

    Like MOSES, invalid molecules are removed first (MOSES computes it on valid molecules).
    """
    valid = [s for s in smiles if to_mol(s) is not None]
    if not valid:
        return math.nan
    return float(np.mean(passes_filters(valid, **kwargs)))


# ---- set-level basics ------------------------------------------------------------------------
def validity(smiles: Sequence[str]) -> float:
    """Fraction of inputs that are valid molecules (MOSES ``fraction_valid``).

    Raises:
        ValueError: on an empty list.
    """
    if len(smiles) == 0:
        raise ValueError("validity of an empty list is undefined")
    return sum(to_mol(s) is not None for s in smiles) / len(smiles)


def valid_canonical(smiles: Sequence[str], isomeric: bool = True) -> list[str]:
    """Canonical SMILES of the valid inputs in order, duplicates kept (MOSES ``remove_invalid``)."""
    out = []
    for s in smiles:
        c = canonical_smiles(s, isomeric=isomeric)
        if c is not None:
            out.append(c)
    return out


def uniqueness(smiles: Sequence[str], k: int | None = None) -> float:
    """Fraction of distinct canonical SMILES among the VALID inputs (MOSES ``unique@k``).

    MOSES computes unique@k on the first k valid molecules; ``k=None`` uses all valid ones.
    Returns NaN when there is no valid molecule.
    """
    valid = valid_canonical(smiles)
    if k is not None:
        valid = valid[:k]
    if not valid:
        return math.nan
    return len(set(valid)) / len(valid)


def novelty(smiles: Sequence[str], train: Iterable[str], train_is_canonical: bool = False) -> float:
    """Fraction of distinct valid molecules that are not in the training set (MOSES ``novelty``).

    MOSES compares canonical generated SMILES with the training SMILES as written (its training
    file is canonical). Here the training set is canonicalized too (unless
    ``train_is_canonical``), so a non-canonical training file cannot inflate novelty.

    Args:
        smiles: Generated molecules.
        train: Training molecules.
        train_is_canonical: Skip canonicalizing ``train`` (it already holds RDKit canonical SMILES).

    Returns:
        The fraction, or NaN when there is no valid molecule.
    """
    gen = set(valid_canonical(smiles))
    if not gen:
        return math.nan
    train_set = set(train) if train_is_canonical else set(valid_canonical(list(train)))
    return len(gen - train_set) / len(gen)


# ---- fingerprints and Tanimoto ---------------------------------------------------------------
def morgan_fingerprints(
    smiles: Sequence[str], radius: int = MORGAN_RADIUS, n_bits: int = MORGAN_BITS
) -> np.ndarray:
    """Morgan bit fingerprints of the valid inputs, as a (n_valid, n_bits) uint8 0/1 array."""
    rows = [_fingerprint(m, radius, n_bits) for m in map(to_mol, smiles) if m is not None]
    return np.asarray(rows, dtype=np.uint8).reshape(len(rows), n_bits)


@lru_cache(maxsize=1)
def _fast_matmul_dtype() -> Any:
    """bfloat16 when this CPU multiplies it faster than float32 (AMX/AVX512-BF16), else float32."""
    import torch

    a = torch.ones(1024, 1024)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up (oneDNN picks its kernel on first use)
        start = time.perf_counter()
        for _ in range(3):
            x @ x
        timings[dtype] = time.perf_counter() - start
    return min(timings, key=lambda d: timings[d])


def average_agg_tanimoto(
    ref_fps: np.ndarray,
    gen_fps: np.ndarray,
    agg: str = "max",
    p: float = 1.0,
    batch_size: int = 5000,
    packed: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Per generated molecule: max (or power mean) Tanimoto similarity to the reference set.

    This is MOSES' ``average_agg_tanimoto`` before its final mean: Tanimoto from a matrix
    product of 0/1 fingerprints (two all-zero fingerprints count as similarity 1). For
    ``agg="mean"`` the value is ``(mean_j T_ij^p)^(1/p)`` per generated molecule i.

    Intersection counts are exact: they are small integers, computed in bfloat16 only when no
    count can exceed 256 (exact in bfloat16) and that is faster on this CPU.

    Args:
        ref_fps: (n_ref, n_bits) 0/1 uint8 fingerprints (or packed bits with ``packed=True``).
        gen_fps: (n_gen, n_bits) 0/1 uint8 fingerprints (packed likewise).
        agg: "max" or "mean".
        p: Power for ``agg="mean"``.
        batch_size: Reference rows per matrix product.
        packed: Both arrays hold ``np.packbits`` rows.
        progress: Show a progress bar over reference batches.

    Returns:
        (n_gen,) float64 array.
    """
    import torch

    if agg not in ("max", "mean"):
        raise ValueError("agg must be 'max' or 'mean'")
    gen_bits = np.unpackbits(gen_fps, axis=1) if packed else gen_fps
    n_gen = gen_bits.shape[0]
    if n_gen == 0 or ref_fps.shape[0] == 0:
        return np.full(n_gen, np.nan)
    gen_t = torch.from_numpy(np.ascontiguousarray(gen_bits)).float()
    gen_count = gen_t.sum(1)
    dtype = torch.float32
    if float(gen_count.max()) <= 256 or _max_popcount(ref_fps, packed) <= 256:
        dtype = _fast_matmul_dtype()
    gen_mm = gen_t.to(dtype).T.contiguous()
    result = torch.zeros(n_gen, dtype=torch.float64)
    starts: Iterable[int] = range(0, ref_fps.shape[0], batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(list(starts), desc="tanimoto", unit="batch", leave=False)
    probe = None
    if ref_fps.shape[0] >= 4 * batch_size:
        first = ref_fps[:batch_size]
        first = np.unpackbits(first, axis=1) if packed else first
        first_t = torch.from_numpy(np.ascontiguousarray(first)).to(dtype)

        def probe() -> None:
            first_t @ gen_mm

    gen_empty = gen_count == 0
    with torch.no_grad(), adaptive_torch_threads(probe, default=1):
        for start in starts:
            chunk = ref_fps[start : start + batch_size]
            if packed:
                chunk = np.unpackbits(chunk, axis=1)
            chunk_t = torch.from_numpy(np.ascontiguousarray(chunk))
            ref_count = chunk_t.sum(1, dtype=torch.float32).unsqueeze(1)
            sim = (chunk_t.to(dtype) @ gen_mm).float()  # intersections
            # in place (memory-bound on 5000 x n_gen matrices): T = c / (a + b - c)
            union = ref_count + gen_count
            union.sub_(sim).clamp_(min=1)
            sim.div_(union)
            if bool(gen_empty.any()):
                ref_empty = (ref_count[:, 0] == 0).nonzero()
                sim[ref_empty, gen_empty.nonzero()[:, 0]] = 1.0  # 0/0 counts as 1, as in MOSES
            if agg == "max":
                result = torch.maximum(result, sim.amax(0).double())
            else:
                if p != 1:
                    sim.pow_(p)
                result += sim.sum(0, dtype=torch.float64)
    out = result.numpy()
    if agg == "mean":
        out = out / ref_fps.shape[0]
        if p != 1:
            out = out ** (1.0 / p)
    return out


def _max_popcount(fps: np.ndarray, packed: bool) -> int:
    if fps.shape[0] == 0:
        return 0
    if packed:
        return int(np.bitwise_count(fps).sum(1).max())
    return int(fps.sum(1).max())


def snn_from_fingerprints(gen_fps: np.ndarray, ref_fps: np.ndarray, packed: bool = False) -> float:
    """Mean over generated molecules of the max Tanimoto similarity to the reference (SNN)."""
    if gen_fps.shape[0] == 0:
        return math.nan
    return float(np.mean(average_agg_tanimoto(ref_fps, gen_fps, agg="max", packed=packed)))


def snn(gen: Sequence[str], ref: Sequence[str]) -> float:
    """Similarity to nearest neighbour (MOSES ``SNN``), Morgan r=2 1024-bit fingerprints.

    Invalid generated molecules are ignored (MOSES removes them before SNN).
    """
    return snn_from_fingerprints(morgan_fingerprints(gen), morgan_fingerprints(ref))


def internal_diversity_from_fingerprints(
    fps: np.ndarray, p: float = 1.0, per_molecule_root: bool = False, packed: bool = False
) -> float:
    """Internal diversity of a fingerprint set; see :func:`internal_diversity`."""
    if fps.shape[0] == 0:
        return math.nan
    if per_molecule_root or p == 1:
        rows = average_agg_tanimoto(fps, fps, agg="mean", p=p, packed=packed)
        return float(1.0 - rows.mean())
    powered = average_agg_tanimoto(fps, fps, agg="mean", p=p, packed=packed) ** p  # mean_j T^p
    return float(1.0 - powered.mean() ** (1.0 / p))


def internal_diversity(
    gen: Sequence[str], p: float = 1.0, per_molecule_root: bool = False
) -> float:
    """IntDiv_p = 1 - (mean over all pairs (i, j) of T(i, j)^p)^(1/p), Morgan r=2 1024 bits.

    This is the formula of Polykovskiy et al. 2020 (pairs include i = j, as in MOSES). The
    MOSES code instead takes the p-th root per molecule before averaging,
    ``1 - mean_i (mean_j T_ij^p)^(1/p)``; pass ``per_molecule_root=True`` for that variant. The two
    agree for p = 1 (IntDiv1); for p = 2 the code's value is slightly higher.
    Invalid molecules are ignored, duplicates are kept (as MOSES does).
    """
    return internal_diversity_from_fingerprints(
        morgan_fingerprints(gen), p=p, per_molecule_root=per_molecule_root
    )


# ---- fragments and scaffolds -----------------------------------------------------------------
def fragment_counts(smiles: Sequence[str]) -> Counter[str]:
    """Counts of BRICS fragments (MOSES ``compute_fragments``) over the valid inputs."""
    counts: Counter[str] = Counter()
    for mol in map(to_mol, smiles):
        if mol is not None:
            counts.update(_fragments(mol))
    return counts


def scaffold_counts(smiles: Sequence[str], min_rings: int = SCAFFOLD_MIN_RINGS) -> Counter[str]:
    """Counts of Bemis-Murcko scaffolds with >= ``min_rings`` rings (MOSES ``compute_scaffolds``).

    Invalid inputs are skipped.
    """
    counts: Counter[str] = Counter()
    for mol in map(to_mol, smiles):
        if mol is not None:
            scaffold = _scaffold(mol, min_rings)
            if scaffold is not None:
                counts[scaffold] += 1
    return counts


def count_cosine_similarity(ref_counts: Counter[str], gen_counts: Counter[str]) -> float:
    """Cosine similarity of two count vectors over the union of keys (MOSES ``cos_similarity``).

    NaN when either set is empty, as in MOSES.
    """
    if not ref_counts or not gen_counts:
        return math.nan
    keys = list(set(ref_counts) | set(gen_counts))
    ref = np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64)
    gen = np.array([gen_counts.get(k, 0) for k in keys], dtype=np.float64)
    return float(ref @ gen / (np.linalg.norm(ref) * np.linalg.norm(gen)))


def fragment_similarity(gen: Sequence[str], ref: Sequence[str]) -> float:
    """MOSES "Frag": cosine similarity of BRICS fragment counts of generated and reference sets."""
    return count_cosine_similarity(fragment_counts(ref), fragment_counts(gen))


def scaffold_similarity(gen: Sequence[str], ref: Sequence[str]) -> float:
    """MOSES "Scaf": cosine similarity of Bemis-Murcko scaffold counts (scaffolds with 2+ rings)."""
    return count_cosine_similarity(scaffold_counts(ref), scaffold_counts(gen))


# ---- properties ------------------------------------------------------------------------------
def properties(smiles: Sequence[str]) -> dict[str, np.ndarray]:
    """Molecular weight, Crippen logP, QED and TPSA of the valid inputs (arrays, one per property).

    MOSES reports the Wasserstein-1 distance of MW, logP, QED and SA distributions to the test
    set; TPSA is included here for the plots (SA is not).
    """
    rows = [_properties(m) for m in map(to_mol, smiles) if m is not None]
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(PROPERTY_NAMES))
    return {name: arr[:, i] for i, name in enumerate(PROPERTY_NAMES)}


# ---- torch threads on a busy machine ---------------------------------------------------------
#: ChemNet runs on at least this many molecules pick torch's thread count by timing; smaller
#: ones use one thread (at most about a second slower on idle cores).
THREAD_PROBE_MIN = 1000
_PROBE_SIZE = 128


@contextmanager
def adaptive_torch_threads(
    probe: Callable[[], object] | None, default: int | None = None
) -> Iterator[int]:
    """Run a block with torch's thread count, or with 1 thread if the probe runs faster so.

    On a machine whose cores are busy with other processes, torch's OpenMP threads wait for
    each other while descheduled: ChemNet on 1,000 molecules took 29.6 s with 2 threads and
    3.5 s with 1 thread here (2 shared cores), against 1.75 s with 2 threads on idle cores.
    Timing the probe (a small piece of the real work) with both counts avoids that trap.

    Args:
        probe: A small piece of the work to time (None: use ``default``).
        default: Thread count without a probe (None: keep the current one).

    Yields:
        The thread count in use.
    """
    import torch

    current = torch.get_num_threads()
    chosen = current if default is None else max(1, default)
    if probe is not None and current > 1:
        probe()  # warm-up, so the first timing does not pay for it
        timings = {}
        for n in (current, 1):
            torch.set_num_threads(n)
            start = time.perf_counter()
            probe()
            timings[n] = time.perf_counter() - start
        chosen = min(timings, key=lambda n: timings[n])
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(current)


def one_blas_thread() -> Any:
    """Context manager limiting NumPy/SciPy's BLAS to one thread (``threadpoolctl``).

    The FCD's 512 x 512 matrix square root (``scipy.linalg.sqrtm``) took 6-19 s with OpenBLAS'
    default 2 threads and 0.7 s with one on this project's 2 busy shared cores; on idle cores
    one thread costs well under a second more.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# ---- Fréchet ChemNet Distance ----------------------------------------------------------------
@dataclass
class ChemNetStats:
    """Mean and covariance of ChemNet penultimate-layer activations of a set of molecules."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def chemnet_statistics(
    smiles: Sequence[str],
    batch_size: int = 128,
    canonicalize: bool = True,
    progress: bool = False,
    chunk: int = 4096,
) -> ChemNetStats:
    """ChemNet activation statistics with ``fcd`` 1.2.2's model and ``get_predictions``.

    ``fcd.get_fcd`` feeds SMILES as given; MOSES (and GuacaMol) feed canonical SMILES, and the
    two give very different FCDs, so by default invalid molecules are dropped and the rest
    canonicalized (isomeric) first.

    Args:
        smiles: Molecules.
        batch_size: ChemNet batch size.
        canonicalize: Canonicalize and drop invalid inputs first.
        progress: Show a progress bar (over chunks of ``chunk`` molecules).
        chunk: Molecules per ``get_predictions`` call (progress and thread-count granularity).

    Raises:
        ValueError: fewer than 2 molecules remain (a covariance needs two).
    """
    import fcd

    mols = valid_canonical(smiles) if canonicalize else list(smiles)
    if len(mols) < 2:
        raise ValueError(f"FCD needs at least 2 valid molecules, got {len(mols)}")
    model = fcd.load_ref_model()
    # fcd pads every SMILES to max(350, longest + 1); chunking would change the padding of
    # chunks without the longest string, so only chunk when everything fits in the default 350.
    splits = [mols]
    if max(map(len, mols)) < 350:
        splits = [mols[i : i + chunk] for i in range(0, len(mols), chunk)]
    parts = []
    iterator: Iterable[list[str]] = splits
    if progress:
        from tqdm import tqdm

        iterator = tqdm(splits, desc="ChemNet", unit="chunk", leave=False)
    probe = None
    if len(mols) >= THREAD_PROBE_MIN and max(map(len, mols)) < 350:
        head = mols[:_PROBE_SIZE]

        def probe() -> None:
            fcd.get_predictions(model, head, batch_size=batch_size, n_jobs=0)

    with adaptive_torch_threads(probe, default=1):
        for part in iterator:
            parts.append(fcd.get_predictions(model, part, batch_size=batch_size))
    act = np.concatenate(parts, axis=0)
    with one_blas_thread():
        sigma = np.cov(act.T)
    return ChemNetStats(mu=act.mean(axis=0), sigma=sigma, n=act.shape[0])


def frechet_distance(gen: ChemNetStats, ref: ChemNetStats) -> float:
    """Fréchet distance between two activation Gaussians (``fcd.calculate_frechet_distance``)."""
    import fcd

    for arr in (gen.mu, gen.sigma, ref.mu, ref.sigma):
        if not np.all(np.isfinite(arr)):  # scipy's sqrtm never returns on NaN input
            raise ValueError("ChemNet statistics are not finite (too few molecules?)")
    with one_blas_thread():
        return float(
            fcd.calculate_frechet_distance(
                mu1=gen.mu, sigma1=gen.sigma, mu2=ref.mu, sigma2=ref.sigma
            )
        )


def fcd_distance(gen: Sequence[str], ref: Sequence[str]) -> float:
    """MOSES-style FCD (lower is better): both sets canonicalized, invalid molecules dropped.

    GuacaMol reports ``exp(-0.2 * FCD)`` as its score instead.
    """
    return frechet_distance(chemnet_statistics(gen), chemnet_statistics(ref))


# ---- per-set features, computed once (optionally in parallel) --------------------------------
@dataclass
class SetFeatures:
    """Per-molecule work for one set of SMILES, reduced to what the set metrics need.

    Attributes:
        n_input: Number of input strings.
        canonical: Canonical SMILES of the valid inputs, input order, duplicates kept.
        fingerprints: ``np.packbits`` of Morgan r=2 1024-bit fingerprints, one row per valid input.
        fragments: BRICS fragment counts.
        scaffolds: Bemis-Murcko scaffold counts (>= 2 rings).
        properties: Property arrays (MW, logP, QED, TPSA) of the molecules they were asked for.
        filters: Filter pass flags of the molecules they were asked for.
    """

    n_input: int
    canonical: list[str]
    fingerprints: np.ndarray
    fragments: Counter[str]
    scaffolds: Counter[str]
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    filters: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_valid(self) -> int:
        """Number of valid inputs."""
        return len(self.canonical)


def _features_chunk(job: tuple[list[str], list[bool], tuple[str, ...]]) -> tuple:
    smiles, extra, catalogs = job
    canonical: list[str] = []
    fps: list[np.ndarray] = []
    frags: Counter[str] = Counter()
    scafs: Counter[str] = Counter()
    props: list[tuple[float, float, float, float]] = []
    passes: list[bool] = []
    for s, want_extra in zip(smiles, extra, strict=True):
        mol = to_mol(s)
        if mol is None:
            continue
        canonical.append(Chem.MolToSmiles(mol))
        fps.append(np.packbits(_fingerprint(mol)))
        frags.update(_fragments(mol))
        scaffold = _scaffold(mol)
        if scaffold is not None:
            scafs[scaffold] += 1
        if want_extra:
            props.append(_properties(mol))
            passes.append(_passes(mol, catalogs))
    return canonical, fps, frags, scafs, props, passes


def _ignore_sigint() -> None:
    # Ctrl-C is the parent's to handle (it stops the pool): no traceback from every worker.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _map_chunks(
    fn: Callable[[Any], Any],
    jobs: list[Any],
    sizes: list[int],
    n_jobs: int | None,
    progress: bool,
    desc: str,
) -> list[Any]:
    """``[fn(job) for job in jobs]``, in worker processes when there is enough work."""
    n_jobs = (os.cpu_count() or 1) if n_jobs is None else max(1, n_jobs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(sizes), desc=desc, unit="mol", leave=False)
    results = []
    if n_jobs > 1 and len(jobs) > 1 and sum(sizes) >= _PARALLEL_MIN:
        # fork where available: workers run only RDKit/numpy (no torch or OpenMP), and unlike spawn
        # it also works from notebooks and `python -` scripts
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(min(n_jobs, len(jobs)), initializer=_ignore_sigint) as pool:
            for size, res in zip(sizes, pool.imap(fn, jobs), strict=True):
                results.append(res)
                if bar is not None:
                    bar.update(size)
    else:
        for size, job in zip(sizes, jobs, strict=True):
            results.append(fn(job))
            if bar is not None:
                bar.update(size)
    if bar is not None:
        bar.close()
    return results


def molecule_features(
    smiles: Sequence[str],
    extra_for: Sequence[bool] | None = None,
    filter_catalogs: Sequence[str] = DEFAULT_FILTER_CATALOGS,
    n_jobs: int | None = None,
    progress: bool = False,
    desc: str = "molecules",
) -> SetFeatures:
    """Parse each molecule once; collect fingerprints, fragments, scaffolds, properties, filters.

    Args:
        smiles: Molecules (invalid ones are skipped).
        extra_for: Per input, whether to compute properties and filter flags too (QED and the
            filter catalogs are the slow part; a large reference set uses a subsample).
            None: for every molecule.
        filter_catalogs: RDKit FilterCatalog names for the filter flags.
        n_jobs: Worker processes (None: all CPU cores; 1: this process only).
        progress: Show a progress bar.
        desc: Progress bar label.

    Returns:
        The set's features.
    """
    smiles = list(smiles)
    extra = [True] * len(smiles) if extra_for is None else [bool(e) for e in extra_for]
    if len(extra) != len(smiles):
        raise ValueError("extra_for must have one flag per molecule")
    cats = tuple(filter_catalogs)
    starts = range(0, len(smiles), _CHUNK)
    jobs = [(smiles[i : i + _CHUNK], extra[i : i + _CHUNK], cats) for i in starts]
    sizes = [len(job[0]) for job in jobs]
    results = _map_chunks(_features_chunk, jobs, sizes, n_jobs, progress, desc)
    canonical: list[str] = []
    fps: list[np.ndarray] = []
    frags: Counter[str] = Counter()
    scafs: Counter[str] = Counter()
    props: list[tuple[float, float, float, float]] = []
    passes: list[bool] = []
    for c, f, fr, sc, pr, pa in results:
        canonical += c
        fps += f
        frags.update(fr)
        scafs.update(sc)
        props += pr
        passes += pa
    prop_arr = np.asarray(props, dtype=np.float64).reshape(len(props), len(PROPERTY_NAMES))
    return SetFeatures(
        n_input=len(smiles),
        canonical=canonical,
        fingerprints=np.asarray(fps, dtype=np.uint8).reshape(len(fps), MORGAN_BITS // 8),
        fragments=frags,
        scaffolds=scafs,
        properties={name: prop_arr[:, i] for i, name in enumerate(PROPERTY_NAMES)},
        filters=np.asarray(passes, dtype=bool),
    )


def _canonical_chunk(smiles: list[str]) -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for s in smiles:
        mol = to_mol(s)
        if mol is None:
            out.append(None)
            continue
        iso = Chem.MolToSmiles(mol)
        # Without stereo or isotope marks the non-isomeric SMILES is the same string: skip the
        # second (costly) MolToSmiles for them.
        marked = any(c in iso for c in "@/\\") or any(t[:1].isdigit() for t in iso.split("[")[1:])
        out.append((iso, Chem.MolToSmiles(mol, isomericSmiles=False) if marked else iso))
    return out


def canonical_forms(
    smiles: Sequence[str],
    n_jobs: int | None = None,
    progress: bool = False,
    desc: str = "canonical",
) -> list[tuple[str, str] | None]:
    """Isomeric and non-isomeric canonical SMILES of each input (None for invalid ones).

    The non-isomeric form is what GuacaMol compares for novelty; the isomeric one is MOSES'.
    """
    smiles = list(smiles)
    size = 2000
    jobs = [smiles[i : i + size] for i in range(0, len(smiles), size)]
    results = _map_chunks(_canonical_chunk, jobs, [len(j) for j in jobs], n_jobs, progress, desc)
    return [item for part in results for item in part]


def wasserstein(gen_values: np.ndarray, ref_values: np.ndarray) -> float:
    """Wasserstein-1 distance of two samples of a property (MOSES' property metrics)."""
    from scipy.stats import wasserstein_distance

    if len(gen_values) == 0 or len(ref_values) == 0:
        return math.nan
    return float(wasserstein_distance(gen_values, ref_values))
