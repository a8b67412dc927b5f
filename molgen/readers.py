"""Reading users' molecule files: format sniffing, decoding, ``.smi`` and table readers.

:func:`read_smiles_file` reads the raw SMILES strings of a ``.csv``/``.tsv`` table or a
``.smi``/``.txt`` file (optionally gzip-compressed) with their 1-based source line numbers:
it checks the bytes (missing, binary, zip/bzip2/xz, UTF-16, non-UTF-8), sniffs the delimiter
(:func:`normalize_sep` reads a ``--sep`` value), picks the SMILES column and recovers each
record's line number. :func:`file_fingerprint` is the SHA-256 of a file's bytes. Nothing here
validates or canonicalizes the strings: ``molgen.data`` does that (``prepare_dataset``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molgen.errors import MolgenError

SMILES_FILE_SUFFIXES = (".smi", ".smiles", ".txt")
_SEP_ALIASES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "space": " ", "pipe": "|"}
SNIFF_SEPS = (",", "\t", ";")


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (of the compressed bytes for a ``.gz`` file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Table:
    values: list[str]
    lines: list[int]
    column: str | None
    fingerprint: str


def normalize_sep(sep: str | None) -> str | None:
    """Turn a ``--sep`` value into one delimiter character (``tab``, ``comma``, ... accepted).

    Raises:
        MolgenError: If the value is not a single character or a known alias.
    """
    if sep is None:
        return None
    value = _SEP_ALIASES.get(sep.lower(), sep) if sep.strip() else sep
    if len(value) != 1:
        raise MolgenError(f"--sep must be one character (or tab, comma, semicolon), not {sep!r}")
    return value


def _read_bytes(path: Path) -> tuple[bytes, str]:
    """Read (and gunzip) a file; returns the content bytes and the SHA-256 of the file bytes."""
    if not path.exists():
        raise MolgenError(f"data file {path} does not exist; check the path")
    if path.is_dir():
        raise MolgenError(
            f"{path} is a folder; pass a SMILES file (.csv, .tsv, .smi or .txt, optionally .gz)"
        )
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise MolgenError(
            f"cannot read {path}: permission denied; check the file's permissions"
        ) from None
    except OSError as exc:
        raise MolgenError(f"cannot read {path}: {exc.strerror or exc}") from None
    fingerprint = hashlib.sha256(raw).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise damaged_gzip(path) from None
    else:
        refuse_other_compression(raw[:6], path)
    return raw, fingerprint


def damaged_gzip(path: Path) -> MolgenError:
    """The error for a gzip file that cannot be decompressed."""
    return MolgenError(
        f"cannot decompress {path}: it is a damaged or truncated gzip file; "
        "re-download or re-compress it"
    )


def refuse_other_compression(magic: bytes, path: Path) -> None:
    """Refuse zip (spreadsheets) and bzip2/xz files by their first bytes: only gzip is read.

    Raises:
        MolgenError: naming what the file is and what to do.
    """
    if magic[:4] == b"PK\x03\x04":
        raise MolgenError(
            f"{path} is a zip archive (an .xlsx spreadsheet?); export it as CSV or unzip it first"
        )
    if magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00":
        raise MolgenError(f"{path} is bzip2/xz compressed; only gzip is read: decompress it first")


def _decode(raw: bytes, path: Path) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise MolgenError(f"{path} is UTF-16 text; re-save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise MolgenError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
            "re-save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise MolgenError(f"{path} contains NUL bytes: it looks binary, not a text SMILES file")
    return text


def _strip_trailing_blank_lines(text: str) -> str:
    # Blank lines at the very end are not rows; blank lines inside the file are reported as "empty".
    end = text.find("\n", len(text.rstrip(" \t\r\n")))
    return text if end == -1 else text[: end + 1]


def looks_like_smiles_name(name: str) -> bool:
    """Whether a column name says it holds SMILES (contains "smiles", any case)."""
    return "smiles" in str(name).strip().lower()


def parses(text: str) -> bool:
    """Whether ``text`` is a molecule: :func:`molgen.data.parse_smiles` accepts it."""
    from molgen.data import parse_smiles  # here: molgen.data imports this module

    return parse_smiles(text) is not None


def sniff_sep(text: str) -> str:
    """Pick comma, tab or semicolon: most fields, consistently over the first lines."""
    head = [ln for ln in text[:65536].split("\n")[:30] if ln.strip()]
    if len(head) > 1 and not text[:65536].endswith("\n"):
        head = head[:-1]  # the last sampled line may be cut
    best, best_fields = ",", 1
    for sep in SNIFF_SEPS:
        try:
            counts = [len(r) for r in csv.reader(head, delimiter=sep) if r]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        consistent = sum(c == counts[0] for c in counts) >= 0.9 * len(counts)
        if consistent and counts[0] > best_fields:
            best, best_fields = sep, counts[0]
    return best


def _read_smi(
    text: str, path: Path, smiles_column: str | None
) -> tuple[list[str], list[int], str | None]:
    """Whitespace-separated SMILES then an optional name; an optional header line is skipped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    first = lines[0].split() if lines else []
    col = 0
    start = 0
    column: str | None = None
    if smiles_column is not None:
        names = [f.strip() for f in first]
        col = match_column(smiles_column, names, path)
        column, start = names[col], 1
    elif first and looks_like_smiles_name(first[0]) and not parses(first[0]):
        start = 1
    if start >= len(lines):
        raise MolgenError(f"{path} has a header line but no rows; add one SMILES per line")
    values: list[str] = []
    numbers: list[int] = []
    append_v, append_n = values.append, numbers.append
    if col == 0:
        for i in range(start, len(lines)):
            parts = lines[i].split(None, 1)
            append_v(parts[0] if parts else "")
            append_n(i + 1)
    else:
        for i in range(start, len(lines)):
            parts = lines[i].split()
            append_v(parts[col] if col < len(parts) else "")
            append_n(i + 1)
    return values, numbers, column


def match_column(wanted: str, names: Sequence[str], path: Path) -> int:
    """Index of the column named ``wanted`` (exact, else the only case-insensitive match).

    Raises:
        MolgenError: no such column.
    """
    if wanted in names:
        return list(names).index(wanted)
    folded = [i for i, n in enumerate(names) if str(n).strip().lower() == wanted.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise MolgenError(
        f"column {wanted!r} not found in {path} (columns: {list_columns(names)}); "
        "check --smiles-column"
    )


def list_columns(names: Sequence[Any]) -> str:
    """Column names for a message: the first 20, quoted, and the count when there are more."""
    shown = ", ".join(repr(str(n)) for n in list(names)[:20])
    return shown + (f" ... ({len(names)} in all)" if len(names) > 20 else "")


def choose_column(sample: Any, path: Path) -> tuple[int, bool]:
    """Auto-detect the SMILES column of a table; returns (index, header_row_is_data)."""
    names = [str(c) for c in sample.columns]
    exact = [i for i, n in enumerate(names) if n.strip().lower() == "smiles"]
    named = exact or [i for i, n in enumerate(names) if looks_like_smiles_name(n)]
    if len(named) == 1:
        return named[0], False
    if len(named) > 1:
        raise MolgenError(
            f"several columns could hold SMILES in {path} "
            f"({list_columns([names[i] for i in named])}); pick one with --smiles-column NAME"
        )
    plausible = []
    for i in range(len(names)):
        values = [v for v in sample.iloc[:50, i].tolist() if isinstance(v, str) and v.strip()]
        if values and sum(parses(v) for v in values) >= 0.5 * len(values):
            plausible.append(i)
    if len(plausible) == 1:
        i = plausible[0]
        # A header "cell" that is itself a molecule means the file has no header row.
        return i, parses(names[i])
    if len(plausible) > 1:
        raise MolgenError(
            f"several columns look like SMILES in {path} "
            f"({list_columns([names[i] for i in plausible])}); pick one with --smiles-column NAME"
        )
    raise MolgenError(
        f"no SMILES column found in {path} (columns: {list_columns(names)}); "
        "name it with --smiles-column NAME (or --sep if the delimiter was guessed wrong)"
    )


def _read_table(
    text: str, path: Path, smiles_column: str | None, sep: str | None
) -> tuple[list[str], list[int], str | None]:
    import pandas as pd

    delimiter = sep or ("\t" if base_suffix(path) == ".tsv" else sniff_sep(text))
    options: dict[str, Any] = {
        "sep": delimiter,
        "dtype": str,
        "keep_default_na": False,
        "na_filter": False,
        "skip_blank_lines": False,
        "engine": "c",
    }
    try:
        sample = pd.read_csv(io.StringIO(text), nrows=200, **options)
    except pd.errors.EmptyDataError:
        raise MolgenError(
            f"{path} is empty; it needs one SMILES per line or a SMILES column"
        ) from None
    except pd.errors.ParserError as exc:
        raise MolgenError(
            f"cannot parse {path} as a table with delimiter {delimiter!r} "
            f"({str(exc).strip().splitlines()[-1]}); check --sep and the quoting"
        ) from None
    names = [str(c) for c in sample.columns]
    if smiles_column is not None:
        col, headerless = match_column(smiles_column, names, path), False
    elif len(sample) == 0:  # one line: a header, or a single headerless molecule
        molecules = [i for i, n in enumerate(names) if parses(n)]
        col, headerless = (molecules[0], True) if len(molecules) == 1 else (0, False)
    else:
        col, headerless = choose_column(sample, path)
    if len(sample) == 0 and not headerless:
        raise MolgenError(
            f"{path} has a header ({list_columns(names)}) but no rows; add molecules below it"
        )
    try:
        frame = pd.read_csv(
            io.StringIO(text), usecols=[col], header=None if headerless else 0, **options
        )
    except pd.errors.ParserError as exc:
        raise MolgenError(
            f"cannot parse {path} with delimiter {delimiter!r} "
            f"({str(exc).strip().splitlines()[-1]}); check --sep and the quoting"
        ) from None
    values = frame.iloc[:, 0].tolist()
    del frame
    first = 1 if headerless else 2
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if n_lines == len(values) + first - 1:
        numbers = list(range(first, first + len(values)))
    else:  # quoted fields span lines: recover each record's first line number with the csv module
        numbers = _record_line_numbers(text, delimiter, skip=0 if headerless else 1)
        if len(numbers) != len(values):
            numbers = list(range(first, first + len(values)))
    column = None if headerless else names[col]
    return values, numbers, column


def _record_line_numbers(text: str, sep: str, skip: int) -> list[int]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    numbers: list[int] = []
    previous = 0
    for k, _ in enumerate(reader):
        if k >= skip:
            numbers.append(previous + 1)
        previous = reader.line_num
    return numbers


def base_suffix(path: Path) -> str:
    """The file's extension in lower case, ``.gz`` set aside (``a.CSV.gz`` gives ``.csv``)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def _read_file(path: str | Path, smiles_column: str | None, sep: str | None) -> _Table:
    p = Path(path).expanduser()
    raw, fingerprint = _read_bytes(p)
    text = _decode(raw, p)
    del raw
    if not text.strip():
        raise MolgenError(
            f"{p} is empty; it needs one SMILES per line or a CSV with a SMILES column"
        )
    text = _strip_trailing_blank_lines(text)
    delimiter = normalize_sep(sep)
    smi_like = base_suffix(p) in SMILES_FILE_SUFFIXES and delimiter is None
    if smi_like:
        # A .txt/.smi that is really a delimited table with a SMILES header (ChEMBL chemreps.txt).
        header = text[: text.find("\n")] if "\n" in text else text
        if any(s in header for s in SNIFF_SEPS):
            sniffed = sniff_sep(text)
            fields = next(csv.reader([header], delimiter=sniffed))
            if any(looks_like_smiles_name(f) for f in fields) or (
                smiles_column is not None and smiles_column in fields
            ):
                smi_like = False
    if smi_like:
        values, numbers, column = _read_smi(text, p, smiles_column)
    else:
        values, numbers, column = _read_table(text, p, smiles_column, delimiter)
    return _Table(values=values, lines=numbers, column=column, fingerprint=fingerprint)


def read_smiles_file(
    path: str | Path, smiles_column: str | None = None, sep: str | None = None
) -> tuple[list[str], list[int]]:
    """Read the raw SMILES strings of a file, with their 1-based source line numbers.

    Reads ``.csv``, ``.tsv`` (header row; delimiter sniffed or ``sep``; quoted fields), and
    ``.smi``/``.txt`` (SMILES then an optional name, whitespace-separated, no header), each
    optionally gzip-compressed; UTF-8 with or without BOM, LF or CRLF.

    Args:
        path: The file.
        smiles_column: Column name; ``None`` auto-detects (a column named like ``smiles``, or the
            single column whose values parse as SMILES).
        sep: Delimiter (or ``"tab"``); ``None`` sniffs comma, tab or semicolon.

    Returns:
        The raw strings (unvalidated, as in the file) and their line numbers.

    Raises:
        MolgenError: Missing, unreadable, binary, non-UTF-8 or empty file; header without rows; no
            SMILES column or several candidates.
    """
    table = _read_file(path, smiles_column, sep)
    return table.values, table.lines


__all__ = [
    "SMILES_FILE_SUFFIXES",
    "SNIFF_SEPS",
    "base_suffix",
    "choose_column",
    "damaged_gzip",
    "file_fingerprint",
    "list_columns",
    "looks_like_smiles_name",
    "match_column",
    "normalize_sep",
    "parses",
    "refuse_other_compression",
    "read_smiles_file",
    "sniff_sep",
]
