"""molgen.score: importance-sampled log-likelihood, ELBO and reconstruction of molecules."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from molgen.encode import rejected_path
from molgen.inputs import InputChecker, pad_ids
from molgen.sampling import load_model
from molgen.score import (
    SCORE_COLUMNS,
    ScoreOptions,
    importance_terms,
    score_file,
    score_smiles,
    scores_from_terms,
    sequence_log_prob,
)
from tests.conftest import random_model_file

SMILES = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1"]


@pytest.fixture(scope="module", params=["spcauchy", "gaussian", "vmf"])
def model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.pt"
    return load_model(random_model_file(path, latent=request.param))


def _batch(model, smiles=SMILES):
    rows, _ = InputChecker.for_model(model).to_ids(smiles)
    return pad_ids(rows, model.vocab.pad_id)


def test_one_sample_estimate_is_the_single_sample_elbo(model):
    ids, lengths = _batch(model)
    torch.manual_seed(3)
    terms = importance_terms(model.vae, ids, lengths, samples=1)
    scores = scores_from_terms(terms)
    single = terms.log_px[0] + terms.log_pz[0] - terms.log_qz[0]
    torch.testing.assert_close(scores["log_likelihood"], single)
    torch.testing.assert_close(scores["recon_nll"], -terms.log_px[0])


def test_estimate_is_at_least_the_mean_log_weight_of_its_samples(model):
    # log-mean-exp >= mean (Jensen) for the very same samples: holds for every molecule
    ids, lengths = _batch(model)
    torch.manual_seed(0)
    terms = importance_terms(model.vae, ids, lengths, samples=16, max_sequences=10)
    assert terms.log_px.shape == (16, len(SMILES)) and terms.kl.shape == (len(SMILES),)
    ll = scores_from_terms(terms)["log_likelihood"]
    assert (ll >= terms.log_weights.mean(0) - 1e-9).all()
    assert torch.isfinite(ll).all() and (terms.log_px < 0).all()


def test_sampled_kl_agrees_with_the_exact_kl(model):
    # E_q[log q - log p] = KL: the densities and the KL used by the scores must agree
    ids, lengths = _batch(model, SMILES[:2])
    torch.manual_seed(1)
    terms = importance_terms(model.vae, ids, lengths, samples=4000)
    gap = terms.log_qz - terms.log_pz
    se = gap.std(0) / math.sqrt(gap.shape[0])
    assert ((gap.mean(0) - terms.kl).abs() < 5 * se + 1e-3).all()


def test_same_seed_same_scores_other_seed_other_scores(model):
    a = score_smiles(model, SMILES, samples=8, seed=4)
    b = score_smiles(model, SMILES, samples=8, seed=4)
    c = score_smiles(model, SMILES, samples=8, seed=5)
    for key in ("log_likelihood", "elbo", "recon_nll", "kl"):
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["log_likelihood"], c["log_likelihood"])
    torch.testing.assert_close(a["kl"], c["kl"])  # exact, no sampling
    torch.testing.assert_close(a["elbo"], -(a["recon_nll"] + a["kl"]))


def test_padding_does_not_change_log_p_x_given_z(model):
    ids, lengths = _batch(model)
    z = model.prior_z(len(SMILES))
    together = sequence_log_prob(model.vae, z, ids)
    for i, s in enumerate(SMILES):
        alone_ids, _ = _batch(model, [s])
        alone = sequence_log_prob(model.vae, z[i : i + 1], alone_ids)
        torch.testing.assert_close(together[i : i + 1], alone)


def test_score_file_columns_ids_rejects_and_reproducibility(model, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "id,smiles\n" + "".join(f"m{i},{s}\n" for i, s in enumerate(SMILES)) + "x,CCP\n"
    )
    options = ScoreOptions(samples=5, seed=2, max_sequences=12, chunk=3)
    stats = score_file(model, path, tmp_path / "a.csv", options)
    assert (stats.done, stats.n_rejected) == (4, 1)
    df = pd.read_csv(tmp_path / "a.csv")
    assert list(df.columns) == ["line", "id", "smiles", "n_tokens", *SCORE_COLUMNS]
    assert df["id"].tolist() == ["m0", "m1", "m2", "m3"] and df["line"].tolist() == [2, 3, 4, 5]
    tokens = [len(model.tokenizer.tokenize(s)) + 1 for s in df["smiles"]]  # + eos
    assert df["n_tokens"].tolist() == tokens
    assert (
        df["log_likelihood_per_token"] * df["n_tokens"] - df["log_likelihood"]
    ).abs().max() < 1e-6
    assert ((df["elbo"] + df["recon_nll"] + df["kl"]).abs() < 1e-6).all()
    rejected = pd.read_csv(rejected_path(tmp_path / "a.csv"))
    assert rejected.to_dict("records") == [
        {"line": 6, "smiles": "CCP", "reason": "unknown tokens", "detail": "P"}
    ]
    score_file(model, path, tmp_path / "b.csv", options)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    score_file(model, path, tmp_path / "c.parquet", options)
    pq = pd.read_parquet(tmp_path / "c.parquet")
    assert (pq["log_likelihood"] - df["log_likelihood"]).abs().max() < 1e-9
