"""molgen.evaluate (reference statistics, metrics), its GuacaMol adapter and its reports."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from molgen import metrics
from molgen.decoding import DecodeCounts, DecodeResult
from molgen.errors import MolgenError
from molgen.evaluate import (
    EvaluateConfig,
    TrainingSet,
    evaluate,
    load_training_set,
    model_metrics,
    reference_statistics,
    resolve_training_file,
    sample_metrics,
)
from molgen.evaluate_report import format_table, write_json, write_markdown
from molgen.guacamol_adapter import CHEMNET_FILE, ListGenerator, MolgenGenerator, guacamol_scores

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:fcd.*")
INVALID = ["", "C1CC", "not_a_smiles"]


def _moses(name: str, n: int) -> list[str]:
    with gzip.open(REPO / "data" / "moses" / name, "rt") as fh:
        next(fh)
        return [next(fh).strip() for _ in range(n)]


@pytest.fixture(autouse=True)
def one_torch_thread():
    # 2 shared cores: torch's OpenMP threads would wait on each other (see test_metrics.py).
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def ref() -> list[str]:
    return _moses("test.csv.gz", 40)


@pytest.fixture(scope="module")
def gen() -> list[str]:
    return _moses("test_scaffolds.csv.gz", 27) + INVALID


def _config(tmp_path: Path, **kw) -> EvaluateConfig:
    return EvaluateConfig(cache_dir=str(tmp_path / "cache"), progress=False, n_jobs=1, **kw)


def _write(path: Path, smiles: list[str]) -> Path:
    path.write_text("SMILES\n" + "\n".join(f'"{s}"' for s in smiles) + "\n")
    return path


class FakeModel:
    """Test double with the molgen.sampling model API (no network): samples come from a pool.

    encode() rejects molecules with bromine (like an unknown token), reconstruct() returns the
    input for even positions and methane otherwise, interpolate() returns a, a, invalid, b.
    sample_decoded() decodes the same strings as sample() first; an invalid one becomes ethanol
    on its first retry.
    """

    def __init__(self, pool: list[str], summary: dict | None = None) -> None:
        self.pool = pool
        self.summary = summary or {}
        self.sample_calls: list[tuple[int, float, int]] = []
        self.beams: list[int] = []

    def sample(self, n, temperature=1.0, seed=0, batch_size=512, progress=False):
        self.sample_calls.append((n, temperature, seed))
        rng = np.random.default_rng(seed)
        return [self.pool[i] for i in rng.integers(len(self.pool), size=n)]

    def sample_decoded(
        self, n, temperature=1.0, seed=0, batch_size=512, max_retries=3, progress=False
    ):
        first = self.sample(n, temperature, seed, batch_size, progress)
        canon = [metrics.canonical_smiles(s) for s in first]
        fixed = [c if c is not None else ("CCO" if max_retries else None) for c in canon]
        tries = [1 if c is not None else 1 + min(max_retries, 1) for c in canon]
        counts = DecodeCounts(
            codes=n,
            decodings=sum(tries),
            first_pass_valid=sum(c is not None for c in canon),
            given_up=sum(c is None for c in fixed),
        )
        return DecodeResult(fixed, first, tries, [c is not None for c in canon], counts)

    def encode(self, smiles):
        bad = [s for s in smiles if "Br" in s]
        if bad:
            raise MolgenError(f"{bad[0]!r} has tokens this model never saw: Br.")
        return np.zeros((len(smiles), 4))

    def reconstruct(self, smiles, beam=1):
        self.beams.append(beam)
        return [s if i % 2 == 0 else "C" for i, s in enumerate(smiles)]

    def token_accuracy(self, smiles):
        return 0.9

    def interpolate(self, smiles_a, smiles_b, steps=10, beam=1):
        self.beams.append(beam)
        path = [smiles_a, smiles_a, "", smiles_b]
        return [i / (len(path) - 1) for i in range(len(path))], path


# ---- generators ----------------------------------------------------------------------------
def test_list_generator_hands_out_in_order_then_runs_dry_and_resets():
    g = ListGenerator(["A", "B", "C"])
    assert g.generate(2) == ["A", "B"]
    assert g.generate(2) == ["C"]
    assert g.generate(2) == []
    g.reset()
    assert g.generate(1) == ["A"]


def test_list_generator_tops_up_from_a_fallback():
    g = ListGenerator(["A"], fallback=ListGenerator(["X", "Y", "Z"]))
    assert g.generate(3) == ["A", "X", "Y"]


def test_molgen_generator_draws_fresh_reproducible_samples(ref):
    model = FakeModel(ref)
    g = MolgenGenerator(model, seed=3, temperature=0.7)
    first, second = g.generate(20), g.generate(20)
    assert first != second  # a top-up call must not repeat the first call's molecules
    again = MolgenGenerator(FakeModel(ref), seed=3, temperature=0.7)
    assert again.generate(20) == first and again.generate(20) == second
    assert {t for _, t, _ in model.sample_calls} == {0.7}
    assert MolgenGenerator(FakeModel(ref), seed=4).generate(20) != first


# ---- GuacaMol --------------------------------------------------------------------------------
def test_guacamol_scores_of_the_reference_itself(ref):
    """A trivial generator returning the reference: valid, unique, not novel, FCD/KL ~ perfect."""
    flat = {f for _, f in filter(None, metrics.canonical_forms(ref, n_jobs=1))}
    out = guacamol_scores(ListGenerator(ref), ref, flat, number_samples=len(ref))
    scores = {name: r["score"] for name, r in out["results"].items()}
    assert scores["Validity"] == 1.0
    assert scores["Uniqueness"] == 1.0
    assert scores["Novelty"] == 0.0
    assert scores["Frechet ChemNet Distance"] == pytest.approx(1.0, abs=1e-3)
    assert scores["KL divergence"] == pytest.approx(1.0, abs=1e-6)
    assert out["number_samples"] == len(ref) and out["standard"] is False


def test_guacamol_scores_agree_with_guacamol_and_fcd_called_directly(gen, ref):
    import fcd
    from guacamol.distribution_learning_benchmark import KLDivBenchmark, NoveltyBenchmark

    n = len(gen)
    train = ref[:20] + gen[:5]  # some samples are "in the training set"
    flat = {f for _, f in filter(None, metrics.canonical_forms(train, n_jobs=1))}
    out = guacamol_scores(ListGenerator(gen), ref, flat, number_samples=n)["results"]
    assert out["Validity"]["score"] == pytest.approx(27 / 30)
    novelty = NoveltyBenchmark(number_samples=n, training_set=train).assess_model(
        ListGenerator(gen)
    )
    # 27 valid, 5 in the training set; guacamol's canonicalize('') is '' (not None), so it
    # counts the empty string as one more unique, novel "molecule": (27 - 5 + 1) / 30
    assert out["Novelty"]["score"] == novelty.score == pytest.approx(23 / 30)
    kl = KLDivBenchmark(number_samples=n, training_set=ref).assess_model(ListGenerator(gen))
    assert out["KL divergence"]["score"] == pytest.approx(kl.score)
    # FCD score = exp(-0.2 FCD) against guacamol's random reference subset (seed 42)
    from guacamol.utils.data import get_random_subset

    subset = get_random_subset(ref, n, seed=42)
    with metrics.one_blas_thread():  # speed only (see metrics.one_blas_thread)
        fcd_value = fcd.get_fcd(metrics.valid_canonical(gen), metrics.valid_canonical(subset))
    assert out["Frechet ChemNet Distance"]["metadata"]["FCD"] == pytest.approx(fcd_value, rel=1e-4)
    assert out["Frechet ChemNet Distance"]["score"] == pytest.approx(np.exp(-0.2 * fcd_value))
    assert CHEMNET_FILE == "ChemNet_v0.13_pretrained.pt"


def test_guacamols_own_suite_runs_on_molgen_generator(tmp_path, ref):
    """guacamol's assess_distribution_learning code path works with the shims (fewer samples)."""
    from guacamol.assess_distribution_learning import _assess_distribution_learning

    train = tmp_path / "train.smi"
    train.write_text("\n".join(ref) + "\n")
    out = tmp_path / "guacamol.json"
    model = MolgenGenerator(FakeModel(ref[:15] + ["C1CC", "not_a_smiles"]), seed=1)
    with metrics.one_blas_thread():  # speed only (see metrics.one_blas_thread)
        _assess_distribution_learning(model, str(train), str(out), "v1", number_samples=12)
    results = {r["benchmark_name"]: r["score"] for r in json.loads(out.read_text())["results"]}
    assert set(results) == {
        "Validity", "Uniqueness", "Novelty", "KL divergence", "Frechet ChemNet Distance"
    }  # fmt: skip
    assert 0 < results["Validity"] < 1 and results["Novelty"] == 0.0  # samples come from ref
    assert 0 < results["Frechet ChemNet Distance"] <= 1


def test_guacamol_needs_enough_reference_molecules(ref):
    with pytest.raises(MolgenError, match="reference molecules"):
        guacamol_scores(ListGenerator(ref), ref[:5], None, number_samples=10)


# ---- reference statistics and training sets ---------------------------------------------------
@pytest.fixture(scope="module")
def ref_stats(ref, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = EvaluateConfig(cache_dir=str(cache), progress=False, n_jobs=1)
    return reference_statistics(ref, "f" * 64, config), config


def test_reference_statistics_are_cached_and_reloaded_equal(ref, ref_stats):
    first, config = ref_stats
    assert not first.from_cache
    again = reference_statistics(ref, "f" * 64, config)
    assert again.from_cache
    assert again.fragments == first.fragments and again.scaffolds == first.scaffolds
    np.testing.assert_array_equal(again.fingerprints, first.fingerprints)
    np.testing.assert_array_equal(again.chemnet.sigma, first.chemnet.sigma)
    np.testing.assert_array_equal(again.properties["QED"], first.properties["QED"])
    assert (again.n_input, again.n_valid) == (first.n_input, first.n_valid) == (40, 40)


def test_reference_cache_key_includes_settings_and_survives_damage(ref, tmp_path):
    config = _config(tmp_path, ref_property_sample=10)
    stats = reference_statistics(ref, "a" * 64, config)
    assert len(stats.filters) == len(stats.properties["MW"]) == 10
    other = reference_statistics(ref, "a" * 64, _config(tmp_path, ref_property_sample=20))
    assert not other.from_cache and len(other.filters) == 20
    files = sorted((tmp_path / "cache").glob("reference-*.npz"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"not a cache file")
    assert not reference_statistics(ref, "a" * 64, config).from_cache


def test_training_set_is_canonicalized_and_cached(tmp_path):
    path = _write(tmp_path / "train.csv", ["OCC", "C[C@H](N)C(=O)O", "not_a_smiles"])
    config = _config(tmp_path)
    train = load_training_set(path, config, "test")
    assert train.isomeric == {"CCO", "C[C@H](N)C(=O)O"}
    assert train.flat == {"CCO", "CC(N)C(=O)O"}
    assert train.n_input == 3 and not train.from_cache
    again = load_training_set(path, config, "test")
    assert again.from_cache and again.isomeric == train.isomeric and again.flat == train.flat


def test_resolve_training_file(tmp_path):
    from molgen.evaluate import MOSES_TRAIN
    from molgen.readers import file_fingerprint

    explicit = tmp_path / "t.csv"
    assert resolve_training_file(explicit, {"data_source": "x"}) == (explicit, "--train")
    assert resolve_training_file(None, None)[0] is None
    path, reason = resolve_training_file(None, {"data_source": "/somewhere/moses_200k.csv"})
    assert path == MOSES_TRAIN and "MOSES" in reason
    own = _write(tmp_path / "own.csv", ["CCO"])
    summary = {"data_source": str(own), "data_fingerprint": file_fingerprint(own)}
    assert resolve_training_file(None, summary)[0] == own
    own.write_text("SMILES\nCCN\n")  # changed since training
    path, reason = resolve_training_file(None, summary)
    assert path is None and "changed" in reason
    path, reason = resolve_training_file(None, {"data_source": str(tmp_path / "gone.csv")})
    assert path is None and "not found" in reason


# ---- metrics of a sample set -------------------------------------------------------------------
def test_sample_metrics_of_the_reference_itself(ref, ref_stats):
    stats, _ = ref_stats
    train = TrainingSet(Path("x"), "0", len(ref), set(metrics.valid_canonical(ref)), set(), "test")
    out = sample_metrics(metrics.molecule_features(ref, n_jobs=1), stats, train)
    assert out["validity"] == 1.0 and out["uniqueness"] == 1.0 and out["novelty"] == 0.0
    assert abs(out["fcd"]) < 1e-3
    assert out["snn"] == pytest.approx(1.0)
    assert out["frag"] == pytest.approx(1.0) and out["scaf"] == pytest.approx(1.0)
    assert out["intdiv1"] == pytest.approx(metrics.internal_diversity(ref))
    assert out["intdiv2"] == pytest.approx(metrics.internal_diversity(ref, p=2))
    assert out["filters"] == out["filters_reference"] == metrics.fraction_passes_filters(ref)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in out["wasserstein"].values())


def test_sample_metrics_without_valid_molecules_are_nan(ref_stats):
    out = sample_metrics(metrics.molecule_features(INVALID, n_jobs=1), ref_stats[0], None)
    assert out["validity"] == 0.0 and out["novelty"] is None
    assert all(math.isnan(out[k]) for k in ("uniqueness", "fcd", "snn", "intdiv1", "filters"))
    assert math.isnan(out["frag"]) and math.isnan(out["scaf"])


# ---- model metrics -----------------------------------------------------------------------------
def test_model_metrics_with_a_fake_model(ref, tmp_path):
    pool = ref[:10] + ["BrCCBr"]  # one molecule the fake model cannot encode
    model = FakeModel(pool)
    config = _config(tmp_path, n_recon=11, n_interp=6, temperature=0.5, n_prior=30)
    out = model_metrics(model, pool, config, samples_validity=0.1)
    assert out["n_recon"] == 10 and out["n_recon_skipped"] == 1
    assert out["reconstruction_exact"] == 0.5  # every other reconstruction is methane
    assert out["reconstruction_valid"] == 1.0
    assert out["token_accuracy"] == 0.9
    assert out["interpolation_valid"] == 0.75 and out["interpolation_distinct"] == 0.5
    assert out["n_interp"] == 6
    # temperature 0.5 was evaluated, so validity at T=1 needs its own prior samples
    assert (30, 1.0, config.seed) in model.sample_calls and out["prior_validity_t1"] == 1.0
    same_t = model_metrics(model, pool, _config(tmp_path, n_interp=0), samples_validity=0.25)
    assert same_t["prior_validity_t1"] == 0.25 and math.isnan(same_t["interpolation_valid"])


# ---- whole evaluation and reports ----------------------------------------------------------
def test_evaluate_a_samples_file_writes_json_and_markdown(tmp_path, gen, ref):
    ref_file = _write(tmp_path / "ref.csv", ref)
    samples = _write(tmp_path / "samples.csv", gen + ["CCO"])
    train = _write(tmp_path / "train.csv", gen[:3])
    config = _config(tmp_path, n=len(gen), guacamol=False)
    result = evaluate(ref_file, samples_path=samples, train_path=train, config=config)
    rep = result.report
    assert rep["inputs"]["samples"]["n_read"] == len(gen) + 1
    assert rep["inputs"]["samples"]["n"] == len(gen)  # -n takes the first molecules
    assert rep["metrics"]["validity"] == pytest.approx(27 / 30)
    assert rep["metrics"]["novelty"] == pytest.approx(24 / 27)
    assert rep["inputs"]["train"]["reason"] == "--train"
    assert rep["inputs"]["reference"]["sha256"] and rep["versions"]["fcd"] == "1.2.2"
    assert rep["guacamol"] is None and rep["model"] is None
    data = json.loads(write_json(rep, tmp_path / "out" / "r.json").read_text())
    assert data["settings"]["n"] == len(gen)
    written = write_markdown(result, tmp_path / "out" / "r.md")
    assert [p.name for p in written] == ["r.md", "r_molecules.png", "r_properties.png"]
    assert all(p.stat().st_size > 1000 for p in written[1:])
    text = written[0].read_text()
    assert "| Validity | 0.9000 |" in text and "r_properties.png" in text
    assert "Validity" in format_table(rep)
    assert rep["sampler"] is None and "Sampler" not in text  # a file has no sampler


def test_evaluate_a_model_with_guacamol(tmp_path, ref):
    ref_file = _write(tmp_path / "ref.csv", ref)
    model = FakeModel(ref[:20] + INVALID)
    config = _config(tmp_path, n=30, n_recon=8, n_interp=3)
    result = evaluate(ref_file, model=model, config=config)
    rep = result.report
    assert rep["inputs"]["samples"] == {"source": "model", "n": 30}
    assert rep["metrics"]["n"] == 30 and 0 < rep["metrics"]["validity"] < 1
    assert rep["model"]["prior_validity_t1"] == rep["metrics"]["validity"]
    assert rep["guacamol"]["number_samples"] == 30
    guaca = rep["guacamol"]["results"]
    # the model's own samples are handed to GuacaMol first (same validity)...
    assert guaca["Validity"]["score"] == pytest.approx(rep["metrics"]["validity"])
    # ...and invalid ones are replaced by fresh samples where GuacaMol asks for valid molecules
    assert guaca["Frechet ChemNet Distance"]["metadata"]["number_generated_molecules"] == 30
    assert "Novelty" not in guaca  # no training set known for this model
    json.dumps(rep, allow_nan=False)
    # honest validity: single pass in "metrics", the sampler's figures (default 3 retries) beside
    invalid = round(30 * (1 - rep["metrics"]["validity"]))
    sampler = rep["sampler"]
    assert sampler["max_retries"] == 3 and sampler["codes"] == 30
    assert sampler["single_pass_validity"] == pytest.approx(rep["metrics"]["validity"])
    assert sampler["sampler_validity"] == 1.0 and sampler["given_up"] == 0
    assert sampler["decodings_per_molecule"] == pytest.approx((30 + invalid) / 30)
    assert "single-pass" in rep["guacamol"]["generator"]
    table = format_table(rep)
    assert "Validity (single pass)" in table and "Sampler validity (<= 3 retries)" in table
    assert "GuacaMol ran on the single-pass decoder" in table
    text = write_markdown(result, tmp_path / "m.md")[0].read_text()
    assert "| Sampler validity (<= 3 retries) | 1.0000 |" in text
    assert "GuacaMol ran on the single-pass decoder" in text


def test_evaluate_guacamol_on_the_sampler_with_retries_and_beam_decoding(tmp_path, ref):
    ref_file = _write(tmp_path / "ref.csv", ref)
    model = FakeModel(ref[:20] + INVALID)
    config = _config(tmp_path, n=30, n_recon=8, n_interp=2, max_retries=2, beam=3)
    rep = evaluate(ref_file, model=model, config=config).report
    assert 0 < rep["metrics"]["validity"] < 1  # still the single pass
    assert rep["sampler"]["max_retries"] == 2 and rep["sampler"]["sampler_validity"] == 1.0
    guaca = rep["guacamol"]
    assert "up to 2 retries" in guaca["generator"]
    assert guaca["results"]["Validity"]["score"] == 1.0  # the sampler's molecules
    assert set(model.beams) == {3} and rep["model"]["decoding"] == "beam search, 3 beams"
    table = format_table(rep)
    assert "Reconstruction (exact) [beam search, 3 beams]" in table
    assert "GuacaMol ran on the sampler with up to 2 retries" in table


def test_evaluate_needs_exactly_one_source_and_existing_files(tmp_path, ref):
    ref_file = _write(tmp_path / "ref.csv", ref)
    config = _config(tmp_path)
    with pytest.raises(MolgenError, match="exactly one"):
        evaluate(ref_file, config=config)
    with pytest.raises(MolgenError, match="exactly one"):
        evaluate(ref_file, model=FakeModel(ref), samples_path=ref_file, config=config)
    with pytest.raises(MolgenError, match="does not exist"):
        evaluate(tmp_path / "missing.csv", samples_path=ref_file, config=config)
    with pytest.raises(MolgenError, match="does not exist"):
        evaluate(ref_file, samples_path=tmp_path / "missing.csv", config=config)
    with pytest.raises(MolgenError, match="-n"):
        evaluate(ref_file, samples_path=ref_file, config=_config(tmp_path, n=0))
