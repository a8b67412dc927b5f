from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from molgen.errors import MolgenError
from molgen.mnist import (
    DEFAULT_MNIST_DIR,
    FAMILIES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    MNIST_FILES,
    ImageVAE,
    MnistConfig,
    MnistData,
    ambient_dim,
    bernoulli_nll,
    importance_log_likelihood,
    load_mnist,
    read_idx,
    resolve_device,
    run_mnist,
    train_mnist,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # These models are tiny: one thread is as fast on an idle machine and several times faster
    # on a crowded one (threads wait for each other). Restored afterwards for other tests.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def _write(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    raw = _idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _write_mnist(folder: Path, data: MnistData, compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in MNIST_FILES.items():
        name = f"{stem}.gz" if compress else stem
        _write(folder / name, getattr(data, key), compress)
    return folder


def _random_mnist(n_train=40, n_test=20, seed=0) -> MnistData:
    rng = np.random.default_rng(seed)
    return MnistData(
        train_images=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, n_train, dtype=np.uint8),
        test_images=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, n_test, dtype=np.uint8),
    )


@pytest.fixture(scope="module")
def real_small() -> MnistData:
    """The first 512 training and 256 test images of the bundled MNIST."""
    full = load_mnist()
    return MnistData(
        full.train_images[:512],
        full.train_labels[:512],
        full.test_images[:256],
        full.test_labels[:256],
    )


# ---- IDX reader -----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_images_and_labels(tmp_path, compress):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    got_images = read_idx(_write(tmp_path / "im", images, compress), IMAGE_MAGIC)
    got_labels = read_idx(_write(tmp_path / "lb", labels, compress), LABEL_MAGIC)
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_bundled_mnist_has_standard_sizes():
    data = load_mnist(DEFAULT_MNIST_DIR)
    assert data.train_images.shape == (60000, 28, 28)
    assert data.test_images.shape == (10000, 28, 28)
    assert data.train_labels.shape == (60000,) and data.test_labels.shape == (10000,)
    # Known facts of the standard files: first training label is 5, first test label is 7.
    assert int(data.train_labels[0]) == 5 and int(data.test_labels[0]) == 7
    assert sorted(np.unique(data.test_labels).tolist()) == list(range(10))


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_a_user_folder(tmp_path, compress):
    data = _random_mnist()
    loaded = load_mnist(_write_mnist(tmp_path / "m", data, compress))
    np.testing.assert_array_equal(loaded.train_images, data.train_images)
    np.testing.assert_array_equal(loaded.test_labels, data.test_labels)


def test_bad_magic_is_a_molgen_error(tmp_path):
    raw = bytearray(_idx_bytes(np.zeros((2, 28, 28))))
    raw[0] = 0x12
    (tmp_path / "bad").write_bytes(bytes(raw))
    with pytest.raises(MolgenError, match="bad magic"):
        read_idx(tmp_path / "bad", IMAGE_MAGIC)


def test_labels_where_images_are_expected_is_a_molgen_error(tmp_path):
    path = _write(tmp_path / "labels.gz", np.array([1, 2, 3]))
    with pytest.raises(MolgenError, match="expected 2051"):
        read_idx(path, IMAGE_MAGIC)


@pytest.mark.parametrize("keep", [slice(0, 2), slice(0, 10), slice(0, -100)])
def test_truncated_file_is_a_molgen_error(tmp_path, keep):
    raw = _idx_bytes(np.ones((4, 28, 28)))  # 16-byte header + 3136 bytes
    (tmp_path / "short").write_bytes(raw[keep])
    with pytest.raises(MolgenError, match="truncated"):
        read_idx(tmp_path / "short", IMAGE_MAGIC)


def test_extra_bytes_are_a_size_mismatch(tmp_path):
    (tmp_path / "long").write_bytes(_idx_bytes(np.ones((4, 28, 28))) + b"\x00" * 5)
    with pytest.raises(MolgenError, match="longer than its header"):
        read_idx(tmp_path / "long", IMAGE_MAGIC)


def test_truncated_gzip_is_a_molgen_error(tmp_path):
    packed = gzip.compress(_idx_bytes(np.ones((4, 28, 28))))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(MolgenError, match="corrupt"):
        read_idx(tmp_path / "cut.gz", IMAGE_MAGIC)


def test_missing_file_and_folder_are_molgen_errors(tmp_path):
    with pytest.raises(MolgenError, match="not found"):
        read_idx(tmp_path / "nope")
    with pytest.raises(MolgenError, match="not found"):
        load_mnist(tmp_path)  # exists but empty
    with pytest.raises(MolgenError, match="does not exist"):
        load_mnist(tmp_path / "absent")


def test_count_mismatch_between_images_and_labels(tmp_path):
    data = _random_mnist()
    data.test_labels = data.test_labels[:-1]
    with pytest.raises(MolgenError, match="do not belong together"):
        load_mnist(_write_mnist(tmp_path / "m", data))


# ---- model ----------------------------------------------------------------------------------


def test_dimension_convention():
    assert ambient_dim("spcauchy", 2) == 3
    assert ambient_dim("vmf", 10) == 11
    assert ambient_dim("power", 5) == 6
    assert ambient_dim("gaussian", 2) == 2
    with pytest.raises(MolgenError):
        ambient_dim("normal", 2)
    with pytest.raises(MolgenError):
        ambient_dim("vmf", 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_shapes_for_each_family(family):
    torch.manual_seed(0)
    model = ImageVAE(family, 3, hidden=32)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    out = model(x)
    amb = 4 if family != "gaussian" else 3
    assert out["z"].shape == (5, amb)
    assert out["logits"].shape == (5, 1, 28, 28)
    assert out["recon"].shape == (5,) and out["kl"].shape == (5,)
    assert torch.isfinite(out["recon"]).all() and torch.isfinite(out["kl"]).all()
    assert (out["kl"] >= -1e-4).all()
    if family != "gaussian":
        assert model.head.spherical
        torch.testing.assert_close(out["z"].norm(dim=-1), torch.ones(5), atol=1e-4, rtol=0)
    (out["recon"] + out["kl"]).mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_bernoulli_nll_matches_closed_form():
    logits = torch.zeros(2, 1, 28, 28)
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.5))
    torch.testing.assert_close(bernoulli_nll(logits, x), torch.full((2,), 784 * math.log(2)))


@pytest.mark.parametrize("family", ["spcauchy", "gaussian"])
def test_importance_sampled_ll_is_above_the_elbo(family):
    torch.manual_seed(1)
    model = ImageVAE(family, 2, hidden=32)
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.2))
    ll = importance_log_likelihood(model, x, n_samples=100, chunk=50)
    assert ll.shape == (2,) and torch.isfinite(ll).all()
    # The ELBO (the K=1 bound) averaged over 100 draws; the K=100 estimate must not fall below it.
    with torch.no_grad():
        out = model(x.repeat(100, 1, 1, 1))
        elbo = -(out["recon"] + out["kl"]).view(100, 2).mean(0)
    assert (ll >= elbo - 1.0).all(), (ll, elbo)
    assert (ll <= 0).all()


def test_importance_sampling_pairs_samples_with_their_own_images():
    torch.manual_seed(2)
    model = ImageVAE("vmf", 2, hidden=32)
    # Very different images give very different log p(x|z); a mix-up between images would show.
    x = torch.stack([torch.bernoulli(torch.full((1, 28, 28), p)) for p in (0.05, 0.5, 0.9)])
    together = importance_log_likelihood(model, x, n_samples=60, chunk=25, image_batch=3)
    alone = torch.cat(
        [
            importance_log_likelihood(model, x[i : i + 1], n_samples=60, image_batch=1)
            for i in range(3)
        ]
    )
    assert together.dtype == torch.float64
    assert (together[1:] - together[:-1]).abs().min() > 20
    torch.testing.assert_close(together, alone, atol=1.0, rtol=0)


def test_cuda_request_without_gpu_is_a_molgen_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(MolgenError, match="no CUDA"):
        resolve_device("cuda")


# ---- training -------------------------------------------------------------------------------


def test_short_training_on_512_images_lowers_the_loss(real_small):
    cfg = MnistConfig(
        latent="spcauchy",
        dim=5,
        epochs=2,
        seed=0,
        batch_size=32,
        lr=1e-3,
        lr_warmup_steps=8,  # the default ramp (250 steps) is longer than this whole test
        test_subset=128,
        ll_images=0,
        progress=False,
    )
    _, result, _ = train_mnist(cfg, real_small)
    h = result.history
    assert len(h) == 2
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 20
    # An untrained decoder sits near 784 log 2 = 543 nats; MNIST's pixel means alone give ~206.
    assert result.test_reconstruction < 300
    assert result.test_reconstruction == min(e["test_reconstruction"] for e in h)
    assert result.test_log_likelihood is None


@pytest.mark.slow
@pytest.mark.parametrize("family", ["spcauchy", "vmf", "power"])
def test_spherical_latents_are_used_not_collapsed(family):
    # At a constant lr 1e-3 the spherical posteriors collapsed onto the uniform prior within ~50
    # steps (KL -> 0, reconstructions = the mean image, ~200 nats); the defaults must keep z in use.
    cfg = MnistConfig(
        latent=family,
        dim=5,
        epochs=3,
        train_subset=16384,
        test_subset=1000,
        ll_images=0,
        progress=False,
    )
    _, result, _ = train_mnist(cfg)
    assert not result.collapsed
    assert result.test_kl > 2.0
    assert result.test_reconstruction < 190


def test_training_is_deterministic_by_seed(real_small):
    def run(seed):
        cfg = MnistConfig(
            latent="vmf",
            dim=2,
            epochs=1,
            seed=seed,
            train_subset=256,
            test_subset=64,
            ll_images=2,
            ll_samples=10,
            progress=False,
        )
        return train_mnist(cfg, real_small)[1]

    a, b, c = run(3), run(3), run(4)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.test_reconstruction == b.test_reconstruction
    assert a.test_log_likelihood == b.test_log_likelihood
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


@pytest.mark.parametrize(("family", "sphere"), [("power", True), ("gaussian", False)])
def test_run_writes_results_and_pictures(tmp_path, real_small, family, sphere):
    cfg = MnistConfig(
        latent=family,
        dim=2,
        epochs=1,
        train_subset=128,
        test_subset=64,
        ll_images=2,
        ll_samples=8,
        progress=False,
        out=str(tmp_path / "o"),
    )
    result = run_mnist(cfg, real_small)
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["latent"] == family and saved["dim"] == 2
    assert saved["ambient_dim"] == (3 if sphere else 2)
    assert saved["train_size"] == 128 and saved["test_size"] == 64
    for name in ("reconstructions.png", "prior_samples.png", "training_curves.png"):
        assert (tmp_path / "o" / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "o" / "latent_sphere.png").exists() is sphere
    assert set(result.files) >= {"results", "reconstructions", "prior_samples", "training_curves"}


def test_bad_settings_are_molgen_errors(real_small):
    for bad in (
        dict(epochs=0),
        dict(latent="cauchy"),
        dict(train_subset=0),
        dict(lr=0.0),
        dict(lr_warmup_steps=-1),
    ):
        cfg = MnistConfig(**{"progress": False, "ll_images": 0, **bad})
        with pytest.raises(MolgenError):
            train_mnist(cfg, real_small)
