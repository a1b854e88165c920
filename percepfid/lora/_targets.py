"""Where LoRA adapters go: presets that recognise SR architectures by structure, not names.

Presets read module types, parameter shapes and nesting only. A layer counts through
wrappers (``Sequential(conv, LeakyReLU)``, or a module holding exactly one adaptable layer),
and subclasses of ``nn.Linear`` / ``nn.Conv2d`` count as those. The families (alias, rank):

- ``'transformer-mlp'`` (``'swinir-mlp'``, 48, the paper's (arXiv 2504.18524) SwinIR rank):
  transformer feed-forward layers: a module whose direct point-wise layers (``nn.Linear`` or
  1x1 ``nn.Conv2d``) are two or three, the first expanding ``d -> h >= d`` (an optional
  second of that shape is a gate), the last projecting ``h`` or ``h / 2`` (gated halves)
  back to ``d``, with a norm of width ``d`` in its block. A fused ``qkv`` (``d -> 3d``),
  separate ``q``/``kv`` projections and position-bias MLPs (``2 -> 512 -> heads``, no norm
  of their width) do not fit.
- ``'residual-convs'`` (``'rrdb-convs'``, 24, the paper's RRDB rank): the convolutions of
  residual dense blocks (>= 3 convolutions whose input widths strictly grow, the last
  returning to the first's input width: RRDBNet, MMRealSR); without dense blocks, the
  spatial convolutions (>= 2, ``k > 1``, stride 1) of repeated residual blocks whose direct
  layers all map ``C -> C`` (RCAN's RCABs, leaving out channel-attention 1x1 convolutions).
- ``'body-convs'`` (16): every adaptable layer inside the repeated body blocks: siblings
  with the same class and parameter shapes (Compact's conv list, SPAN's SPABs), else
  instances of a block class used at least twice (a U-Net such as RealCUGAN). Such networks
  are 36 to 64 channels wide: 16 is a quarter of 64, about the share of the paper's SwinIR
  rank (48 of 180).

Every preset skips the stem (convolutions reading the image's channels: the first
convolution's input width when <= 4, else 3), the upsampler (a layer next to
``nn.PixelShuffle`` or ``nn.Upsample``, and the last adaptable layer), grouped
convolutions, empty layers, and fused inference copies of re-parameterised blocks (named
``eval_conv``, ``reparam``, ``rbr_reparam``, ``fused`` or ``deploy``: overwritten at
inference time, so an adapter there is lost).

``'auto'`` takes the first family that finds layers, in the order above; ``transformer-mlp``
only when at least one FFN is built of ``nn.Linear`` layers (a token transformer).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from functools import wraps
from typing import TypeAlias

from torch import nn

from .._errors import ArgumentError, DTypeError, UnknownNameError

#: Canonical preset families, in the order ``'auto'`` tries them.
LORA_FAMILIES: tuple[str, ...] = ("transformer-mlp", "residual-convs", "body-convs")
#: Other names of the families (accepted wherever a preset is).
PRESET_ALIASES: dict[str, str] = {"swinir-mlp": "transformer-mlp", "rrdb-convs": "residual-convs"}
#: The rank each family uses by default (reasoned in the module docstring).
PRESET_RANKS: dict[str, int] = dict(zip(LORA_FAMILIES, (48, 24, 16), strict=True))
PRESET_RANKS.update({alias: PRESET_RANKS[family] for alias, family in PRESET_ALIASES.items()})
LORA_PRESETS: tuple[str, ...] = (*LORA_FAMILIES, *PRESET_ALIASES, "auto")
#: Rank used for a regex, a list of names or a predicate (no preset default applies).
DEFAULT_CUSTOM_RANK = 16

# Layer types peft's LoRA can wrap and percepfid supports.
_ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Fused inference copies recomputed from training branches (RepVGG-style blocks).
_FUSED_COPY = re.compile(r"(?:eval_conv|rbr_reparam|reparam\w*|\w*fused\w*|deploy\w*)")
_RESAMPLERS = (nn.PixelShuffle, nn.PixelUnshuffle, nn.Upsample)

LoRATargets: TypeAlias = str | Sequence[str] | Callable[[str, nn.Module], bool]

# what a preset looked for, for the message when it finds nothing ('auto' picked no family)
_WHAT = {
    None: "neither transformer MLPs nor residual conv blocks nor repeated body blocks",
    "transformer-mlp": "no transformer MLP (two linears or 1x1 convs, expand then project "
    "back, next to a norm of the same width)",
    "residual-convs": "no residual dense block (>= 3 convs with growing input channels) or "
    "residual conv block (>= 2 full-width k>1 convs in repeated blocks)",
    "body-convs": "no repeated body block (siblings of the same class and shapes, or a block "
    "class used at least twice) holding adaptable layers",
}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _is_adaptable(module: nn.Module) -> bool:
    if not isinstance(module, _ADAPTABLE):
        return False
    if isinstance(module, nn.Linear):
        return module.in_features > 0 and module.out_features > 0
    return module.groups == 1 and module.in_channels > 0 and module.out_channels > 0


def _widths(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def _is_pointwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (
        isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)
    )


def _within(name: str, units: list[str]) -> bool:
    """Whether module ``name`` is one of ``units`` or inside one."""
    return any(name == unit or name.startswith(unit + ".") for unit in units)


# Per-call memo (kind -> module id -> facts), set by @_analysis on the public entry points,
# so the analysis stays linear in the network's size.
_MEMO: ContextVar[dict | None] = ContextVar("percepfid_lora_memo", default=None)


def _per_model(function):
    """Memoise ``function(module, *args)`` within one analysis, by the module's ``id`` (args
    must be hashable or a set)."""

    @wraps(function)
    def wrapper(model, *args):
        memo = _MEMO.get().setdefault(function.__name__, {})
        key = (id(model), *(frozenset(a) if isinstance(a, set) else a for a in args))
        if key not in memo:
            memo[key] = function(model, *args)
        return memo[key]

    return wrapper


@_per_model
def _wrapped(module: nn.Module) -> tuple[int, str, bool, bool]:
    """(adaptable layers inside, path of the first one, holds other parameters, holds any
    parameters)."""
    if _is_adaptable(module):
        return (1, "", False, True)
    own = any(True for _ in module.parameters(recurse=False))
    count, path, anything = 0, "", own
    # besides the layer, a pure wrapper holds only parameter-free modules or PReLUs
    impure = own and not isinstance(module, nn.PReLU)
    for child_name, child in module.named_children():
        n, child_path, child_impure, child_any = _wrapped(child)
        if n and not count:
            path = _join(child_name, child_path)
        count += n
        impure = impure or child_impure
        anything = anything or child_any
    return (count, path, impure, anything)


def _unwrap(name: str, module: nn.Module) -> tuple[str, nn.Module] | None:
    """The single adaptable layer ``module`` stands for (itself or its only one), else None."""
    count, path, impure, _ = _wrapped(module)
    if count != 1 or impure:
        return None
    return _join(name, path), module.get_submodule(path) if path else module


def _analysis(function):
    """Run ``function`` with a fresh memo unless one is active already."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        if _MEMO.get() is not None:
            return function(*args, **kwargs)
        token = _MEMO.set({})
        try:
            return function(*args, **kwargs)
        finally:
            _MEMO.reset(token)

    return wrapper


def _direct_layers(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    found = (_unwrap(_join(prefix, name), child) for name, child in module.named_children())
    return [layer for layer in found if layer is not None]


def _norm_widths(module: nn.Module) -> set[int]:
    norms = (m for m in module.modules() if "norm" in type(m).__name__.lower())
    weights = (getattr(norm, "weight", None) for norm in norms)
    return {w.numel() for w in weights if w is not None and w.dim() == 1}


# -- exclusions shared by every preset ---------------------------------------------------


@_per_model
def _excluded(model: nn.Module) -> set[str]:
    """Stem, upsampler, last layer and fused inference copies: never adapted by a preset."""
    modules = list(model.named_modules())
    out: set[str] = set()
    convs = [(n, m) for n, m in modules if isinstance(m, nn.Conv2d) and n]
    if convs:
        # the image's channels: the first convolution's input when it looks like an image
        first = convs[0][1].in_channels
        image_channels = first if first <= 4 else 3
        out.update(n for n, m in convs if m.in_channels == image_channels)
    adaptable = [n for n, m in modules if n and _is_adaptable(m)]
    if adaptable:
        out.add(adaptable[-1])
    for parent_name, parent in modules:
        children = list(parent.named_children())
        for i, (child_name, child) in enumerate(children):
            neighbours = children[max(i - 1, 0) : i] + children[i + 1 : i + 2]
            if any(isinstance(c, _RESAMPLERS) for _, c in neighbours):
                unwrapped = _unwrap(_join(parent_name, child_name), child)
                if unwrapped is not None:
                    out.add(unwrapped[0])
    for name, module in modules:
        if name and _FUSED_COPY.fullmatch(name.rpartition(".")[2]):
            out.update(_join(name, n) for n, m in module.named_modules() if _is_adaptable(m))
    return out


# -- family 1: transformer MLPs ----------------------------------------------------------


def _ffn_layers(prefix: str, module: nn.Module) -> list[str] | None:
    layers = _direct_layers(prefix, module)
    if len(layers) not in (2, 3) or not all(_is_pointwise(m) for _, m in layers):
        return None
    first, last = layers[0][1], layers[-1][1]
    if isinstance(first, nn.Linear) != isinstance(last, nn.Linear):
        return None
    (d, h), (last_in, last_out) = _widths(first), _widths(last)
    # token MLPs may keep the width (DRCT's mlp_ratio=1); conv FFNs always expand
    if h < d or (h == d and not isinstance(first, nn.Linear)) or last_out != d:
        return None
    if last_in not in (h, h // 2) or (len(layers) == 3 and _widths(layers[1][1]) != (d, h)):
        return None
    return [n for n, _ in layers]


@_per_model
def _transformer_mlps(model: nn.Module) -> list[tuple[str, bool]]:
    """(layer name, is nn.Linear) for every FFN layer, in named_modules order."""
    modules = dict(model.named_modules())
    found: list[tuple[str, bool]] = []
    for name, module in modules.items():
        if not name:
            continue
        layers = _ffn_layers(name, module)
        if layers is None:
            continue
        d = _widths(modules[layers[0]])[0]
        parent_name = name.rpartition(".")[0]
        grand_name = parent_name.rpartition(".")[0] if parent_name else ""
        context = [module, modules[parent_name]] + ([modules[grand_name]] if parent_name else [])
        if not any(d in _norm_widths(block) for block in context):
            continue
        found += [(layer, isinstance(modules[layer], nn.Linear)) for layer in layers]
    return list(dict.fromkeys(found))  # a layer of nested FFNs once


# -- family 2: residual dense / residual conv blocks -------------------------------------


def _dense_convs(model: nn.Module) -> list[str]:
    found: list[str] = []
    for name, module in model.named_modules():
        convs = [(n, m) for n, m in _direct_layers(name, module) if isinstance(m, nn.Conv2d)]
        if len(convs) < 3:
            continue
        widths = [conv.in_channels for _, conv in convs]
        growing = all(later > earlier for earlier, later in zip(widths, widths[1:], strict=False))
        if growing and convs[-1][1].out_channels == widths[0]:
            found += [n for n, _ in convs]
    return found


def _residual_block_convs(model: nn.Module, units: list[str]) -> list[str]:
    found: list[str] = []
    blocks = 0
    for name, module in model.named_modules():
        if not _within(name, units):
            continue
        layers = _direct_layers(name, module)
        convs = [
            (n, m)
            for n, m in layers
            if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 and tuple(m.stride) == (1, 1)
        ]
        if len(convs) < 2:
            continue
        width = convs[0][1].in_channels
        if all(isinstance(m, nn.Conv2d) and _widths(m) == (width, width) for _, m in layers):
            found += [n for n, _ in convs]
            blocks += 1
    return found if blocks >= 2 else []


# -- family 3: repeated body blocks ------------------------------------------------------


@_per_model
def _signature(module: nn.Module) -> int:
    """Equal for modules of the same class with the same parameter shapes, recursively."""
    table = _MEMO.get().setdefault("signature-table", {})
    own = tuple((n, tuple(p.shape)) for n, p in module.named_parameters(recurse=False))
    # parameter-free children (activations, Identity vs DropPath) do not tell blocks apart
    children = tuple((n, _signature(c)) for n, c in module.named_children() if _wrapped(c)[3])
    return table.setdefault((type(module), own, children), len(table))


def _outermost(names: list[str]) -> list[str]:
    """The names with no ancestor among ``names``."""
    unique = dict.fromkeys(names)
    return [n for n in unique if not any(n[:i] in unique for i, c in enumerate(n) if c == ".")]


@_per_model
def _repeated_units(model: nn.Module) -> list[str]:
    """Modules that repeat as same-signature siblings (outermost first-level of repetition)."""
    units: list[str] = []
    for name, module in model.named_modules():
        groups: dict[tuple, list[str]] = defaultdict(list)
        for child_name, child in module.named_children():
            groups[_signature(child)].append(_join(name, child_name))
        for members in groups.values():
            if len(members) < 2:
                continue
            leaf = _is_adaptable(model.get_submodule(members[0]))
            # bare layers repeat as a body only inside a list, not as attributes of the root
            if leaf and (not name or not isinstance(module, (nn.Sequential, nn.ModuleList))):
                continue
            units += members
    return _outermost(units)


def _repeated_classes(model: nn.Module) -> list[str]:
    """Instances of a (non-torch) block class used at least twice."""
    by_class: dict[type, list[str]] = defaultdict(list)
    for name, module in model.named_modules():
        if name and not type(module).__module__.startswith("torch."):
            by_class[type(module)].append(name)
    units = [n for names in by_class.values() if len(names) >= 2 for n in names]
    return _outermost(units)


# -- the presets -------------------------------------------------------------------------


@_per_model
def _family_layers(model: nn.Module, family: str, excluded: set[str]) -> list[str]:
    if family == "transformer-mlp":
        layers = [n for n, _ in _transformer_mlps(model)]
    elif family == "residual-convs":
        layers = _dense_convs(model) or _residual_block_convs(model, _repeated_units(model))
    else:  # inside repeated sibling blocks, else inside instances of a repeated block class
        body = [n for n, m in model.named_modules() if n not in excluded and _is_adaptable(m)]
        units = _repeated_units(model)
        layers = [n for n in body if _within(n, units)] or [
            n for n in body if _within(n, _repeated_classes(model))
        ]
    return [n for n in layers if n not in excluded]


@_analysis
def lora_family(model: nn.Module) -> str | None:
    """The preset family ``targets='auto'`` picks for ``model`` (see the module docstring),
    or ``None`` when none fits.

    Example:
        >>> from torch import nn
        >>> lora_family(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 3, 3))) is None
        True
    """
    if not isinstance(model, nn.Module):
        raise DTypeError(f"model must be an nn.Module; got {type(model).__name__}")
    excluded = _excluded(model)
    if any(linear and n not in excluded for n, linear in _transformer_mlps(model)):
        return "transformer-mlp"
    for family in LORA_FAMILIES[1:]:
        if _family_layers(model, family, excluded):
            return family
    return None


def _found_summary(model: nn.Module, excluded: set[str]) -> str:
    counts = {f: len(_family_layers(model, f, excluded)) for f in LORA_FAMILIES}
    found = ", ".join(f"{f!r} ({n} layers)" for f, n in counts.items() if n)
    return f"it does have {found}; pass one of those," if found else "no other preset fits; pass"


@_analysis
def find_lora_targets(model: nn.Module, targets: LoRATargets = "auto") -> list[str]:
    """Names of the layers of ``model`` that LoRA adapters would be attached to.

    Args:
        model: the network to inspect (not modified).
        targets: a preset of :data:`LORA_PRESETS` (see the module docstring), a regular
            expression matched in full against module names (``r'.*\\.fc[12]'``), a list of
            exact module names, or a predicate ``f(name, module) -> bool``. Only ``nn.Linear``
            and ``nn.Conv1d/2d/3d`` layers can be targeted.

    Returns:
        The matching module names in the order ``model.named_modules()`` visits them.

    Raises:
        UnknownNameError: ``targets`` looks like a misspelt preset name.
        ArgumentError: no adaptable layer matches (for a preset, the message lists the
            presets that do find layers), or a listed name is not an adaptable layer.
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
        excluded = _excluded(model)
        family = PRESET_ALIASES.get(targets, targets)
        if family == "auto":  # None when no family fits
            family = lora_family(model)
        wanted = set(_family_layers(model, family, excluded)) if family else set()
        if not wanted:
            hint = "pass" if family is None else _found_summary(model, excluded)
            raise ArgumentError(
                f"targets={targets!r}: found {_WHAT[family]} in {type(model).__name__}; {hint} "
                "a regex, a list of module names or a predicate f(name, module) -> bool instead."
            )
    elif isinstance(targets, str):
        looks_like_regex = any(ch in targets for ch in r".*+?[](){}|^$\\")
        if not looks_like_regex and targets not in modules:
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
