"""Score a folder of candidate ground truths with an NR-IQA model, with a content-hash cache."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from .._checks import check_positive_int
from .._errors import ArgumentError, DTypeError, EmptyBatchError
from .io import IMAGE_EXTENSIONS, list_images, read_image

__all__ = ["find_candidates", "score_candidates"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "percepfid.candidate-scores/1"


def find_candidates(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[list[str], list[list[Path]]]:
    """Candidate images laid out as ``root/<item>/<candidate>.<ext>``.

    Args:
        root: a folder with one sub-folder per training input.
        extensions: image file suffixes to accept (case-insensitive).

    Returns:
        ``(item_names, candidate_paths)``, both sorted by name; ``candidate_paths[i]`` are
        the images of item ``i`` (column ``k`` of :func:`score_candidates`'s result).

    Raises:
        ArgumentError: ``root`` is not a folder.
        EmptyBatchError: no sub-folder holds an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ArgumentError(f"root {str(root)!r} is not a folder")
    names, groups = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = list_images(folder, extensions=extensions, allow_empty=True)
        if files:
            names.append(folder.name)
            groups.append(files)
    if not groups:
        raise EmptyBatchError(
            f"no candidate images under {str(root)!r} (expected root/<item>/<image> with one of "
            f"{', '.join(extensions)})"
        )
    return names, groups


def _load_cache(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None or not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("ignoring unreadable score cache %s (%s)", path, error)
        return {}
    if not isinstance(document, dict) or document.get("format") != _CACHE_FORMAT:
        logger.warning("ignoring score cache %s: not a percepfid score cache", path)
        return {}
    return {k: dict(v) for k, v in document.get("models", {}).items()}


def _save_cache(path: Path, models: dict[str, dict[str, float]]) -> None:
    document = json.dumps({"format": _CACHE_FORMAT, "models": models})
    with atomic_path(path) as temporary:  # a crash never leaves a half-written cache
        temporary.write_text(document, encoding="utf-8")


def score_candidates(
    candidates: str | os.PathLike | Sequence[Sequence[str | os.PathLike]],
    iqa: str | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 16,
    cache: str | os.PathLike | None = None,
    cache_key: str | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Score every candidate image with an NR-IQA model: the input of :class:`IQAWeightedSampler`.

    Images of the same size are scored together in batches. With ``cache``, scores are
    stored in a JSON file keyed by the model and the sha256 of each file's bytes, so
    renamed or moved files are not rescored and edited files are.

    Args:
        candidates: a folder laid out as ``root/<item>/<candidate>`` (see
            :func:`find_candidates`) or a list, per item, of candidate image paths.
        iqa: an NR-IQA name, model or callable (see :func:`~percepfid.iqa.create_nriqa`).
        batch_size: images per IQA call.
        cache: a JSON file to read and update, or ``None``.
        cache_key: identifies the model in the cache (default: the model's ``name``);
            set it when two different models share a name.
        device: where to run the model (a given module is moved there).
        pretrained: for a name: load real weights (``False``: random, tests only).
        progress: show a tqdm progress bar.

    Returns:
        ``(items, max_candidates)`` float64 scores, ``NaN`` where an item has fewer
        candidates.

    Raises:
        ArgumentError: ``batch_size`` is not positive; a file is missing.
        ImageReadError: an image cannot be read (see :func:`~percepfid.data.read_image`).
        EmptyBatchError: there is nothing to score.
    """
    from tqdm.auto import tqdm

    from ..hub import sha256_file
    from ..iqa import create_nriqa

    check_positive_int(batch_size, "batch_size")
    if isinstance(candidates, (str, os.PathLike)):
        _, groups = find_candidates(candidates)
    elif isinstance(candidates, Sequence):
        groups = [[Path(p) for p in group] for group in candidates]
    else:
        raise DTypeError(
            f"candidates must be a folder or a list of lists of paths; got {type(candidates).__name__}"
        )
    if not groups or not any(groups):
        raise EmptyBatchError("no candidate images to score")
    missing = [str(p) for group in groups for p in group if not p.is_file()]
    if missing:
        raise ArgumentError(f"candidate images not found: {missing[:5]}")

    model = create_nriqa(iqa, pretrained=pretrained).to(device)
    key = cache_key or model.name
    cache_path = None if cache is None else Path(cache)
    models = _load_cache(cache_path)
    known: dict[str, float] = models.setdefault(key, {})

    digests = {p: sha256_file(p) for group in groups for p in group}
    todo = sorted({p for p, d in digests.items() if d not in known}, key=str)
    by_size: dict[tuple[int, ...], list[tuple[Path, torch.Tensor]]] = defaultdict(list)
    with tqdm(total=len(todo), desc=f"scoring ({key})", unit="img", disable=not progress) as bar:
        for path in todo:
            image = read_image(path)
            bucket = by_size[tuple(image.shape)]
            bucket.append((path, image))
            if len(bucket) == batch_size:
                _score_bucket(model, bucket, digests, known, device)
                bar.update(len(bucket))
                bucket.clear()
        for bucket in by_size.values():
            if bucket:
                _score_bucket(model, bucket, digests, known, device)
                bar.update(len(bucket))
    if cache_path is not None and todo:
        _save_cache(cache_path, models)
    logger.info("scored %d images, %d from cache", len(todo), len(digests) - len(todo))

    width = max(len(g) for g in groups)
    scores = torch.full((len(groups), width), float("nan"), dtype=torch.float64)
    for i, group in enumerate(groups):
        for k, path in enumerate(group):
            scores[i, k] = known[digests[path]]
    return scores


@torch.no_grad()
def _score_bucket(
    model: nn.Module,
    bucket: list[tuple[Path, torch.Tensor]],
    digests: dict[Path, str],
    known: dict[str, float],
    device: Any,
) -> None:
    batch = torch.stack([image for _, image in bucket]).to(device)
    values = model(batch).double().cpu().tolist()
    for (path, _), value in zip(bucket, values, strict=True):
        known[digests[path]] = value
