"""Sablica & Hornik's own MNIST protocol (``molgen mnist --protocol paper``).

``molgen.mnist`` (protocol "molgen") binarizes MNIST and uses its own architecture, so its numbers
are not comparable with the paper's table. This module repeats the protocol of the authors' code
(github.com/lsablica/SC-VAE, ``experiments/mnist``) with molgen's own distributions and KLs:

* Data: grey levels uint8 / 255 used directly as BCE targets (no binarization), train and test.
  The training order is the authors' ``DataLoader(shuffle=True, generator=seeded with the run
  seed)`` (see :class:`PaperShuffler`); the test set is all images in order, batches of 128.
* Model: conv encoder 28 -> 14 -> 7 -> 3 (1152 features) -> 128, a mean head and one second head
  per family (:data:`PAPER_HEADS`), MLP + transposed-conv decoder to 28x28 Bernoulli logits.
* Loss: BCE summed over the 784 pixels, averaged over the batch, + KL (weight 1), one draw.
* Optimiser: AdamW with torch's default weight decay (0.01); lr 3e-4 with a 200-step linear
  warm-up for d <= 3, 1e-4 without warm-up otherwise; ReduceLROnPlateau(min, 0.5, patience 5) on
  the test reconstruction. The authors' loop writes the lr before EVERY step (the base lr after
  the warm-up), which undoes the scheduler's cuts; ``reset_lr_every_step=True`` reproduces that.
* Selection: after every epoch the 10,000 test images are scored (one draw per image, mean of
  per-batch means); the epoch with the lowest test reconstruction is kept. At the end the kept
  and the last model are each scored again after re-seeding torch with the run seed. The kept
  model's numbers are the paper's; the last epoch's are reported too, since selecting on the
  test set flatters the result.

``d`` is the paper's: spherical latents live on S^d in R^(d+1), the Gaussian in R^d.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal
from tqdm.auto import tqdm

from molgen.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    VonMisesFisher,
)
from molgen.errors import MolgenError
from molgen.latent import kl_to_prior
from molgen.mnist import (
    COLLAPSE_KL,
    FAMILIES,
    MnistData,
    ambient_dim,
    bernoulli_nll,
    load_mnist,
    prepare_output_folder,
    resolve_device,
    write_plots,
)
from molgen.outputs import atomic_output

PROTOCOL = "paper"
PAPER_EPOCHS = 40
PAPER_BATCH_SIZE = 128
# The authors call AdamW(params, lr) without weight_decay: torch's default applies.
PAPER_WEIGHT_DECAY = 0.01
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 5
HIDDEN = 128
ENCODER_FEATURES = 128 * 3 * 3


def paper_lr(dim: int) -> float:
    """The authors' base learning rate for the paper's ``d``: 3e-4 for d <= 3, else 1e-4."""
    return 3e-4 if dim <= 3 else 1e-4


def paper_warmup_steps(dim: int) -> int:
    """Linear warm-up steps for the paper's ``d``: 200 for d <= 3, else none."""
    return 200 if dim <= 3 else 0


def lr_at_step(step: int, base_lr: float, warmup_steps: int) -> float:
    """The lr of global step ``step`` (1-based): ``base * step / warmup`` while warming up."""
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr


# ---------------------------------------------------------------------------------------------
# Heads: one entry per family
# ---------------------------------------------------------------------------------------------


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, p=2, dim=-1)


def _rho_logit_cap(dtype: torch.dtype) -> float:
    # The authors clamp rho at the largest float below 1 (nextafter(1, 0)); on the logit scale
    # that is log((1 - e) / e) with e = 2^-24 in float32. Above it no gradient flows, as theirs.
    e = torch.finfo(dtype).eps / 2
    return math.log1p(-e) - math.log(e)


def _spcauchy(loc: Tensor, second: Tensor) -> Distribution:
    logit = second.squeeze(-1)
    return SphericalCauchy(_unit(loc), rho_logit=logit.clamp_max(_rho_logit_cap(logit.dtype)))


def _vmf(loc: Tensor, second: Tensor) -> Distribution:
    return VonMisesFisher(_unit(loc), F.softplus(second.squeeze(-1)) + 1.0)


def _power(loc: Tensor, second: Tensor) -> Distribution:
    scale = F.softplus(second.squeeze(-1)) + torch.finfo(second.dtype).eps
    return PowerSpherical(_unit(loc), scale)


def _gaussian(loc: Tensor, logvar: Tensor) -> Distribution:
    # No clamp on the log-variance, as the authors (molgen's GaussianHead clamps log sigma).
    return Independent(Normal(loc, torch.exp(0.5 * logvar), validate_args=False), 1)


@dataclass(frozen=True)
class PaperHeadSpec:
    """How one family turns the two head outputs into a posterior.

    Attributes:
        spherical: z on the unit sphere (uniform prior) rather than in R^d (standard normal).
        second_width_is_ambient: The second head has one output per latent entry (the Gaussian's
            log-variances) instead of one concentration.
        bias_init: Value the second head's bias is filled with, or None for torch's default.
        concentration_name: Name of the logged concentration (None: not logged).
        posterior: ``(fc_mu output, fc_second output) -> posterior``.
    """

    spherical: bool
    second_width_is_ambient: bool
    bias_init: float | None
    concentration_name: str | None
    posterior: Callable[[Tensor, Tensor], Distribution]


#: The authors' heads. vMF reuses the spCauchy second head with its bias of 2.0: their vMF model
#: is built as the spCauchy model; power re-fills that bias with 0.0.
PAPER_HEADS: dict[str, PaperHeadSpec] = {
    "spcauchy": PaperHeadSpec(True, False, 2.0, "rho", _spcauchy),
    "vmf": PaperHeadSpec(True, False, 2.0, "kappa", _vmf),
    "power": PaperHeadSpec(True, False, 0.0, "scale", _power),
    "gaussian": PaperHeadSpec(False, True, None, None, _gaussian),
}


class PaperHead(nn.Module):
    """``fc_mu`` and ``fc_second`` on the 128 encoder features -> (posterior, prior).

    Offers what ``molgen.mnist``'s plots use of a latent head: ``spherical``, ``prior``, ``mode``.

    Args:
        family: A key of :data:`PAPER_HEADS`.
        ambient: Length of z.
        in_features: Encoder feature size.
    """

    def __init__(self, family: str, ambient: int, in_features: int = HIDDEN) -> None:
        super().__init__()
        self.spec = PAPER_HEADS[family]
        self.family = family
        self.dim = ambient
        self.spherical = self.spec.spherical
        self.concentration_name = self.spec.concentration_name
        self.fc_mu = nn.Linear(in_features, ambient)
        self.fc_second = nn.Linear(in_features, ambient if self.spec.second_width_is_ambient else 1)
        if self.spec.bias_init is not None:
            with torch.no_grad():
                self.fc_second.bias.fill_(self.spec.bias_init)

    def forward(self, h: Tensor) -> tuple[Distribution, Distribution]:
        """(posterior with batch shape ``h.shape[:-1]``, prior) for features ``h``."""
        posterior = self.spec.posterior(self.fc_mu(h), self.fc_second(h))
        return posterior, self.prior(h.device, h.dtype)

    def prior(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Distribution:
        """Uniform on the sphere, or the standard normal for the Gaussian."""
        if self.spherical:
            return HypersphericalUniform(self.dim, device=device, dtype=dtype)
        zeros = torch.zeros(self.dim, device=device, dtype=dtype or torch.get_default_dtype())
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def mode(self, posterior: Distribution) -> Tensor:
        """The point decoded for pictures: the mean direction, or the Gaussian mean."""
        return posterior.loc if self.spherical else posterior.mean  # type: ignore[attr-defined]

    def concentration(self, posterior: Distribution) -> Tensor | None:
        """rho, kappa or the power scale per image; None for the Gaussian."""
        if not self.spherical:
            return None
        if isinstance(posterior, SphericalCauchy):
            return posterior.rho
        return posterior.scale  # type: ignore[attr-defined]


class PaperImageVAE(nn.Module):
    """The authors' MNIST VAE with a molgen distribution per family.

    Modules are created in the authors' order (encoder, mean head, second head, decoder), so the
    same torch seed gives the same initial weights as their code.

    Args:
        family: ``spcauchy``, ``vmf``, ``power`` or ``gaussian``.
        dim: The paper's d (sphere S^d in R^(d+1), or R^d for the Gaussian).
    """

    def __init__(self, family: str, dim: int) -> None:
        super().__init__()
        self.family = family
        self.dim = dim
        self.ambient_dim = ambient_dim(family, dim)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(ENCODER_FEATURES, HIDDEN),
            nn.ReLU(),
        )
        self.head = PaperHead(family, self.ambient_dim)
        # The authors end in a sigmoid and use BCE on probabilities; logits + BCE-with-logits is
        # the same loss without the sigmoid's rounding near 0 and 1 (and torch's log clamp).
        self.decoder = nn.Sequential(
            nn.Linear(self.ambient_dim, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 128 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 3, stride=1, padding=1),
        )

    def encode(self, x: Tensor) -> tuple[Distribution, Distribution]:
        """(posterior, prior) for images ``x`` of shape (B, 1, 28, 28) in [0, 1]."""
        return self.head(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits (B, 1, 28, 28) for ``z`` of shape (B, ambient_dim)."""
        return self.decoder(z)


def elbo_terms(model: PaperImageVAE, x: Tensor) -> tuple[Tensor, Tensor, Distribution]:
    """Per image: -log p(x|z) for one reparameterized z ~ q(z|x), KL(q || prior), and q."""
    posterior, prior = model.encode(x)
    recon = bernoulli_nll(model.decode(posterior.rsample()), x)
    return recon, kl_to_prior(posterior, prior), posterior


def grey(images_u8: Tensor) -> Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) grey levels / 255, as torchvision's ToTensor."""
    return images_u8.float().div_(255.0).unsqueeze(1)


@torch.no_grad()
def evaluate_paper(
    model: PaperImageVAE, images_u8: Tensor, batch_size: int = PAPER_BATCH_SIZE
) -> dict[str, Any]:
    """Score images in order: one draw per image, the MEAN OF PER-BATCH MEANS (as the authors).

    With a short last batch this weights its images more than an image mean would.

    Args:
        model: The VAE.
        images_u8: uint8 images (N, 28, 28), on the model's device.
        batch_size: Images per batch (the paper's 128).

    Returns:
        ``recon``, ``kl``, ``neg_elbo`` (= recon + kl), ``concentration`` (mean over images, None
        for the Gaussian) and ``batches``.
    """
    model.eval()
    sums = {"recon": 0.0, "kl": 0.0}
    conc: list[Tensor] = []
    n_batches = 0
    for start in range(0, len(images_u8), batch_size):
        recon, kl, posterior = elbo_terms(model, grey(images_u8[start : start + batch_size]))
        if not (torch.isfinite(recon).all() and torch.isfinite(kl).all()):
            raise MolgenError("Non-finite test loss; the model diverged (try another --seed).")
        sums["recon"] += float(recon.mean())
        sums["kl"] += float(kl.mean())
        c = model.head.concentration(posterior)
        if c is not None:
            conc.append(c.reshape(-1).double().cpu())
        n_batches += 1
    recon_m, kl_m = sums["recon"] / n_batches, sums["kl"] / n_batches
    return {
        "recon": recon_m,
        "kl": kl_m,
        "neg_elbo": recon_m + kl_m,
        "concentration": float(torch.cat(conc).mean()) if conc else None,
        "batches": n_batches,
    }


def paper_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW with torch's default weight decay, as the authors' ``AdamW(params, lr)``."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=PAPER_WEIGHT_DECAY)


class PaperShuffler:
    """Training order of the authors' loader: ``DataLoader(shuffle=True, generator=g)``, g seeded.

    Their loader (4 persistent workers) draws one base seed from ``g`` when its iterator is first
    made, then ``RandomSampler`` draws ``randperm(n)`` for the epoch and, on exhausting it, one
    more (empty) ``randperm(n)``. Making the same draws gives the same order in every epoch.

    Args:
        n: Training images.
        seed: The run seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)

    def epoch(self) -> Tensor:
        """Indices of the next epoch (CPU, int64)."""
        order = torch.randperm(self.n, generator=self.generator)
        torch.randperm(self.n, generator=self.generator)  # the sampler's empty remainder
        return order


class BestCheckpoint:
    """The state of the epoch with the lowest test reconstruction (the first such epoch)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.recon = math.inf
        self.state: dict[str, Tensor] | None = None

    def update(self, epoch: int, recon: float, model: nn.Module) -> bool:
        """Keep a copy of ``model``'s state if ``recon`` is a new minimum; True if kept."""
        if recon < self.recon:
            self.epoch, self.recon = epoch, recon
            self.state = copy.deepcopy(model.state_dict())
            return True
        return False


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class PaperMnistConfig:
    """Settings of one paper-protocol run (plain types, written into results.json).

    ``batch_size``, ``lr`` and ``lr_warmup_steps`` default to the paper's (None); a value set
    here is a departure from the protocol and is listed under ``overrides`` in the results.
    """

    latent: str = "spcauchy"
    dim: int = 2
    epochs: int = PAPER_EPOCHS
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    lr_warmup_steps: int | None = None
    # True: the authors' loop (lr written before every step, so ReduceLROnPlateau never acts).
    reset_lr_every_step: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    out: str | None = None
    plots: bool = True
    progress: bool = True
    threads: int | None = None


@dataclass
class PaperEpochStats:
    """Metrics after one epoch (train: mean of per-batch means over the epoch's batches)."""

    epoch: int
    train_loss: float
    train_reconstruction: float
    train_kl: float
    test_reconstruction: float
    test_kl: float
    test_neg_elbo: float
    mean_concentration: float | None
    lr: float
    scheduler_lr: float
    seconds: float


@dataclass
class PaperMnistResult:
    """What one paper-protocol run produced (also written as results.json).

    ``selected_*``: the kept epoch re-scored after re-seeding (the paper's numbers); ``last_*``:
    the last epoch, re-scored the same way.
    """

    latent: str
    dim: int
    ambient_dim: int
    epochs: int
    seed: int
    best_epoch: int
    selected_reconstruction: float
    selected_kl: float
    selected_neg_elbo: float
    last_reconstruction: float
    last_kl: float
    last_neg_elbo: float
    collapsed: bool
    concentration_name: str | None
    batch_size: int
    lr: float
    lr_warmup_steps: int
    weight_decay: float
    reset_lr_every_step: bool
    train_size: int
    test_size: int
    device: str
    wall_seconds: float
    config: dict[str, Any]
    protocol: str = PROTOCOL
    overrides: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def _seed_all(seed: int) -> None:
    # The authors' set_global_seed (Python, numpy and torch, CUDA included).
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _subset(n_total: int, n: int | None, what: str) -> int:
    if n is None:
        return n_total
    if n < 1:
        raise MolgenError(f"--{what} must be at least 1, got {n}.")
    return min(n, n_total)


def _check(config: PaperMnistConfig) -> None:
    if config.latent not in FAMILIES:
        raise MolgenError(
            f"Unknown latent family {config.latent!r}; choose one of {', '.join(FAMILIES)}."
        )
    ambient_dim(config.latent, config.dim)  # checks dim >= 1
    if config.epochs < 1:
        raise MolgenError(f"--epochs must be at least 1, got {config.epochs}.")
    if config.batch_size is not None and config.batch_size < 1:
        raise MolgenError(f"batch_size must be at least 1, got {config.batch_size}.")
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        raise MolgenError(f"lr must be a positive number, got {config.lr}.")
    if config.lr_warmup_steps is not None and config.lr_warmup_steps < 0:
        raise MolgenError(f"lr_warmup_steps must be >= 0, got {config.lr_warmup_steps}.")
    if config.threads is not None and config.threads < 1:
        raise MolgenError(f"--threads must be at least 1, got {config.threads}.")


def train_paper(
    config: PaperMnistConfig,
    data: MnistData | None = None,
    on_epoch: Callable[[PaperEpochStats], None] | None = None,
) -> tuple[PaperImageVAE, PaperMnistResult, dict[str, Tensor]]:
    """Train and score one VAE under the paper's protocol; writes nothing (see :func:`run_paper`).

    Args:
        config: The run's settings.
        data: Already loaded MNIST (else loaded from ``config.data_dir``).
        on_epoch: Called with each epoch's metrics.

    Returns:
        The last-epoch model, the results, and the tensors the plots need (test grey images and
        labels).

    Raises:
        MolgenError: Bad settings, missing data, or a non-finite loss or gradient.
    """
    _check(config)
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if data is None:
        data = load_mnist(Path(config.data_dir) if config.data_dir else None)
    t0 = time.perf_counter()
    batch_size = config.batch_size if config.batch_size is not None else PAPER_BATCH_SIZE
    base_lr = config.lr if config.lr is not None else paper_lr(config.dim)
    warmup = (
        config.lr_warmup_steps
        if config.lr_warmup_steps is not None
        else paper_warmup_steps(config.dim)
    )
    overrides = {
        k: getattr(config, k)
        for k in ("batch_size", "lr", "lr_warmup_steps")
        if getattr(config, k) is not None
    }
    if not config.reset_lr_every_step:
        overrides["reset_lr_every_step"] = False

    n_train = _subset(len(data.train_images), config.train_subset, "train-subset")
    n_test = _subset(len(data.test_images), config.test_subset, "test-subset")
    train_u8 = torch.from_numpy(data.train_images[:n_train].copy()).to(device)
    test_u8 = torch.from_numpy(data.test_images[:n_test].copy()).to(device)
    test_labels = torch.from_numpy(data.test_labels[:n_test].astype(np.int64))

    _seed_all(config.seed)
    if device.type == "cuda":  # the authors' settings on a GPU
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    model = PaperImageVAE(config.latent, config.dim).to(device)
    opt = paper_optimizer(model, base_lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
    )
    shuffler = PaperShuffler(n_train, config.seed)
    best = BestCheckpoint()
    params = list(model.parameters())
    history: list[PaperEpochStats] = []
    n_steps = math.ceil(n_train / batch_size)
    global_step = 0
    for epoch in range(1, config.epochs + 1):
        e0 = time.perf_counter()
        model.train()
        order = shuffler.epoch().to(device)
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        bar = tqdm(
            range(n_steps),
            desc=f"{config.latent} d={config.dim} epoch {epoch}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for step in bar:
            global_step += 1
            if config.reset_lr_every_step or global_step <= warmup:
                for group in opt.param_groups:
                    group["lr"] = lr_at_step(global_step, base_lr, warmup)
            x = grey(train_u8[order[step * batch_size : (step + 1) * batch_size]])
            opt.zero_grad(set_to_none=True)
            recon, kl, _ = elbo_terms(model, x)
            recon_m, kl_m = recon.mean(), kl.mean()
            loss = recon_m + kl_m
            if not torch.isfinite(loss):
                raise MolgenError(
                    f"Non-finite training loss at epoch {epoch}, step {global_step}; "
                    "the run diverged (try another --seed)."
                )
            loss.backward()
            # max_norm=inf: the total norm only, to catch non-finite gradients (no clipping).
            norm = nn.utils.clip_grad_norm_(params, float("inf"))
            if not torch.isfinite(norm):
                raise MolgenError(
                    f"Non-finite gradient at epoch {epoch}, step {global_step}; "
                    "the run diverged (try another --seed)."
                )
            opt.step()
            sums["loss"] += float(loss.detach())
            sums["recon"] += float(recon_m.detach())
            sums["kl"] += float(kl_m.detach())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.1f}")
        bar.close()
        test = evaluate_paper(model, test_u8)
        lr_used = float(opt.param_groups[0]["lr"])
        sched.step(test["recon"])
        best.update(epoch, test["recon"], model)
        stats = PaperEpochStats(
            epoch=epoch,
            train_loss=sums["loss"] / n_steps,
            train_reconstruction=sums["recon"] / n_steps,
            train_kl=sums["kl"] / n_steps,
            test_reconstruction=test["recon"],
            test_kl=test["kl"],
            test_neg_elbo=test["neg_elbo"],
            mean_concentration=test["concentration"],
            lr=lr_used,
            scheduler_lr=float(opt.param_groups[0]["lr"]),
            seconds=time.perf_counter() - e0,
        )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)

    # The authors' evaluate.py: re-seed, score the kept checkpoint; re-seed, score the last one.
    assert best.state is not None  # epochs >= 1 and finite test losses
    selected_model = copy.deepcopy(model)
    selected_model.load_state_dict(best.state)
    _seed_all(config.seed)
    selected = evaluate_paper(selected_model, test_u8)
    _seed_all(config.seed)
    last = evaluate_paper(model, test_u8)
    result = PaperMnistResult(
        latent=config.latent,
        dim=config.dim,
        ambient_dim=model.ambient_dim,
        epochs=config.epochs,
        seed=config.seed,
        best_epoch=best.epoch,
        selected_reconstruction=selected["recon"],
        selected_kl=selected["kl"],
        selected_neg_elbo=selected["neg_elbo"],
        last_reconstruction=last["recon"],
        last_kl=last["kl"],
        last_neg_elbo=last["neg_elbo"],
        collapsed=last["kl"] < COLLAPSE_KL,
        concentration_name=model.head.concentration_name,
        batch_size=batch_size,
        lr=base_lr,
        lr_warmup_steps=warmup,
        weight_decay=PAPER_WEIGHT_DECAY,
        reset_lr_every_step=config.reset_lr_every_step,
        train_size=n_train,
        test_size=n_test,
        device=str(device),
        wall_seconds=time.perf_counter() - t0,
        config=asdict(config),
        overrides=overrides,
        history=[asdict(s) for s in history],
    )
    return model, result, {"test_grey": grey(test_u8), "test_labels": test_labels}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def run_paper(
    config: PaperMnistConfig,
    data: MnistData | None = None,
    on_epoch: Callable[[PaperEpochStats], None] | None = None,
) -> PaperMnistResult:
    """Train, score, and write ``results.json`` and the PNGs to ``config.out`` (if set).

    Args:
        config: The run's settings; ``out`` is the output folder (created if needed).
        data: Already loaded MNIST (else loaded from ``config.data_dir``).
        on_epoch: Called with each epoch's metrics.

    Returns:
        The results; ``result.files`` maps each written file's role to its path.
    """
    out = prepare_output_folder(config.out)
    model, result, tensors = train_paper(config, data, on_epoch)
    if out is None:
        return result
    if config.plots:
        title = (
            f"MNIST (protocol paper) {config.latent} d={config.dim} (ambient {model.ambient_dim})"
        )
        # molgen.mnist's curve plot draws the test ELBO (negative); ours is stored as -ELBO.
        curves = [{**h, "test_elbo": -h["test_neg_elbo"]} for h in result.history]
        result.files.update(
            write_plots(model, tensors["test_grey"], tensors["test_labels"], curves, title, out)
        )
    result.files["results"] = str(out / "results.json")
    with atomic_output(out / "results.json") as handle:
        handle.write(json.dumps(asdict(result), indent=2) + "\n")
    return result


def format_paper_result(result: PaperMnistResult) -> str:
    """A small plain-text summary of one paper-protocol run and where its files are."""
    rows = [
        ("protocol", f"{result.protocol} (Sablica & Hornik's MNIST code)"),
        ("latent", f"{result.latent} (d={result.dim}, latent vector of {result.ambient_dim})"),
        ("data", f"{result.train_size} train / {result.test_size} test images, {result.device}"),
        (
            "optimiser",
            f"AdamW lr {result.lr:g} (warm-up {result.lr_warmup_steps} steps), weight decay "
            f"{result.weight_decay:g}, batch {result.batch_size}, {result.epochs} epochs",
        ),
        (
            f"selected epoch {result.best_epoch}",
            f"recon {result.selected_reconstruction:.2f}  KL {result.selected_kl:.2f}  "
            f"-ELBO {result.selected_neg_elbo:.2f} nats (the paper's numbers)",
        ),
        (
            f"last epoch {result.epochs}",
            f"recon {result.last_reconstruction:.2f}  KL {result.last_kl:.2f}  "
            f"-ELBO {result.last_neg_elbo:.2f} nats",
        ),
        ("wall time", f"{result.wall_seconds:.1f} s"),
    ]
    if result.overrides:
        rows.append(("overrides", ", ".join(f"{k}={v}" for k, v in result.overrides.items())))
    if result.collapsed:
        rows.append(("WARNING", f"posterior collapsed (test KL < {COLLAPSE_KL} nats)"))
    rows += [(f"file: {role}", path) for role, path in result.files.items()]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
