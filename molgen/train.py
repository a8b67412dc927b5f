"""Training the molecule VAE with PyTorch Lightning (``molgen train``).

Lightning does the loop: progress bar, checkpoints and resume, gradient clipping, time limits, CSV
metrics, early stopping, and scale-out (DDP on several devices or nodes). This module adds only
what is specific to molgen: the data step, the KL schedule defined in optimizer steps (an
epoch-based schedule does nothing under a time budget), presets, the model file and the
training-curve picture.
"""

from __future__ import annotations

import ctypes
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from molgen.batching import BucketBatchSampler, TokenDataset, encode_smiles, passthrough
from molgen.data import DATA_DIR, DataConfig, PreparedData, prepare_dataset
from molgen.errors import MolgenError
from molgen.model import ModelConfig, MoleculeVAE, model_file_dict
from molgen.schedule import BudgetSchedule
from molgen.tokenizer import Vocabulary, get_tokenizer

RUN_CONFIG = "run_config.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainConfig:
    """Optimisation settings (plain types; stored in the run directory and the model file).

    Attributes:
        epochs: Maximum epochs.
        max_steps: Maximum optimizer steps (-1: no limit).
        max_time: Wall-time limit like ``"1h"``, ``"30m"``, ``"90s"`` or ``"DD:HH:MM:SS"``.
        batch_size: Molecules per batch (per device).
        lr: Adam learning rate.
        seed: Seed for the split, initialisation, shuffling and sampling in training.
        beta_max: Final KL weight.
        beta_warmup_steps: Steps with KL weight 0 at the start.
        beta_ramp_steps: Steps of the linear ramp from 0 to ``beta_max`` after the warm-up.
        word_dropout: Probability of replacing a decoder input token by ``unk``.
        grad_clip: Gradient-norm clipping value (0: off).
        val_every_steps: Validate (and checkpoint) every this many steps, or each epoch if sooner.
        val_batches: Validation batches per check (keeps checks cheap on big sets).
        early_stopping_patience: Validation checks without improvement before stopping (0: off).
        accelerator: Lightning accelerator (auto, cpu, gpu).
        devices: Devices per node (int or "auto").
        num_nodes: Number of nodes.
        strategy: Lightning strategy (auto, ddp).
        precision: Lightning precision (e.g. "32-true", "bf16-mixed" on GPUs).
        tune_malloc: Keep freed memory in the process (glibc) instead of returning it every step.
        lr_schedule: ``constant`` or ``cosine`` (decays to ``lr_final_ratio`` x ``lr`` at the end
            of the budget: ``max_steps``, ``epochs`` or ``max_time``, whichever comes first).
        lr_warmup_steps: Linear learning-rate warm-up steps.
        lr_final_ratio: Learning-rate multiplier at the end of a cosine schedule.
        beta_budget_fraction: If > 0, the KL ramp also ends by this fraction of the budget (so it
            never outlasts a short run); the weight is the larger of the step and budget ramps.
        bucket_batches: Batches per length-sorted chunk (0: plain random batches).
        threads: CPU threads for torch (0: chosen from the cores not busy when training starts).
        validity_samples: Prior samples decoded at each validation to log ``val_validity``
            (0: off).
        min_validity: Checkpoint choice: a validation whose ``val_validity`` is below this pays
            1,000 nats per missing unit in ``val_select`` (the monitored score), so the exported
            model is the best-fitting one that still samples valid molecules.
        export: Which weights become ``model.pt``: ``last`` or ``best`` (lowest ``val_select``).
    """

    epochs: int = 10
    max_steps: int = -1
    max_time: str | None = None
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    beta_max: float = 0.5
    beta_warmup_steps: int = 500
    beta_ramp_steps: int = 5000
    word_dropout: float = 0.0
    grad_clip: float = 5.0
    val_every_steps: int = 1000
    val_batches: int = 20
    early_stopping_patience: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    tune_malloc: bool = True
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_final_ratio: float = 0.05
    beta_budget_fraction: float = 0.0
    bucket_batches: int = 0
    threads: int = 0
    validity_samples: int = 0
    min_validity: float = 0.0
    export: str = "last"

    def beta(self, step: int, progress: float = 0.0) -> float:
        """KL weight: 0 for the warm-up, then a linear ramp to ``beta_max``.

        Args:
            step: Optimizer steps done.
            progress: Fraction of the budget used (see :mod:`molgen.schedule`); with
                ``beta_budget_fraction`` the ramp also runs from 10 % to 100 % of that fraction.
        """
        if step < self.beta_warmup_steps:
            by_step = 0.0
        elif self.beta_ramp_steps <= 0:
            by_step = self.beta_max
        else:
            by_step = self.beta_max * min(
                1.0, (step - self.beta_warmup_steps) / self.beta_ramp_steps
            )
        f = self.beta_budget_fraction
        if f <= 0:
            return by_step
        by_budget = self.beta_max * min(1.0, max(0.0, (progress - 0.1 * f) / (0.9 * f)))
        return max(by_step, by_budget)


@dataclass
class Preset:
    """A named starting point; explicit options override its values."""

    model: dict[str, Any]
    train: dict[str, Any]
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model=dict(embedding_dim=16, encoder_hidden=32, decoder_hidden=64, latent_dim=8),
        train=dict(
            epochs=2,
            batch_size=32,
            lr=3e-3,
            beta_warmup_steps=10,
            beta_ramp_steps=20,
            val_every_steps=8,
            val_batches=5,
        ),
        description="tests and smoke runs: trains in seconds",
    ),
    "small": Preset(
        model=dict(
            embedding_dim=64,
            encoder_hidden=256,
            decoder_hidden=512,
            decoder_layers=1,
            latent_dim=64,
        ),
        train=dict(
            epochs=100,
            max_time="1h",
            batch_size=128,
            lr=1e-3,
            # 11,638 steps fit in an hour on 2 idle cores (3,000-5,000 under load): the ramp
            # must end well inside that.
            beta_warmup_steps=250,
            beta_ramp_steps=2000,
            # At 0.5 the KL fell to ~15 nats by step 1,200 (token accuracy 0.83): too little
            # in z for exact reconstruction or close analogues. MOSES's VAE ends at 0.05.
            beta_max=0.1,
            val_every_steps=250,
            # Budget-aware recipe (BENCHMARKS_time_to_quality.md): length-bucketed batches, a
            # cosine learning rate that ends with the budget, and a KL ramp that ends by half of
            # the budget at the latest (a 10-minute run on a small file still reaches beta_max).
            lr_schedule="cosine",
            lr_warmup_steps=100,
            bucket_batches=50,
            beta_budget_fraction=0.5,
        ),
        description="a useful model on 2 CPU cores in about an hour",
    ),
    "finetune": Preset(
        # Sizes come from the parent (molgen train DATA --from MODEL); the KL weight starts at the
        # parent's final value (read from the parent file), so there is no warm-up.
        model=dict(),
        train=dict(
            epochs=200,
            max_time="10m",
            batch_size=64,
            lr=2e-4,
            lr_schedule="cosine",
            lr_warmup_steps=50,
            beta_warmup_steps=0,
            beta_ramp_steps=0,
            val_every_steps=50,
            val_batches=10,
            early_stopping_patience=8,
            bucket_batches=20,
            validity_samples=256,
            min_validity=0.8,
            export="best",
        ),
        description="fine-tuning a parent model on a small file (chosen by --from)",
    ),
    "moses": Preset(
        model=dict(
            embedding_dim=64,
            encoder_hidden=256,
            decoder_hidden=512,
            decoder_layers=3,
            latent_dim=128,
            dropout=0.1,
        ),
        train=dict(
            epochs=80,
            batch_size=512,
            lr=5e-4,
            beta_warmup_steps=2000,
            beta_ramp_steps=40000,
            beta_max=0.5,
            val_every_steps=2000,
            val_batches=50,
        ),
        description="MOSES-VAE scale (GRU 512 x 3 decoder, latent 128), for a GPU",
    ),
}


@dataclass
class RunConfig:
    """Everything needed to (re)start a run; written to ``RUN_DIR/run_config.json``."""

    data_path: str
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    preset: str = "small"
    parent: str | None = None
    init_scheme: str = "mean"


def resolve_configs(
    preset: str, model_overrides: dict[str, Any], train_overrides: dict[str, Any]
) -> tuple[dict[str, Any], TrainConfig]:
    """Merge a preset with explicit options (None values mean "not given").

    Returns:
        (model settings without vocab_size, TrainConfig).
    """
    if preset not in PRESETS:
        raise MolgenError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    p = PRESETS[preset]
    model = {**p.model, **{k: v for k, v in model_overrides.items() if v is not None}}
    known_model = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    unknown = set(model) - known_model
    if unknown:
        raise MolgenError(f"unknown model settings: {', '.join(sorted(unknown))}.")
    train_values = {**p.train, **{k: v for k, v in train_overrides.items() if v is not None}}
    return model, TrainConfig(**train_values)


def parse_max_time(value: str | None) -> timedelta | None:
    """Parse ``"90s"``, ``"30m"``, ``"1.5h"``, ``"2d"`` or Lightning's ``"DD:HH:MM:SS"``."""
    if value is None or value == "":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return timedelta(**{unit: float(m.group(1))})
    parts = value.split(":")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        d, h, mi, s = (int(p) for p in parts)
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise MolgenError(f"cannot read --max-time {value!r}; use e.g. 90s, 30m, 1h or DD:HH:MM:SS.")


def tune_malloc() -> bool:
    """Stop glibc from returning freed memory to the OS after every step.

    Measured on the project's CPU machines: the default allocator page-faults millions of times per
    step for GRU models of MOSES size; keeping memory (no mmap for big blocks, high trim threshold)
    roughly doubles training speed. Harmless elsewhere; returns False where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
        ok &= libc.mallopt(m_top_pad, 2**30) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


# ---- the Lightning module ------------------------------------------------------------------------
class VAEModule(pl.LightningModule):
    """Lightning wrapper: the KL schedule, logging, and the optimizer."""

    def __init__(
        self,
        model_config: dict[str, Any],
        train_config: dict[str, Any],
        vocab_tokens: list[str] | None = None,
        tokenizer_kind: str = "smiles",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_config = TrainConfig(**train_config)
        self.vae = MoleculeVAE(ModelConfig.from_dict(model_config))
        self.vocab_tokens = vocab_tokens
        self.tokenizer_kind = tokenizer_kind
        self.progress = 0.0  # fraction of the budget used; set by BudgetSchedule

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Loss at the scheduled KL weight; logs every term."""
        tokens, lengths = batch
        beta = self.train_config.beta(self.global_step, self.progress)
        out = self.vae(tokens, lengths, beta=beta, word_dropout=self.train_config.word_dropout)
        bs = tokens.shape[0]
        self.log("train_loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train_reconstruction", out["reconstruction"], batch_size=bs)
        self.log("train_kl", out["kl"], prog_bar=True, batch_size=bs)
        self.log("train_concentration", out["concentration"], batch_size=bs)
        self.log("train_token_accuracy", out["token_accuracy"], batch_size=bs)
        self.log("beta", beta, batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Validation loss at the final KL weight."""
        tokens, lengths = batch
        # Judge every check by the final objective, so early stopping is not fooled by the ramp.
        out = self.vae(tokens, lengths, beta=self.train_config.beta_max)
        bs = tokens.shape[0]
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_reconstruction", out["reconstruction"], batch_size=bs, sync_dist=True)
        self.log("val_kl", out["kl"], batch_size=bs, sync_dist=True)
        self.log("val_token_accuracy", out["token_accuracy"], batch_size=bs, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log ``val_validity`` (single-pass prior samples) and the checkpoint score."""
        tc = self.train_config
        loss = self.trainer.callback_metrics.get("val_loss")
        if loss is None:
            return
        select = float(loss)
        if tc.validity_samples > 0 and self.vocab_tokens:
            validity = self.prior_validity(tc.validity_samples)
            self.log("val_validity", validity, sync_dist=True)
            select += 1000.0 * max(0.0, tc.min_validity - validity)
        self.log("val_select", select, sync_dist=True)

    @torch.no_grad()
    def prior_validity(self, n: int) -> float:
        """Share of ``n`` prior samples (temperature 1, one pass) that RDKit parses."""
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        tokens = self.vocab_tokens or []
        vocab = Vocabulary(tokens)
        tokenizer = get_tokenizer(self.tokenizer_kind)
        was_training = self.vae.training
        self.vae.eval()
        # The same codes at every check, and the training random stream left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            z = self.vae.latent.prior(device=self.device).sample((n,))
            ids = self.vae.generate(z, temperature=1.0)
        self.vae.train(was_training)
        valid = 0
        for row in ids:
            try:
                text = tokenizer.detokenize(vocab.decode(row))
            except Exception:  # a SELFIES decoder may reject garbage: invalid
                continue
            valid += bool(text) and Chem.MolFromSmiles(text) is not None
        return valid / max(n, 1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam at the configured learning rate."""
        return torch.optim.Adam(self.parameters(), lr=self.train_config.lr)


class SaveAtEnd(pl.Callback):
    """Checkpoint the final state however training stopped (steps, time, epochs, early stop).

    ``--resume`` then continues exactly where the run ended, e.g. with a larger ``--max-steps``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the final checkpoint."""
        trainer.save_checkpoint(self.path)


class TrainingClock(pl.Callback):
    """Training wall time summed over every (re)start.

    Its state travels in the checkpoints, so a run continued with ``--resume`` reports its whole
    training time, not only the last start's.
    """

    def __init__(self) -> None:
        self.before_s = 0.0
        self._started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start this (re)start's clock."""
        self._started = time.time()

    def elapsed_s(self) -> float:
        """Seconds of training so far, earlier starts included."""
        now = time.time() - self._started if self._started is not None else 0.0
        return self.before_s + now

    def state_dict(self) -> dict[str, float]:
        """Saved into every checkpoint."""
        return {"elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restored on resume (checkpoints written before this callback existed have none)."""
        self.before_s = float(state_dict.get("elapsed_s", 0.0))


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Where a finished run put its files, and its summary."""

    run_dir: Path
    model_path: Path
    metrics_path: Path
    curves_path: Path | None
    summary: dict[str, Any]


def _checkpoint_position(path: Path) -> tuple[int, int]:
    """(optimizer step, epoch) stored in a checkpoint of our own run."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own run's checkpoint
    return int(state.get("global_step", 0)), int(state.get("epoch", 0))


def _last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most optimizer steps (ties: the newest file)."""
    ckpts = list((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: (_checkpoint_position(p)[0], p.stat().st_mtime))


def load_run_config(run_dir: Path) -> RunConfig:
    """Read ``RUN_DIR/run_config.json`` (written when the run started)."""
    path = run_dir / RUN_CONFIG
    if not path.exists():
        raise MolgenError(f"{run_dir} has no {RUN_CONFIG}: it is not a molgen run directory.")
    return RunConfig(**json.loads(path.read_text()))


# Files `train` writes into the run directory; a folder holding them that is not a run is refused.
_RUN_OUTPUTS = ("model.pt", "metrics.csv", "training_curves.png")


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start a run where it would overwrite something that is not a molgen run.

    Raises:
        MolgenError: resuming a folder with nothing to resume, starting over an existing run, or
            a non-run folder that holds files with the names a run writes.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MolgenError(f"--out {run_dir} is a file; give a folder for the run.")
    if resume:
        if _last_checkpoint(run_dir) is None:
            raise MolgenError(f"nothing to resume in {run_dir}: it has no checkpoints.")
        return
    ckpts = run_dir / CHECKPOINT_DIR
    if ckpts.exists() and any(ckpts.iterdir()):
        raise MolgenError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out."
        )
    clash = [name for name in _RUN_OUTPUTS if (run_dir / name).exists()]
    if clash and not (run_dir / RUN_CONFIG).exists():
        raise MolgenError(
            f"--out {run_dir} is not a molgen run but holds {', '.join(clash)}, which training "
            "would overwrite; choose another --out."
        )


def resolve_threads(requested: int) -> int:
    """Torch threads: ``requested``, or (0) the cores not busy right now, at least one.

    torch's default of one thread per core collapses when another process is busy on the same
    cores (measured: 8x slower at load ~5 on 2 cores), so by default only idle cores are used.
    """
    import os

    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def train(
    data_path: Path,
    run_dir: Path,
    data_config: DataConfig,
    model_settings: dict[str, Any],
    train_config: TrainConfig,
    preset: str = "small",
    resume: bool = False,
    progress: bool = True,
    parent: str | None = None,
    init_scheme: str = "mean",
    say: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run the data step, train with Lightning, and write the model file and pictures.

    Args:
        data_path: Molecule file (csv/tsv/smi, optionally gzipped).
        run_dir: Output directory (model.pt, metrics.csv, curves PNG, checkpoints, rejected.csv).
        data_config: Data-step settings.
        model_settings: ModelConfig fields except ``vocab_size`` (ignored with ``parent``).
        train_config: Optimisation settings.
        preset: Name of the preset the settings came from (recorded).
        resume: Continue from the last checkpoint in ``run_dir``.
        progress: Show progress bars.
        parent: Start from this model file's weights (``bundled``: the bundled default); see
            :mod:`molgen.finetune`.
        init_scheme: How new tokens' rows start with ``parent``: ``mean`` or ``random``.
        say: Receives one-line notices (which checkpoint is resumed, threads chosen).

    Returns:
        The paths written and the training summary.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, OnExceptionCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    say = say or (lambda _message: None)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    ckpt_path = _last_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        step, epoch = _checkpoint_position(ckpt_path)
        say(f"Resuming from {ckpt_path} (step {step}, epoch {epoch}).")
    run_dir.mkdir(parents=True, exist_ok=True)
    _quiet_lightning()
    if train_config.tune_malloc:
        tune_malloc()
    threads = resolve_threads(train_config.threads)
    torch.set_num_threads(threads)
    pl.seed_everything(train_config.seed, workers=True, verbose=False)

    trainer_kwargs: dict[str, Any] = dict(
        accelerator=train_config.accelerator,
        devices=_devices(train_config.devices),
        num_nodes=train_config.num_nodes,
        strategy=train_config.strategy,
        precision=train_config.precision,
    )
    # Only the first process writes the data step's files; every process gets the same split.
    is_zero = _global_rank() == 0
    data_config.seed = train_config.seed
    prepared = prepare_dataset(
        data_path, data_config, out_dir=run_dir if is_zero else None, progress=progress and is_zero
    )
    start_weights: dict[str, Tensor] | None = None
    parent_info: dict[str, Any] | None = None
    vocab = prepared.vocab
    if parent is not None:
        from molgen.finetune import extend_state_dict, extend_vocabulary, load_parent

        par = load_parent(parent)
        vocab = extend_vocabulary(par.vocab, prepared.vocab.tokens)
        model_settings = {
            k: v for k, v in par.content["config"].items() if k not in ("vocab_size", "max_length")
        }
        parent_info = {
            "path": str(par.path),
            "sha256": par.sha256,
            "vocab_size": len(par.vocab),
            "new_tokens": vocab.tokens[len(par.vocab) :],
            "init": init_scheme,
        }
        fresh = MoleculeVAE(ModelConfig(vocab_size=len(vocab), **model_settings)).state_dict()
        start_weights = extend_state_dict(
            par.content["state_dict"],
            len(par.vocab),
            len(vocab),
            init_scheme,
            train_config.seed,
            target=fresh,
        )
    model_config = ModelConfig(
        vocab_size=len(vocab), max_length=data_config.max_length, **model_settings
    )
    if is_zero:
        run_config = RunConfig(
            data_path=str(data_path),
            data=asdict(data_config),
            model=model_config.to_dict(),
            train=asdict(train_config),
            preset=preset,
            parent=parent,
            init_scheme=init_scheme,
        )
        (run_dir / RUN_CONFIG).write_text(json.dumps(asdict(run_config), indent=2))

    max_length = data_config.max_length
    train_set = encode_smiles(prepared.train, vocab, prepared.tokenizer_kind, max_length)
    valid_smiles = prepared.valid or prepared.train[: max(1, len(prepared.train) // 20)]
    valid_set = encode_smiles(valid_smiles, vocab, prepared.tokenizer_kind, max_length)
    loader_kwargs: dict[str, Any] = dict(collate_fn=passthrough)
    single_process = _devices(train_config.devices) in (1, "auto") and train_config.num_nodes == 1
    if train_config.bucket_batches > 0 and single_process:
        loader_kwargs["batch_sampler"] = BucketBatchSampler(
            train_set.lengths.numpy(),
            train_config.batch_size,
            seed=train_config.seed,
            chunk_batches=train_config.bucket_batches,
        )
    else:
        loader_kwargs.update(
            batch_size=train_config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(train_config.seed),
        )
    train_loader = torch.utils.data.DataLoader(train_set, **loader_kwargs)
    valid_loader = torch.utils.data.DataLoader(
        valid_set, batch_size=train_config.batch_size, shuffle=False, collate_fn=passthrough
    )

    module = VAEModule(
        model_config.to_dict(), asdict(train_config), vocab.tokens, prepared.tokenizer_kind
    )
    if start_weights is not None and ckpt_path is None:
        module.vae.load_state_dict(start_weights)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    clock = TrainingClock()
    steps_per_epoch = max(1, len(train_loader))
    max_time = parse_max_time(train_config.max_time)
    schedule = BudgetSchedule(
        base_lr=train_config.lr,
        schedule=train_config.lr_schedule,
        warmup_steps=train_config.lr_warmup_steps,
        final_ratio=train_config.lr_final_ratio,
        max_steps=train_config.max_steps,
        max_time_s=max_time.total_seconds() if max_time else None,
        total_epoch_steps=steps_per_epoch * train_config.epochs,
        elapsed_s=clock.elapsed_s,
    )
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val_select", save_top_k=1, save_last=True
    )
    callbacks: list[Any] = [
        best,
        OnExceptionCheckpoint(dirpath=ckpt_dir, filename="interrupted"),
        SaveAtEnd(ckpt_dir / "final.ckpt"),
        clock,
        schedule,
    ]
    if train_config.early_stopping_patience > 0:
        callbacks.append(
            EarlyStopping(monitor="val_select", patience=train_config.early_stopping_patience)
        )
    # Short epochs (small files): validate every few epochs, not after each one, so that checks
    # and checkpoint writes do not outweigh training.
    if train_config.val_every_steps < steps_per_epoch:
        val_kwargs: dict[str, Any] = dict(
            val_check_interval=train_config.val_every_steps, check_val_every_n_epoch=1
        )
    else:
        every = max(1, round(train_config.val_every_steps / steps_per_epoch))
        val_kwargs = dict(val_check_interval=1.0, check_val_every_n_epoch=every)
    trainer = pl.Trainer(
        **trainer_kwargs,
        **val_kwargs,
        max_epochs=train_config.epochs,
        max_steps=train_config.max_steps,
        max_time=max_time,
        gradient_clip_val=train_config.grad_clip or None,
        # One CSV per (re)start under logs/; merged into RUN_DIR/metrics.csv at the end, because
        # Lightning's CSV logger deletes an existing metrics file when a run restarts.
        logger=CSVLogger(save_dir=str(run_dir), name="logs"),
        callbacks=callbacks,
        limit_val_batches=train_config.val_batches,
        log_every_n_steps=min(10, steps_per_epoch),
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )
    say(f"Training with {threads} CPU thread(s), {steps_per_epoch} steps per epoch.")
    started = time.time()
    trainer.fit(module, train_loader, valid_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
    wall = time.time() - started

    exported = "last"
    if train_config.export == "best" and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        exported = f"best ({Path(best.best_model_path).name}, step {state.get('global_step')})"
    metrics_path = merge_metrics(run_dir) if trainer.is_global_zero else run_dir / "metrics.csv"
    model_path = run_dir / "model.pt"
    curves_path: Path | None = None
    summary = _summary(
        prepared, data_path, trainer, wall, clock, train_set, resume, train_config.batch_size
    )
    summary["threads"] = threads
    summary["exported"] = exported
    if parent_info is not None:
        summary["parent"] = parent_info
    summary["final_prior_validity"] = round(module.prior_validity(500), 4)
    summary["final_beta"] = round(train_config.beta(trainer.global_step, schedule.progress), 6)
    summary["warnings"] = _usefulness_warnings(summary, train_config)
    if trainer.is_global_zero:
        content = model_file_dict(
            module.vae,
            vocab.to_dict(),
            prepared.tokenizer_kind,
            asdict(data_config),
            {**summary, "train_config": asdict(train_config), "preset": preset},
        )
        torch.save(content, model_path)
        curves_path = plot_training_curves(
            metrics_path, run_dir / "training_curves.png", module.vae.latent.concentration_name
        )
    return TrainResult(run_dir, model_path, metrics_path, curves_path, summary)


def _usefulness_warnings(summary: dict[str, Any], config: TrainConfig) -> list[str]:
    """Plain-language reasons the model may not be worth sampling from yet."""
    out = []
    validity = summary["final_prior_validity"]
    if validity < 0.3:
        out.append(
            f"only {validity:.0%} of 500 prior samples are valid molecules: the run was too short "
            "to give a useful model; train longer (--max-time) or start from a trained model "
            "(--from bundled)."
        )
    if summary["final_beta"] < config.beta_max:
        out.append(
            f"the KL weight reached {summary['final_beta']:.3g} of its final {config.beta_max:g}: "
            "the latent space is not yet shaped for sampling; train longer."
        )
    return out


def _quiet_lightning() -> None:
    """Keep Lightning's info chatter (tips, device lines) and known-harmless warnings off screen."""
    import logging
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        r".*LeafSpec.*",
        r".*ckpt_path.*",
        r".*does not have many workers.*",
        r".*val_check_interval.*",
        r".*exists and is not empty.*",
        r".*ended before the epoch ended.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _devices(value: str | int) -> int | str:
    text = str(value)
    return int(text) if text.isdigit() else text


def _global_rank() -> int:
    import os

    for var in ("RANK", "GLOBAL_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _summary(
    prepared: PreparedData,
    data_path: Path,
    trainer: Any,
    wall: float,
    clock: TrainingClock,
    train_set: TokenDataset,
    resumed: bool,
    batch_size: int,
) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    # Lightning counts an epoch cut short by --max-time as finished: count molecules seen instead.
    seen = trainer.global_step * trainer.world_size * batch_size
    source = Path(data_path).resolve()
    if source.is_relative_to(DATA_DIR.parent):  # bundled data: a path valid in any checkout
        source = source.relative_to(DATA_DIR.parent)
    return {
        "data_source": str(source),
        "data_fingerprint": prepared.fingerprint,
        "molecules_read": prepared.n_read,
        "molecules_kept": prepared.n_kept,
        "molecules_train": len(train_set),
        "molecules_valid": len(prepared.valid),
        "rejected": dict(prepared.rejected_counts),
        "global_step": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "epochs": round(seen / max(len(train_set), 1), 3) if seen else None,
        "wall_time_s": round(wall, 1),  # this start only
        "training_time_s": round(clock.elapsed_s(), 1),  # every start summed
        "resumed": resumed,
        "final_metrics": metrics,
        "torch": str(torch.__version__),
    }


def merge_metrics(run_dir: Path) -> Path:
    """Concatenate the metrics of every (re)start into ``RUN_DIR/metrics.csv``.

    A restart resumes from its checkpoint's step, so rows an earlier start logged after that step
    (work lost in the interruption) are replaced by the later start's rows.
    """
    import pandas as pd

    frames: list[pd.DataFrame] = []
    versions = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    for path in versions:
        df = pd.read_csv(path)
        if frames and len(df) and "step" in df:
            start = df["step"].min()
            frames = [f[f["step"] < start] for f in frames]
        frames.append(df)
    out = run_dir / "metrics.csv"
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


def plot_training_curves(
    metrics_csv: Path, out_png: Path, concentration_name: str = "concentration"
) -> Path | None:
    """Draw loss, reconstruction, KL, concentration and beta against the step from metrics.csv."""
    if not metrics_csv.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    panels = [
        ("loss", ["train_loss", "val_loss"]),
        ("reconstruction (nats)", ["train_reconstruction", "val_reconstruction"]),
        ("KL (nats)", ["train_kl", "val_kl"]),
        (f"mean {concentration_name} of q(z|x)", ["train_concentration"]),
        ("token accuracy", ["train_token_accuracy", "val_token_accuracy"]),
        ("KL weight beta", ["beta"]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, cols) in zip(axes.ravel(), panels, strict=True):
        for col in cols:
            if col in df:
                d = df[["step", col]].dropna()
                ax.plot(
                    d["step"],
                    d[col],
                    label=col,
                    marker="o" if col.startswith("val") else None,
                    markersize=3,
                )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ---- what a `molgen train` invocation means ------------------------------------------------------
# Options that may change when a run is resumed (limits and optimisation knobs); everything else
# (data, architecture, tokens) is fixed by the run and refused.
RESUME_OVERRIDABLE = (
    "epochs",
    "max_steps",
    "max_time",
    "lr",
    "early_stopping_patience",
    "threads",
    "val_every_steps",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
)


def _flags(names: Any) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in sorted(names))


@dataclass
class RunPlan:
    """Everything :func:`train` needs, resolved from the options, a saved run or a parent."""

    data_path: Path
    data_config: DataConfig
    model_settings: dict[str, Any]
    train_config: TrainConfig
    preset: str
    parent: str | None = None
    init_scheme: str = "mean"


def plan_run(
    run_dir: Path,
    data_path: Path | None,
    data_config: DataConfig,
    preset: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
    resume: bool = False,
    parent: str | None = None,
    init_scheme: str = "mean",
) -> RunPlan:
    """Resolve a run's settings: a fresh run, ``--resume`` of a saved one, or ``--from`` a parent.

    Args:
        run_dir: The run directory.
        data_path: The molecule file (None: the bundled MOSES set, or the saved run's file).
        data_config: Data-step settings from the options.
        preset: Preset name (None: ``finetune`` with a parent, else ``small``).
        model_overrides: Model options (None values: not given).
        train_overrides: Training options (None values: not given).
        resume: Continue the saved run in ``run_dir``.
        parent: Parent model file or ``bundled``.
        init_scheme: New-token initialisation with a parent.

    Raises:
        MolgenError: options that contradict the saved run or the parent.
    """
    from molgen.data import DEFAULT_DATA

    given_model = {k: v for k, v in model_overrides.items() if v is not None}
    given_train = {k: v for k, v in train_overrides.items() if v is not None}
    if resume:
        saved = load_run_config(run_dir)
        if parent is not None and parent != saved.parent:
            raise MolgenError("--from cannot change when resuming; the run keeps its parent.")
        if data_path is not None and Path(data_path).resolve() != Path(saved.data_path).resolve():
            raise MolgenError(
                f"--resume continues the run on {saved.data_path}; it cannot switch to "
                f"{data_path}. Start a new run (--out) to train on another file."
            )
        fixed_model = {k: v for k, v in given_model.items() if saved.model.get(k) != v}
        if fixed_model:
            raise MolgenError(
                f"--resume cannot change the model ({_flags(fixed_model)}); start a new "
                "run (--out) or continue with --from RUN_DIR/model.pt."
            )
        fixed_train = {
            k
            for k, v in given_train.items()
            if k not in RESUME_OVERRIDABLE and k != "seed" and saved.train.get(k) != v
        }
        if fixed_train:
            raise MolgenError(
                f"--resume cannot change {_flags(fixed_train)}; it may change "
                f"{_flags(RESUME_OVERRIDABLE)}."
            )
        overrides = {k: v for k, v in given_train.items() if k in RESUME_OVERRIDABLE}
        _, train_config = resolve_configs(saved.preset, {}, {**saved.train, **overrides})
        model_settings = {
            k: v for k, v in saved.model.items() if k not in ("vocab_size", "max_length")
        }
        return RunPlan(
            Path(saved.data_path),
            DataConfig(**saved.data),
            model_settings,
            train_config,
            saved.preset,
            saved.parent,
            saved.init_scheme,
        )
    if parent is None:
        model_settings, train_config = resolve_configs(
            preset or "small", model_overrides, train_overrides
        )
        return RunPlan(
            Path(data_path or DEFAULT_DATA),
            data_config,
            model_settings,
            train_config,
            preset or "small",
        )

    from molgen.finetune import load_parent

    if given_model:
        raise MolgenError(
            f"with --from the architecture is the parent's; drop {_flags(given_model)}."
        )
    if data_path is None:
        raise MolgenError(
            "--from needs a molecule file to fine-tune on: molgen train DATA --from MODEL."
        )
    par = load_parent(parent)
    pdata = par.content.get("data_config", {})
    for key in ("representation", "max_length", "stereo", "largest_fragment"):
        if key in pdata:
            setattr(data_config, key, pdata[key])
    train_defaults = {"beta_max": par.final_beta}
    _, train_config = resolve_configs(preset or "finetune", {}, {**train_defaults, **given_train})
    return RunPlan(
        Path(data_path), data_config, {}, train_config, preset or "finetune", parent, init_scheme
    )
