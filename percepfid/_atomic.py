"""Atomic file writes: a crash or an error never leaves a half-written file under the
final name, so nothing later trusts it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` to write; on success it replaces
    ``target`` in one rename, on failure it is removed. Creates the parent folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
