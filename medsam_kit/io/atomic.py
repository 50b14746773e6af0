"""Atomic writes: a file or folder appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_DOUBLE_SUFFIXES = (".nii.gz", ".seg.nrrd")  # writers dispatch on the whole of these


def _split_suffix(name: str) -> tuple[str, str]:
    """'a.nii.gz' -> ('a', '.nii.gz'); keeps double suffixes that writers dispatch on."""
    for double in _DOUBLE_SUFFIXES:
        if name.lower().endswith(double):
            return name[: -len(double)], name[-len(double):]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool = False) -> None:
    """Give a temporary file/folder the permissions a plain ``open()``/``mkdir()`` would have.

    ``mkstemp``/``mkdtemp`` create owner-only entries (0600/0700); outputs must stay readable by
    the other users of a shared server (or a Slicer process under another account).
    """
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffix); rename it onto ``final`` on success.

    Writers that choose the format from the file extension still see the right suffix. On any
    exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split_suffix(final.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_mode(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; it replaces ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        publish_mode(tmp, directory=True)
        for child in tmp.rglob("*"):
            publish_mode(child, directory=child.is_dir())
        if final.exists():
            # Two renames keep the old folder intact until the new one is complete.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``final`` atomically (UTF-8)."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
