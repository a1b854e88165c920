"""Global switches, read from ``PERCEPFID_*`` environment variables at call time."""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={value!r}: expected one of 1/0/true/false")


def input_checks_enabled() -> bool:
    """``PERCEPFID_CHECKS`` (default on): validate value range and finiteness of inputs.

    The value checks read one scalar back from the device per call; training loops that
    have validated their data may turn them off with ``PERCEPFID_CHECKS=0``. Shape and
    dtype checks always run (they cost nothing).
    """
    return _flag("PERCEPFID_CHECKS", True)


def kernel_backend() -> str:
    """``PERCEPFID_KERNEL`` (default ``auto``): the default backend of the cosine kernel."""
    value = os.environ.get("PERCEPFID_KERNEL", "auto").strip().lower()
    if value not in {"auto", "torch", "triton"}:
        raise ValueError(
            f"environment variable PERCEPFID_KERNEL={value!r}: expected 'auto', 'torch' or 'triton'"
        )
    return value
