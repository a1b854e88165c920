"""Optional dependencies: availability flags and imports with the exact install hint."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

from ._errors import MissingDependencyError

# import name -> the pip extra that installs it
_EXTRAS = dict(
    pair.split("=")
    for pair in "open_clip=clip transformers=blip peft=lora scipy=eval pyiqa=pyiqa lpips=bench "
    "matplotlib=plot torchmetrics=metrics basicsr=basicsr spandrel=sr".split()
)
# import name -> distribution, where no extra installs it and the two names differ
_DISTRIBUTIONS = {"PIL": "pillow"}


@cache
def is_available(module: str) -> bool:
    """Return True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(module: str) -> str:
    """The pip command that installs ``module`` the way percepfid expects."""
    if module in _EXTRAS:
        return f"pip install 'percepfid[{_EXTRAS[module]}]'"
    return f"pip install {_DISTRIBUTIONS.get(module, module)}"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"open_clip"``) or raise :class:`MissingDependencyError`
    naming ``feature`` (what needs it, e.g. ``"backbone 'clip'"``) and the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} requires the optional package {module!r}, which is not installed "
            f"({error}). Install it with: {install_hint(module)}"
        ) from error
