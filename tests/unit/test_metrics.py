"""molgen.metrics: MOSES metrics on tiny named fixtures, checked against RDKit/fcd/guacamol."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import AllChem
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from molgen import metrics

REPO = Path(__file__).resolve().parents[2]
# fcd 1.2.2 calls np.row_stack and sqrtm(disp=...), both deprecated upstream; not our code.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:fcd.*")

# Named fixtures: three valid molecules (ethanol twice, written two ways; benzene) and the
# classic invalid inputs (empty string, unclosed ring, not SMILES at all).
ETHANOL, ETHANOL_REVERSED, BENZENE = "CCO", "OCC", "c1ccccc1"
EMPTY, UNCLOSED_RING, GARBAGE = "", "C1CC", "not_a_smiles"
GEN = [ETHANOL, ETHANOL, BENZENE, EMPTY, UNCLOSED_RING, GARBAGE, ETHANOL_REVERSED]
RHODANINE = "S=C1SC(=Cc2ccccc2)C(=O)N1"  # an ene_rhod PAINS match


def _moses(name: str, n: int) -> list[str]:
    with gzip.open(REPO / "data" / "moses" / name, "rt") as fh:
        next(fh)  # header
        return [next(fh).strip() for _ in range(n)]


@pytest.fixture(scope="module")
def ref() -> list[str]:
    return _moses("test.csv.gz", 30)


@pytest.fixture(scope="module")
def gen() -> list[str]:
    return _moses("test_scaffolds.csv.gz", 24)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tests share 2 cores (and pytest-xdist workers): OpenMP threads that wait on descheduled
    # siblings make ChemNet ~10x slower, so these tests run torch on one thread.
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _rdkit_fp(smiles: str):
    return AllChem.GetMorganFingerprintAsBitVect(Chem.MolFromSmiles(smiles), 2, nBits=1024)


# ---- parsing, validity, uniqueness, novelty ---------------------------------------------------
@pytest.mark.parametrize("bad", [EMPTY, UNCLOSED_RING, GARBAGE, None])
def test_invalid_inputs_are_not_molecules(bad):
    assert metrics.to_mol(bad) is None
    assert metrics.canonical_smiles(bad) is None


def test_valid_input_parses_and_canonicalizes():
    assert metrics.canonical_smiles(ETHANOL_REVERSED) == metrics.canonical_smiles(ETHANOL) == "CCO"
    assert metrics.to_mol(BENZENE).GetNumAtoms() == 6


def test_validity_counts_empty_string_as_invalid():
    assert metrics.validity(GEN) == pytest.approx(4 / 7)
    assert metrics.validity([EMPTY]) == 0.0
    with pytest.raises(ValueError):
        metrics.validity([])


def test_validity_agrees_with_guacamol_is_valid():
    from molgen.guacamol_adapter import apply_guacamol_shims

    apply_guacamol_shims()
    from guacamol.utils.chemistry import is_valid

    assert metrics.validity(GEN) == sum(map(is_valid, GEN)) / len(GEN)


def test_uniqueness_is_among_valid_canonical_smiles():
    # valid: CCO, CCO, benzene, OCC(=CCO) -> 2 distinct of 4
    assert metrics.uniqueness(GEN) == 0.5
    assert metrics.uniqueness(GEN, k=1) == 1.0
    assert math.isnan(metrics.uniqueness([EMPTY, GARBAGE]))


def test_novelty_canonicalizes_the_training_set():
    # generated distinct valid: {CCO, benzene}; training "OCC" is ethanol -> only benzene is novel
    assert metrics.novelty(GEN, [ETHANOL_REVERSED]) == 0.5
    # taken literally (as MOSES does with its canonical train file), "OCC" matches nothing
    assert metrics.novelty(GEN, [ETHANOL_REVERSED], train_is_canonical=True) == 1.0
    assert metrics.novelty(GEN, GEN) == 0.0
    assert math.isnan(metrics.novelty([GARBAGE], [ETHANOL]))


def test_valid_canonical_keeps_order_and_duplicates():
    assert metrics.valid_canonical(GEN) == ["CCO", "CCO", "c1ccccc1", "CCO"]


# ---- Tanimoto-based: SNN, IntDiv ------------------------------------------------------------
def test_fingerprints_match_rdkit_morgan_bitvect(ref):
    fps = metrics.morgan_fingerprints(ref[:5] + [GARBAGE])
    assert fps.shape == (5, 1024)
    for row, s in zip(fps, ref[:5], strict=True):
        assert np.array_equal(row, np.array(_rdkit_fp(s)))


def test_snn_matches_rdkit_bulk_tanimoto(gen, ref):
    ref_fps = [_rdkit_fp(s) for s in ref]
    expected = np.mean(
        [max(DataStructs.BulkTanimotoSimilarity(_rdkit_fp(g), ref_fps)) for g in gen]
    )
    assert metrics.snn(gen + [GARBAGE], ref) == pytest.approx(expected, abs=1e-7)  # float32


def test_snn_of_a_set_with_itself_is_one(ref):
    assert metrics.snn(ref, ref) == pytest.approx(1.0)


def test_packed_and_unpacked_tanimoto_agree(gen, ref):
    a, b = metrics.morgan_fingerprints(ref), metrics.morgan_fingerprints(gen)
    plain = metrics.average_agg_tanimoto(a, b, agg="max", batch_size=7)
    packed = metrics.average_agg_tanimoto(
        np.packbits(a, axis=1), np.packbits(b, axis=1), agg="max", packed=True
    )
    np.testing.assert_allclose(plain, packed, atol=1e-12)


def test_tanimoto_exact_in_float32_and_bfloat16(monkeypatch, gen, ref):
    import torch

    a, b = metrics.morgan_fingerprints(ref), metrics.morgan_fingerprints(gen)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        monkeypatch.setattr(metrics, "_fast_matmul_dtype", lambda d=dtype: d)
        results.append(metrics.average_agg_tanimoto(a, b, agg="mean", p=2))
    np.testing.assert_allclose(results[0], results[1], atol=1e-12)


def test_tanimoto_of_two_empty_fingerprints_is_one_as_in_moses():
    ref = np.zeros((3, 16), dtype=np.uint8)
    ref[0, :3] = 1
    gen = np.zeros((2, 16), dtype=np.uint8)
    gen[1, 1:4] = 1
    np.testing.assert_allclose(metrics.average_agg_tanimoto(ref, gen, agg="max"), [1.0, 0.5])
    np.testing.assert_allclose(metrics.average_agg_tanimoto(ref, gen, agg="mean"), [2 / 3, 1 / 6])


def _pairwise(smiles):
    fps = [_rdkit_fp(s) for s in smiles]
    return np.array([DataStructs.BulkTanimotoSimilarity(f, fps) for f in fps])


def test_internal_diversity_matches_moses_formulas(gen):
    t = _pairwise(gen)  # includes the diagonal, as MOSES does
    assert metrics.internal_diversity(gen) == pytest.approx(1 - t.mean(), abs=1e-9)
    assert metrics.internal_diversity(gen, p=2) == pytest.approx(
        1 - np.sqrt((t**2).mean()), abs=1e-9
    )
    per_row = 1 - np.mean(np.sqrt((t**2).mean(axis=1)))
    assert metrics.internal_diversity(gen, p=2, per_molecule_root=True) == pytest.approx(
        per_row, abs=1e-9
    )
    assert metrics.internal_diversity(
        gen, p=2, per_molecule_root=True
    ) > metrics.internal_diversity(gen, p=2)


def test_internal_diversity_of_copies_is_zero():
    assert metrics.internal_diversity([BENZENE] * 5) == pytest.approx(0.0)
    assert math.isnan(metrics.internal_diversity([GARBAGE]))


# ---- fragments and scaffolds -----------------------------------------------------------------
def test_brics_fragments_of_ethyl_benzoate():
    counts = metrics.fragment_counts(["CCOC(=O)c1ccccc1", BENZENE, GARBAGE])
    assert counts == Counter(
        {"[1*]C([6*])=O": 1, "[16*]c1ccccc1": 1, "[3*]O[3*]": 1, "[4*]CC": 1, "c1ccccc1": 1}
    )


def test_scaffolds_need_two_rings_by_default():
    mols = ["c1ccccc1CCc1ccccc1", BENZENE, ETHANOL, GARBAGE]
    assert metrics.scaffold_counts(mols) == Counter({"c1ccc(CCc2ccccc2)cc1": 1})
    assert metrics.scaffold_counts(mols, min_rings=1) == Counter(
        {"c1ccc(CCc2ccccc2)cc1": 1, "c1ccccc1": 1}
    )


def test_count_cosine_similarity_values():
    assert metrics.count_cosine_similarity(Counter(a=1, b=1), Counter(a=1)) == pytest.approx(
        1 / math.sqrt(2)
    )
    assert metrics.count_cosine_similarity(Counter(a=2), Counter(a=5)) == pytest.approx(1.0)
    assert metrics.count_cosine_similarity(Counter(a=1), Counter(b=1)) == 0.0
    assert math.isnan(metrics.count_cosine_similarity(Counter(), Counter(a=1)))


def test_frag_and_scaf_of_reference_itself_are_one(ref):
    assert metrics.fragment_similarity(ref, ref) == pytest.approx(1.0)
    assert metrics.scaffold_similarity(ref, ref) == pytest.approx(1.0)


# ---- filters and properties ------------------------------------------------------------------
def test_filters_structural_rules_and_catalogs():
    cases = {
        ETHANOL: True,
        BENZENE: True,
        "C[N+](C)(C)C": False,  # charged
        "C1CCCCCCC1": False,  # 8-membered ring
        "CI": False,  # iodine is outside the MOSES element set
        RHODANINE: False,  # PAINS
        EMPTY: False,
        GARBAGE: False,
    }
    assert metrics.passes_filters(list(cases)) == list(cases.values())
    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    assert FilterCatalog(params).HasMatch(Chem.MolFromSmiles(RHODANINE))
    # without catalogs only the structural rules apply; without an element set iodine passes
    assert metrics.passes_filters([RHODANINE], catalogs=()) == [True]
    assert metrics.passes_filters(["CI"], catalogs=()) == [False]
    assert metrics.passes_filters(["CI"], catalogs=(), allowed_atoms=None) == [True]
    with pytest.raises(ValueError, match="unknown RDKit filter catalog"):
        metrics.passes_filters([ETHANOL], catalogs=("NOT_A_CATALOG",))


def test_fraction_passes_filters_is_over_valid_molecules():
    assert metrics.fraction_passes_filters([ETHANOL, RHODANINE, GARBAGE]) == 0.5


def test_properties_of_valid_molecules():
    props = metrics.properties([ETHANOL, GARBAGE, BENZENE])
    assert set(props) == set(metrics.PROPERTY_NAMES)
    assert props["MW"] == pytest.approx([46.069, 78.114], abs=1e-3)
    assert props["TPSA"] == pytest.approx([20.23, 0.0], abs=1e-2)
    assert np.all((props["QED"] > 0) & (props["QED"] < 1))


# ---- FCD ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def randomized(gen) -> list[str]:
    import random

    random.seed(0)
    return [Chem.MolToSmiles(Chem.MolFromSmiles(s), doRandom=True) for s in gen]


def test_fcd_canonicalizes_both_sets_and_matches_fcd_package(gen, ref, randomized):
    import fcd

    canon = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in gen]
    ref_canon = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in ref]
    ours = metrics.fcd_distance(randomized + [GARBAGE], ref)
    with metrics.one_blas_thread():  # speed only (see metrics.one_blas_thread)
        expected = fcd.get_fcd(canon, ref_canon)
    assert ours == pytest.approx(expected, rel=1e-5)
    # fcd feeds strings as given: raw (randomized) SMILES give other activations, hence another FCD
    model = fcd.load_ref_model()
    raw_mu = fcd.get_predictions(model, randomized).mean(0)
    assert np.abs(raw_mu - metrics.chemnet_statistics(randomized).mu).max() > 1e-3


def test_chemnet_statistics_needs_two_valid_molecules():
    with pytest.raises(ValueError, match="at least 2"):
        metrics.chemnet_statistics([ETHANOL, GARBAGE])


# ---- per-set features ------------------------------------------------------------------------
def test_molecule_features_match_the_single_functions(gen):
    mols = gen + [GARBAGE, EMPTY]
    feats = metrics.molecule_features(mols, n_jobs=1)
    assert feats.n_input == len(mols) and feats.n_valid == len(gen)
    assert feats.canonical == metrics.valid_canonical(mols)
    np.testing.assert_array_equal(
        np.unpackbits(feats.fingerprints, axis=1), metrics.morgan_fingerprints(mols)
    )
    assert feats.fragments == metrics.fragment_counts(mols)
    assert feats.scaffolds == metrics.scaffold_counts(mols)
    assert feats.filters.tolist() == metrics.passes_filters(gen)
    np.testing.assert_allclose(feats.properties["QED"], metrics.properties(gen)["QED"])


def test_molecule_features_in_worker_processes_equal_serial(monkeypatch, gen):
    monkeypatch.setattr(metrics, "_PARALLEL_MIN", 10)
    monkeypatch.setattr(metrics, "_CHUNK", 8)
    extra = [i % 2 == 0 for i in range(len(gen))]
    serial = metrics.molecule_features(gen, extra_for=extra, n_jobs=1)
    parallel = metrics.molecule_features(gen, extra_for=extra, n_jobs=2)
    assert parallel.canonical == serial.canonical
    np.testing.assert_array_equal(parallel.fingerprints, serial.fingerprints)
    assert parallel.fragments == serial.fragments and parallel.scaffolds == serial.scaffolds
    assert len(parallel.filters) == sum(extra)
    np.testing.assert_allclose(parallel.properties["MW"], serial.properties["MW"])


def test_canonical_forms_match_guacamol_canonicalize():
    from molgen.guacamol_adapter import apply_guacamol_shims

    apply_guacamol_shims()
    from guacamol.utils.chemistry import canonicalize

    mols = ["C[C@H](N)C(=O)O", "F/C=C/F", "[2H]C", ETHANOL_REVERSED, GARBAGE]
    forms = metrics.canonical_forms(mols, n_jobs=1)
    assert forms[-1] is None
    for s, (iso, flat) in zip(mols[:-1], forms[:-1], strict=True):
        assert iso == canonicalize(s, include_stereocenters=True)
        assert flat == canonicalize(s, include_stereocenters=False)
    assert forms[0][0] != forms[0][1]  # the stereocentre is dropped in the flat form


def test_adaptive_torch_threads_restores_the_thread_count():
    import torch

    torch.set_num_threads(2)
    with metrics.adaptive_torch_threads(None) as n:
        assert n == 2
    with metrics.adaptive_torch_threads(None, default=1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    with metrics.adaptive_torch_threads(lambda: None) as n:
        assert n in (1, 2) and torch.get_num_threads() == n
    assert torch.get_num_threads() == 2


def test_wasserstein_distance():
    assert metrics.wasserstein(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)
    assert math.isnan(metrics.wasserstein(np.zeros(0), np.ones(3)))
