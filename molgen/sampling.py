"""Using a trained model: load it, sample from the prior or around a molecule, interpolate.

``load_model`` returns a :class:`MolGenModel`, the one object the CLI, the evaluation and the
notebooks use. Sampling streams rows so that 100,000 molecules never sit in memory at once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from torch import Tensor

from molgen.data import DATA_DIR, DataConfig, canonicalize
from molgen.decoding import (
    DecodeCounts,
    DecodeResult,
    beam_search,
    decode_with_retries,
    generate_ids,
)
from molgen.devices import resolve_device
from molgen.distributions import SphericalCauchy
from molgen.errors import MolgenError
from molgen.grammar import SmilesSyntax, syntax_for
from molgen.inputs import InputChecker, pad_ids, warn_stereo_removed
from molgen.latent import interpolate as latent_path
from molgen.model import ModelConfig, MoleculeVAE, read_model_file
from molgen.tokenizer import Vocabulary, get_tokenizer

DEFAULT_MODEL = DATA_DIR / "pretrained" / "moses-spcauchy-small.pt"
#: Retries per latent code of the default sampler (``molgen sample``): on the bundled model 3
#: retries lift validity from 0.85 to 0.98 at about 1.2 decodings per molecule.
DEFAULT_MAX_RETRIES = 3

RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]  # decoded strings are often invalid: count them, do not spam
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def fingerprint(smiles: str) -> Any | None:
    """Morgan (radius 2, 2048 bits) fingerprint of a SMILES, or None if it does not parse."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return _MORGAN.GetFingerprint(mol) if mol is not None and mol.GetNumAtoms() else None


def tanimoto(query: Any, smiles: str) -> float | None:
    """Tanimoto similarity of a query fingerprint to a SMILES (None if the SMILES is invalid)."""
    fp = fingerprint(smiles)
    return None if fp is None or query is None else DataStructs.TanimotoSimilarity(query, fp)


class MolGenModel:
    """A trained molecule VAE with its vocabulary, tokenizer and data-step settings.

    Attributes:
        vae: The network (eval mode).
        vocab: Token vocabulary.
        tokenizer: SMILES or SELFIES tokenizer the model was trained with.
        data_config: Canonicalization settings used for training (applied to user input too).
        summary: Training summary stored in the model file.
        path: Where the model was loaded from.
        syntax: The SMILES syntax mask applied to every decoding (:mod:`molgen.grammar`); None
            for SELFIES models, and settable to None to see the decoder unconstrained.
    """

    def __init__(self, content: dict[str, Any], path: Path, device: str = "cpu") -> None:
        self.path = path
        self.device = resolve_device(device)
        self.config = ModelConfig.from_dict(content["config"])
        self.vocab = Vocabulary.from_dict(content["vocabulary"])
        self.tokenizer = get_tokenizer(content["tokenizer"])
        self.data_config = DataConfig(
            **{
                k: v
                for k, v in content.get("data_config", {}).items()
                if k in DataConfig.__dataclass_fields__
            }
        )
        self.summary: dict[str, Any] = dict(content.get("training", {}))
        # SMILES syntax mask for every decoding (None: SELFIES, or switched off by the caller)
        self.syntax: SmilesSyntax | None = syntax_for(self.vocab.tokens, content["tokenizer"])
        self.vae = MoleculeVAE(
            self.config, self.vocab.pad_id, self.vocab.bos_id, self.vocab.eos_id, self.vocab.unk_id
        )
        try:
            self.vae.load_state_dict(content["state_dict"])
        except RuntimeError as exc:
            raise MolgenError(
                f"{path}: weights do not match the stored config ({str(exc).splitlines()[0]})."
            ) from None
        self.vae.to(self.device).eval()

    @property
    def latent_dim(self) -> int:
        """Ambient dimension of z."""
        return self.config.latent_dim

    @property
    def spherical(self) -> bool:
        """Whether z lives on the unit sphere."""
        return bool(self.vae.latent.spherical)

    # ---- text <-> ids ----------------------------------------------------------------------------
    def to_ids(self, smiles: Sequence[str], warn: bool = True) -> tuple[Tensor, Tensor]:
        """Canonicalize (as in training), tokenize and encode molecules to a padded id batch.

        A model that cannot spell stereochemistry (see ``molgen.inputs``) reads the molecules with
        their stereochemistry removed; with ``warn`` one warning line on stderr says how many.

        Raises:
            MolgenError: a SMILES does not parse, is too long, or has tokens the model never saw
                (the message names them and suggests fine-tuning with ``--from``).
        """
        ids, lengths, removed = self._ids_and_stereo(smiles)
        if warn:
            warn_stereo_removed(removed, InputChecker.for_model(self))
        return ids, lengths

    def _ids_and_stereo(self, smiles: Sequence[str]) -> tuple[Tensor, Tensor, int]:
        rows, removed = InputChecker.for_model(self).to_ids(smiles)
        ids, lengths = pad_ids(rows, self.vocab.pad_id)
        return ids.to(self.device), lengths.to(self.device), removed

    def ids_to_smiles(self, ids: list[list[int]]) -> list[str]:
        """Decoded id lists to strings (SMILES; SELFIES models are decoded back to SMILES)."""
        out = []
        for row in ids:
            try:
                out.append(self.tokenizer.detokenize(self.vocab.decode(row)))
            except Exception:  # a SELFIES decoder can reject garbage: count it as invalid
                out.append("")
        return out

    # ---- latent space ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, smiles: Sequence[str], batch_size: int = 512) -> Tensor:
        """Posterior modes (mu) of molecules, shape (n, latent_dim)."""
        parts = []
        removed = 0
        for start in range(0, len(smiles), batch_size):
            ids, lengths, n = self._ids_and_stereo(smiles[start : start + batch_size])
            removed += n
            posterior, _ = self.vae.encode(ids, lengths)
            parts.append(self.vae.latent.mode(posterior))
        warn_stereo_removed(removed, InputChecker.for_model(self))
        return torch.cat(parts) if parts else torch.empty(0, self.latent_dim)

    @torch.no_grad()
    def decode(self, z: Tensor, greedy: bool = True, temperature: float = 1.0) -> list[str]:
        """Decode latent codes to strings (greedy, or sampled at a temperature), one pass."""
        ids = generate_ids(
            self.vae, z.to(self.device), greedy=greedy, temperature=temperature, syntax=self.syntax
        )
        return self.ids_to_smiles(ids)

    def decode_greedy(self, z: Tensor, beam: int = 1) -> list[str]:
        """Greedy decoding, or with ``beam > 1`` the most likely valid string of ``beam`` beams.

        A code none of whose beams is valid gets its most likely (invalid) string.
        """
        if beam <= 1:
            return self.decode(z, greedy=True)
        return beam_search(self, z, beam).sampler_strings()

    def reconstruct(self, smiles: Sequence[str], batch_size: int = 512, beam: int = 1) -> list[str]:
        """Greedy (or beam search, see :meth:`decode_greedy`) decoding from posterior modes."""
        out: list[str] = []
        for start in range(0, len(smiles), batch_size):
            out += self.decode_greedy(self.encode(smiles[start : start + batch_size]), beam)
        return out

    @torch.no_grad()
    def token_accuracy(self, smiles: Sequence[str], batch_size: int = 512) -> float:
        """Teacher-forced per-token accuracy (eos included) with z = mu."""
        correct = total = 0
        for start in range(0, len(smiles), batch_size):
            ids, lengths = self.to_ids(smiles[start : start + batch_size])
            posterior, _ = self.vae.encode(ids, lengths)
            logits = self.vae.decode_logits(self.vae.latent.mode(posterior), ids[:, :-1])
            targets = ids[:, 1:]
            mask = targets != self.vocab.pad_id
            correct += int(((logits.argmax(-1) == targets) & mask).sum())
            total += int(mask.sum())
        return correct / max(total, 1)

    def prior_z(self, n: int) -> Tensor:
        """N draws from the prior (uniform on the sphere for spherical families)."""
        return self.vae.latent.prior(device=self.device).sample((n,))

    def around_z(self, mu: Tensor, n: int, rho: float) -> Tensor:
        """N codes near mu: SphericalCauchy(mu, rho) on the sphere (rho -> 1: closer).

        For the Gaussian family (not on a sphere) a Normal(mu, 1 - rho) stands in, so that rho has
        the same direction of meaning.
        """
        if not 0.0 <= rho < 1.0:
            raise MolgenError(f"--rho must be in [0, 1), got {rho}.")
        mu = mu.reshape(1, -1).to(self.device)
        if self.spherical:
            if rho == 0.0:  # the uniform distribution
                dist = SphericalCauchy(mu[0], torch.tensor(0.0, dtype=mu.dtype, device=self.device))
            else:  # by its logit: rho within 1e-9 of 1 would round to 1 in float32
                logit = torch.tensor(math.log(rho) - math.log1p(-rho), dtype=mu.dtype)
                dist = SphericalCauchy(mu[0], rho_logit=logit.to(self.device))
            return dist.sample((n,))
        return mu + (1.0 - rho) * torch.randn(n, mu.shape[-1], device=self.device)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = 512,
        progress: bool = False,
    ) -> list[str]:
        """N raw decoded strings from prior samples (may be invalid; not canonicalized)."""
        out: list[str] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for size in _batches(n, batch_size, progress, "sampling"):
                out += self._decode_t(self.prior_z(size), temperature)
        return out

    def sample_decoded(
        self,
        n: int,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = 512,
        max_retries: int = DEFAULT_MAX_RETRIES,
        progress: bool = False,
    ) -> DecodeResult:
        """N prior codes decoded with per-code retries (``molgen.decoding.decode_with_retries``).

        The first decodings (``result.first``) are exactly :meth:`sample`'s strings for the same
        seed and batch size: the retries draw from their own seeded streams.
        """
        result = DecodeResult()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for k, size in enumerate(_batches(n, batch_size, progress, "sampling")):
                z = self.prior_z(size)
                result.extend(
                    decode_with_retries(
                        self, z, temperature, max_retries, retry_seed=retry_seed(seed, k)
                    )
                )
        return result

    def _decode_t(self, z: Tensor, temperature: float) -> list[str]:
        return self.decode(z, greedy=temperature <= 0, temperature=max(temperature, 1e-6))

    def interpolate(
        self, smiles_a: str, smiles_b: str, steps: int = 10, beam: int = 1
    ) -> tuple[list[float], list[str]]:
        """Greedy decodes along the great circle (slerp; linear for Gaussian) from a to b.

        Args:
            smiles_a: Start molecule.
            smiles_b: End molecule.
            steps: Points on the path, endpoints included.
            beam: Beams per point (1: greedy; see :meth:`decode_greedy`).

        Returns:
            (path parameters t in [0, 1], decoded strings), endpoints included.
        """
        if steps < 2:
            raise MolgenError("--steps must be at least 2 (the two endpoints).")
        mu = self.encode([smiles_a, smiles_b])
        path = latent_path(self.vae.latent, mu[0], mu[1], steps)
        ts = [i / (steps - 1) for i in range(steps)]
        return ts, self.decode_greedy(path, beam)


def retry_seed(seed: int, batch: int) -> int:
    """Seed of the retry stream of batch ``batch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, batch, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


def interpolation_rows(
    model: MolGenModel, smiles_a: str, smiles_b: str, steps: int = 10, beam: int = 1
) -> list[dict[str, Any]]:
    """Decode the path from a to b: per step the SMILES, validity and Tanimoto to a and to b."""
    ts, decoded = model.interpolate(smiles_a, smiles_b, steps, beam=beam)
    fp_a, fp_b = fingerprint(smiles_a), fingerprint(smiles_b)
    rows = []
    for i, (t, s) in enumerate(zip(ts, decoded, strict=True)):
        canon = canonicalize(s, largest_fragment=False) if s else None
        sa = tanimoto(fp_a, canon) if canon else None
        sb = tanimoto(fp_b, canon) if canon else None
        rows.append(
            {
                "step": i,
                "t": round(t, 4),
                "smiles": canon or s,
                "valid": canon is not None,
                "similarity_a": "" if sa is None else round(sa, 4),
                "similarity_b": "" if sb is None else round(sb, 4),
            }
        )
    return rows


def _batches(n: int, batch_size: int, progress: bool, desc: str) -> Iterator[int]:
    sizes = [min(batch_size, n - s) for s in range(0, n, batch_size)]
    if progress:
        from tqdm import tqdm

        yield from tqdm(sizes, desc=desc, unit="batch")
    else:
        yield from sizes


def load_model(path: Path | str | None = None, device: str = "cpu") -> MolGenModel:
    """Load a model file (default: the bundled pretrained model) safely.

    Raises:
        MolgenError: the file is missing, corrupt, unsafe or not a molgen model.
    """
    if path is None:
        path = DEFAULT_MODEL
        if not path.exists():
            raise MolgenError(
                f"no MODEL given and the bundled model {path} is missing; pass a model file "
                "(train one with `molgen train`)."
            )
    path = Path(path)
    return MolGenModel(read_model_file(path), path, device=device)


# ---- streaming generation with filters -----------------------------------------------------------
@dataclass
class SampleRequest:
    """What ``molgen sample`` asks for.

    Attributes:
        n: Molecules wanted (after filters).
        temperature: Softmax temperature; 0 means greedy decoding.
        seed: Random seed.
        batch_size: Codes decoded per batch.
        around: Query SMILES to sample analogues of (None: sample the prior).
        rho: Concentration of the spherical Cauchy around the query (near 1: close analogues).
        valid_only: Write valid molecules only (canonical SMILES), re-decoding a code whose string
            is invalid up to ``max_retries`` times. False: the raw view, every code decoded once
            and written with its ``valid`` flag.
        max_retries: Extra decodings per code when ``valid_only`` and sampling (temperature > 0);
            greedy decoding is deterministic and never retried.
        beam: Beams for greedy decoding (1: plain greedy; K: the most likely valid string of K).
        unique: Keep only the first occurrence of each canonical SMILES.
        novel_against: Canonical SMILES set to call molecules novel against (and, with
            ``novel_only``, to exclude).
        novel_only: Keep only molecules not in ``novel_against``.
        max_attempts: Cap on latent codes drawn (default 20 x n + 1000).
    """

    n: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512
    around: str | None = None
    rho: float = 0.9
    valid_only: bool = True
    max_retries: int = DEFAULT_MAX_RETRIES
    beam: int = 1
    unique: bool = False
    novel_against: set[str] | None = None
    novel_only: bool = False
    max_attempts: int | None = None

    @property
    def greedy(self) -> bool:
        """Whether codes are decoded greedily (temperature 0)."""
        return self.temperature <= 0

    @property
    def retries(self) -> int:
        """Retries actually made per code: only when writing valid molecules and sampling."""
        return self.max_retries if self.valid_only and not self.greedy else 0

    def columns(self) -> list[str]:
        """Output columns, in order."""
        return (
            ["smiles", "valid"]
            + (["novel"] if self.novel_against is not None else [])
            + (["similarity"] if self.around is not None else [])
        )

    def check(self) -> None:
        """Raise MolgenError on settings that cannot work together."""
        if self.n <= 0:
            raise MolgenError("-n must be a positive number of molecules.")
        if self.batch_size <= 0:
            raise MolgenError("--batch-size must be a positive number of codes.")
        if self.max_retries < 0:
            raise MolgenError(f"--max-retries must be 0 or more, got {self.max_retries}.")
        if self.beam < 1:
            raise MolgenError(f"--beam must be at least 1, got {self.beam}.")
        if self.beam > 1 and not self.greedy:
            raise MolgenError(
                "--beam applies to greedy decoding (--temperature 0, the default with --around); "
                "sampled decoding uses --max-retries instead."
            )


@dataclass
class SampleStats:
    """Counts of one ``generate_rows`` run.

    Attributes:
        written: Rows written.
        valid: Valid rows written.
        filtered: Valid molecules dropped by ``--unique`` or ``--novel-against``.
        cap_hit: The run stopped at the cap on latent codes before ``n`` rows.
        decoding: Decoding counters (codes, decodings, single-pass valid, given up).
    """

    written: int = 0
    valid: int = 0
    filtered: int = 0
    cap_hit: bool = False
    decoding: DecodeCounts = field(default_factory=DecodeCounts)

    @property
    def attempts(self) -> int:
        """Latent codes drawn."""
        return self.decoding.codes


def _decode_batch(model: MolGenModel, z: Tensor, req: SampleRequest, batch: int) -> DecodeResult:
    if req.greedy and req.beam > 1:
        return beam_search(model, z, req.beam)
    return decode_with_retries(
        model, z, req.temperature, req.retries, retry_seed=retry_seed(req.seed, batch)
    )


def _next_batch_size(req: SampleRequest, stats: SampleStats, cap: int) -> int:
    """Codes for the next batch: what the rows still missing need at the yield seen so far."""
    missing = req.n - stats.written
    codes = stats.decoding.codes
    if codes == 0:
        want = missing
    elif stats.written == 0:
        want = req.batch_size
    else:
        want = math.ceil(missing * codes / stats.written)
    return max(1, min(req.batch_size, want, cap - codes))


def generate_rows(
    model: MolGenModel, req: SampleRequest, stats: SampleStats, progress: bool = False
) -> Iterator[dict[str, Any]]:
    """Stream output rows (smiles, valid, [novel], [similarity]) until ``req.n`` pass the filters.

    Each batch of codes is decoded with ``molgen.decoding``: with ``valid_only`` (the default) a
    code whose string is invalid is decoded again, up to ``max_retries`` times, and given up
    after that; otherwise each code is decoded once and written with its ``valid`` flag. Batches
    are sized to what is still missing, and rows stream out batch by batch, so the caller can
    write them as they come and memory does not grow with ``n`` (``--unique`` keeps a set of
    the molecules written).

    The request and the ``--around`` query are checked (the query encoded) by this call, before
    any row is asked for, so a caller that writes a header first never writes it for a request
    that fails.

    Raises:
        MolgenError: the request is invalid, or the query cannot be encoded (a token the model
            never saw, ...).
    """
    req.check()
    query_fp = None
    mu = None
    if req.around is not None:
        mu = model.encode([req.around])[0]
        query_fp = fingerprint(req.around)
    return _rows(model, req, stats, mu, query_fp, progress)


def _rows(
    model: MolGenModel,
    req: SampleRequest,
    stats: SampleStats,
    mu: Tensor | None,
    query_fp: Any | None,
    progress: bool,
) -> Iterator[dict[str, Any]]:
    """The rows of :func:`generate_rows`, once the request and the query are checked."""
    cap = req.max_attempts or 20 * req.n + 1000
    seen: set[str] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=req.n, desc="molecules", unit="mol")
    batch = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(req.seed)
        while stats.written < req.n:
            if stats.decoding.codes >= cap:
                stats.cap_hit = True
                break
            size = _next_batch_size(req, stats, cap)
            z = model.prior_z(size) if mu is None else model.around_z(mu, size, req.rho)
            result = _decode_batch(model, z, req, batch)
            batch += 1
            stats.decoding += result.counts
            for canon, first in zip(result.smiles, result.first, strict=True):
                valid = canon is not None
                if req.valid_only and not valid:
                    continue
                key = canon if canon is not None else first
                novel = None
                if req.novel_against is not None:
                    novel = valid and canon not in req.novel_against
                if (req.unique and key in seen) or (req.novel_only and not novel):
                    stats.filtered += int(valid)
                    continue
                if req.unique:
                    seen.add(key)
                row: dict[str, Any] = {"smiles": key, "valid": valid}
                if novel is not None:
                    row["novel"] = novel
                if query_fp is not None:
                    sim = tanimoto(query_fp, canon) if canon is not None else None
                    row["similarity"] = "" if sim is None else round(sim, 4)
                stats.valid += int(valid)
                stats.written += 1
                if bar is not None:
                    bar.update(1)
                yield row
                if stats.written >= req.n:
                    break
    if bar is not None:
        bar.close()


def summary_line(req: SampleRequest, stats: SampleStats) -> str:
    """One line on what a run wrote and what the decoding cost (for ``molgen sample``)."""
    d = stats.decoding
    head = f"{stats.written} molecules"
    if not req.valid_only:
        head += f" ({stats.valid} valid)"
    head += f" from {d.codes} latent codes"
    if req.greedy:
        if req.beam > 1:
            text = (
                f"{head}: beam search ({req.beam} beams), a valid beam for "
                f"{d.sampler_validity:.3f} of codes (most likely string valid for "
                f"{d.single_pass_validity:.3f})"
            )
        else:
            text = (
                f"{head}: greedy decoding (deterministic, so never retried), validity "
                f"{d.single_pass_validity:.3f}"
            )
        if req.valid_only:
            text += f", {d.given_up} codes without a valid string skipped"
    elif not req.valid_only:
        text = f"{head}, one decoding each (single-pass validity {d.single_pass_validity:.3f})"
    else:
        text = (
            f"{head}: {d.decodings} decodings ({d.decodings_per_molecule:.2f} per valid molecule), "
            f"single-pass validity {d.single_pass_validity:.3f}, "
            f"{d.given_up} codes given up after {req.max_retries} retries"
        )
    if stats.filtered:
        text += f", {stats.filtered} valid molecules dropped by the filters"
    return text


def write_rows(
    rows: Iterator[dict[str, Any]],
    out: Path | None,
    keep_first: int = 0,
    columns: Sequence[str] | None = None,
) -> list[dict]:
    """Write streamed rows as CSV to ``out`` (or stdout); return the first ``keep_first`` rows.

    A file is written beside ``out`` and replaces it only when all rows were written, so an
    interrupted run leaves an existing file as it was. With ``columns`` the header is written
    even when there is no row.
    """
    import sys

    from molgen.outputs import atomic_output

    first: list[dict] = []

    def write(handle: Any) -> None:
        writer = None
        if columns is not None:
            # "\n": plain Unix lines on stdout and in files (csv's default is "\r\n")
            writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
            if len(first) < keep_first:
                first.append(row)

    if out is None:
        write(sys.stdout)
    else:
        with atomic_output(out, "w", newline="") as handle:
            write(handle)
    return first


def draw_grid(
    smiles: Sequence[str], legends: Sequence[str], out: Path, per_row: int = 5, size: int = 250
) -> Path:
    """Draw molecules in a grid PNG with RDKit (invalid strings are skipped)."""
    from rdkit.Chem import Draw

    mols, labels = [], []
    for s, legend in zip(smiles, legends, strict=True):
        mol = Chem.MolFromSmiles(s) if s else None
        if mol is not None and mol.GetNumAtoms():
            mols.append(mol)
            labels.append(legend)
    if not mols:
        raise MolgenError("no valid molecule to draw.")
    img = Draw.MolsToGridImage(
        mols, molsPerRow=min(per_row, len(mols)), subImgSize=(size, size), legends=labels
    )
    from molgen.outputs import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if hasattr(img, "save"):
            img.save(str(tmp))
        else:  # inside Jupyter RDKit may hand back IPython's Image: its PNG bytes
            Path(tmp).write_bytes(img.data)
    return out


def similarity_profile(
    model: MolGenModel, query: str, rhos: Sequence[float], n: int = 100, seed: int = 0
) -> list[dict[str, float]]:
    """Mean Tanimoto similarity to the query and validity of greedy analogues for each rho."""
    rows = []
    for rho in rhos:
        # the raw view: validity is that of each code's greedy string
        req = SampleRequest(
            n=n, temperature=0.0, seed=seed, around=query, rho=rho, valid_only=False
        )
        stats = SampleStats()
        sims = [r["similarity"] for r in generate_rows(model, req, stats) if r["valid"]]
        mean = sum(sims) / len(sims) if sims else math.nan
        rows.append(
            {"rho": rho, "mean_similarity": mean, "validity": stats.valid / max(stats.written, 1)}
        )
    return rows
