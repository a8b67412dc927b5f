"""The MNIST sanity check: an image VAE on the same latent layer as the molecule VAE.

The seed paper (Sablica & Hornik, arXiv 2506.21278) validates the spherical Cauchy latent on MNIST
before molecules; this module repeats that experiment with ``molgen.latent`` unchanged, so a change
to the latent code shows up here as a model that no longer learns.

Setup (following the s-vae / power-spherical MNIST code that the paper builds on):

* Likelihood: Bernoulli on binarized pixels, i.e. BCE-with-logits summed over the 784 pixels.
* Binarization: *dynamic* for training (each pixel is redrawn as Bernoulli(grey level) every time a
  batch is drawn) and *fixed* for the test set (drawn once with a fixed seed, the same in every
  run, so test numbers are comparable across epochs, seeds and latent families).
* Dimension convention: the paper's ``d`` is the sphere's intrinsic dimension, so ``dim=d`` means
  an ambient latent vector of ``d + 1`` entries for the spherical families (S^d in R^{d+1}) and of
  ``d`` entries for the Gaussian.
* Reconstruction loss (the paper's table metric): the test-set mean of -log p(x|z) with one
  z ~ q(z|x) per image, reported as the minimum over epochs (as the paper does) and at the end.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from molgen.devices import resolve_device
from molgen.errors import MolgenError
from molgen.outputs import atomic_output, atomic_path, check_output_path

DEFAULT_MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
FAMILIES = ("spcauchy", "vmf", "power", "gaussian")
SPHERICAL_FAMILIES = ("spcauchy", "vmf", "power")
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Final test KL below this (nats) means the posterior collapsed onto the prior: z carries nothing.
COLLAPSE_KL = 0.5
# The test set is binarized once with this seed in every run, whatever the run's own seed.
TEST_BINARIZATION_SEED = 0


# ---------------------------------------------------------------------------------------------
# IDX reading
# ---------------------------------------------------------------------------------------------


def read_idx(path: Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip-compressed or plain).

    Args:
        path: The file; gzip is detected from its first two bytes, not its name.
        expected_magic: 2051 for images, 2049 for labels, or None to accept any uint8 IDX file.

    Returns:
        A uint8 array with the shape stored in the header.

    Raises:
        MolgenError: The file is missing, not IDX, of the wrong kind, truncated or too long.
    """
    path = Path(path)
    if not path.is_file():
        raise MolgenError(
            f"MNIST file {path} not found; pass --data-dir pointing at the IDX files."
        )
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a damaged gzip stream
        raise MolgenError(f"MNIST file {path} is corrupt ({exc}); re-download it.") from exc
    if len(raw) < 4:
        raise MolgenError(f"MNIST file {path} is truncated (no IDX header); re-download it.")
    magic = int.from_bytes(raw[:4], "big")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise MolgenError(
            f"MNIST file {path} has bad magic number {magic} (not an IDX file of unsigned bytes); "
            "re-download it."
        )
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGE_MAGIC: "images", LABEL_MAGIC: "labels"}.get(expected_magic, "IDX")
        raise MolgenError(
            f"MNIST file {path} has magic number {magic}, expected {expected_magic} ({kind}); "
            "check that the file names match their contents."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MolgenError(f"MNIST file {path} is truncated inside its header; re-download it.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise MolgenError(
            f"MNIST file {path} is {what}: header shape {shape} needs {expected} bytes, "
            f"found {got}; re-download it."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(data_dir: Path, stem: str) -> Path:
    # The usual spellings: gzip or plain, dash or dot before "idx" (some mirrors use the latter).
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (data_dir / f"{name}.gz", data_dir / name):
            if candidate.is_file():
                return candidate
    raise MolgenError(
        f"MNIST file {stem}(.gz) not found in {data_dir}; pass --data-dir pointing at a folder "
        "with the four standard IDX files."
    )


@dataclass
class MnistData:
    """MNIST as uint8 arrays: images (N, 28, 28), labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist(data_dir: Path | None = None) -> MnistData:
    """Load the four MNIST IDX files from ``data_dir`` (default: the bundled ``data/mnist``).

    Args:
        data_dir: Folder holding ``train-images-idx3-ubyte[.gz]`` and the three other files.

    Returns:
        The arrays, checked for matching counts, 28x28 images and labels 0-9.

    Raises:
        MolgenError: A file is missing or corrupt, or the files do not fit together.
    """
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_MNIST_DIR
    if not data_dir.is_dir():
        raise MolgenError(f"MNIST folder {data_dir} does not exist; pass an existing --data-dir.")
    arrays = {
        key: read_idx(
            _find_idx(data_dir, stem), IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC
        )
        for key, stem in MNIST_FILES.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (28, 28):
            raise MolgenError(
                f"MNIST {split} images are {images.shape[1:]}, expected 28x28; check --data-dir."
            )
        if len(images) != len(labels):
            raise MolgenError(
                f"MNIST {split} has {len(images)} images but {len(labels)} labels; "
                "the files do not belong together."
            )
        if labels.size and int(labels.max()) > 9:
            raise MolgenError(f"MNIST {split} labels go up to {int(labels.max())}, expected 0-9.")
    return MnistData(**arrays)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def ambient_dim(family: str, dim: int) -> int:
    """Length of the latent vector for the paper's ``d``: d + 1 on a sphere, d for the Gaussian."""
    if family not in FAMILIES:
        raise MolgenError(f"Unknown latent family {family!r}; choose one of {', '.join(FAMILIES)}.")
    if dim < 1:
        raise MolgenError(f"--dim must be at least 1, got {dim}.")
    return dim + 1 if family in SPHERICAL_FAMILIES else dim


def _sum_event(log_prob: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # A factorised distribution (e.g. a plain Normal) returns per-coordinate log densities.
    return log_prob.sum(-1) if log_prob.dim() == z.dim() else log_prob


class ImageVAE(nn.Module):
    """Convolutional VAE for 28x28 images with a ``molgen.latent`` head.

    Encoder: convs with 32/64/128 channels (28 -> 14 -> 7 -> 4) -> 256 features -> latent head.
    Decoder: linear -> 128x4x4 -> transposed convs (64, 32, 1 channels) -> 28x28 Bernoulli logits.

    Args:
        family: Latent family (``spcauchy``, ``vmf``, ``power`` or ``gaussian``).
        dim: The paper's d (intrinsic sphere dimension, or Gaussian dimension).
        hidden: Width of the encoder feature and decoder input layers.
    """

    def __init__(self, family: str, dim: int, hidden: int = 256) -> None:
        super().__init__()
        from molgen.latent import build_latent

        self.family = family
        self.dim = dim
        self.ambient_dim = ambient_dim(family, dim)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, hidden),
            nn.ReLU(),
        )
        self.head = build_latent(family, hidden, self.ambient_dim)
        self.decoder = nn.Sequential(
            nn.Linear(self.ambient_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 128 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
        )

    def encode(self, x: torch.Tensor) -> tuple[Any, Any]:
        """Posterior and prior distributions for images ``x`` of shape (B, 1, 28, 28) in [0, 1]."""
        return self.head(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits (B, 1, 28, 28) for latent vectors ``z`` of shape (B, ambient_dim)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One-sample ELBO terms per image: ``recon`` = -log p(x|z), ``kl``, ``logits``, ``z``."""
        from molgen.latent import kl_to_prior

        posterior, prior = self.encode(x)
        z = posterior.rsample()
        logits = self.decode(z)
        recon = bernoulli_nll(logits, x)
        kl = kl_to_prior(posterior, prior)
        return {"recon": recon, "kl": kl, "logits": logits, "z": z}


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: BCE-with-logits summed over all pixels, shape (B,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class MnistConfig:
    """Settings of one MNIST run (plain types so they go straight into results.json)."""

    latent: str = "spcauchy"
    dim: int = 2
    epochs: int = 10
    seed: int = 0
    batch_size: int = 128
    # At a constant 1e-3 (the s-vae default) AdamW moves all concentration weights of the shared
    # heads together and the spherical posteriors collapse onto the uniform prior within ~50 steps;
    # 3e-4 with a linear ramp over the first 250 steps kept z in use in every case measured
    # (BENCHMARKS_mnist.md). The objective is unchanged: KL weight 1 throughout.
    lr: float = 3e-4
    lr_warmup_steps: int = 250
    weight_decay: float = 1e-4
    # Clip only runaway steps (a concentration blowing up), not ordinary ones (norms ~10-100 here).
    grad_clip: float = 1000.0
    train_subset: int | None = None
    test_subset: int | None = None
    ll_samples: int = 500
    ll_images: int = 500
    hidden: int = 256
    device: str = "auto"
    data_dir: str | None = None
    out: str | None = None
    plots: bool = True
    progress: bool = True
    threads: int | None = None


@dataclass
class EpochStats:
    """Metrics after one epoch (per-image means, nats)."""

    epoch: int
    train_loss: float
    train_reconstruction: float
    train_kl: float
    test_reconstruction: float
    test_kl: float
    test_elbo: float
    mean_concentration: float
    lr: float
    seconds: float


@dataclass
class MnistResult:
    """What one MNIST run produced (also written as results.json)."""

    latent: str
    dim: int
    ambient_dim: int
    epochs: int
    seed: int
    test_reconstruction: float
    test_reconstruction_final: float
    best_epoch: int
    test_kl: float
    test_elbo: float
    test_log_likelihood: float | None
    collapsed: bool
    ll_samples: int
    ll_images: int
    concentration_name: str
    train_size: int
    test_size: int
    binarization: str
    device: str
    wall_seconds: float
    config: dict[str, Any]
    # "molgen" (this module); molgen.mnist_paper's results say "paper".
    protocol: str = "molgen"
    history: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def _subset(n_total: int, n: int | None, what: str) -> int:
    if n is None:
        return n_total
    if n < 1:
        raise MolgenError(f"--{what} must be at least 1, got {n}.")
    return min(n, n_total)


@torch.no_grad()
def evaluate(model: ImageVAE, images: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Test metrics on fixed binary images (N, 1, 28, 28): recon, KL, ELBO, mean concentration."""
    from molgen.latent import kl_to_prior

    model.eval()
    totals = {"recon": 0.0, "kl": 0.0, "conc": 0.0}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float()
        posterior, prior = model.encode(x)
        z = posterior.rsample()
        totals["recon"] += float(bernoulli_nll(model.decode(z), x).sum())
        totals["kl"] += float(kl_to_prior(posterior, prior).sum())
        totals["conc"] += float(model.head.concentration(posterior).sum())
    n = len(images)
    recon, kl = totals["recon"] / n, totals["kl"] / n
    return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "concentration": totals["conc"] / n}


@torch.no_grad()
def importance_log_likelihood(
    model: ImageVAE,
    images: torch.Tensor,
    n_samples: int = 500,
    chunk: int = 100,
    image_batch: int = 10,
    progress: bool = False,
) -> torch.Tensor:
    """Importance-sampled log p(x) per image with the posterior as proposal.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x),
    accumulated in float64 with logsumexp so that weights of e^-500 neither underflow nor overflow.

    Args:
        model: A trained VAE.
        images: Binary images (N, 1, 28, 28).
        n_samples: K, samples per image.
        chunk: Samples per image decoded at once (with ``image_batch``: bounds memory).
        image_batch: Images handled together.
        progress: Show a tqdm bar over images.

    Returns:
        Per-image estimates (N,), float64.
    """
    model.eval()
    out = []
    bar = tqdm(total=len(images), desc="log-likelihood", disable=not progress, leave=False)
    for first in range(0, len(images), image_batch):
        x = images[first : first + image_batch].float()
        b = len(x)
        posterior, prior = model.encode(x)
        terms = []
        for start in range(0, n_samples, chunk):
            k = min(chunk, n_samples - start)
            z = posterior.sample(torch.Size([k]))  # (k, b, D)
            log_q = _sum_event(posterior.log_prob(z), z).reshape(k, b)
            log_p = _sum_event(prior.log_prob(z), z).reshape(k, b)
            logits = model.decode(z.reshape(k * b, -1))
            log_px = -bernoulli_nll(logits, x.repeat(k, 1, 1, 1)).reshape(k, b)
            terms.append((log_px + log_p - log_q).double())
        out.append(torch.logsumexp(torch.cat(terms), 0) - math.log(n_samples))
        bar.update(b)
    bar.close()
    return torch.cat(out)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train_mnist(
    config: MnistConfig,
    data: MnistData | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> tuple[ImageVAE, MnistResult, dict[str, torch.Tensor]]:
    """Train one MNIST VAE and evaluate it; writes nothing (see :func:`run_mnist`).

    Args:
        config: The run's settings.
        data: Already loaded MNIST (else loaded from ``config.data_dir``).
        on_epoch: Called with each epoch's metrics (for printing).

    Returns:
        The trained model, its results, and the tensors the plots need (test images/labels).
    """
    if config.latent not in FAMILIES:
        raise MolgenError(
            f"Unknown latent family {config.latent!r}; choose one of {', '.join(FAMILIES)}."
        )
    if config.epochs < 1:
        raise MolgenError(f"--epochs must be at least 1, got {config.epochs}.")
    if config.batch_size < 1:
        raise MolgenError(f"--batch-size must be at least 1, got {config.batch_size}.")
    if config.lr <= 0:
        raise MolgenError(f"--lr must be positive, got {config.lr}.")
    if config.lr_warmup_steps < 0:
        raise MolgenError(f"--lr-warmup-steps must be >= 0, got {config.lr_warmup_steps}.")
    if config.ll_images < 0 or config.ll_samples < 1:
        raise MolgenError("--ll-images must be >= 0 and --ll-samples >= 1.")
    device = resolve_device(config.device)
    if config.threads is not None:
        if config.threads < 1:
            raise MolgenError(f"--threads must be at least 1, got {config.threads}.")
        torch.set_num_threads(config.threads)
    if data is None:
        data = load_mnist(Path(config.data_dir) if config.data_dir else None)
    t0 = time.perf_counter()

    n_train = _subset(len(data.train_images), config.train_subset, "train-subset")
    n_test = _subset(len(data.test_images), config.test_subset, "test-subset")
    # Grey levels in [0, 1] stay on the device; training batches are binarized on the fly.
    train_grey = torch.from_numpy(data.train_images[:n_train].copy()).to(device)
    test_grey = torch.from_numpy(data.test_images[:n_test].copy()).float().div_(255.0)
    test_gen = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
    test_bin = torch.bernoulli(test_grey, generator=test_gen).unsqueeze(1).to(device)
    test_labels = torch.from_numpy(data.test_labels[:n_test].astype(np.int64))

    _seed_everything(config.seed)
    model = ImageVAE(config.latent, config.dim, hidden=config.hidden).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    gen = torch.Generator(device=device).manual_seed(config.seed)

    history: list[EpochStats] = []
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    global_step = 0
    for epoch in range(1, config.epochs + 1):
        e0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n_train, generator=gen, device=device)
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{config.latent} d={config.dim} epoch {epoch}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for step in bar:
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            grey = train_grey[idx].float().div_(255.0).unsqueeze(1)
            x = torch.bernoulli(grey, generator=gen)
            out = model(x)
            loss = (out["recon"] + out["kl"]).mean()  # KL weight 1: the plain ELBO
            if not torch.isfinite(loss):
                raise MolgenError(
                    f"Training diverged (loss {float(loss)}) at epoch {epoch}, step {step}; "
                    "lower --lr or try another --seed."
                )
            if global_step < config.lr_warmup_steps:
                for group in opt.param_groups:
                    group["lr"] = config.lr * (global_step + 1) / config.lr_warmup_steps
            global_step += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            b = len(idx)
            sums["loss"] += float(loss.detach()) * b
            sums["recon"] += float(out["recon"].detach().sum())
            sums["kl"] += float(out["kl"].detach().sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.1f}")
        bar.close()
        test = evaluate(model, test_bin)
        sched.step(test["elbo"])
        stats = EpochStats(
            epoch=epoch,
            train_loss=sums["loss"] / n_train,
            train_reconstruction=sums["recon"] / n_train,
            train_kl=sums["kl"] / n_train,
            test_reconstruction=test["recon"],
            test_kl=test["kl"],
            test_elbo=test["elbo"],
            mean_concentration=test["concentration"],
            lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - e0,
        )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)

    ll: float | None = None
    n_ll = min(config.ll_images, n_test)
    if n_ll > 0:
        ll = float(
            importance_log_likelihood(
                model, test_bin[:n_ll], config.ll_samples, progress=config.progress
            ).mean()
        )
    best = min(history, key=lambda s: s.test_reconstruction)
    final = history[-1]
    result = MnistResult(
        latent=config.latent,
        dim=config.dim,
        ambient_dim=model.ambient_dim,
        epochs=config.epochs,
        seed=config.seed,
        test_reconstruction=best.test_reconstruction,
        test_reconstruction_final=final.test_reconstruction,
        best_epoch=best.epoch,
        test_kl=final.test_kl,
        test_elbo=final.test_elbo,
        test_log_likelihood=ll,
        collapsed=final.test_kl < COLLAPSE_KL,
        ll_samples=config.ll_samples,
        ll_images=n_ll,
        concentration_name=str(model.head.concentration_name),
        train_size=n_train,
        test_size=n_test,
        binarization="dynamic (train), fixed seed-0 draw (test)",
        device=str(device),
        wall_seconds=time.perf_counter() - t0,
        config=asdict(config),
        history=[asdict(s) for s in history],
    )
    return model, result, {"test_bin": test_bin, "test_labels": test_labels}


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def _grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    h, w = images.shape[-2:]
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = img
    return canvas


@torch.no_grad()
def plot_reconstructions(model: ImageVAE, images: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Originals (odd rows) above reconstructions from the posterior mode (even rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    x = images[:n].float()
    posterior, _ = model.encode(x)
    recon = torch.sigmoid(model.decode(model.head.mode(posterior))).cpu().numpy()[:, 0]
    orig = x.cpu().numpy()[:, 0]
    cols = 8
    rows = math.ceil(len(orig) / cols)
    stacked = []
    for r in range(rows):
        stacked.extend([orig[r * cols : (r + 1) * cols], recon[r * cols : (r + 1) * cols]])
    padded = [
        np.concatenate([s, np.ones((cols - len(s), 28, 28), np.float32)]) if len(s) < cols else s
        for s in stacked
    ]
    grid = _grid(np.concatenate(padded), 2 * rows, cols)
    fig, ax = plt.subplots(figsize=(cols * 0.8, 2 * rows * 0.8))
    ax.imshow(1.0 - grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(
        f"{model.family} d={model.dim}: originals (odd rows) / reconstructions (even rows)"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:  # an existing picture is replaced only when drawn
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_prior_samples(model: ImageVAE, path: Path, n: int = 64) -> Path:
    """Bernoulli means decoded from ``n`` prior samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    device = next(model.parameters()).device
    z = model.head.prior(device).sample(torch.Size([n])).reshape(n, -1)
    imgs = torch.sigmoid(model.decode(z)).cpu().numpy()[:, 0]
    cols = 8
    grid = _grid(imgs, math.ceil(n / cols), cols)
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(1.0 - grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{model.family} d={model.dim}: samples from the prior (Bernoulli means)")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # an existing picture is replaced only when drawn
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(history: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Reconstruction, KL and negative ELBO per epoch, train and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [
        ("reconstruction -log p(x|z)", "train_reconstruction", "test_reconstruction"),
        ("KL(q || prior)", "train_kl", "test_kl"),
        ("-ELBO", "train_loss", None),
    ]
    for ax, (name, tr, te) in zip(axes, panels, strict=True):
        ax.plot(ep, [h[tr] for h in history], "o-", label="train")
        test_vals = [h[te] for h in history] if te else [-h["test_elbo"] for h in history]
        ax.plot(ep, test_vals, "s-", label="test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nats per image")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # an existing picture is replaced only when drawn
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_sphere(
    model: ImageVAE, images: torch.Tensor, labels: torch.Tensor, path: Path, n: int = 5000
) -> Path:
    """3-D scatter of test-set posterior modes on S^2 coloured by digit (ambient dim 3 only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (model.head.spherical and model.ambient_dim == 3):
        raise MolgenError("The sphere plot needs a spherical latent with --dim 2 (ambient 3).")
    model.eval()
    modes = []
    for start in range(0, min(n, len(images)), 1000):
        posterior, _ = model.encode(images[start : min(start + 1000, n)].float())
        modes.append(model.head.mode(posterior).cpu())
    mu = torch.cat(modes).numpy()
    lab = labels[: len(mu)].numpy()
    fig = plt.figure(figsize=(7, 6.4))
    ax = fig.add_subplot(projection="3d")
    u, v = np.mgrid[0 : 2 * np.pi : 30j, 0 : np.pi : 15j]
    ax.plot_wireframe(
        np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", linewidth=0.4
    )
    sc = ax.scatter(mu[:, 0], mu[:, 1], mu[:, 2], c=lab, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    cbar = fig.colorbar(sc, ax=ax, ticks=range(10), shrink=0.7)
    cbar.set_label("digit")
    ax.set_box_aspect((1, 1, 1))
    ax.set_title(f"{model.family} d=2: test posterior modes on S^2 ({len(mu)} images)")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # an existing picture is replaced only when drawn
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


#: Files :func:`run_mnist` writes into its output folder.
OUTPUT_FILES = (
    "results.json",
    "reconstructions.png",
    "prior_samples.png",
    "training_curves.png",
    "latent_sphere.png",
)


def prepare_output_folder(out_text: str | None) -> Path | None:
    """Create and check a run's output folder before any work (a bad --out costs no training).

    Raises:
        MolgenError: the path is a file, cannot be created, or holds an unwritable output file.
    """
    out = Path(out_text) if out_text else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise MolgenError(f"--out {out} exists and is not a folder; choose another path.")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MolgenError(f"--out {out}: cannot create the folder ({exc.strerror}).") from None
        for name in OUTPUT_FILES:
            check_output_path(out / name, "--out")
    return out


def write_plots(
    model: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    history: list[dict[str, Any]],
    title: str,
    out: Path,
) -> dict[str, str]:
    """Reconstructions, prior samples, training curves and (on S^2) the sphere; role -> path.

    ``history`` rows need the keys :func:`plot_training_curves` reads (``test_elbo`` included).
    """
    files = {
        "reconstructions": str(plot_reconstructions(model, images, out / "reconstructions.png")),
        "prior_samples": str(plot_prior_samples(model, out / "prior_samples.png")),
        "training_curves": str(plot_training_curves(history, title, out / "training_curves.png")),
    }
    if model.head.spherical and model.ambient_dim == 3:
        files["latent_sphere"] = str(plot_sphere(model, images, labels, out / "latent_sphere.png"))
    return files


def run_mnist(
    config: MnistConfig,
    data: MnistData | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> MnistResult:
    """Train, evaluate, and write ``results.json`` and the PNGs to ``config.out`` (if set).

    Args:
        config: The run's settings; ``out`` is the output folder (created if needed).
        data: Already loaded MNIST (else loaded from ``config.data_dir``).
        on_epoch: Called with each epoch's metrics.

    Returns:
        The results; ``result.files`` maps each written file's role to its path.
    """
    out = prepare_output_folder(config.out)
    model, result, tensors = train_mnist(config, data, on_epoch)
    if out is None:
        return result
    if config.plots:
        title = f"MNIST {config.latent} d={config.dim} (ambient {model.ambient_dim})"
        result.files.update(
            write_plots(
                model, tensors["test_bin"], tensors["test_labels"], result.history, title, out
            )
        )
    result.files["results"] = str(out / "results.json")
    with atomic_output(out / "results.json") as handle:
        handle.write(json.dumps(asdict(result), indent=2) + "\n")
    return result


def format_result(result: MnistResult) -> str:
    """A small plain-text summary table of one run and where its files are."""
    ll = "skipped" if result.test_log_likelihood is None else f"{result.test_log_likelihood:.2f}"
    rows = [
        ("protocol", f"{result.protocol} (binarized MNIST, molgen's architecture)"),
        ("latent", f"{result.latent} (d={result.dim}, latent vector of {result.ambient_dim})"),
        ("data", f"{result.train_size} train / {result.test_size} test images, {result.device}"),
        (
            "test reconstruction (min)",
            f"{result.test_reconstruction:.2f} nats (epoch {result.best_epoch})",
        ),
        ("test reconstruction (final)", f"{result.test_reconstruction_final:.2f} nats"),
        ("test KL (final)", f"{result.test_kl:.2f} nats"),
        ("test ELBO (final)", f"{result.test_elbo:.2f} nats"),
        (
            "test log-likelihood",
            f"{ll} nats ({result.ll_samples} importance samples x {result.ll_images} images)",
        ),
        ("wall time", f"{result.wall_seconds:.1f} s"),
    ]
    if result.collapsed:
        rows.append(
            ("WARNING", f"posterior collapsed (test KL < {COLLAPSE_KL} nats): z is not used")
        )
    rows += [(f"file: {role}", path) for role, path in result.files.items()]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
