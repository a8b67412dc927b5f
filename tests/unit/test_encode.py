"""molgen.encode: latent vectors of a file, in file order, with ids, rejected rows and 3 formats."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from molgen.encode import (
    EncodeOptions,
    TableWriter,
    encode_file,
    index_path,
    output_names,
    rejected_path,
)
from molgen.errors import MolgenError
from molgen.sampling import load_model
from tests.conftest import random_model_file

MOLECULES = [
    ("CC(=O)Oc1ccccc1C(=O)O", "aspirin"),
    ("C[C@H](N)Cc1ccccc1", "amphetamine"),
    ("CCP", "phosphine"),
    ("not_a_smiles", "junk"),
    ("CC(C)Cc1ccc(C(C)C(=O)O)cc1", "ibuprofen"),
    ("C" * 70, "too_long"),
    ("CCO", "ethanol"),
]
GOOD = [0, 1, 4, 6]  # rows the model can encode


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(random_model_file(tmp_path_factory.mktemp("m") / "m.pt"))


@pytest.fixture
def smi(tmp_path):
    path = tmp_path / "in.smi"
    path.write_text("".join(f"{s} {name}\n" for s, name in MOLECULES))
    return path


def _expected_mu(model):
    return model.encode([MOLECULES[i][0] for i in GOOD]).numpy()


def test_csv_has_line_id_smiles_concentration_and_mu_in_file_order(model, smi, tmp_path):
    out = tmp_path / "out.csv"
    stats = encode_file(model, smi, out, EncodeOptions(batch_size=2, chunk=3))
    df = pd.read_csv(out)
    mu_cols = [f"mu_{i}" for i in range(model.latent_dim)]
    assert list(df.columns) == ["line", "name", "smiles", "rho", *mu_cols]
    assert df["line"].tolist() == [i + 1 for i in GOOD]
    assert df["name"].tolist() == [MOLECULES[i][1] for i in GOOD]
    assert df["smiles"][1] == "CC(N)Cc1ccccc1"  # stereo removed: the model has no stereo token
    np.testing.assert_allclose(df[mu_cols].to_numpy(), _expected_mu(model), atol=1e-6)
    assert np.allclose(np.linalg.norm(df[mu_cols].to_numpy(), axis=1), 1, atol=1e-5)
    assert ((df["rho"] > 0) & (df["rho"] < 1)).all()
    assert (stats.read, stats.done, stats.n_rejected, stats.stereo_removed) == (7, 4, 3, 1)
    assert stats.unknown_tokens == {"P": 1}


def test_rejected_rows_have_line_text_reason_and_detail(model, smi, tmp_path):
    out = tmp_path / "out.csv"
    encode_file(model, smi, out)
    rejected = pd.read_csv(rejected_path(out), keep_default_na=False)
    assert list(rejected.columns) == ["line", "smiles", "reason", "detail"]
    assert rejected["line"].tolist() == [3, 4, 6]
    assert rejected["smiles"].tolist() == ["CCP", "not_a_smiles", "C" * 70]
    assert rejected["reason"].tolist() == ["unknown tokens", "unparseable", "too long"]
    assert rejected["detail"].tolist() == ["P", "", "70 tokens > 60"]


def test_npy_is_the_mu_matrix_with_a_row_table_beside_it(model, smi, tmp_path):
    out = tmp_path / "out.npy"
    encode_file(model, smi, out, EncodeOptions(chunk=2))
    mu = np.load(out)
    assert mu.shape == (4, model.latent_dim) and mu.dtype == np.float32
    np.testing.assert_allclose(mu, _expected_mu(model), atol=1e-6)
    rows = pd.read_csv(index_path(out))
    assert list(rows.columns) == ["line", "name", "smiles", "rho"]
    assert rows["name"].tolist() == [MOLECULES[i][1] for i in GOOD]
    assert rejected_path(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_parquet_matches_csv(model, smi, tmp_path):
    encode_file(model, smi, tmp_path / "out.csv")
    encode_file(model, smi, tmp_path / "out.parquet", EncodeOptions(chunk=3))
    csv = pd.read_csv(tmp_path / "out.csv")
    pq = pd.read_parquet(tmp_path / "out.parquet")
    assert list(pq.columns) == list(csv.columns) and len(pq) == 4
    assert pq["mu_0"].dtype == np.float32 and pq["line"].dtype == np.int64
    numbers = ["line", "rho", *[f"mu_{i}" for i in range(model.latent_dim)]]
    np.testing.assert_allclose(pq[numbers], csv[numbers], atol=1e-6)
    assert pq["name"].tolist() == csv["name"].tolist()


def test_csv_input_keeps_named_columns_and_renames_clashes(model, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('SMILES,line,label\nCCO,"a, b",1\nc1ccccc1,c,2\n')
    encode_file(model, path, tmp_path / "all.csv")
    df = pd.read_csv(tmp_path / "all.csv")
    assert list(df.columns[:5]) == ["line", "input_line", "label", "smiles", "rho"]
    assert df["input_line"].tolist() == ["a, b", "c"] and df["line"].tolist() == [2, 3]
    encode_file(model, path, tmp_path / "some.csv", EncodeOptions(id_columns=["label"]))
    some = pd.read_csv(tmp_path / "some.csv")
    assert list(some.columns[:4]) == ["line", "label", "smiles", "rho"]


def test_gaussian_family_writes_its_mean_and_measure(tmp_path):
    model = load_model(random_model_file(tmp_path / "g.pt", latent="gaussian"))
    path = tmp_path / "in.smi"
    path.write_text("CCO\nc1ccccc1\n")
    encode_file(model, path, tmp_path / "out.csv")
    df = pd.read_csv(tmp_path / "out.csv")
    assert "inv_sigma" in df.columns and (df["inv_sigma"] > 0).all()
    np.testing.assert_allclose(
        df[[f"mu_{i}" for i in range(6)]].to_numpy(), model.encode(["CCO", "c1ccccc1"]), atol=1e-6
    )


def test_nothing_encodable_still_writes_the_rejected_rows(model, tmp_path):
    path = tmp_path / "in.smi"
    path.write_text("CCP\nCCI\n")
    stats = encode_file(model, path, tmp_path / "out.csv")
    assert stats.done == 0 and stats.n_rejected == 2
    assert len(pd.read_csv(tmp_path / "out.csv")) == 0
    assert len(pd.read_csv(rejected_path(tmp_path / "out.csv"))) == 2


def test_paths_are_checked_first_and_existing_files_survive_a_failure(model, smi, tmp_path):
    with pytest.raises(MolgenError, match="unsupported file type"):
        encode_file(model, smi, tmp_path / "out.txt")
    table = tmp_path / "in.csv"
    table.write_text("smiles\nCCO\n")
    with pytest.raises(MolgenError, match="also an input"):
        encode_file(model, table, table)
    assert table.read_text() == "smiles\nCCO\n"
    out = tmp_path / "out.csv"
    out.write_text("precious")
    rejected_path(out).write_text("also precious")

    def boom(position):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        encode_file(model, smi, out, on_progress=boom)
    assert out.read_text() == "precious" and rejected_path(out).read_text() == "also precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_names_and_csv_quoting():
    assert output_names(["line"], ["id", "smiles", "smiles"], ["smiles", "rho"]) == [
        "line", "id", "input_smiles", "input_smiles_2", "smiles", "rho",
    ]  # fmt: skip
    handle = io.StringIO()
    writer = TableWriter(handle, ["line", "name", "x"], ["int", "str", "f4"])
    writer.write([[1, 2], ['a "b", c', " pad"], np.array([0.5, np.float32(1 / 3)])])
    parsed = pd.read_csv(io.StringIO(handle.getvalue()))
    assert parsed["name"].tolist() == ['a "b", c', " pad"]
    assert np.float32(parsed["x"][1]) == np.float32(1 / 3)  # float32 values round-trip exactly


def test_encode_does_not_touch_the_global_rng(model, smi, tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    encode_file(model, smi, tmp_path / "out.csv")
    assert torch.equal(torch.rand(1), expected)
