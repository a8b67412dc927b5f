"""Using a trained model: load it, sample from the prior or around a molecule, interpolate.

``load_model`` returns a :class:`MolGenModel`, the one object the CLI, the evaluation and the
notebooks use. Sampling streams rows so that 100,000 molecules never sit in memory at once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from torch import Tensor

from molgen.data import DATA_DIR, DataConfig, canonicalize
from molgen.distributions import SphericalCauchy
from molgen.errors import MolgenError
from molgen.latent import interpolate as latent_path
from molgen.model import ModelConfig, MoleculeVAE, read_model_file
from molgen.tokenizer import Vocabulary, get_tokenizer

DEFAULT_MODEL = DATA_DIR / "pretrained" / "moses-spcauchy-small.pt"

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


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MolgenError("--device cuda was asked for but no CUDA device is available.")
    return torch.device(device)


class MolGenModel:
    """A trained molecule VAE with its vocabulary, tokenizer and data-step settings.

    Attributes:
        vae: The network (eval mode).
        vocab: Token vocabulary.
        tokenizer: SMILES or SELFIES tokenizer the model was trained with.
        data_config: Canonicalization settings used for training (applied to user input too).
        summary: Training summary stored in the model file.
        path: Where the model was loaded from.
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
    def to_ids(self, smiles: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Canonicalize (as in training), tokenize and encode molecules to a padded id batch.

        Raises:
            MolgenError: a SMILES does not parse, is too long, or has tokens the model never saw.
        """
        rows = []
        for s in smiles:
            canon = canonicalize(
                s,
                largest_fragment=self.data_config.largest_fragment,
                stereo=self.data_config.stereo,
            )
            if canon is None:
                raise MolgenError(f"{s!r} is not a valid SMILES (RDKit cannot parse it).")
            tokens = self.tokenizer.tokenize(canon)
            unknown = self.vocab.unknown_tokens(tokens)
            if unknown:
                raise MolgenError(
                    f"{s!r} has tokens this model never saw: {' '.join(sorted(set(unknown)))}."
                )
            if len(tokens) > self.config.max_length:
                raise MolgenError(
                    f"{s!r} has {len(tokens)} tokens; this model handles at most "
                    f"{self.config.max_length}."
                )
            rows.append(self.vocab.encode(tokens))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.vocab.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        lengths = torch.tensor([len(r) for r in rows])
        return ids.to(self.device), lengths.to(self.device)

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
        for start in range(0, len(smiles), batch_size):
            ids, lengths = self.to_ids(smiles[start : start + batch_size])
            posterior, _ = self.vae.encode(ids, lengths)
            parts.append(self.vae.latent.mode(posterior))
        return torch.cat(parts) if parts else torch.empty(0, self.latent_dim)

    @torch.no_grad()
    def decode(self, z: Tensor, greedy: bool = True, temperature: float = 1.0) -> list[str]:
        """Decode latent codes to strings (greedy, or sampled at a temperature)."""
        ids = self.vae.generate(z.to(self.device), greedy=greedy, temperature=temperature)
        return self.ids_to_smiles(ids)

    def reconstruct(self, smiles: Sequence[str], batch_size: int = 512) -> list[str]:
        """Greedy decoding from each molecule's posterior mode."""
        out: list[str] = []
        for start in range(0, len(smiles), batch_size):
            out += self.decode(self.encode(smiles[start : start + batch_size]), greedy=True)
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
            dist = SphericalCauchy(mu[0], torch.tensor(rho, dtype=mu.dtype, device=self.device))
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

    def _decode_t(self, z: Tensor, temperature: float) -> list[str]:
        return self.decode(z, greedy=temperature <= 0, temperature=max(temperature, 1e-6))

    def interpolate(
        self, smiles_a: str, smiles_b: str, steps: int = 10
    ) -> tuple[list[float], list[str]]:
        """Greedy decodes along the great circle (slerp; linear for Gaussian) from a to b.

        Returns:
            (path parameters t in [0, 1], decoded strings), endpoints included.
        """
        if steps < 2:
            raise MolgenError("--steps must be at least 2 (the two endpoints).")
        mu = self.encode([smiles_a, smiles_b])
        path = latent_path(self.vae.latent, mu[0], mu[1], steps)
        ts = [i / (steps - 1) for i in range(steps)]
        return ts, self.decode(path, greedy=True)


def interpolation_rows(
    model: MolGenModel, smiles_a: str, smiles_b: str, steps: int = 10
) -> list[dict[str, Any]]:
    """Decode the path from a to b: per step the SMILES, validity and Tanimoto to a and to b."""
    ts, decoded = model.interpolate(smiles_a, smiles_b, steps)
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
        valid_only: Keep only valid molecules.
        unique: Keep only the first occurrence of each canonical SMILES.
        novel_against: Canonical SMILES set to call molecules novel against (and, with
            ``novel_only``, to exclude).
        novel_only: Keep only molecules not in ``novel_against``.
        max_attempts: Cap on decoded candidates (default 20 x n + 1000).
    """

    n: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512
    around: str | None = None
    rho: float = 0.9
    valid_only: bool = False
    unique: bool = False
    novel_against: set[str] | None = None
    novel_only: bool = False
    max_attempts: int | None = None


@dataclass
class SampleStats:
    """Counts of one ``generate_rows`` run."""

    attempts: int = 0
    written: int = 0
    valid: int = 0
    cap_hit: bool = False


def generate_rows(
    model: MolGenModel, req: SampleRequest, stats: SampleStats, progress: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield output rows (smiles, valid, [novel], [similarity]) until ``req.n`` pass the filters.

    Rows stream out batch by batch, so the caller can write them as they come.
    """
    if req.n <= 0:
        raise MolgenError("-n must be a positive number of molecules.")
    cap = req.max_attempts or 20 * req.n + 1000
    seen: set[str] = set()
    query_fp = None
    mu = None
    if req.around is not None:
        mu = model.encode([req.around])[0]
        query_fp = fingerprint(req.around)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=req.n, desc="molecules", unit="mol")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(req.seed)
        while stats.written < req.n:
            if stats.attempts >= cap:
                stats.cap_hit = True
                break
            size = min(req.batch_size, cap - stats.attempts)
            z = model.prior_z(size) if mu is None else model.around_z(mu, size, req.rho)
            for raw in model._decode_t(z, req.temperature):
                stats.attempts += 1
                canon = canonicalize(raw, largest_fragment=False, stereo=True) if raw else None
                valid = canon is not None
                if req.valid_only and not valid:
                    continue
                key = canon if canon is not None else raw
                if req.unique and (key in seen):
                    continue
                novel = None
                if req.novel_against is not None:
                    novel = valid and canon not in req.novel_against
                    if req.novel_only and not novel:
                        continue
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


def write_rows(rows: Iterator[dict[str, Any]], out: Path | None, keep_first: int = 0) -> list[dict]:
    """Write streamed rows as CSV to ``out`` (or stdout); return the first ``keep_first`` rows."""
    import contextlib
    import sys

    first: list[dict] = []
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(out, "w", newline="")) if out else sys.stdout
        writer = None
        for row in rows:
            if writer is None:
                # "\n": plain Unix lines on stdout and in files (csv's default is "\r\n")
                writer = csv.DictWriter(handle, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
            if len(first) < keep_first:
                first.append(row)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(str(out))
    return out


def similarity_profile(
    model: MolGenModel, query: str, rhos: Sequence[float], n: int = 100, seed: int = 0
) -> list[dict[str, float]]:
    """Mean Tanimoto similarity to the query and validity of greedy analogues for each rho."""
    rows = []
    for rho in rhos:
        req = SampleRequest(n=n, temperature=0.0, seed=seed, around=query, rho=rho)
        stats = SampleStats()
        sims = [r["similarity"] for r in generate_rows(model, req, stats) if r["valid"]]
        mean = sum(sims) / len(sims) if sims else math.nan
        rows.append(
            {"rho": rho, "mean_similarity": mean, "validity": stats.valid / max(stats.written, 1)}
        )
    return rows
