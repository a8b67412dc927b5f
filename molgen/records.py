"""Molecule files read as a stream: per record the SMILES, its line number and the columns kept.

``molgen.readers.read_smiles_file`` loads a whole file, as the data step needs; commands that go
through a file once (``molgen encode``, ``molgen score``) read it here record by record, so their
memory does not grow with the file. The formats and the SMILES-column detection are the data
step's: ``.csv``/``.tsv`` (delimiter sniffed or given, quoted fields, a header row, SMILES column
named or detected) and ``.smi``/``.txt`` (SMILES then an optional name), gzipped or not, UTF-8 with
or without BOM, LF or CRLF. The other columns come along (``.smi``: the name), to be written
beside each molecule's results.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molgen.errors import MolgenError
from molgen.readers import (
    SMILES_FILE_SUFFIXES,
    SNIFF_SEPS,
    base_suffix,
    choose_column,
    damaged_gzip,
    list_columns,
    looks_like_smiles_name,
    match_column,
    normalize_sep,
    parses,
    refuse_other_compression,
    sniff_sep,
)

_HEAD_LINES = 200  # lines read ahead to detect the format and the SMILES column


@dataclass(frozen=True)
class Record:
    """One row of a molecule file.

    Attributes:
        line: 1-based line number where the record starts in the file.
        smiles: The SMILES text as in the file (may be empty or invalid).
        columns: Values of the kept columns, in the order of ``MoleculeFile.columns``.
    """

    line: int
    smiles: str
    columns: tuple[str, ...] = ()


class MoleculeFile:
    """A molecule file opened for streaming; use it as a context manager, iterate its records.

    Args:
        path: The file (.csv, .tsv, .smi, .txt, optionally .gz).
        smiles_column: SMILES column name; None detects it as the data step does.
        sep: Delimiter (or ``tab``, ``comma``...); None sniffs it (tables) or splits on
            whitespace (.smi/.txt).
        keep_columns: Columns to carry along; None keeps every column but the SMILES one (for a
            .smi file: the name).

    Attributes:
        columns: Names of the kept columns.
        smiles_name: Name of the SMILES column (None when the file has no header).
        size: File size in bytes (for progress bars; compressed size for .gz).

    Raises:
        MolgenError: Missing, unreadable, binary, non-UTF-8, damaged or empty file; no SMILES
            column or several candidates; a kept column that does not exist.
    """

    def __init__(
        self,
        path: str | Path,
        smiles_column: str | None = None,
        sep: str | None = None,
        keep_columns: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self._smiles_column = smiles_column
        self._sep = normalize_sep(sep)
        self._keep = list(keep_columns) if keep_columns is not None else None
        self.columns: list[str] = []
        self.smiles_name: str | None = None
        self.size = 0
        self._raw: Any = None
        self._text: io.TextIOWrapper | None = None
        self._records: Iterator[Record] | None = None

    # ---- opening -----------------------------------------------------------------------------
    def __enter__(self) -> MoleculeFile:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the file, read its first lines and settle the format and the columns."""
        p = self.path
        if not p.exists():
            raise MolgenError(f"data file {p} does not exist; check the path")
        if p.is_dir():
            raise MolgenError(
                f"{p} is a folder; pass a SMILES file (.csv, .tsv, .smi or .txt, optionally .gz)"
            )
        try:
            self._raw = open(p, "rb")  # noqa: SIM115  (closed by close())
        except PermissionError:
            raise MolgenError(f"cannot read {p}: permission denied; check its mode") from None
        except OSError as exc:
            raise MolgenError(f"cannot read {p}: {exc.strerror or exc}") from None
        try:
            self._open_text()
            head = self._read_head()
            self._records = self._setup(head)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has gone (bytes of the file as stored)."""
        try:
            return int(self._raw.tell()) if self._raw is not None else self.size
        except (OSError, ValueError):
            return self.size

    def _open_text(self) -> None:
        p, raw = self.path, self._raw
        self.size = p.stat().st_size
        magic = raw.peek(6)[:6]
        stream: Any = raw
        if magic[:2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
            try:
                magic = stream.peek(4)[:4]
            except (OSError, EOFError, zlib.error):
                raise damaged_gzip(p) from None
        else:
            refuse_other_compression(magic, p)
        if magic[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise MolgenError(f"{p} is UTF-16 text; re-save it as UTF-8")
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")

    def _read_head(self) -> list[str]:
        assert self._text is not None
        head = list(self._guard(itertools.islice(self._text, _HEAD_LINES), 0))
        if not "".join(head).strip():
            raise MolgenError(
                f"{self.path} is empty; it needs one SMILES per line or a CSV with a SMILES column"
            )
        return head

    def _guard(self, lines: Iterable[str], offset: int) -> Iterator[str]:
        """Lines, with read errors turned into MolgenError naming the file and the line."""
        n = offset
        it = iter(lines)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise MolgenError(
                    f"{self.path} is not UTF-8 text (near line {n + 1}); re-save it as UTF-8"
                ) from None
            except (OSError, EOFError, zlib.error):
                raise MolgenError(
                    f"cannot decompress {self.path} (near line {n + 1}): it is a damaged or "
                    "truncated gzip file; re-download or re-compress it"
                ) from None
            if "\x00" in line:
                raise MolgenError(
                    f"{self.path} contains NUL bytes: it looks binary, not a text SMILES file"
                )
            n += 1
            yield line

    # ---- format detection ----------------------------------------------------------------------
    def _setup(self, head: list[str]) -> Iterator[Record]:
        assert self._text is not None
        lines = itertools.chain(head, self._guard(self._text, len(head)))
        smi_like = base_suffix(self.path) in SMILES_FILE_SUFFIXES and self._sep is None
        if smi_like:
            header = head[0].rstrip("\r\n")
            # A .txt/.smi that is really a delimited table with a SMILES header (ChEMBL).
            if any(s in header for s in SNIFF_SEPS):
                fields = next(csv.reader([header], delimiter=sniff_sep("".join(head))))
                if any(looks_like_smiles_name(f) for f in fields) or (
                    self._smiles_column is not None and self._smiles_column in fields
                ):
                    smi_like = False
        if smi_like:
            return self._smi_records(head, lines)
        return self._table_records(head, lines)

    def _kept(self, names: Sequence[str], smiles_index: int) -> list[int]:
        if self._keep is None:
            return [i for i in range(len(names)) if i != smiles_index]
        kept = []
        for name in self._keep:
            i = match_column(name, names, self.path)
            if i == smiles_index:
                raise MolgenError(f"--id-column {name!r} is the SMILES column; name another one")
            kept.append(i)
        return kept

    def _smi_records(self, head: list[str], lines: Iterator[str]) -> Iterator[Record]:
        first = head[0].split()
        col, skip = 0, 0
        names: list[str] = []
        if self._smiles_column is not None:
            names = first
            col, skip = match_column(self._smiles_column, names, self.path), 1
        elif first and looks_like_smiles_name(first[0]) and not parses(first[0]):
            names, skip = first, 1
        if skip and not any(ln.strip() for ln in head[1:]):
            raise MolgenError(f"{self.path} has a header line but no rows; add one SMILES per line")
        if skip:
            self.smiles_name = names[col]
        if col == 0 and len(names) <= 2:  # SMILES, then the rest of the line is the name
            has_name = len(names) == 2 or any(len(ln.split(None, 1)) > 1 for ln in head[skip:])
            names = [names[0] if names else "smiles"] + (
                [names[1] if len(names) == 2 else "name"] if has_name else []
            )
        kept = self._kept(names, col)
        self.columns = [names[i] for i in kept]
        rest_of_line = col == 0 and len(names) <= 2
        for _ in range(skip):
            next(lines)
        return self._smi_iter(lines, skip, col, kept, rest_of_line)

    def _smi_iter(
        self, lines: Iterator[str], skip: int, col: int, kept: list[int], rest_of_line: bool
    ) -> Iterator[Record]:
        blank: list[int] = []
        for number, text in enumerate(lines, start=skip + 1):
            parts = text.split(None, 1) if rest_of_line else text.split()
            if not parts:
                blank.append(number)  # reported only if a molecule follows (not trailing lines)
                continue
            for b in blank:
                yield Record(b, "", ("",) * len(kept))
            blank.clear()
            if rest_of_line:
                parts = [parts[0], parts[1].strip() if len(parts) > 1 else ""]
            smiles = parts[col] if col < len(parts) else ""
            yield Record(number, smiles, tuple(parts[i] if i < len(parts) else "" for i in kept))

    def _table_records(self, head: list[str], lines: Iterator[str]) -> Iterator[Record]:
        text = "".join(head)
        delimiter = self._sep or (
            "\t" if base_suffix(self.path) == ".tsv" else sniff_sep(text + "\n")
        )
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            raise MolgenError(
                f"cannot parse {self.path} as a table with delimiter {delimiter!r} ({exc}); "
                "check --sep and the quoting"
            ) from None
        if len(head) == _HEAD_LINES and len(rows) > 1:
            rows.pop()  # the last line read ahead may end inside a quoted field
        while rows and not any(f.strip() for f in rows[-1]):
            rows.pop()
        names = [n.strip() for n in rows[0]] if rows else []
        data = rows[1:]
        if self._smiles_column is not None:
            col, headerless = match_column(self._smiles_column, names, self.path), False
        elif not data:  # one line: a header, or a single headerless molecule
            molecules = [i for i, n in enumerate(names) if parses(n)]
            col, headerless = (molecules[0], True) if len(molecules) == 1 else (0, False)
        else:
            col, headerless = choose_column(_sample_frame(names, data), self.path)
        if not data and not headerless:
            raise MolgenError(
                f"{self.path} has a header ({list_columns(names)}) but no rows; "
                "add molecules below it"
            )
        if headerless:
            names = [f"column_{i + 1}" for i in range(len(names))]
        else:
            self.smiles_name = names[col]
        kept = self._kept(names, col)
        self.columns = [names[i] for i in kept]
        return self._table_iter(lines, delimiter, col, kept, skip=0 if headerless else 1)

    def _table_iter(
        self, lines: Iterator[str], delimiter: str, col: int, kept: list[int], skip: int
    ) -> Iterator[Record]:
        reader = csv.reader(lines, delimiter=delimiter)
        previous = 0
        blank: list[int] = []
        empty = ("",) * len(kept)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise MolgenError(
                    f"cannot parse {self.path} near line {reader.line_num} ({exc}); "
                    "check --sep and the quoting"
                ) from None
            start, previous = previous + 1, reader.line_num
            if skip:
                skip -= 1
                continue
            if not fields or not any(f.strip() for f in fields):
                blank.append(start)
                continue
            for b in blank:
                yield Record(b, "", empty)
            blank.clear()
            smiles = fields[col] if col < len(fields) else ""
            yield Record(start, smiles, tuple(fields[i] if i < len(fields) else "" for i in kept))

    # ---- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        if self._records is None:
            raise MolgenError(f"{self.path} is not open; use `with MoleculeFile(...) as f`")
        records, self._records = self._records, iter(())
        return records


def _sample_frame(names: list[str], rows: list[list[str]]) -> Any:
    """The first rows as a DataFrame, for ``molgen.data``'s SMILES-column detection."""
    import pandas as pd

    width = len(names)
    fixed = [(r + [""] * width)[:width] for r in rows]
    return pd.DataFrame(fixed, columns=range(width)).set_axis(names, axis=1)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


_DONE = object()


def prefetched(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """The items of ``items``, produced ``depth`` ahead by a background thread.

    Reading and checking a chunk (RDKit, Python) then overlaps with encoding the previous one:
    torch releases the GIL inside its kernels, so the two share the cores instead of taking
    turns. An exception in the producer is raised here, at the item where it happened; leaving
    the loop early stops the producer.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
            return
        put((_DONE, None))

    worker = threading.Thread(target=produce, name="molgen-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()


__all__ = ["MoleculeFile", "Record", "batched", "prefetched"]
