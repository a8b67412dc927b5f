"""Output files that never destroy what the user had.

Every command that writes a file checks the path before any work (:func:`check_output_path`) and
writes through :func:`atomic_output`: the content goes to a temporary file beside the target, which
replaces the target only when the work succeeded. An interrupted or failed command leaves an
existing file exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from molgen.errors import MolgenError

IMAGE_SUFFIXES = (".png", ".svg")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output_path(
    path: Path | str,
    option: str,
    inputs: Iterable[Path | str | None] = (),
    suffixes: tuple[str, ...] | None = None,
    create_parent: bool = False,
) -> Path:
    """Check, before any work, that a file can be written at ``path`` without losing anything.

    Args:
        path: Where the command will write.
        option: The option's name for messages (``-o``, ``--json``, ...).
        inputs: Files the command reads (the model, data files): the output may not be one of them.
        suffixes: Allowed file extensions (lower case, with the dot), or None for any.
        create_parent: Create a missing parent folder instead of refusing.

    Returns:
        The path.

    Raises:
        MolgenError: the path is a folder, an input, has an unsupported extension, or its folder is
            missing or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise MolgenError(f"{option} {path} is a folder; give a file name.")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise MolgenError(
            f"{option} {path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use {' or '.join(suffixes)}."
        )
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise MolgenError(
                f"{option} {path} is also an input of this command; it would be lost."
            )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        if not create_parent:
            raise MolgenError(f"{option} {path}: folder {parent} does not exist.")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MolgenError(f"{option} {path}: cannot create folder {parent} ({exc}).") from None
    if not parent.is_dir():
        raise MolgenError(f"{option} {path}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MolgenError(f"{option} {path}: no permission to write there.")
    return path


def _target(path: Path | str) -> Path:
    """The file to replace: a symbolic link's target (the link itself stays a link)."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


def _special(path: Path) -> bool:
    """An existing output that is not a regular file (a device, a pipe): written in place."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _set_mode(tmp: str, path: Path) -> None:
    """Give the temporary file the mode the final file would have had (mkstemp makes it 0600).

    An existing file keeps its mode; a new one gets 0666 less the umask, as ``open`` would give.
    """
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def _open(path: Path | str, mode: str, newline: str | None) -> IO[Any]:
    """Open for writing: text as UTF-8 with ``newline``, bytes as they are."""
    if "b" in mode:
        return open(path, mode)
    return open(path, mode, encoding="utf-8", newline=newline)


@overload
def atomic_output(
    path: Path | str, mode: Literal["w"] = "w", newline: str | None = None
) -> contextlib.AbstractContextManager[IO[str]]: ...


@overload
def atomic_output(
    path: Path | str, mode: Literal["wb"], newline: None = None
) -> contextlib.AbstractContextManager[IO[bytes]]: ...


@contextlib.contextmanager
def atomic_output(
    path: Path | str, mode: str = "w", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds.

    Args:
        path: The final file.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        newline: Passed to :func:`open` in text mode (``""`` for the csv module).

    Yields:
        The open file object: text (``IO[str]``) for ``"w"``, bytes (``IO[bytes]``) for ``"wb"``.
    """
    path = _target(path)
    if _special(path):  # /dev/stdout, /dev/null, a named pipe: there is nothing to replace
        with _open(path, mode, newline) as handle:
            yield handle
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    _set_mode(tmp, path)
    try:
        with _open(tmp, mode, newline) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (savefig, torch.save).

    The temporary file keeps ``path``'s extension so writers that read it (matplotlib) still
    choose the right format; it replaces ``path`` only if the block succeeds.
    """
    path = _target(path)
    if _special(path):  # /dev/null and the like: written in place
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    _set_mode(tmp, path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
