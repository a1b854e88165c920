"""Keep frozen weights out of checkpoints: they come from the Hub (or the user's own
checkpoint of the base network), not from the loss's."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn


def exclude_from_state_dict(
    owner: nn.Module, path: str = "", *, keep: Callable[[str], bool] | None = None
) -> None:
    """Leave the submodule ``path`` of ``owner`` (``""``: ``owner`` itself) out of
    ``owner.state_dict()`` and fill its keys from the live module on load, so that strict
    loading of a checkpoint of ``owner`` (or of a parent) works. The hooks sit on ``owner``:
    the submodule's own ``state_dict()`` stays complete.

    ``keep``, a module-level predicate (so the module still pickles) on keys relative to
    ``path``, keeps the keys it accepts (e.g. the LoRA adapters of a frozen network).
    """
    owner._register_state_dict_hook(partial(_drop, path, keep))
    owner.register_load_state_dict_pre_hook(partial(_fill, path, keep))


def _frozen_keys(base: str, keep, keys) -> list[str]:
    """The keys under ``base`` that ``keep`` does not keep."""
    return [k for k in keys if k.startswith(base) and (keep is None or not keep(k[len(base) :]))]


def _drop(path: str, keep, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for key in _frozen_keys(prefix + path + "." if path else prefix, keep, state_dict):
        del state_dict[key]


def _fill(path: str, keep, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    base = prefix + path + "." if path else prefix
    live: dict = {}
    # What state_dict() writes for the subtree (persistent parameters and buffers), no hooks.
    for name, sub in module.get_submodule(path).named_modules(remove_duplicate=False):
        sub._save_to_state_dict(live, base + name + "." if name else base, False)
    for key in _frozen_keys(base, keep, live):
        state_dict.setdefault(key, live[key])


# Frozen submodules carry this attribute; ImageLoss.requires_grad_ and
# Backbone.requires_grad_ never turn their parameters back on.
FROZEN_ATTR = "_percepfid_frozen"


def mark_frozen(module: nn.Module) -> nn.Module:
    """Freeze ``module`` (no parameter requires grad) and mark it, so that a parent's
    ``requires_grad_(True)`` leaves it frozen. Returns ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    object.__setattr__(module, FROZEN_ATTR, True)
    return module


def requires_grad_except_frozen(owner: nn.Module, requires_grad: bool) -> nn.Module:
    """``owner.requires_grad_(requires_grad)`` that leaves parts marked by :func:`mark_frozen`
    frozen."""
    marked = (m for m in owner.modules() if getattr(m, FROZEN_ATTR, False))
    frozen = {id(parameter) for module in marked for parameter in module.parameters()}
    for parameter in owner.parameters():
        if id(parameter) not in frozen:
            parameter.requires_grad_(requires_grad)
    return owner
