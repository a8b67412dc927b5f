"""Molecule data pipeline: validate, canonicalize, tokenize and split users' SMILES files.

Reading the files (formats, delimiters, the SMILES column, line numbers) is ``molgen.readers``;
this module holds :class:`DataConfig`, the SMILES size bounds and canonicalization, the per-row
checks, their cache, the split and :func:`prepare_dataset`.

Every row left out of the prepared data is reported (line, original text, reason); fatal input
problems raise :class:`~molgen.errors.MolgenError` with a one-line message saying what to do.
RDKit work runs in worker processes, in chunks: parsing + canonicalizing costs ~0.15 ms a molecule.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from molgen.errors import MolgenError
from molgen.readers import _read_file, _Table, file_fingerprint, normalize_sep
from molgen.tokenizer import TOKENIZER_KINDS, Vocabulary, get_tokenizer

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_DATA = DATA_DIR / "moses" / "train.csv.gz"

# Reasons a row is dropped, in the order they are checked and reported.
EMPTY = "empty"
UNPARSEABLE = "unparseable"
NOT_SELFIES = "not encodable as SELFIES"
TOO_LONG = "too long"
UNKNOWN_TOKENS = "unknown tokens"
DUPLICATE = "duplicate"
REJECT_REASONS: tuple[str, ...] = (
    EMPTY,
    UNPARSEABLE,
    NOT_SELFIES,
    TOO_LONG,
    UNKNOWN_TOKENS,
    DUPLICATE,
)
_KEPT = 255  # row status code for a kept row; rejected rows store their index in REJECT_REASONS

# Rows per worker task; small inputs run in-process (starting a pool costs ~0.5 s).
_CHUNK_SIZE = 2000
_MIN_ROWS_FOR_POOL = 10_000

# Size bounds on user SMILES, checked before RDKit sees a string. RDKit's canonical SMILES writer
# (Canon::dfsBuildStack) recurses once per atom along a chain: on a 8 MiB stack `"C" * 19000`
# crashes the process with a segmentation fault (18,000 atoms still pass; ~450 bytes of stack per
# atom), and the work grows about quadratically (10,000 atoms: 3 s). Parsing is iterative, but
# its ring perception is super-linear on fused or dense ring systems (5,000 characters: ~1 s).
# Measured (tests/integration/test_hostile.py documents the numbers): at the bounds below every
# shape tried (chains, nested branches, fused aromatics, dense ring closures, dot-separated
# fragments) parses within a 256 KiB stack and canonicalizes within 512 KiB, in under 0.15 s;
# that is 16x below the default 8 MiB stack. Drug-like molecules have well under 200 heavy atoms
# and 300 characters.
#: Longest SMILES string read, in characters (longer lines are rejected as "too long").
MAX_SMILES_CHARS = 2000
#: Most heavy atoms in a molecule (checked after parsing, before any canonicalization).
MAX_ATOMS = 1000
#: The largest ``max_atoms`` a :class:`DataConfig` may ask for (canonicalization needs ~450 bytes
#: of stack per atom: 5,000 atoms stay at 2.2 MiB of the default 8 MiB).
ATOMS_LIMIT = 5000


@dataclass
class DataConfig:
    """Options for reading and preparing a molecule file (the ``prepare`` and ``train`` options).

    Attributes:
        smiles_column: Column holding SMILES; ``None`` auto-detects it.
        sep: Field delimiter; ``None`` sniffs comma, tab or semicolon (``tab`` works too).
        representation: ``"smiles"`` or ``"selfies"`` (what the tokens are).
        max_length: Longest molecule kept, in tokens, excluding ``<bos>``/``<eos>``.
        largest_fragment: Keep only the largest fragment (strips salts and solvents).
        stereo: Keep stereochemistry; ``False`` removes it (isotopes and charges are kept).
        valid_fraction: Validation share; a value > 1 is a molecule count.
        test_fraction: Test share; a value > 1 is a molecule count.
        seed: Seed of the split and of the augmentation.
        augment: Randomized (non-canonical) SMILES added per training molecule.
        n_jobs: Worker processes; 0 means all available cores.
        max_chars: Longest SMILES line read, in characters; longer lines are rejected unparsed.
        max_atoms: Most heavy atoms per molecule (at most :data:`ATOMS_LIMIT`).
    """

    smiles_column: str | None = None
    sep: str | None = None
    representation: str = "smiles"
    max_length: int = 100
    largest_fragment: bool = True
    stereo: bool = True
    valid_fraction: float = 0.05
    test_fraction: float = 0.0
    seed: int = 0
    augment: int = 0
    n_jobs: int = 0
    max_chars: int = MAX_SMILES_CHARS
    max_atoms: int = MAX_ATOMS

    def validate(self) -> None:
        """Check the option values.

        Raises:
            MolgenError: Naming the bad option and its allowed values.
        """
        if str(self.representation).lower() not in TOKENIZER_KINDS:
            raise MolgenError(
                f"--representation must be one of {', '.join(TOKENIZER_KINDS)}, "
                f"not {self.representation!r}"
            )
        if int(self.max_length) < 1:
            raise MolgenError(f"--max-length must be at least 1, not {self.max_length}")
        for name, value in (("valid", self.valid_fraction), ("test", self.test_fraction)):
            if value < 0 or (value > 1 and float(value) != int(value)):
                raise MolgenError(
                    f"--{name}-fraction must be a fraction in [0, 1] or a whole count > 1, "
                    f"not {value}"
                )
        if int(self.augment) < 0:
            raise MolgenError(f"--augment must be 0 or more, not {self.augment}")
        if int(self.n_jobs) < 0:
            raise MolgenError(f"--jobs must be 0 (all cores) or more, not {self.n_jobs}")
        if int(self.max_chars) < 1:
            raise MolgenError(f"--max-chars must be at least 1, not {self.max_chars}")
        if not 1 <= int(self.max_atoms) <= ATOMS_LIMIT:
            raise MolgenError(
                f"max_atoms must be between 1 and {ATOMS_LIMIT} (RDKit's stack), "
                f"not {self.max_atoms}"
            )
        normalize_sep(self.sep)


@dataclass
class PreparedData:
    """Result of :func:`prepare_dataset`.

    Attributes:
        train: Canonical training SMILES, followed by the ``n_augmented`` randomized variants.
        valid: Canonical validation SMILES.
        test: Canonical test SMILES.
        vocab: Token vocabulary (covers train, augmented, valid and test, or the given one).
        tokenizer_kind: ``"smiles"`` or ``"selfies"``.
        n_read: Data rows read from the file.
        n_kept: Distinct valid molecules kept (before augmentation).
        rejected_counts: Reason -> rows dropped for it (every reason listed, zeros included).
        source: The input path.
        fingerprint: SHA-256 of the input file bytes.
        column: The column the SMILES were read from (``None`` for a plain ``.smi`` file).
        n_augmented: Randomized variants appended to ``train``.
        length_stats: Token-length percentiles of the kept canonical molecules (p50, p90, p99, max).
        config: The :class:`DataConfig` used, as a dict.
        files: Name -> path of each file written (when an output folder was given).
        cache_file: The cache the per-molecule checks were loaded from (``None``: computed now).
    """

    train: list[str]
    valid: list[str]
    test: list[str]
    vocab: Vocabulary
    tokenizer_kind: str
    n_read: int
    n_kept: int
    rejected_counts: dict[str, int]
    source: str
    fingerprint: str
    column: str | None = None
    n_augmented: int = 0
    length_stats: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    cache_file: str | None = None

    @property
    def n_rejected(self) -> int:
        """Rows dropped, all reasons together."""
        return sum(self.rejected_counts.values())

    def summary(self) -> dict[str, Any]:
        """Plain-type summary: counts, dropped rows by reason, vocabulary size, token lengths."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "column": self.column,
            "representation": self.tokenizer_kind,
            "n_read": self.n_read,
            "n_kept": self.n_kept,
            "n_rejected": self.n_rejected,
            "rejected": dict(self.rejected_counts),
            "n_train": len(self.train) - self.n_augmented,
            "n_augmented": self.n_augmented,
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "vocab_size": len(self.vocab),
            "token_length": dict(self.length_stats),
        }


# ---------------------------------------------------------------------------------------------
# Chemistry helpers
# ---------------------------------------------------------------------------------------------


def smiles_size_problem(text: str, max_chars: int | None = None) -> str | None:
    """Why a SMILES string is too long to be parsed safely, or None when it is not.

    Args:
        text: The SMILES (surrounding whitespace is not counted).
        max_chars: Bound in characters (default :data:`MAX_SMILES_CHARS`).

    Returns:
        ``"N characters > BOUND"``, or None.
    """
    bound = MAX_SMILES_CHARS if max_chars is None else int(max_chars)
    n = len(text.strip()) if isinstance(text, str) else 0
    return f"{n} characters > {bound}" if n > bound else None


def atoms_problem(mol: Any, max_atoms: int | None = None) -> str | None:
    """Why a parsed molecule is too large to canonicalize safely (``"N atoms > BOUND"``) or None."""
    bound = MAX_ATOMS if max_atoms is None else int(max_atoms)
    n = mol.GetNumAtoms()
    return f"{n} atoms > {bound}" if n > bound else None


def parse_smiles(
    smiles: str, max_chars: int | None = None, max_atoms: int | None = None
) -> Any | None:
    """Parse a SMILES with RDKit within the size bounds (the one safe way to read user strings).

    Args:
        smiles: Input SMILES (surrounding whitespace is ignored).
        max_chars: Longest string parsed (default :data:`MAX_SMILES_CHARS`).
        max_atoms: Most heavy atoms kept (default :data:`MAX_ATOMS`).

    Returns:
        The sanitized RDKit molecule, or None when the string is empty, longer than ``max_chars``,
        does not parse, has no atom, or has more than ``max_atoms`` atoms.
    """
    from rdkit import Chem, rdBase

    text = smiles.strip() if isinstance(smiles, str) else ""
    if not text or smiles_size_problem(text, max_chars):
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
    if mol is None or mol.GetNumAtoms() == 0 or atoms_problem(mol, max_atoms):
        return None
    return mol


def canonicalize(smiles: str, largest_fragment: bool = True, stereo: bool = True) -> str | None:
    """RDKit canonical SMILES of a molecule.

    Args:
        smiles: Input SMILES (surrounding whitespace is ignored).
        largest_fragment: Keep only the largest fragment (salts, counter-ions and solvents dropped).
        stereo: Keep stereochemistry (isotopes and charges are always kept).

    Returns:
        The canonical SMILES, or ``None`` if the input is empty, does not parse, or is beyond the
        size bounds (:data:`MAX_SMILES_CHARS`, :data:`MAX_ATOMS`; see :func:`parse_smiles`).
    """
    from rdkit import rdBase

    mol = parse_smiles(smiles)
    if mol is None:
        return None
    with rdBase.BlockLogs():
        return _canonical_from_mol(mol, smiles.strip(), largest_fragment, stereo)


def _canonical_from_mol(mol: Any, text: str, largest_fragment: bool, stereo: bool) -> str:
    from rdkit import Chem

    if largest_fragment and "." in text:
        mol = _fragment_chooser().choose(mol)
    if not stereo:
        Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


_CHOOSER: Any = None


def _fragment_chooser() -> Any:
    global _CHOOSER
    if _CHOOSER is None:
        from rdkit.Chem.MolStandardize import rdMolStandardize

        _CHOOSER = rdMolStandardize.LargestFragmentChooser()
    return _CHOOSER


def randomize_smiles(smiles: str, rng: random.Random | np.random.Generator) -> str:
    """A randomized (non-canonical) SMILES of the same molecule: atoms renumbered at random.

    Args:
        smiles: Input SMILES.
        rng: ``random.Random`` or ``numpy.random.Generator``; the same state gives the same output.

    Returns:
        A SMILES string for the same molecule (for one-atom molecules it can equal the input).

    Raises:
        MolgenError: If ``smiles`` does not parse.
    """
    problem = smiles_size_problem(smiles)
    if problem:
        raise MolgenError(f"cannot randomize a SMILES of {problem} (too long to parse)")
    mol = parse_smiles(smiles)
    if mol is None:
        raise MolgenError(
            f"cannot randomize {smiles!r}: RDKit cannot parse it (or it has over {MAX_ATOMS} atoms)"
        )
    return _random_smiles_from_mol(mol, rng)


def _random_smiles_from_mol(mol: Any, rng: random.Random | np.random.Generator) -> str:
    from rdkit import Chem

    n = mol.GetNumAtoms()
    if isinstance(rng, np.random.Generator):
        order = [int(i) for i in rng.permutation(n)]
    else:
        order = list(range(n))
        rng.shuffle(order)
    return Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)


# ---------------------------------------------------------------------------------------------
# Validation + canonicalization workers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    kind: str
    max_length: int
    largest_fragment: bool
    stereo: bool
    vocab_tokens: frozenset[str] | None
    max_chars: int = MAX_SMILES_CHARS
    max_atoms: int = MAX_ATOMS


@dataclass
class _ChunkResult:
    canonical: list[str | None]
    codes: bytes
    lengths: array
    tokens: set[str]
    details: dict[int, str]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _worker_init() -> None:
    import signal

    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    # Ctrl-C is the parent's to handle (it stops the pool): no traceback from every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_chunk(task: tuple[Sequence[str], _Settings]) -> _ChunkResult:
    """Validate, canonicalize and tokenize one chunk of raw strings."""
    from rdkit import Chem

    texts, st = task
    tokenizer = get_tokenizer(st.kind)
    tokenize = tokenizer.tokenize
    vocab_tokens = st.vocab_tokens
    canonical: list[str | None] = [None] * len(texts)
    codes = bytearray(len(texts))
    lengths = array("i", bytes(4 * len(texts)))
    tokens: set[str] = set()
    details: dict[int, str] = {}
    for j, raw in enumerate(texts):
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            codes[j] = 0  # EMPTY
            continue
        if len(text) > st.max_chars:  # before RDKit: see MAX_SMILES_CHARS
            codes[j] = 3  # TOO_LONG
            details[j] = f"{len(text)} characters > {st.max_chars}"
            continue
        try:
            mol = Chem.MolFromSmiles(text)
            if mol is None or mol.GetNumAtoms() == 0:
                codes[j] = 1  # UNPARSEABLE
                continue
            if mol.GetNumAtoms() > st.max_atoms:  # before canonicalizing: see MAX_ATOMS
                codes[j] = 3  # TOO_LONG
                details[j] = f"{mol.GetNumAtoms()} atoms > {st.max_atoms}"
                continue
            can = _canonical_from_mol(mol, text, st.largest_fragment, st.stereo)
        except Exception as exc:  # an RDKit exception on one odd row must not stop the run
            codes[j] = 1  # UNPARSEABLE
            details[j] = f"RDKit error: {_first_line(exc)}"
            continue
        try:
            toks = tokenize(can)
        except Exception as exc:  # selfies' own errors, and any other encoder failure
            codes[j] = 2  # NOT_SELFIES
            details[j] = _first_line(exc)
            continue
        if len(toks) > st.max_length:
            codes[j] = 3  # TOO_LONG
            details[j] = f"{len(toks)} tokens > {st.max_length}"
            continue
        if vocab_tokens is not None:
            unknown = [t for t in dict.fromkeys(toks) if t not in vocab_tokens]
            if unknown:
                codes[j] = 4  # UNKNOWN_TOKENS
                details[j] = " ".join(unknown)
                continue
        codes[j] = _KEPT
        canonical[j] = can
        lengths[j] = len(toks)
        tokens.update(toks)
    return _ChunkResult(canonical, bytes(codes), lengths, tokens, details)


def _augment_chunk(
    task: tuple[Sequence[str], int, int, int, _Settings],
) -> tuple[list[list[str]], set[str]]:
    """Randomized SMILES for one chunk of canonical training SMILES (seeded per molecule)."""
    from rdkit import Chem

    smiles_list, start, seed, n_variants, st = task
    tokenize = get_tokenizer(st.kind).tokenize
    out: list[list[str]] = []
    tokens: set[str] = set()
    for k, can in enumerate(smiles_list):
        rng = random.Random(f"molgen-augment:{seed}:{start + k}")
        mol = Chem.MolFromSmiles(can)
        found: list[str] = []
        if mol is not None and mol.GetNumAtoms() > 1:
            for _ in range(4 * n_variants):
                try:
                    variant = _random_smiles_from_mol(mol, rng)
                    if variant == can or variant in found:
                        continue
                    toks = tokenize(variant)
                except Exception:  # a variant RDKit/selfies cannot write: try another one
                    continue
                if len(toks) > st.max_length:
                    continue
                if st.vocab_tokens is not None and any(t not in st.vocab_tokens for t in toks):
                    continue
                found.append(variant)
                tokens.update(toks)
                if len(found) == n_variants:
                    break
        out.append(found)
    return out, tokens


def _resolve_jobs(n_jobs: int) -> int:
    if n_jobs > 0:
        return n_jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_tasks(
    func: Callable[[Any], Any],
    tasks: list[Any],
    n_jobs: int,
    n_rows: int,
    on_result: Callable[[Any], None],
) -> None:
    """Run ``func`` over tasks in order (in-process or in a pool), feeding results to a callback."""
    workers = min(_resolve_jobs(n_jobs), len(tasks))
    if workers <= 1 or n_rows < _MIN_ROWS_FOR_POOL:
        from rdkit import rdBase

        with rdBase.BlockLogs():
            for task in tasks:
                on_result(func(task))
        return
    # fork: no re-import of the caller's __main__ (scripts without a main guard work); workers only
    # run RDKit, so threads the parent may hold (torch, tqdm) are never used in a child.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(processes=workers, initializer=_worker_init) as pool:
        for result in pool.imap(func, tasks, chunksize=1):
            on_result(result)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="mol",
        unit_scale=True,
        disable=None if enabled else True,  # None: shown on a terminal, silent in logs and pipes
        file=sys.stderr,
        dynamic_ncols=True,
    )


# ---------------------------------------------------------------------------------------------
# Split, statistics, output files
# ---------------------------------------------------------------------------------------------


def _split_size(value: float, n: int) -> int:
    if value > 1:
        return int(value)
    if value <= 0:
        return 0
    return max(1, round(value * n))


def _split_sizes(config: DataConfig, n: int) -> tuple[int, int]:
    n_valid = _split_size(config.valid_fraction, n)
    n_test = _split_size(config.test_fraction, n)
    if n_valid + n_test < n:
        return n_valid, n_test
    counts = config.valid_fraction > 1 or config.test_fraction > 1
    if counts or config.valid_fraction + config.test_fraction >= 1:
        raise MolgenError(
            f"validation ({n_valid}) + test ({n_test}) molecules leave none of the {n} kept "
            "molecules for training; lower --valid-fraction/--test-fraction"
        )
    # Rounding tiny sets up to one molecule each must still leave one molecule to train on.
    while n_valid + n_test >= n and (n_valid or n_test):
        if n_test >= n_valid and n_test:
            n_test -= 1
        else:
            n_valid -= 1
    return n_valid, n_test


def _length_stats(lengths: np.ndarray) -> dict[str, int]:
    if lengths.size == 0:
        return {}
    pct = np.percentile(lengths, [50, 90, 99], method="nearest")
    return {
        "p50": int(pct[0]),
        "p90": int(pct[1]),
        "p99": int(pct[2]),
        "max": int(lengths.max()),
    }


#: Files the data step writes into its output folder.
OUTPUT_FILES = (
    "train.smi",
    "valid.smi",
    "test.smi",
    "rejected.csv",
    "vocab.json",
    "data_summary.json",
)


def _check_out_dir(out_dir: Path, inputs: Sequence[Path] = ()) -> None:
    """Check (before any work) that the data step can write its files into ``out_dir``.

    None of them may be one of the ``inputs`` (``prepare data/train.smi --out data`` would
    overwrite its own input) or an existing folder; the folder is created if needed.
    """
    from molgen.outputs import check_output_path

    if out_dir.exists() and not out_dir.is_dir():
        raise MolgenError(f"--out {out_dir} is a file; give a folder for the prepared data")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MolgenError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK):
        raise MolgenError(f"cannot write to output folder {out_dir}: permission denied")
    for name in OUTPUT_FILES:
        check_output_path(out_dir / name, "--out", inputs=inputs)


def _write_text(path: Path, text: str) -> None:
    from molgen.outputs import atomic_output

    with atomic_output(path, newline="\n") as fh:
        fh.write(text)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    from molgen.outputs import atomic_output

    with atomic_output(path, newline="\n") as fh:
        if lines:
            fh.write("\n".join(lines))
            fh.write("\n")


def _write_rejected(path: Path, rejected: Sequence[tuple[int, str, int, str]]) -> None:
    from molgen.outputs import atomic_output

    with atomic_output(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["line", "smiles", "reason", "detail"])
        for line, raw, code, detail in rejected:
            writer.writerow([line, raw, REJECT_REASONS[code], detail])


@dataclass
class _RowState:
    """Outcome of the per-row checks (everything the split, vocab and reports need)."""

    n_read: int
    column: str | None
    kept: list[str]  # distinct canonical SMILES, in file order
    lengths: np.ndarray  # token length of each kept molecule
    rejected: list[tuple[int, str, int, str]]  # (line, original text, reason code, detail)
    tokens: set[str]  # tokens of the kept molecules


def _shown(value: Any, max_chars: int) -> str:
    """A rejected row's text for rejected.csv: as read, cut after 200 characters when too long."""
    if not isinstance(value, str):
        return ""
    return value if len(value) <= max_chars else f"{value[:200]}... ({len(value)} characters)"


def _check_rows(table: _Table, settings: _Settings, n_jobs: int, progress: bool) -> _RowState:
    """Validate, canonicalize and tokenize every row (in workers), then drop duplicates."""
    values, lines = table.values, table.lines
    n_read = len(values)
    canonical: list[str | None] = []
    codes = bytearray()
    lengths = array("i")
    tokens: set[str] = set()
    details: dict[int, str] = {}
    bar = _progress(n_read, "Checking molecules", progress)

    def collect(result: _ChunkResult) -> None:
        offset = len(canonical)
        canonical.extend(result.canonical)
        codes.extend(result.codes)
        lengths.extend(result.lengths)
        tokens.update(result.tokens)
        for j, text in result.details.items():
            details[offset + j] = text
        bar.update(len(result.codes))

    tasks = [(values[i : i + _CHUNK_SIZE], settings) for i in range(0, n_read, _CHUNK_SIZE)]
    try:
        _run_tasks(_process_chunk, tasks, n_jobs, n_read, collect)
    finally:
        bar.close()
    del tasks

    # Duplicates after canonicalization: the first occurrence is kept.
    first_seen: dict[str, int] = {}
    dup_code = REJECT_REASONS.index(DUPLICATE)
    for i, can in enumerate(canonical):
        if can is None:
            continue
        j = first_seen.setdefault(can, i)
        if j != i:
            codes[i] = dup_code
            details[i] = f"same molecule as line {lines[j]}"
            canonical[i] = None
    del first_seen
    status = np.frombuffer(bytes(codes), dtype=np.uint8)
    kept_idx = np.flatnonzero(status == _KEPT)
    rejected = [
        (lines[i], _shown(values[i], settings.max_chars), codes[i], details.get(i, ""))
        for i in np.flatnonzero(status != _KEPT).tolist()
    ]
    return _RowState(
        n_read=n_read,
        column=table.column,
        kept=[canonical[i] or "" for i in kept_idx.tolist()],
        lengths=np.frombuffer(lengths, dtype=np.int32)[kept_idx].copy(),
        rejected=rejected,
        tokens=tokens,
    )


# ---------------------------------------------------------------------------------------------
# Cache of the per-row checks (the slow part: ~0.15 ms of RDKit per molecule)
# ---------------------------------------------------------------------------------------------

_CACHE_FORMAT = 1
# Smaller inputs take seconds and are not cached (keeps test runs out of the cache, too).
_CACHE_MIN_ROWS = 50_000


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/molgen`` (default ``~/.cache/molgen``); safe to delete."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "molgen"


def _cache_file(folder: Path, fingerprint: str, config: DataConfig, settings: _Settings) -> Path:
    import rdkit
    import selfies

    from molgen import __version__

    key = {
        "format": _CACHE_FORMAT,
        "molgen": __version__,
        "rdkit": rdkit.__version__,
        "selfies": selfies.__version__,
        "file": fingerprint,
        "smiles_column": config.smiles_column,
        "sep": normalize_sep(config.sep),
        "kind": settings.kind,
        "max_length": settings.max_length,
        "largest_fragment": settings.largest_fragment,
        "stereo": settings.stereo,
        "max_chars": settings.max_chars,
        "max_atoms": settings.max_atoms,
        "vocab": sorted(settings.vocab_tokens) if settings.vocab_tokens is not None else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"prepare-{fingerprint[:12]}-{digest}.txt.gz"


def _save_cache(path: Path, state: _RowState) -> bool:
    """Write the row state (gzip text; never pickle); returns False if it could not be written."""
    header = {
        "format": _CACHE_FORMAT,
        "n_read": state.n_read,
        "column": state.column,
        "n_kept": len(state.kept),
        "n_rejected": len(state.rejected),
        "tokens": sorted(state.tokens),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1, newline="\n") as fh:
            fh.write(json.dumps(header) + "\n")
            fh.writelines(
                f"{s}\t{n}\n" for s, n in zip(state.kept, state.lengths.tolist(), strict=True)
            )
            fh.writelines(json.dumps(list(row)) + "\n" for row in state.rejected)
        os.replace(tmp, path)
        return True
    except OSError:  # read-only home, full disk: the cache is an optimization only
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


def _load_cache(path: Path) -> _RowState | None:
    """Read a cached row state; ``None`` if absent or damaged (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
            header = json.loads(fh.readline())
            if header.get("format") != _CACHE_FORMAT:
                return None
            n_kept, n_rejected = int(header["n_kept"]), int(header["n_rejected"])
            kept: list[str] = []
            lengths = np.empty(n_kept, dtype=np.int32)
            for k in range(n_kept):
                s, _, n = fh.readline().rstrip("\n").partition("\t")
                kept.append(s)
                lengths[k] = int(n)
            rejected = []
            for _ in range(n_rejected):
                line, raw, code, detail = json.loads(fh.readline())
                rejected.append((int(line), str(raw), int(code), str(detail)))
            if fh.readline() != "":
                return None
    except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error):
        return None
    if len(kept) + len(rejected) != int(header["n_read"]) or not all(kept):
        return None
    return _RowState(
        n_read=int(header["n_read"]),
        column=header.get("column"),
        kept=kept,
        lengths=lengths,
        rejected=rejected,
        tokens=set(header["tokens"]),
    )


def _input_fingerprint(path: Path) -> str:
    if not path.exists():
        raise MolgenError(f"data file {path} does not exist; check the path")
    if path.is_dir():
        raise MolgenError(
            f"{path} is a folder; pass a SMILES file (.csv, .tsv, .smi or .txt, optionally .gz)"
        )
    try:
        return file_fingerprint(path)
    except PermissionError:
        raise MolgenError(f"cannot read {path}: permission denied; check its permissions") from None
    except OSError as exc:
        raise MolgenError(f"cannot read {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# prepare_dataset
# ---------------------------------------------------------------------------------------------


def prepare_dataset(
    path: str | Path,
    config: DataConfig,
    out_dir: Path | None = None,
    vocab: Vocabulary | None = None,
    progress: bool = True,
    cache: bool | str | Path = True,
) -> PreparedData:
    """Read, validate, canonicalize, deduplicate, tokenize and split a molecule file.

    Args:
        path: Input file (see :func:`molgen.readers.read_smiles_file` for the formats).
        config: Options.
        out_dir: If given, writes ``train.smi``, ``valid.smi``, ``test.smi`` (when there is a test
            split), ``rejected.csv``, ``vocab.json`` and ``data_summary.json`` there.
        vocab: An existing model's vocabulary: molecules with tokens outside it are rejected
            ("unknown tokens") and it is returned unchanged. ``None`` builds a new one.
        progress: Show a progress bar on stderr (on a terminal).
        cache: Reuse the per-molecule checks of an identical earlier run (same file bytes, same
            options, same RDKit/selfies/molgen versions) for inputs of 50,000+ rows: ``True`` uses
            :func:`default_cache_dir`, a path uses that folder, ``False`` turns it off.

    Returns:
        The prepared data.

    Raises:
        MolgenError: Bad options, unreadable input (see ``molgen.readers``), or no valid
            molecule left (``rejected.csv`` is still written first).
    """
    config.validate()
    kind = config.representation.lower()
    out = Path(out_dir).expanduser() if out_dir is not None else None
    source = Path(path).expanduser()
    if out is not None:
        _check_out_dir(out, inputs=[source])
    settings = _Settings(
        kind=kind,
        max_length=int(config.max_length),
        largest_fragment=bool(config.largest_fragment),
        stereo=bool(config.stereo),
        vocab_tokens=frozenset(vocab.tokens) if vocab is not None else None,
        max_chars=int(config.max_chars),
        max_atoms=int(config.max_atoms),
    )

    cache_path: Path | None = None
    state: _RowState | None = None
    if cache is not False:
        fingerprint = _input_fingerprint(source)
        folder = default_cache_dir() if cache is True else Path(cache).expanduser()
        cache_path = _cache_file(folder, fingerprint, config, settings)
        state = _load_cache(cache_path)
    from_cache = state is not None
    if state is None:
        table = _read_file(source, config.smiles_column, config.sep)
        fingerprint = table.fingerprint
        state = _check_rows(table, settings, config.n_jobs, progress)
        del table
        if cache_path is not None and state.n_read >= _CACHE_MIN_ROWS:
            _save_cache(cache_path, state)

    rejected_counts = {reason: 0 for reason in REJECT_REASONS}
    for _, _, code, _ in state.rejected:
        rejected_counts[REJECT_REASONS[code]] += 1
    if out is not None:
        _write_rejected(out / "rejected.csv", state.rejected)
    n_kept = len(state.kept)
    if n_kept == 0:
        dropped = ", ".join(f"{r} {c}" for r, c in rejected_counts.items() if c)
        where = f"; see {out / 'rejected.csv'}" if out is not None else ""
        raise MolgenError(
            f"no valid molecules left in {source}: {state.n_read} rows read, all dropped "
            f"({dropped}){where}; check the file and --smiles-column/--max-length"
        )

    n_valid, n_test = _split_sizes(config, n_kept)
    perm = np.random.default_rng(int(config.seed)).permutation(n_kept)
    train_mask = np.ones(n_kept, dtype=bool)
    train_mask[perm[: n_valid + n_test]] = False
    kept = state.kept
    valid = [kept[i] for i in np.sort(perm[:n_valid]).tolist()]
    test = [kept[i] for i in np.sort(perm[n_valid : n_valid + n_test]).tolist()]
    train = [kept[i] for i in np.flatnonzero(train_mask).tolist()]
    all_tokens = set(state.tokens)

    n_augmented = 0
    if config.augment > 0:
        variants: list[str] = []
        aug_bar = _progress(len(train), "Augmenting", progress)

        def collect_aug(result: tuple[list[list[str]], set[str]]) -> None:
            per_mol, toks = result
            for found in per_mol:
                variants.extend(found)
            all_tokens.update(toks)
            aug_bar.update(len(per_mol))

        aug_tasks = [
            (train[i : i + _CHUNK_SIZE], i, int(config.seed), int(config.augment), settings)
            for i in range(0, len(train), _CHUNK_SIZE)
        ]
        try:
            _run_tasks(_augment_chunk, aug_tasks, config.n_jobs, len(train), collect_aug)
        finally:
            aug_bar.close()
        n_augmented = len(variants)
        train.extend(variants)

    prepared = PreparedData(
        train=train,
        valid=valid,
        test=test,
        vocab=vocab if vocab is not None else Vocabulary.build([sorted(all_tokens)]),
        tokenizer_kind=kind,
        n_read=state.n_read,
        n_kept=n_kept,
        rejected_counts=rejected_counts,
        source=str(source),
        fingerprint=fingerprint,
        column=state.column,
        n_augmented=n_augmented,
        length_stats=_length_stats(state.lengths),
        config=asdict(config),
        cache_file=str(cache_path) if from_cache else None,
    )
    if out is not None:
        _write_outputs(prepared, out)
    return prepared


def _write_outputs(prepared: PreparedData, out: Path) -> None:
    files = {"train": out / "train.smi", "valid": out / "valid.smi"}
    _write_lines(files["train"], prepared.train)
    _write_lines(files["valid"], prepared.valid)
    test_path = out / "test.smi"
    if prepared.test:
        _write_lines(test_path, prepared.test)
        files["test"] = test_path
    elif test_path.exists():
        test_path.unlink()  # a stale split from an earlier run would not match this one
    files["rejected"] = out / "rejected.csv"  # written earlier, before any "no molecules" error
    files["vocab"] = out / "vocab.json"
    vocab_doc = {"tokenizer": prepared.tokenizer_kind, **prepared.vocab.to_dict()}
    _write_text(files["vocab"], json.dumps(vocab_doc, indent=1) + "\n")
    files["summary"] = out / "data_summary.json"
    prepared.files = {k: str(v) for k, v in files.items()}
    doc = {**prepared.summary(), "config": prepared.config, "files": prepared.files}
    _write_text(files["summary"], json.dumps(doc, indent=1) + "\n")


def format_summary(prepared: PreparedData) -> str:
    """Human-readable summary of a :class:`PreparedData` (what ``molgen prepare`` prints)."""
    s = prepared.summary()
    column = f" (column {s['column']!r})" if s["column"] else ""
    lines = [f"Read {s['n_read']:,} rows from {s['source']}{column}"]
    dropped = [f"{reason} {count:,}" for reason, count in s["rejected"].items() if count]
    lines.append(
        f"Kept {s['n_kept']:,} molecules; dropped {s['n_rejected']:,}"
        + (f" ({', '.join(dropped)})" if dropped else "")
    )
    split = f"Split (seed {prepared.config.get('seed', 0)}): train {s['n_train']:,}"
    if s["n_augmented"]:
        split += f" + {s['n_augmented']:,} randomized SMILES"
    split += f", valid {s['n_valid']:,}, test {s['n_test']:,}"
    lines.append(split)
    lines.append(f"Vocabulary: {s['vocab_size']} tokens ({s['representation']}, incl. 4 special)")
    if s["token_length"]:
        t = s["token_length"]
        lines.append(
            f"Token length: p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}"
        )
    if prepared.cache_file:
        lines.append(f"Per-molecule checks reused from the cache {prepared.cache_file}")
    if prepared.files:
        folder = Path(prepared.files["train"]).parent
        names = ", ".join(Path(p).name for p in prepared.files.values())
        lines.append(f"Wrote {names} to {folder}")
    return "\n".join(lines)


__all__ = [
    "DATA_DIR",
    "DEFAULT_DATA",
    "REJECT_REASONS",
    "DataConfig",
    "PreparedData",
    "canonicalize",
    "default_cache_dir",
    "format_summary",
    "prepare_dataset",
    "randomize_smiles",
]
