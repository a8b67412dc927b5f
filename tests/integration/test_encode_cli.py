"""End to end: `molgen encode` and `molgen score` on a tiny trained model; stereo on input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TEST_DATA, run_cli

pytestmark = pytest.mark.integration
AMPHETAMINE = "C[C@H](N)Cc1ccccc1"
ROWS = [
    ("CC(=O)Nc1ccc(O)cc1", "paracetamol"),
    (AMPHETAMINE, "amphetamine"),
    ("C1CC", "broken"),
    ("CCP", "phosphine"),
    ("F/C=C/c1ccccc1", "styrene"),
    ("CCOc1ccccc1", "phenetole"),
]
ENCODED = [0, 1, 4, 5]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli(
        "train", TEST_DATA / "tiny_train.csv", "--out", out, "--preset", "tiny",
        "--max-steps", "8",
    )  # fmt: skip
    assert r.code == 0, r.stderr[-2000:]
    return out / "model.pt"


@pytest.fixture
def molecules(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("".join(f"{s}\t{name}\n" for s, name in ROWS))
    return path


def test_encode_csv_keeps_names_lists_rejects_and_warns_once(tiny_model, molecules, tmp_path):
    out = tmp_path / "z.csv"
    r = run_cli("encode", tiny_model, molecules, "-o", out)
    assert r.code == 0, r.stderr
    df = pd.read_csv(out)
    assert list(df.columns[:4]) == ["line", "name", "smiles", "rho"]
    dim = torch.load(tiny_model, weights_only=True)["config"]["latent_dim"]
    assert list(df.columns[4:]) == [f"mu_{i}" for i in range(dim)]
    assert df["name"].tolist() == [ROWS[i][1] for i in ENCODED]
    assert df["line"].tolist() == [i + 1 for i in ENCODED]
    rejected = pd.read_csv(tmp_path / "z.rejected.csv")
    assert rejected[["line", "reason"]].values.tolist() == [
        [3, "unparseable"],
        [4, "unknown tokens"],
    ]
    assert "encoded 4 of 6 molecules" in r.stdout and "2 rejected" in r.stdout
    assert r.stderr.count("Warning: stereochemistry removed") == 1
    assert "from 2 input molecules" in r.stderr
    assert "never saw: P (1)" in r.stderr and "--from" in r.stderr


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_encode_npy_and_parquet_shapes(tiny_model, molecules, tmp_path, suffix):
    out = tmp_path / f"z{suffix}"
    r = run_cli("encode", tiny_model, molecules, "-o", out, "--batch-size", "2")
    assert r.code == 0, r.stderr
    if suffix == ".npy":
        mu = np.load(out)
        rows = pd.read_csv(tmp_path / "z.rows.csv")
        assert mu.shape[0] == len(rows) == 4 and rows["name"].tolist()[0] == "paracetamol"
        assert np.allclose(np.linalg.norm(mu, axis=1), 1, atol=1e-5)
    else:
        df = pd.read_parquet(out)
        assert len(df) == 4 and {"line", "name", "smiles", "rho", "mu_0"} <= set(df.columns)


def test_encode_with_the_bundled_model_by_default(molecules, tmp_path):
    out = tmp_path / "z.npy"
    r = run_cli("encode", molecules, "-o", out)
    assert r.code == 0, r.stderr
    assert np.load(out).shape == (4, 64)


def test_score_writes_likelihoods_and_rejects(tiny_model, molecules, tmp_path):
    out = tmp_path / "s.csv"
    r = run_cli("score", tiny_model, molecules, "-o", out, "--samples", "4", "--seed", "1")
    assert r.code == 0, r.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == [
        "line", "name", "smiles", "n_tokens", "log_likelihood", "log_likelihood_per_token",
        "elbo", "recon_nll", "kl",
    ]  # fmt: skip
    assert len(df) == 4 and (df["log_likelihood"] < 0).all() and (df["kl"] >= 0).all()
    assert len(pd.read_csv(tmp_path / "s.rejected.csv")) == 2
    assert "scored 4 of 6 molecules" in r.stdout
    again = run_cli(
        "score", tiny_model, molecules, "-o", tmp_path / "t.csv", "-k", "4", "--seed", "1"
    )
    assert again.code == 0 and (tmp_path / "t.csv").read_text() == out.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "{m}", "{f}", "-o", "{d}/s.csv", "--samples", "0"], "--samples"),
        (["encode", "{m}", "{f}", "-o", "{d}/z.txt"], "unsupported file type"),
        (["encode", "{m}", "{d}/missing.csv", "-o", "{d}/z.csv"], "does not exist"),
        (["encode", "{m}", "{f}", "{f}", "-o", "{d}/z.csv"], "[MODEL] FILE"),
    ],
)
def test_bad_arguments_are_one_error(tiny_model, molecules, tmp_path, args, message):
    r = run_cli(*[a.format(m=tiny_model, f=molecules, d=tmp_path) for a in args])
    assert r.code != 0 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "z.csv").exists() and not (tmp_path / "z.rejected.csv").exists()


def test_nothing_encodable_is_an_error_with_the_rejected_list(tiny_model, tmp_path):
    path = tmp_path / "bad.smi"
    path.write_text("CCP\nC1CC\n")
    r = run_cli("encode", tiny_model, path, "-o", tmp_path / "z.csv")
    assert r.code == 1 and "Error: none of the 2 rows" in r.stderr
    assert len(pd.read_csv(tmp_path / "z.rejected.csv")) == 2


def test_sample_around_a_stereo_molecule_strips_it_with_one_warning(tmp_path):
    out = tmp_path / "a.csv"
    r = run_cli("sample", "-n", "3", "--around", AMPHETAMINE, "-o", out)
    assert r.code == 0, r.stderr
    assert r.stderr.count("Warning: stereochemistry removed from 1 input molecule:") == 1
    assert len(pd.read_csv(out)) == 3


def test_interpolate_two_stereo_molecules_warns_once():
    r = run_cli("interpolate", AMPHETAMINE, "F/C=C/c1ccccc1", "--steps", "3")
    assert r.code == 0, r.stderr
    assert r.stderr.count("Warning:") == 1 and "from 2 input molecules" in r.stderr


def test_unknown_atoms_are_one_error_naming_them():
    r = run_cli("sample", "-n", "2", "--around", "ICCP")
    assert r.code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("Error: 'ICCP' has tokens this model never saw: ")
    assert {"P", "I"} == set(r.stderr.split("never saw: ", 1)[1].split(".", 1)[0].split())
    assert "molgen train DATA --from" in r.stderr
