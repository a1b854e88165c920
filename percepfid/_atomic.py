"""Atomic file writes: a crash or an error never leaves a half-written file under the
final name, so nothing later trusts it, and a file that was there stays as it was."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        try:  # the replaced file's bits (mkstemp creates files readable by the owner only)
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:  # a new file: what open(target, "w") gives, 0o666 less the umask
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(name, mode)
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
