"""SR networks in, SR networks out: modules, spandrel descriptors and checkpoint files."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from .._atomic import atomic_path
from .._errors import ArgumentError, DTypeError, WeightsError
from .._imports import require

logger = logging.getLogger(__name__)


def load_sr_model(source: Any, *, device: str | None = None) -> nn.Module:
    """The SR network behind ``source``, as a plain ``nn.Module``.

    Args:
        source: an ``nn.Module`` (returned as is), a spandrel ``ImageModelDescriptor``
            (its ``.model``), or the path of a checkpoint (``.pth``, ``.pt``, ``.ckpt``,
            ``.safetensors``) whose architecture and hyperparameters spandrel detects.
        device: where to load a checkpoint (``None``: the CPU). A loaded checkpoint's
            network is in ``eval()`` mode, as spandrel returns it.

    Raises:
        MissingDependencyError: a path needs spandrel (``pip install 'percepfid[sr]'``).
        WeightsError: the file does not exist, or spandrel cannot load it as a
            single-image model.
        DTypeError: ``source`` is none of the above.

    Example:
        >>> from torch import nn
        >>> net = nn.Conv2d(3, 3, 3)
        >>> load_sr_model(net) is net
        True
    """
    if isinstance(source, nn.Module):
        return source
    model = getattr(source, "model", None)
    if isinstance(model, nn.Module) and type(source).__module__.startswith("spandrel"):
        return model
    if not isinstance(source, (str, os.PathLike)):
        raise DTypeError(
            "model must be an nn.Module, a spandrel ImageModelDescriptor or the path of a "
            f"checkpoint spandrel can load; got {type(source).__name__}"
        )
    spandrel = require("spandrel", "loading SR checkpoints")
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"SR checkpoint {str(path)!r} does not exist")
    try:
        descriptor = spandrel.ModelLoader(device=device or "cpu").load_from_file(path)
    except Exception as error:  # spandrel raises many types (unsupported, bad keys, ...)
        raise WeightsError(
            f"spandrel cannot load {str(path)!r} as an SR network: {type(error).__name__}: {error}"
        ) from error
    name = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise WeightsError(
            f"{str(path)!r} holds a {type(descriptor).__name__} ({name}), not a single-image SR model"
        )
    logger.info("loaded %s (%s, x%d) from %s", name, descriptor.purpose, descriptor.scale, path)
    return descriptor.model


def save_sr_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model.state_dict()`` atomically to the ``.safetensors`` file ``path``, which
    spandrel loads, and return ``path``. Use it for a merged network
    (:func:`~percepfid.lora.merge_lora`), whose keys are those of the original architecture;
    a model still holding LoRA adapters raises ``ArgumentError``."""
    state = model.state_dict()
    if any(".lora_" in f".{key}" for key in state):
        raise ArgumentError(
            "model still holds LoRA adapters, whose keys no SR loader knows; save "
            "merge_lora(model) instead (or the adapters alone with save_lora)"
        )
    return save_tensors(state, path)


def save_tensors(
    state: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``state`` (on the CPU, contiguous) to a safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    path = Path(path)
    with atomic_path(path) as partial:
        save_file(tensors, str(partial), metadata=metadata)
    return path
