"""Atomic file writes: a crash or an error never leaves a half-written file under the
final name, so nothing later trusts it, and a file that was there stays as it was."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _new_file_mode(target: Path) -> int:
    """The permission bits the written file gets: those of the file it replaces, else
    what a plain ``open(target, 'w')`` would give (0o666 less the umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` to write; on success it replaces
    ``target`` in one rename (keeping the permission bits a plain write would give), on
    failure it is removed and ``target`` is left as it was. Creates the parent folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
        os.chmod(name, _new_file_mode(target))  # mkstemp creates files readable by owner only
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
