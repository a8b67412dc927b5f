"""`molgen evaluate` end to end: a samples file, a really trained tiny model, and bad inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:fcd.*"),
]


def _moses(name: str, n: int) -> list[str]:
    with gzip.open(REPO / "data" / "moses" / name, "rt") as fh:
        next(fh)
        return [next(fh).strip() for _ in range(n)]


def _write(path: Path, smiles: list[str]) -> Path:
    path.write_text("SMILES\n" + "\n".join(f'"{s}"' for s in smiles) + "\n")
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    # 2 shared cores: torch's OpenMP threads would wait on each other (see test_metrics.py).
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def files(tmp_path):
    ref = _write(tmp_path / "ref.csv", _moses("test.csv.gz", 40))
    samples = _write(tmp_path / "samples.csv", _moses("test_scaffolds.csv.gz", 30) + ["C1CC"])
    return tmp_path, ref, samples


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_evaluate_a_samples_file(cli, files):
    tmp, ref, samples = files
    out = tmp / "out"
    result = cli(
        "evaluate", "--reference", ref, "--samples", samples, "--train", ref,
        "--cache-dir", tmp / "cache", "--json", out / "r.json", "--report", out / "r.md",
        "-j", "1",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "Validity" in result.stdout and "GuacaMol KL divergence" in result.stdout
    data = json.loads((out / "r.json").read_text())
    assert data["metrics"]["validity"] == pytest.approx(30 / 31)
    assert data["metrics"]["novelty"] == 1.0  # scaffold-split molecules are not in the test set
    assert data["guacamol"]["number_samples"] == 31 and not data["guacamol"]["standard"]
    assert data["inputs"]["samples"]["sha256"] and data["versions"]["guacamol"] == "0.5.5"
    for name in ("r.md", "r_molecules.png", "r_properties.png"):
        assert (out / name).stat().st_size > 500
    # the second run reads the cached reference statistics
    again = cli(
        "evaluate", "--reference", ref, "--samples", samples, "--no-guacamol",
        "--cache-dir", tmp / "cache", "--json", out / "r2.json", "-j", "1",
    )  # fmt: skip
    assert again.code == 0, again.stderr
    second = json.loads((out / "r2.json").read_text())
    assert second["inputs"]["reference"]["statistics_from_cache"] is True
    assert second["metrics"]["fcd"] == pytest.approx(data["metrics"]["fcd"])
    assert second["metrics"]["novelty"] is None and second["guacamol"] is None


def test_bad_inputs_give_one_error_line(cli, files):
    tmp, ref, samples = files
    cache = ["--cache-dir", tmp / "cache"]
    msg = _one_error_line(cli("evaluate", "--samples", samples, *cache))
    assert "--reference" in msg
    msg = _one_error_line(cli("evaluate", "-r", ref, *cache))
    assert "exactly one of MODEL or --samples" in msg
    msg = _one_error_line(cli("evaluate", tmp / "m.pt", "-r", ref, "--samples", samples, *cache))
    assert "exactly one" in msg
    msg = _one_error_line(cli("evaluate", "-r", tmp / "missing.csv", "--samples", samples, *cache))
    assert "missing.csv" in msg and "does not exist" in msg
    binary = tmp / "samples.bin.csv"
    binary.write_bytes(b"\x00\x01\x02garbage\xff" * 20)
    _one_error_line(cli("evaluate", "-r", ref, "--samples", binary, *cache))
    no_column = tmp / "table.csv"
    no_column.write_text("name,value\nfoo,1\nbar,2\n")
    msg = _one_error_line(cli("evaluate", "-r", ref, "--samples", no_column, *cache))
    assert "table.csv" in msg
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"this is not a model")
    _one_error_line(cli("evaluate", corrupt, "-r", ref, *cache))


def test_all_invalid_samples_are_scored_not_crashed(cli, files):
    tmp, ref, _ = files
    junk = _write(tmp / "junk.csv", ["not_a_smiles", "C1CC", "", "xyz"])
    result = cli(
        "evaluate", "-r", ref, "--samples", junk, "--cache-dir", tmp / "cache",
        "--json", tmp / "j.json", "-j", "1",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = json.loads((tmp / "j.json").read_text())
    assert data["metrics"]["validity"] == 0.0 and data["metrics"]["fcd"] is None
    fcd = data["guacamol"]["results"]["Frechet ChemNet Distance"]
    assert fcd["score"] is None and "at least 2 valid" in fcd["error"]


@pytest.mark.slow
def test_evaluate_a_really_trained_tiny_model(cli, tmp_path):
    run = tmp_path / "run"
    trained = cli(
        "train", REPO / "tests" / "data" / "tiny_train.csv", "--preset", "tiny",
        "--out", run, "--max-steps", "20",
    )  # fmt: skip
    assert trained.code == 0, trained.stderr
    ref = _write(tmp_path / "ref.csv", _moses("test.csv.gz", 60))
    out = tmp_path / "out"
    result = cli(
        "evaluate", run / "model.pt", "-r", ref, "-n", "60", "--n-recon", "20",
        "--n-interp", "4", "--cache-dir", tmp_path / "cache", "--json", out / "m.json",
        "--report", out / "m.md", "-j", "1", "--max-retries", "1", "--beam", "2",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = json.loads((out / "m.json").read_text())
    model = data["model"]
    assert model["n_recon"] + model["n_recon_skipped"] == 20
    assert 0.0 <= model["token_accuracy"] <= 1.0 and model["n_interp"] == 4
    assert data["metrics"]["n"] == 60 and data["inputs"]["model"]["sha256"]
    # the tiny model was trained on tests/data/tiny_train.csv: novelty is measured against it
    assert data["inputs"]["train"]["path"].endswith("tiny_train.csv")
    assert "Reconstruction (exact) [beam search, 2 beams]" in result.stdout
    # validity is the single pass; the sampler (1 retry) is reported beside it, GuacaMol ran on it
    sampler = data["sampler"]
    assert sampler["max_retries"] == 1 and sampler["codes"] == 60
    assert sampler["single_pass_validity"] == pytest.approx(data["metrics"]["validity"])
    assert sampler["sampler_validity"] >= sampler["single_pass_validity"]
    assert "up to 1 retries" in data["guacamol"]["generator"]
    assert "Sampler validity (<= 1 retries)" in (out / "m.md").read_text()
    assert (out / "m_properties.png").exists()
