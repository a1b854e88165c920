"""Keep frozen weights out of checkpoints: they come from the Hub, not from the user."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn


def exclude_from_state_dict(owner: nn.Module, path: str = "") -> None:
    """Leave the submodule ``path`` of ``owner`` (default: ``owner`` itself) out of
    ``owner.state_dict()``, and fill its missing keys from the live module on load, so
    that strict loading of a checkpoint of ``owner`` (or of a parent) works.

    The hooks sit on ``owner`` and are keyed by ``path``, resolved on every call: with a
    non-empty ``path`` the submodule's own ``state_dict()`` stays complete.
    """
    # partial of module-level functions, not closures, so the module still pickles.
    owner._register_state_dict_hook(partial(_drop, path))
    owner.register_load_state_dict_pre_hook(partial(_fill, path))


def _subtree(prefix: str, path: str) -> str:
    return prefix + path + "." if path else prefix


def _drop(path: str, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    base = _subtree(prefix, path)
    for key in [k for k in state_dict if k.startswith(base)]:
        del state_dict[key]


def _fill(path: str, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    base = _subtree(prefix, path)
    live: dict = {}
    # What state_dict() writes for the subtree (persistent parameters and buffers), no hooks.
    for name, sub in module.get_submodule(path).named_modules(remove_duplicate=False):
        sub._save_to_state_dict(live, base + name + "." if name else base, False)
    for key, tensor in live.items():
        state_dict.setdefault(key, tensor)
