"""Score a folder of candidate ground truths with an NR-IQA model, with a content-hash cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from .._checks import check_positive_int
from .._errors import ArgumentError, DTypeError, EmptyBatchError
from .io import IMAGE_EXTENSIONS, batches_by_size, image_size, list_images, read_image, shorten_list

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "percepfid.candidate-scores/1"


def find_candidates(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[list[str], list[list[Path]]]:
    """Candidate images laid out as ``root/<item>/<candidate>.<ext>``, one sub-folder per
    training input (``extensions`` as for :func:`list_images`).

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
    """The models of a score cache file ({} when there is none); anything else is refused."""
    if path is None or not path.exists():
        return {}
    refusal = (
        f"cache={str(path)!r} is not a percepfid score cache, and percepfid does not "
        "overwrite it; name a new file (or an existing score cache) as the cache"
    )
    if not path.is_file():
        raise ArgumentError(f"{refusal} (it is a folder)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArgumentError(f"{refusal} ({type(error).__name__}: {error})") from None
    if not isinstance(document, dict) or document.get("format") != _CACHE_FORMAT:
        raise ArgumentError(f"{refusal} (no {_CACHE_FORMAT!r} format field)")
    models = document.get("models")
    if not isinstance(models, dict) or not all(
        isinstance(scores, dict)
        and all(isinstance(value, (int, float)) for value in scores.values())
        for scores in models.values()
    ):
        raise ArgumentError(f"{refusal} (its 'models' are not tables of scores)")
    return {key: dict(scores) for key, scores in models.items()}


def model_fingerprint(model: nn.Module) -> str:
    """A sha256 of everything that determines an NR-IQA model's scores.

    It covers the class, the module tree (each layer's settings), the simple attributes of
    every submodule (name, input range, image size, prompts, ...) and the values of every
    parameter and buffer. A plain function wrapped as a model is identified by its module
    and qualified name only: give :func:`score_candidates` a ``cache_key`` when its
    behaviour can change under the same name.
    """
    digest = hashlib.sha256()

    def add(text: str) -> None:
        digest.update(text.encode("utf-8", "backslashreplace") + b"\0")

    add(f"{type(model).__module__}.{type(model).__qualname__}")
    add(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model)))  # no addresses: stable across runs
    for prefix, module in model.named_modules():
        settings = {
            key: value
            for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and _is_plain(value)
        }
        add(f"{prefix}:{sorted(settings.items())!r}")
        function = vars(module).get("_function")
        if function is not None:
            kind = function if hasattr(function, "__qualname__") else type(function)
            add(f"function {kind.__module__}.{kind.__qualname__}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        add(f"{name} {tensor.dtype} {tuple(tensor.shape)}")
        # the raw bytes, whatever the dtype (bfloat16 and friends have no numpy type)
        digest.update(tensor.detach().to("cpu").reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


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
    renamed or moved files are not rescored and edited files are. The model's key is its
    name and :func:`model_fingerprint` (class, settings, weights): two models that share a
    name but differ in weights or preprocessing never share scores.

    Args:
        candidates: a folder laid out as ``root/<item>/<candidate>`` (see
            :func:`find_candidates`) or a list, per item, of candidate image paths.
        iqa: an NR-IQA name, model or callable (see :func:`~percepfid.iqa.create_nriqa`).
        batch_size: images per IQA call.
        cache: a JSON score cache to read and update (created when missing), or ``None``.
            A path that holds anything else is refused before any work, never overwritten.
        cache_key: identifies the model in the cache instead of its name and fingerprint
            (you then answer for two models never sharing a key).
        device: where to run the model (a given module is moved there).
        pretrained: for a name: load real weights (``False``: random, tests only).
        progress: show a tqdm progress bar.

    Returns:
        ``(items, max_candidates)`` float64 scores, ``NaN`` where an item has fewer
        candidates.

    Raises:
        ArgumentError: ``batch_size`` is not positive; a file is missing; ``cache`` is not
            a score cache.
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
    if not any(groups):
        raise EmptyBatchError("no candidate images to score")
    missing = [p for group in groups for p in group if not p.is_file()]
    if missing:
        raise ArgumentError(f"candidate images not found: {shorten_list(missing)}")

    cache_path = None if cache is None else Path(cache)
    models = _load_cache(cache_path)  # a bad cache path is refused before the model loads
    model = create_nriqa(iqa, pretrained=pretrained).to(device)
    key = cache_key or f"{model.name}#{model_fingerprint(model)[:16]}"
    known: dict[str, float] = models.setdefault(key, {})

    digests = {p: sha256_file(p) for group in groups for p in group}
    todo = sorted({p for p, d in digests.items() if d not in known}, key=str)
    batches = batches_by_size([image_size(path) for path in todo], batch_size)
    with tqdm(total=len(todo), desc=f"scoring ({key})", unit="img", disable=not progress) as bar:
        for batch in batches:
            paths = [todo[index] for index in batch]
            images = torch.stack([read_image(path) for path in paths]).to(device)
            with torch.no_grad():
                values = model(images).double().cpu().tolist()
            known.update(zip((digests[path] for path in paths), values, strict=True))
            bar.update(len(paths))
    if cache_path is not None and todo:
        document = json.dumps({"format": _CACHE_FORMAT, "models": models})
        with atomic_path(cache_path) as temporary:  # a crash never leaves a half-written cache
            temporary.write_text(document, encoding="utf-8")
    logger.info("scored %d images, %d from cache", len(todo), len(digests) - len(todo))

    width = max(len(g) for g in groups)
    scores = torch.full((len(groups), width), float("nan"), dtype=torch.float64)
    for i, group in enumerate(groups):
        for k, path in enumerate(group):
            scores[i, k] = known[digests[path]]
    return scores
