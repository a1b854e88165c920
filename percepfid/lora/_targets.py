"""Where LoRA adapters go: presets that recognise SR architectures by structure, not names.

A preset inspects module types and nesting only, so renamed or re-implemented networks are
still recognised:

- ``'swinir-mlp'``: the two linears of every transformer MLP. A transformer MLP is a module
  whose only linear layers are exactly two direct children ``a, b`` (in registration order)
  with ``a.out_features == b.in_features`` and ``b.out_features == a.in_features`` (expand,
  then project back), sitting inside a block that also holds a ``LayerNorm``. Attention
  projections (``qkv`` then ``proj``) do not have that shape and are left alone.
- ``'rrdb-convs'``: the convolutions of every residual dense block. A dense block is a
  module with at least three direct ``Conv2d`` children whose input channels strictly grow
  (each conv sees the concatenation of all earlier outputs) and whose last conv returns to
  the first conv's input width. The first conv, the trunk conv and the upsampler of RRDBNet
  are direct children of the network, whose convolutions do not grow, so they are excluded.
- ``'auto'``: the union of both; refuses a network where neither structure is found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeAlias

from torch import nn

from .._errors import ArgumentError, DTypeError, UnknownNameError

__all__ = ["LORA_PRESETS", "PRESET_RANKS", "LoRATargets", "find_lora_targets"]

#: The named placements and the rank the paper uses with each (arXiv 2504.18524).
PRESET_RANKS: dict[str, int] = {"swinir-mlp": 48, "rrdb-convs": 24}
LORA_PRESETS: tuple[str, ...] = ("swinir-mlp", "rrdb-convs", "auto")
#: Rank used for a regex, a list of names or a predicate (no paper default applies).
DEFAULT_CUSTOM_RANK = 16

# Layer types peft's LoRA can wrap and percepfid supports.
_ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

LoRATargets: TypeAlias = str | Sequence[str] | Callable[[str, nn.Module], bool]


def _direct_children_of_type(module: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    return [(name, child) for name, child in module.named_children() if isinstance(child, kind)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _swinir_mlp_layers(model: nn.Module) -> list[str]:
    found: list[str] = []
    for block_name, block in model.named_modules():
        if not _direct_children_of_type(block, nn.LayerNorm):
            continue
        for child_name, child in block.named_children():
            linears = _direct_children_of_type(child, nn.Linear)
            if len(linears) != 2:
                continue
            if sum(isinstance(m, nn.Linear) for m in child.modules()) != 2:
                continue
            (name_a, a), (name_b, b) = linears
            if a.out_features == b.in_features and b.out_features == a.in_features:
                prefix = _join(block_name, child_name)
                found += [_join(prefix, name_a), _join(prefix, name_b)]
    return found


def _rrdb_dense_convs(model: nn.Module) -> list[str]:
    found: list[str] = []
    for name, module in model.named_modules():
        convs = _direct_children_of_type(module, nn.Conv2d)
        if len(convs) < 3:
            continue
        widths = [conv.in_channels for _, conv in convs]
        growing = all(later > earlier for earlier, later in zip(widths, widths[1:], strict=False))
        if growing and convs[-1][1].out_channels == widths[0]:
            found += [_join(name, child) for child, _ in convs]
    return found


def _preset_layers(model: nn.Module, preset: str) -> list[str]:
    if preset == "swinir-mlp":
        return _swinir_mlp_layers(model)
    if preset == "rrdb-convs":
        return _rrdb_dense_convs(model)
    return _swinir_mlp_layers(model) + _rrdb_dense_convs(model)


def _looks_like_regex(text: str) -> bool:
    return any(ch in text for ch in r".*+?[](){}|^$\\")


def find_lora_targets(model: nn.Module, targets: LoRATargets = "auto") -> list[str]:
    """Names of the layers of ``model`` that LoRA adapters would be attached to.

    Args:
        model: the network to inspect (not modified).
        targets: a preset (``'swinir-mlp'``, ``'rrdb-convs'``, ``'auto'``), a regular
            expression matched in full against module names (``r'.*\\.fc[12]'``), a list of
            exact module names, or a predicate ``f(name, module) -> bool``. Only
            ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layers can be targeted.

    Returns:
        The matching module names in the order ``model.named_modules()`` visits them.

    Raises:
        UnknownNameError: ``targets`` looks like a misspelt preset name.
        ArgumentError: no adaptable layer matches, or a listed name is not an adaptable layer.
        DTypeError: ``targets`` has an unsupported type.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 3, 3))
        >>> find_lora_targets(net, r"0|2")
        ['0', '2']
    """
    if not isinstance(model, nn.Module):
        raise DTypeError(f"model must be an nn.Module; got {type(model).__name__}")
    modules = dict(model.named_modules())
    adaptable = {name for name, m in modules.items() if isinstance(m, _ADAPTABLE) and name}

    if isinstance(targets, str) and targets in LORA_PRESETS:
        wanted = set(_preset_layers(model, targets))
        if not wanted:
            what = {
                "swinir-mlp": "no transformer MLP (two linears, expand then project back, inside "
                "a block with a LayerNorm)",
                "rrdb-convs": "no residual dense block (>= 3 direct Conv2d children with growing "
                "input channels)",
                "auto": "neither transformer MLPs nor residual dense blocks",
            }[targets]
            raise ArgumentError(
                f"targets={targets!r}: found {what} in {type(model).__name__}. Pass a regex, a "
                f"list of module names or a predicate f(name, module) -> bool instead."
            )
    elif isinstance(targets, str):
        if not _looks_like_regex(targets) and targets not in modules:
            raise UnknownNameError(
                "LoRA target preset",
                targets,
                LORA_PRESETS,
                hint="A string that is not a preset is read as a regex over module names.",
            )
        try:
            pattern = re.compile(targets)
        except re.error as error:
            raise ArgumentError(f"targets={targets!r} is not a valid regex: {error}") from None
        wanted = {name for name in adaptable if pattern.fullmatch(name)}
    elif callable(targets):
        wanted = {name for name in adaptable if targets(name, modules[name])}
    elif isinstance(targets, Sequence) and all(isinstance(t, str) for t in targets):
        bad = [t for t in targets if t not in adaptable]
        if bad:
            raise ArgumentError(
                f"targets lists {bad!r}, which are not Linear/Conv layers of "
                f"{type(model).__name__}; adaptable layers include {sorted(adaptable)[:8]!r}"
            )
        wanted = set(targets)
    else:
        raise DTypeError(
            "targets must be a preset name, a regex, a list of module names or a callable "
            f"f(name, module) -> bool; got {type(targets).__name__}"
        )
    if not wanted:
        raise ArgumentError(
            f"targets={targets!r} matches no Linear/Conv layer of {type(model).__name__} "
            f"(adaptable layers include {sorted(adaptable)[:8]!r})"
        )
    return [name for name in modules if name in wanted]


def default_rank(model: nn.Module, targets: LoRATargets) -> int:
    """The rank used when ``rank=None``: the paper's rank for a preset, else 16."""
    if isinstance(targets, str) and targets in PRESET_RANKS:
        return PRESET_RANKS[targets]
    if isinstance(targets, str) and targets == "auto":
        # a transformer MLP wins: SwinIR-style nets may also hold incidental conv stacks
        return PRESET_RANKS["swinir-mlp" if _swinir_mlp_layers(model) else "rrdb-convs"]
    return DEFAULT_CUSTOM_RANK
