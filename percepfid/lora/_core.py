"""LoRA injection, parameters, merging and adapter files, built on peft."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_positive, check_positive_int
from .._errors import ArgumentError, DTypeError, WeightsError
from .._imports import require
from ._models import load_sr_model, save_tensors
from ._targets import DEFAULT_CUSTOM_RANK, PRESET_RANKS, LoRATargets, find_lora_targets, lora_family

logger = logging.getLogger(__name__)

_ADAPTER = "default"
_FORMAT = "percepfid.lora/1"
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _hold_norm_stats(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: a frozen batch norm uses (and keeps) its running statistics."""
    module.training = False


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    require("peft", "LoRA fine-tuning")
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _adapters(named: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The adapter entries of ``(name, value)`` pairs; raises when there are none."""
    found = {name: value for name, value in named if ".lora_" in f".{name}"}
    if not found:
        raise ArgumentError("model holds no LoRA adapters; call inject_lora(model, ...) first")
    return found


def has_lora(model: nn.Module) -> bool:
    """True when ``model`` holds at least one peft LoRA layer."""
    return bool(_lora_layers(model))


def lora_layer_names(model: nn.Module) -> list[str]:
    """Names of the layers that carry a LoRA adapter (the wrapped layers' original names)."""
    return list(_lora_layers(model))


def inject_lora(
    model: nn.Module,
    targets: LoRATargets = "auto",
    *,
    rank: int | None = None,
    alpha: float | None = None,
    dropout: float = 0.0,
    freeze_norm_stats: bool = True,
) -> nn.Module:
    """Attach fresh LoRA adapters to ``model`` in place, freeze every other parameter, and
    return the network (for a descriptor or a path: the one it holds).

    Adapters follow the paper's settings (arXiv 2504.18524): ``B`` starts at zero, so the
    model's outputs do not change until it trains; ``alpha = rank`` (scale 1) by default;
    no dropout.

    Args:
        model: the network to adapt; a spandrel descriptor or a checkpoint path is
            resolved by :func:`load_sr_model`.
        targets: as for :func:`find_lora_targets`.
        rank: adapter rank; ``None`` uses the preset family's rank (:data:`PRESET_RANKS`; for
            ``'auto'`` the family it picks), else 16.
        alpha: LoRA scaling numerator (scale = alpha / rank); ``None`` means ``rank``.
        dropout: dropout on the adapter input.
        freeze_norm_stats: batch-norm layers of ``model`` normalise with their stored
            statistics and do not update them, even in ``train()`` mode (the base network
            is frozen, statistics included). :func:`merge_lora` removes this again.

    Raises:
        ArgumentError: no layer matches ``targets``, the model already holds adapters, or
            ``rank``/``alpha``/``dropout`` is out of range.
        MissingDependencyError: peft is not installed (``pip install 'percepfid[lora]'``).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 3, 3))
        >>> net = inject_lora(net, r"0|2", rank=4)
        >>> len(lora_parameters(net))
        4
    """
    peft = require("peft", "LoRA fine-tuning")
    model = load_sr_model(model)
    if has_lora(model):
        raise ArgumentError(
            "model already holds LoRA adapters; merge them first (merge_lora) or load "
            "adapter weights with load_lora"
        )
    names = find_lora_targets(model, targets)
    if rank is None:
        family = targets if isinstance(targets, str) else None
        family = lora_family(model) if family == "auto" else family
        rank = PRESET_RANKS.get(family, DEFAULT_CUSTOM_RANK)
    rank = check_positive_int(rank, "rank")
    alpha = float(rank) if alpha is None else check_positive(alpha, "alpha")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ArgumentError(f"dropout must be in [0, 1); got {dropout!r}")
    pattern = "^(?:" + "|".join(re.escape(n) for n in names) + ")$"
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=pattern,
        bias="none",
        init_lora_weights=True,
    )
    peft.inject_adapter_in_model(config, model, adapter_name=_ADAPTER)
    # peft freezes the base layers it wraps; freeze the rest of the network as well.
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in f".{name}")
    if freeze_norm_stats:
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                module.register_forward_pre_hook(_hold_norm_stats)
    model._percepfid_lora = {"rank": rank, "alpha": alpha, "dropout": float(dropout)}
    logger.debug("LoRA rank %d alpha %g on %d layers: %s", rank, alpha, len(names), names)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA adapter parameters of ``model`` (what the optimiser should receive); an
    ``ArgumentError`` when it holds none (as for :func:`lora_state_dict`)."""
    return list(_adapters(model.named_parameters()).values())


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, keyed by their names in ``model.state_dict()``."""
    return _adapters(model.state_dict().items())


def merge_lora(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold the adapters of ``model`` into the base weights and return the plain network.

    The result holds the original layer types (``nn.Linear``, ``nn.Conv2d``) with updated
    weights, no peft modules, and gives the same outputs as the adapted model (up to float
    rounding). All its parameters have ``requires_grad=True``, like a freshly built model.
    ``inplace`` merges into ``model`` itself; by default a deep copy is merged and ``model``
    keeps its adapters. Raises ``ArgumentError`` when ``model`` holds no adapters.
    """
    if not has_lora(model):
        raise ArgumentError("model holds no LoRA adapters; nothing to merge")
    target = model if inplace else copy.deepcopy(model)
    for name, layer in _lora_layers(target).items():
        layer.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(target.get_submodule(parent), child, layer.get_base_layer())
    for attribute in ("peft_config", "_percepfid_lora"):
        target.__dict__.pop(attribute, None)
    for module in target.modules():
        hooks = module._forward_pre_hooks
        for key in [k for k, hook in hooks.items() if hook is _hold_norm_stats]:
            del hooks[key]
            module.training = target.training
    for parameter in target.parameters():
        parameter.requires_grad_(True)
    return target


def save_lora(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapter weights of ``model`` (and their rank, alpha and layer names) to the
    safetensors file ``path``, atomically, and return ``path``."""
    state = lora_state_dict(model)
    settings = getattr(model, "_percepfid_lora", None)
    if settings is None:  # adapters injected with peft directly
        config = getattr(model, "peft_config", {}).get(_ADAPTER)
        if config is None:
            raise ArgumentError("cannot tell the LoRA rank of this model; inject with inject_lora")
        settings = {"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
    metadata = {
        "format": _FORMAT,
        "rank": str(settings["rank"]),
        "alpha": repr(float(settings["alpha"])),
        "dropout": repr(float(settings.get("dropout", 0.0))),
        "layers": json.dumps(lora_layer_names(model)),
    }
    return save_tensors(state, path, metadata)


def load_lora(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load adapters saved by :func:`save_lora` into ``model`` and return it.

    A plain ``model`` (the same architecture, without adapters) first gets adapters on the
    layers recorded in the file; a model that already holds matching adapters is simply
    overwritten. Base weights are not touched. ``strict`` requires the file and the model's
    adapters to match key for key.

    Raises:
        WeightsError: the file is not a percepfid LoRA file, or keys/shapes do not match.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"LoRA adapter file {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != _FORMAT:
        raise WeightsError(
            f"{str(path)!r} is not a percepfid LoRA file (metadata format "
            f"{metadata.get('format')!r}, expected {_FORMAT!r}); write it with save_lora"
        )
    state = load_file(str(path))
    if not has_lora(model):
        layers = json.loads(metadata["layers"])
        try:
            inject_lora(
                model,
                layers,
                rank=int(metadata["rank"]),
                alpha=float(metadata["alpha"]),
                dropout=float(metadata.get("dropout", "0.0")),
            )
        except (ArgumentError, DTypeError) as error:
            raise WeightsError(
                f"LoRA file {str(path)!r} does not fit {type(model).__name__}: {error}"
            ) from error
    own = lora_state_dict(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if mismatched or (strict and (missing or unexpected)):
        raise WeightsError(
            f"LoRA file {str(path)!r} does not match the model's adapters: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model
