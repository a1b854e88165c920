"""Where a manifest entry's weights stand locally, without any network traffic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NOT_IN_MANIFEST = "no manifest entry"
CACHED = "cached"
NOT_CACHED = "not cached"


def cached_path(entry: Any, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached file of a :class:`~percepfid.hub.ManifestEntry`, or None (no download)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo_id,
        entry.filename,
        cache_dir=None if cache_dir is None else str(cache_dir),
        revision=entry.revision,
    )
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def status(entry: Any | None, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """``'cached'``, ``'not cached'`` or ``'no manifest entry'``."""
    if entry is None:
        return NOT_IN_MANIFEST
    return CACHED if cached_path(entry, cache_dir) is not None else NOT_CACHED
