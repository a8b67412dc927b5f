"""Latent vectors of a molecule file: per molecule its posterior mean and concentration.

``encode_file`` streams a file through a model: records are read, checked (``molgen.inputs``),
encoded in length-sorted batches and written in file order, chunk by chunk, so memory stays flat
whatever the file size. Every row that cannot be encoded (empty, unparseable, too long, unknown
tokens) is written to a rejected file beside the output with its line number and reason.

The pieces shared with ``molgen.score`` live here too: the checked stream
(:func:`encodable_chunks`), the rejected-rows writer, the table writers (CSV, Parquet) and the
run statistics.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molgen.data import UNKNOWN_TOKENS
from molgen.inputs import CheckedInput, InputChecker, pad_ids, stereo_warning
from molgen.outputs import atomic_output, atomic_path, check_output_path
from molgen.records import MoleculeFile, Record, batched, prefetched

ENCODE_SUFFIXES = (".csv", ".parquet", ".npy")
TABLE_SUFFIXES = (".csv", ".parquet")
REJECTED_COLUMNS = ("line", "smiles", "reason", "detail")
CHUNK = 4096  # molecules read, checked and written together (sorted by length inside a chunk)
_MAX_TOKENS_COUNTED = 1000  # distinct unknown tokens tallied for the summary


# ---- paths -----------------------------------------------------------------------------------
def rejected_path(output: Path) -> Path:
    """Where the rejected rows of ``output`` go: ``out.rejected.csv`` beside ``out.csv``."""
    return output.with_name(output.stem + ".rejected.csv")


def index_path(output: Path) -> Path:
    """The row table beside a ``.npy`` output: ``out.rows.csv`` (line, ids, smiles, rho...)."""
    return output.with_name(output.stem + ".rows.csv")


def output_paths(
    output: Path | str, inputs: Sequence[Path | str | None], suffixes: tuple[str, ...]
) -> list[Path]:
    """Check every file a run will write, before any work: the output and the files beside it.

    Returns:
        ``[output, rejected file]`` (and the row table for ``.npy``).

    Raises:
        MolgenError: a path that cannot be written, or would overwrite an input.
    """
    output = check_output_path(output, "-o", inputs=inputs, suffixes=suffixes)
    paths = [output, rejected_path(output)]
    if output.suffix.lower() == ".npy":
        paths.append(index_path(output))
    for extra in paths[1:]:
        check_output_path(extra, "-o", inputs=inputs)
    return paths


# ---- statistics --------------------------------------------------------------------------------
@dataclass
class RunStats:
    """Counts of a file run (encode or score).

    Attributes:
        read: Rows read.
        done: Molecules encoded (or scored).
        rejected: Rejected rows per reason.
        unknown_tokens: How many rows each unknown token appeared in.
        stereo_removed: Molecules whose stereochemistry was removed.
        seconds: Wall time of the run.
    """

    read: int = 0
    done: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unknown_tokens: Counter[str] = field(default_factory=Counter)
    stereo_removed: int = 0
    seconds: float = 0.0

    @property
    def n_rejected(self) -> int:
        """Rows rejected, all reasons."""
        return sum(self.rejected.values())

    @property
    def rate(self) -> float:
        """Molecules per second."""
        return self.done / self.seconds if self.seconds > 0 else float("nan")


def summary_lines(stats: RunStats, what: str, output: Path) -> list[str]:
    """The lines a command prints after a run: counts, speed, rejected rows per reason."""
    lines = [
        f"{what} {stats.done:,} of {stats.read:,} molecules -> {output} "
        f"in {stats.seconds:.1f} s ({stats.rate:,.0f} molecules/s)"
    ]
    if stats.n_rejected:
        reasons = ", ".join(f"{n:,} {r}" for r, n in stats.rejected.most_common())
        lines.append(f"{stats.n_rejected:,} rejected ({reasons}) -> {rejected_path(output)}")
    else:
        lines.append(f"0 rejected -> {rejected_path(output)}")
    return lines


def warning_lines(stats: RunStats, checker: InputChecker, path: Path) -> list[str]:
    """Warnings for stderr: stereochemistry removed, tokens the model never saw."""
    out = []
    if stats.stereo_removed:
        out.append(stereo_warning(stats.stereo_removed, checker))
    if stats.unknown_tokens:
        shown = ", ".join(f"{t} ({n:,})" for t, n in stats.unknown_tokens.most_common(10))
        more = len(stats.unknown_tokens) - 10
        shown += f" and {more} more tokens" if more > 0 else ""
        out.append(
            f"Warning: {stats.rejected[UNKNOWN_TOKENS]:,} molecules of {path} have tokens this "
            f"model never saw: {shown}. " + checker.unknown_hint()
        )
    return out


# ---- the checked stream --------------------------------------------------------------------------
class RejectedWriter:
    """Writes rejected rows (line, smiles, reason, detail) as they come, to an open text file."""

    def __init__(self, handle: Any) -> None:
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(REJECTED_COLUMNS)

    def write(self, record: Record, item: CheckedInput) -> None:
        """Write one rejected row."""
        self._writer.writerow([record.line, record.smiles, item.reason, item.detail])


def encodable_chunks(
    records: Iterator[Record],
    checker: InputChecker,
    stats: RunStats,
    rejected: RejectedWriter,
    chunk: int = CHUNK,
) -> Iterator[list[tuple[Record, CheckedInput]]]:
    """Lists of up to ``chunk`` encodable molecules in file order; rejected rows are written.

    Updates ``stats`` (read, rejected, unknown tokens, stereo removed) as it goes.
    """
    for block in batched(records, chunk):
        good = []
        for record in block:
            item = checker.check(record.smiles)
            stats.read += 1
            if item.ok:
                good.append((record, item))
                stats.stereo_removed += item.stereo_removed
                continue
            stats.rejected[item.reason or "rejected"] += 1
            if item.reason == UNKNOWN_TOKENS:
                tokens = item.detail.split()
                if len(stats.unknown_tokens) > _MAX_TOKENS_COUNTED:  # a hostile file: bounded
                    tokens = [t for t in tokens if t in stats.unknown_tokens]
                stats.unknown_tokens.update(tokens)
            rejected.write(record, item)
        if good:
            yield good


def length_sorted(
    items: Sequence[tuple[Record, CheckedInput]], batch_size: int
) -> Iterator[tuple[list[int], list[list[int]]]]:
    """Batches of (positions in ``items``, id lists), shortest molecules first (less padding)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][1].ids or ()))
    for positions in batched(order, batch_size):
        yield positions, [items[i][1].ids or [] for i in positions]


# ---- writers -----------------------------------------------------------------------------------
def output_names(fixed_before: Sequence[str], kept: Sequence[str], fixed_after: Sequence[str]):
    """Column names: input columns that clash with the command's own get an ``input_`` prefix."""
    taken = set(fixed_before) | set(fixed_after)
    names = []
    for name in kept:
        new = name or "column"
        if new in taken:
            new = f"input_{new}"
        base, k = new, 2
        while new in taken:
            new, k = f"{base}_{k}", k + 1
        taken.add(new)
        names.append(new)
    return [*fixed_before, *names, *fixed_after]


def _csv_text(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


class TableWriter:
    """Streams rows to a CSV or Parquet file (kind per column: ``int``, ``str``, ``f4``, ``f8``).

    Args:
        handle_or_path: An open text file (CSV) or a path (Parquet, written in row groups).
        names: Column names.
        kinds: Column kinds, one per name; numbers come last in each row for the CSV fast path.
    """

    _FLOAT_FORMAT = {"f4": "%.9g", "f8": "%.12g"}

    def __init__(self, handle_or_path: Any, names: Sequence[str], kinds: Sequence[str]) -> None:
        self.names, self.kinds = list(names), list(kinds)
        self.parquet = isinstance(handle_or_path, Path)
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"int": pa.int64(), "str": pa.string(), "f4": pa.float32(), "f8": pa.float64()}
            self._schema = pa.schema([(n, types[k]) for n, k in zip(names, kinds, strict=True)])
            self._writer = pq.ParquetWriter(str(handle_or_path), self._schema)
        else:
            self._handle = handle_or_path
            self._handle.write(",".join(_csv_text(n) for n in names) + "\n")
            self._n_text = next((i for i, k in enumerate(kinds) if k in ("f4", "f8")), len(kinds))
            self._format = ",".join(self._FLOAT_FORMAT[k] for k in kinds[self._n_text :])

    def write(self, columns: Sequence[Any]) -> None:
        """Write rows given column-wise (lists or arrays, one per name, all the same length)."""
        if self.parquet:
            import pyarrow as pa

            arrays = [
                pa.array(np.asarray(c) if k in ("f4", "f8") else c, type=t.type)
                for c, k, t in zip(columns, self.kinds, self._schema, strict=True)
            ]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
            return
        text_cols = columns[: self._n_text]
        n = len(columns[0]) if columns else 0
        prefixes = [",".join(_csv_text(c[i]) for c in text_cols) for i in range(n)]
        if self._n_text < len(columns):
            numbers = np.column_stack(
                [np.asarray(c, dtype=np.float64) for c in columns[self._n_text :]]
            ).tolist()
            fmt = self._format
            sep = "," if self._n_text else ""
            lines = [p + sep + fmt % tuple(row) for p, row in zip(prefixes, numbers, strict=True)]
        else:
            lines = prefixes
        if lines:
            self._handle.write("\n".join(lines) + "\n")

    def close(self) -> None:
        """Finish the file (Parquet footer)."""
        if self.parquet:
            self._writer.close()


class _NpyWriter:
    """Streams float32 rows to a raw file, then writes ``.npy`` (header + data) at the end."""

    def __init__(self, path: Path, width: int) -> None:
        self.path, self.width, self.rows = path, width, 0
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".raw", dir=path.parent)
        self._raw_path = Path(name)
        self._raw = os.fdopen(fd, "wb")

    def write(self, matrix: np.ndarray) -> None:
        block = np.ascontiguousarray(matrix, dtype="<f4")
        self._raw.write(block.tobytes())
        self.rows += len(block)

    def finish(self, target: Path) -> None:
        """Write the ``.npy`` file to ``target`` (a temporary path of the output)."""
        self._raw.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.width)}
        with open(target, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)

    def discard(self) -> None:
        self._raw.close()
        with contextlib.suppress(OSError):
            self._raw_path.unlink()


# ---- encoding ----------------------------------------------------------------------------------
@dataclass
class EncodeOptions:
    """Settings of :func:`encode_file`.

    Attributes:
        smiles_column: SMILES column (None: detected).
        sep: Delimiter (None: sniffed).
        id_columns: Input columns to copy to the output (None: all but the SMILES column).
        batch_size: Molecules per encoder batch.
        chunk: Molecules read and written together (memory is bounded by it).
        progress: Show a progress bar on stderr.
    """

    smiles_column: str | None = None
    sep: str | None = None
    id_columns: Sequence[str] | None = None
    batch_size: int = 512
    chunk: int = CHUNK
    progress: bool = False


@torch.inference_mode()
def encode_ids(model: Any, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Posterior mean direction (mu; the mean for the Gaussian family) and concentration.

    Returns:
        ``(mu, concentration)`` as float32 arrays of shapes (n, latent_dim) and (n,).
    """
    posterior, _ = model.vae.encode(ids.to(model.device), lengths.to(model.device))
    mu = model.vae.latent.mode(posterior)
    conc = model.vae.latent.concentration(posterior)
    return mu.float().cpu().numpy(), conc.float().cpu().numpy()


def encode_file(
    model: Any,
    path: Path | str,
    output: Path | str,
    options: EncodeOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Encode every molecule of a file and write the results (.csv, .parquet or .npy).

    CSV and Parquet rows: ``line``, the kept input columns, ``smiles`` (the canonical SMILES that
    was encoded), the concentration (``rho`` for spCauchy; the family's measure otherwise) and
    ``mu_0 .. mu_{d-1}``. A ``.npy`` file holds the (n, d) float32 matrix of mu; the other
    columns go to ``out.rows.csv`` beside it, row for row. Rejected rows go to
    ``out.rejected.csv``. Files replace existing ones only when the run succeeds.

    Args:
        model: A loaded ``MolGenModel``.
        path: The molecule file.
        output: Output file (suffix .csv, .parquet or .npy).
        options: Reading and batching settings.
        on_progress: Called with the number of input bytes read so far, after each chunk.

    Returns:
        The run's counts (``done`` is 0 when no molecule could be encoded: the files are written).

    Raises:
        MolgenError: unreadable input, or an output that cannot be written.
    """
    options = options or EncodeOptions()
    output = Path(output)
    paths = output_paths(output, [path, getattr(model, "path", None)], ENCODE_SUFFIXES)
    checker = InputChecker.for_model(model)
    stats = RunStats()
    conc_name = model.vae.latent.concentration_name or "concentration"
    dim = model.latent_dim
    mu_names = [f"mu_{i}" for i in range(dim)]
    npy = output.suffix.lower() == ".npy"
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(
            MoleculeFile(path, options.smiles_column, options.sep, options.id_columns)
        )
        rejected = RejectedWriter(stack.enter_context(atomic_output(paths[1], newline="")))
        floats = ["f4"] + ([] if npy else ["f4"] * dim)
        names = output_names(["line"], source.columns, ["smiles", conc_name])
        if not npy:
            names += mu_names
        kinds = ["int"] + ["str"] * (len(source.columns) + 1) + floats
        matrix_writer = None
        if npy:
            table_target: Any = stack.enter_context(atomic_output(paths[2], newline=""))
            final = stack.enter_context(atomic_path(output))
            matrix_writer = _NpyWriter(output, dim)
            stack.callback(matrix_writer.discard)
        elif output.suffix.lower() == ".parquet":
            table_target = stack.enter_context(atomic_path(output))
        else:
            table_target = stack.enter_context(atomic_output(output, newline=""))
        table = TableWriter(table_target, names, kinds)
        chunks = encodable_chunks(iter(source), checker, stats, rejected, options.chunk)
        for chunk in prefetched(chunks):
            mu = np.empty((len(chunk), dim), dtype=np.float32)
            conc = np.empty(len(chunk), dtype=np.float32)
            for positions, rows in length_sorted(chunk, options.batch_size):
                ids, lengths = pad_ids(rows, model.vocab.pad_id)
                mu[positions], conc[positions] = encode_ids(model, ids, lengths)
            columns: list[Any] = [[r.line for r, _ in chunk]]
            columns += [[r.columns[j] for r, _ in chunk] for j in range(len(source.columns))]
            columns += [[item.smiles for _, item in chunk], conc]
            if matrix_writer is not None:
                matrix_writer.write(mu)
            else:
                columns += list(mu.T)
            table.write(columns)
            stats.done += len(chunk)
            if on_progress is not None:
                on_progress(source.bytes_read)
        table.close()
        if matrix_writer is not None:
            matrix_writer.finish(final)
        stats.seconds = time.perf_counter() - start
    return stats


__all__ = [
    "ENCODE_SUFFIXES",
    "EncodeOptions",
    "RejectedWriter",
    "RunStats",
    "TableWriter",
    "encodable_chunks",
    "encode_file",
    "encode_ids",
    "index_path",
    "length_sorted",
    "output_names",
    "output_paths",
    "rejected_path",
    "summary_lines",
    "warning_lines",
]
