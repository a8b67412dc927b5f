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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from molgen.batching import BucketBatchSampler, TokenDataset, encode_smiles, passthrough
from molgen.data import DATA_DIR, DataConfig, PreparedData, prepare_dataset
from molgen.decoding import generate_ids
from molgen.grammar import syntax_for
from molgen.model import ModelConfig, MoleculeVAE, model_file_dict
from molgen.runs import (
    CHECKPOINT_DIR,
    RUN_CONFIG,
    RunConfig,
    check_run_dir,
    checkpoint_position,
    last_checkpoint,
)
from molgen.schedule import BudgetSchedule
from molgen.tokenizer import Vocabulary, get_tokenizer
from molgen.train_config import TrainConfig, parse_max_time


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
# With a validity floor, this many best checkpoints are kept and checked again at the end on
# VERIFY_SAMPLES fresh prior codes (standard error about 0.006 at 80 % validity).
EXPORT_CANDIDATES = 4
VERIFY_SAMPLES = 4096


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
    def prior_validity(self, n: int, seed: int = 1234) -> float:
        """Share of ``n`` prior samples (temperature 1, one pass) that RDKit parses.

        Args:
            n: Prior codes to decode.
            seed: Seed of the codes and the sampling (validation uses the same every check).
        """
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]  # missing from RDKit's stub
        tokens = self.vocab_tokens or []
        vocab = Vocabulary(tokens)
        tokenizer = get_tokenizer(self.tokenizer_kind)
        was_training = self.vae.training
        self.vae.eval()
        # The same codes at every check, and the training random stream left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = self.vae.latent.prior(device=self.device).sample((n,))
            # decoded as molgen sample decodes (with the SMILES syntax mask), so the checkpoint
            # choice judges what users will get
            ids = generate_ids(
                self.vae, z, temperature=1.0, syntax=syntax_for(tokens, self.tokenizer_kind)
            )
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
    ckpt_path = last_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        step, epoch = checkpoint_position(ckpt_path)
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
    # Each of the DDP processes gets its share of the batches (``--devices N``, ``--num-nodes``).
    devices = _devices(train_config.devices)
    world = (devices if isinstance(devices, int) else 1) * train_config.num_nodes
    steps_per_epoch = max(1, -(-len(train_loader) // max(world, 1)))
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
    verify = train_config.export == "best" and train_config.min_validity > 0
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{step}" if verify else "best",
        monitor="val_select",
        save_top_k=EXPORT_CANDIDATES if verify else 1,
        save_last=True,
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
            # on the fit alone: a validity floor decides the export, not when to stop (with
            # it, validity wandering around the floor stopped fine-tuning after 520 steps)
            EarlyStopping(monitor="val_loss", patience=train_config.early_stopping_patience)
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
    export_checks: list[dict[str, Any]] = []
    if train_config.export == "best" and best.best_model_path:
        chosen = Path(best.best_model_path)
        if verify:
            chosen, export_checks = _verified_best(module, best, train_config)
        state = torch.load(chosen, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        exported = f"best ({chosen.name}, step {state.get('global_step')})"
    metrics_path = merge_metrics(run_dir) if trainer.is_global_zero else run_dir / "metrics.csv"
    model_path = run_dir / "model.pt"
    curves_path: Path | None = None
    summary = _summary(
        prepared, data_path, trainer, wall, clock, train_set, resume, train_config.batch_size
    )
    summary["threads"] = threads
    summary["exported"] = exported
    if export_checks:
        summary["export_checks"] = export_checks
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


def _verified_best(
    module: VAEModule, best: Any, config: TrainConfig
) -> tuple[Path, list[dict[str, Any]]]:
    """The best-fitting kept checkpoint whose validity holds on fresh prior samples.

    The validation's validity is measured on ``validity_samples`` codes, so choosing the lowest
    ``val_select`` among many checks favours checkpoints that were lucky on them (a checkpoint
    chosen at 0.80 on 512 codes sampled 0.78 on 2,000 fresh ones). The kept candidates are
    checked again, in order of ``val_select``, on ``VERIFY_SAMPLES`` other codes; the first that
    reaches ``min_validity`` is exported, else the most valid one.

    Args:
        module: The trained module (its weights are restored before returning).
        best: Lightning's ``ModelCheckpoint`` holding the kept checkpoints.
        config: The run's settings (``min_validity``).

    Returns:
        (checkpoint to export, one record per checkpoint checked).
    """
    candidates = sorted(best.best_k_models.items(), key=lambda kv: float(kv[1]))
    checks: list[dict[str, Any]] = []
    current = {k: v.detach().clone() for k, v in module.state_dict().items()}
    chosen: Path | None = None
    for path, score in candidates:
        state = torch.load(path, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        validity = module.prior_validity(VERIFY_SAMPLES, seed=4321)
        checks.append(
            {
                "checkpoint": Path(path).name,
                "step": int(state.get("global_step", 0)),
                "val_select": round(float(score), 4),
                "validity": round(validity, 4),
            }
        )
        if validity >= config.min_validity:
            chosen = Path(path)
            break
    module.load_state_dict(current)
    if chosen is None:
        # every candidate was checked: pick the most valid
        chosen = Path(candidates[max(range(len(checks)), key=lambda i: checks[i]["validity"])][0])
    return chosen, checks


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
        if ax.get_legend_handles_labels()[0]:  # a panel whose columns were never logged stays bare
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
