"""Optional dependencies: availability flags and imports with the exact install hint."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

from ._errors import MissingDependencyError

# import name -> (pip extra, distribution name shown in the message)
_EXTRAS: dict[str, tuple[str, str]] = {
    "timm": ("", "timm"),
    "open_clip": ("clip", "open_clip_torch"),
    "transformers": ("blip", "transformers"),
    "peft": ("lora", "peft"),
    "triton": ("", "triton"),
    "scipy": ("eval", "scipy"),
    "pyiqa": ("pyiqa", "pyiqa"),
    "lpips": ("bench", "lpips"),
    "matplotlib": ("plot", "matplotlib"),
    "torchmetrics": ("metrics", "torchmetrics"),
    "PIL": ("", "pillow"),
    "basicsr": ("basicsr", "basicsr-fixed"),
    "spandrel": ("sr", "spandrel"),
}


@cache
def is_available(module: str) -> bool:
    """Return True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(module: str) -> str:
    """The pip command that installs ``module`` the way percepfid expects."""
    extra, dist = _EXTRAS.get(module, ("", module))
    if extra:
        return f"pip install 'percepfid[{extra}]'"
    return f"pip install {dist}"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``feature`` and the fix.

    Args:
        module: the import name, e.g. ``"open_clip"``.
        feature: what needs it, e.g. ``"backbone 'clip'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} requires the optional package {module!r}, which is not installed "
            f"({error}). Install it with: {install_hint(module)}"
        ) from error
