"""End to end on the tiny preset: train, sample (prior, --around, filters), interpolate, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from molgen.data import canonicalize
from tests.conftest import REPO, TEST_DATA, run_cli

pytestmark = pytest.mark.integration
DATA = TEST_DATA / "tiny_train.csv"
ASPIRIN_LIKE = "CC(=O)Nc1ccc(O)cc1"  # paracetamol: only MOSES-vocabulary tokens


def _train(out, *extra):
    r = run_cli(
        "train",
        DATA,
        "--out",
        out,
        "--preset",
        "tiny",
        "--epochs",
        "20",
        "--max-steps",
        "16",
        *extra,
    )
    assert r.code == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = _train(out)
    return out, r


def test_train_writes_model_metrics_curves_and_rejects(tiny_run):
    out, r = tiny_run
    for name in (
        "model.pt",
        "metrics.csv",
        "training_curves.png",
        "rejected.csv",
        "run_config.json",
    ):
        assert (out / name).exists(), name
        assert str(out / name) in r.stdout or name in ("run_config.json",), name
    content = torch.load(out / "model.pt", weights_only=True)
    assert content["training"]["global_step"] == 16
    assert content["training"]["data_fingerprint"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"train_loss", "train_kl", "val_loss", "beta"} <= set(metrics.columns)


def test_same_seed_same_model(tmp_path, tiny_run):
    out, _ = tiny_run
    _train(tmp_path / "again")
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _canonical(smiles: str) -> str | None:
    return canonicalize(smiles, largest_fragment=False) if isinstance(smiles, str) else None


def test_sample_prior_writes_valid_molecules_and_image(tiny_run, tmp_path):
    out, _ = tiny_run
    csv, png = tmp_path / "s.csv", tmp_path / "grid.png"
    r = run_cli("sample", out / "model.pt", "-n", "25", "-o", csv, "--seed", "3", "--image", png)
    assert r.code == 0, r.stderr
    df = pd.read_csv(csv)
    assert list(df.columns) == ["smiles", "valid"]
    # every row is a valid molecule, written canonically; short only when the cap was hit
    assert df["valid"].all() and all(_canonical(s) == s for s in df["smiles"])
    assert len(df) == 25 or "the cap" in r.stderr
    assert "decodings" in r.stdout and "single-pass validity" in r.stdout
    assert "given up after 3 retries" in r.stdout
    assert png.exists() == (len(df) > 0)
    again = tmp_path / "s2.csv"
    run_cli("sample", out / "model.pt", "-n", "25", "-o", again, "--seed", "3")
    assert pd.read_csv(again).equals(df)


def test_sample_keep_invalid_writes_every_code_once(tiny_run, tmp_path):
    out, _ = tiny_run
    csv = tmp_path / "raw.csv"
    r = run_cli("sample", out / "model.pt", "-n", "25", "-o", csv, "--keep-invalid")
    assert r.code == 0, r.stderr
    df = pd.read_csv(csv, keep_default_na=False)
    assert len(df) == 25 and list(df.columns) == ["smiles", "valid"]
    assert not df["smiles"].str.contains("<").any()  # no special-token text
    assert list(df["valid"]) == [_canonical(s) is not None for s in df["smiles"]]
    n_valid = int(df["valid"].sum())
    assert f"25 molecules ({n_valid} valid) from 25 latent codes, one decoding each" in r.stdout
    refused = run_cli("sample", out / "model.pt", "-n", "5", "--keep-invalid", "--max-retries", "2")
    assert (
        refused.code == 1
        and refused.stderr.startswith("Error:")
        and "--keep-invalid" in (refused.stderr)
    )


def test_sample_around_reports_similarity(tiny_run, tmp_path):
    out, _ = tiny_run
    csv = tmp_path / "a.csv"
    r = run_cli(
        "sample", out / "model.pt", "-n", "10", "-o", csv, "--around", ASPIRIN_LIKE, "--rho", "0.99"
    )
    assert r.code == 0, r.stderr
    df = pd.read_csv(csv)
    assert list(df.columns) == ["smiles", "valid", "similarity"]
    assert df["valid"].all() and df["similarity"].between(0, 1).all()
    assert "greedy decoding" in r.stdout  # --around decodes greedily: no retries
    beam = tmp_path / "beam.csv"
    r = run_cli(
        "sample", out / "model.pt", "-n", "4", "-o", beam, "--around", ASPIRIN_LIKE, "--rho",
        "0.99", "--beam", "3", "--keep-invalid",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert len(pd.read_csv(beam)) == 4 and "beam search (3 beams)" in r.stdout
    refused = run_cli("sample", out / "model.pt", "-n", "4", "--beam", "3")
    assert refused.code == 1 and "--beam applies to greedy" in refused.stderr


def test_sample_filters_and_cap(tiny_run, tmp_path):
    out, _ = tiny_run
    csv = tmp_path / "f.csv"
    r = run_cli(
        "sample",
        out / "model.pt",
        "-n",
        "50",
        "-o",
        csv,
        "--unique",
        "--valid-only",
        "--novel-against",
        DATA,
        "--max-attempts",
        "60",
    )
    assert r.code == 0, r.stderr
    df = pd.read_csv(csv)
    assert df["valid"].all() and df["smiles"].is_unique
    assert "novel" in df.columns and df["novel"].all()
    assert "from 60 latent codes" in r.stdout or len(df) == 50
    if len(df) < 50:
        assert "the cap" in r.stderr


def test_interpolate_path(tiny_run, tmp_path):
    out, _ = tiny_run
    csv = tmp_path / "i.csv"
    r = run_cli(
        "interpolate", out / "model.pt", "CCOc1ccccc1", ASPIRIN_LIKE, "--steps", "6", "-o", csv
    )
    assert r.code == 0, r.stderr
    df = pd.read_csv(csv)
    assert len(df) == 6
    assert list(df.columns) == ["step", "t", "smiles", "valid", "similarity_a", "similarity_b"]
    assert df["t"].iloc[0] == 0 and df["t"].iloc[-1] == 1
    beam = tmp_path / "b.csv"
    r = run_cli(
        "interpolate", out / "model.pt", "CCOc1ccccc1", ASPIRIN_LIKE, "--steps", "6",
        "--beam", "3", "-o", beam,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    path = pd.read_csv(beam, keep_default_na=False)
    assert len(path) == 6 and list(path["valid"]) == [
        _canonical(s) is not None for s in path["smiles"]
    ]


@pytest.mark.parametrize(
    "bad, message",
    [("C1CC", "not a valid SMILES"), ("[Se]1C=CC=C1", "never saw")],
)
def test_interpolate_bad_input_is_one_error_line(tiny_run, bad, message):
    out, _ = tiny_run
    r = run_cli("interpolate", out / "model.pt", bad, ASPIRIN_LIKE)
    assert r.code == 1
    assert r.stderr.startswith("Error:") and message in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_model_file_is_one_error_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("garbage")
    r = run_cli("sample", bad, "-n", "3")
    assert r.code == 1 and r.stderr.startswith("Error:") and "Traceback" not in r.stderr


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    _train(out, "--max-steps", "12")
    first = pd.read_csv(out / "metrics.csv")
    final = torch.load(out / "checkpoints" / "final.ckpt", weights_only=False)  # our own file
    restored = final["callbacks"]["TrainingClock"]["elapsed_s"]
    assert restored > 0
    r = run_cli("train", "--out", out, "--resume", "--max-steps", "24")
    assert r.code == 0, r.stderr[-2000:]
    assert "over all starts" in r.stdout
    content = torch.load(out / "model.pt", weights_only=True)
    summary = content["training"]
    assert summary["global_step"] == 24 and summary["resumed"]
    # the training time carries over the restart: the first start's time plus this one's
    assert summary["training_time_s"] > restored
    merged = pd.read_csv(out / "metrics.csv")
    assert merged["step"].max() > first["step"].max()
    assert merged["step"].min() == first["step"].min()  # the first start's rows were kept
    refused = run_cli("train", DATA, "--out", out, "--preset", "tiny")
    assert refused.code == 1 and "--resume" in refused.stderr


@pytest.mark.slow
def test_resume_after_ctrl_c(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "cli.py"),
        "train",
        str(DATA),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--epochs",
        "200",
        "--max-steps",
        "100000",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    ckpts = list((out / "checkpoints").glob("*.ckpt"))
    assert ckpts
    steps_before = max(torch.load(c, weights_only=False)["global_step"] for c in ckpts)
    r = run_cli("train", "--out", out, "--resume", "--max-steps", str(steps_before + 10))
    assert r.code == 0, r.stderr[-2000:]
    content = torch.load(out / "model.pt", weights_only=True)
    assert content["training"]["global_step"] == steps_before + 10


def test_ddp_on_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        str(REPO / "cli.py"),
        "train",
        str(DATA),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--max-steps",
        "6",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    content = torch.load(out / "model.pt", weights_only=True)
    assert content["training"]["global_step"] == 6
    assert "world_size" in content["training"] and content["training"]["world_size"] == 2
