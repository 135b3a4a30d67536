"""Crash-safe file writes: a file or folder is either the old one or the complete new one.

SQLite's recipe, which most databases follow: write a temporary file beside the target,
``fsync`` it, ``os.replace`` it over the target (atomic on POSIX), then ``fsync`` the folder so
that the rename itself survives a power cut. Folders are written the same way (every file
synced, the folder renamed into place, its parent synced).

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> write_text(d / "a.json", "{}")
    >>> (d / "a.json").read_text()
    '{}'
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file", "fsync_tree", "replace_dir", "write_bytes", "write_text"]


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk.

    A no-op where folders cannot be opened (Windows).
    """
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """``fsync`` every file under ``path`` and every folder, deepest first, then ``path``."""
    path = Path(path)
    folders = [path]
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_symlink():
            continue
        if p.is_file():
            fsync_file(p)
        elif p.is_dir():
            folders.append(p)
    for d in [*folders[1:], path]:
        fsync_dir(d)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file, fsync, rename,
    fsync of the folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """:func:`write_bytes` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Put the complete folder ``tmp`` where ``final`` is, durably.

    ``tmp`` is synced whole first. Where ``final`` exists it is renamed aside, ``tmp``
    renamed into place and the old one removed; a crash in between leaves either the old
    folder (beside a ``.old-`` copy) or the new one at ``final``, never a mixture.
    """
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
