"""``molgen mnist`` end to end on a tiny MNIST copy, and its error path."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from molgen.mnist import DEFAULT_MNIST_DIR, MNIST_FILES, load_mnist
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration

RESULT_KEYS = {
    "latent",
    "dim",
    "ambient_dim",
    "epochs",
    "seed",
    "test_reconstruction",
    "test_reconstruction_final",
    "test_kl",
    "test_elbo",
    "test_log_likelihood",
    "history",
    "wall_seconds",
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # These models are tiny: one thread is as fast on an idle machine and several times faster
    # on a crowded one (threads wait for each other). Restored afterwards for other tests.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A user's MNIST folder: the first 256 training and 64 test images, plain (not gzip) IDX."""
    full = load_mnist()
    folder = tmp_path_factory.mktemp("mnist")
    arrays = {
        "train_images": full.train_images[:256],
        "train_labels": full.train_labels[:256],
        "test_images": full.test_images[:64],
        "test_labels": full.test_labels[:64],
    }
    for key, stem in MNIST_FILES.items():
        a = np.ascontiguousarray(arrays[key])
        header = bytes([0, 0, 8, a.ndim]) + b"".join(n.to_bytes(4, "big") for n in a.shape)
        (folder / stem).write_bytes(header + a.tobytes())
    return folder


def test_mnist_cli_writes_results_and_pictures(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "mnist",
        "--latent",
        "spcauchy",
        "--dim",
        "2",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--batch-size",
        "64",
        "--ll-images",
        "4",
        "--ll-samples",
        "20",
        "--data-dir",
        tiny_mnist,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert r.code == 0, r.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= RESULT_KEYS
    assert saved["latent"] == "spcauchy" and saved["dim"] == 2 and saved["ambient_dim"] == 3
    assert saved["train_size"] == 256 and saved["test_size"] == 64
    assert len(saved["history"]) == 2 and saved["epochs"] == 2
    assert saved["test_reconstruction"] <= saved["test_reconstruction_final"]
    assert np.isfinite(saved["test_log_likelihood"])
    for name in ("reconstructions", "prior_samples", "training_curves", "latent_sphere"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG", name
        assert str(png) in r.stdout
    assert "d=2 (latent vector of 3 entries)" in r.stdout
    assert "test reconstruction (min)" in r.stdout


def test_mnist_cli_gzip_folder_gaussian_has_no_sphere(tiny_mnist, tmp_path):
    gz = tmp_path / "gz"
    gz.mkdir()
    for stem in MNIST_FILES.values():
        (gz / f"{stem}.gz").write_bytes(gzip.compress((tiny_mnist / stem).read_bytes()))
    out = tmp_path / "g"
    r = run_cli(
        "mnist",
        "--latent",
        "gaussian",
        "--dim",
        "2",
        "--epochs",
        "1",
        "--train-subset",
        "128",
        "--test-subset",
        "32",
        "--ll-images",
        "0",
        "--data-dir",
        gz,
        "--out",
        out,
    )
    assert r.code == 0, r.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["ambient_dim"] == 2 and saved["train_size"] == 128
    assert saved["test_log_likelihood"] is None
    assert not (out / "latent_sphere.png").exists()


def test_empty_data_dir_is_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "mnist",
            "--data-dir",
            str(empty),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "not found" in lines[0] and "--data-dir" in lines[0]
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.skipif(
    not (DEFAULT_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="the bundled data/mnist is not present",
)
def test_mnist_cli_paper_protocol_tiny_run(tmp_path):
    out = tmp_path / "paper"
    r = run_cli(
        "mnist",
        "--protocol",
        "paper",
        "--latent",
        "spcauchy",
        "--dim",
        "2",
        "--epochs",
        "1",
        "--train-subset",
        "256",
        "--test-subset",
        "200",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        out,
    )
    assert r.code == 0, r.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"] == "paper"
    assert saved["train_size"] == 256 and saved["test_size"] == 200
    assert saved["epochs"] == 1 and saved["best_epoch"] == 1 and len(saved["history"]) == 1
    assert saved["lr"] == 3e-4 and saved["lr_warmup_steps"] == 200 and saved["batch_size"] == 128
    assert saved["overrides"] == {}
    # Two warm-up steps only: still near an untrained decoder on grey targets, but finite.
    assert 100 < saved["selected_reconstruction"] < 800
    assert saved["selected_neg_elbo"] == pytest.approx(
        saved["selected_reconstruction"] + saved["selected_kl"]
    )
    for name in ("training_curves", "reconstructions", "prior_samples", "latent_sphere"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert any(line.split()[:2] == ["protocol", "paper"] for line in r.stdout.splitlines())
    assert r.stdout.splitlines()[0].startswith("MNIST VAE, protocol paper")
    assert "selected epoch 1" in r.stdout and "last epoch 1" in r.stdout


def test_mnist_cli_paper_default_epochs_and_out(tmp_path, monkeypatch):
    # Without --epochs/--out the paper defaults apply; stop at the first epoch to keep it short.
    import molgen.mnist_paper as mp

    seen = {}

    def stop(config, data=None, on_epoch=None):
        seen["config"] = config
        raise mp.MolgenError("stopped by the test")

    monkeypatch.setattr(mp, "run_paper", stop)
    monkeypatch.chdir(tmp_path)
    r = run_cli("mnist", "--protocol", "paper", "--latent", "vmf", "--dim", "5", "--seed", "3")
    assert r.code == 1 and "stopped by the test" in r.stderr
    config = seen["config"]
    assert config.epochs == 40 and config.batch_size is None and config.lr is None
    assert config.out == str(Path("runs/mnist_paper") / "vmf_d5_s3")
