"""Typed errors raised by percepfid, each also a subclass of the builtin exception a user
would catch (``ValueError``, ``TypeError`` or ``ImportError``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PercepfidError(Exception):
    """Base class of every error percepfid raises on purpose."""


class ShapeError(PercepfidError, ValueError):
    """A tensor has the wrong rank, channel count or does not match its partner."""


class EmptyBatchError(ShapeError):
    """A batch has no elements (B == 0) or an image has a zero-sized side."""


class DTypeError(PercepfidError, TypeError):
    """A tensor (or argument) has the wrong type or dtype."""


class RangeError(PercepfidError, ValueError):
    """Values fall outside the documented range."""


class NonFiniteError(RangeError):
    """A tensor holds NaN or infinite values."""


class ArgumentError(PercepfidError, ValueError):
    """An argument has a value outside its allowed set."""


class UnknownNameError(ArgumentError):
    """A name (backbone, model, preset, weights entry) is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}."
        if close:
            message += f" Did you mean {', '.join(repr(c) for c in close)}?"
        else:
            shown = ", ".join(repr(k) for k in known[:12])
            more = "" if len(known) <= 12 else f", ... ({len(known)} in all)"
            message += f" Known: {shown}{more}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
        self.name = name
        self.suggestions = close


class MissingDependencyError(PercepfidError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


class WeightsError(PercepfidError, ValueError):
    """Weights are missing, corrupt, or do not fit the architecture."""


class KernelUnavailableError(ArgumentError):
    """An explicitly requested compute backend (e.g. ``backend='triton'``) cannot serve the call."""
