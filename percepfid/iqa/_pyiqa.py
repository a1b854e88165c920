"""Bridge to the optional pyiqa toolbox (MUSIQ, the paper's Q, is reached this way).

pyiqa is released under the PolyForm Noncommercial licence 1.0.0: percepfid never installs
it by default, never copies its code, and using this bridge makes your use subject to that
licence (no commercial use). Install it explicitly with ``pip install 'percepfid[pyiqa]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .._checks import check_input_range
from .._errors import ArgumentError, UnknownNameError
from .._imports import require
from ._base import NRIQAModel

logger = logging.getLogger(__name__)


class PyIQAModel(NRIQAModel):
    """A pyiqa no-reference metric as a frozen, differentiable percepfid NR-IQA model.

    Licence: pyiqa is PolyForm Noncommercial; see the module docstring.

    Args:
        metric: a pyiqa no-reference metric name, e.g. ``'musiq'`` (KonIQ, 0-100 scale).
        input_range: value range of the input images.
        **options: passed to ``pyiqa.create_metric``.

    Raises:
        MissingDependencyError: pyiqa is not installed.
        UnknownNameError: pyiqa does not know ``metric``.
        ArgumentError: ``metric`` is a full-reference metric.
    """

    def __init__(
        self, metric: str, *, input_range: Sequence[float] = (0.0, 1.0), **options: object
    ) -> None:
        super().__init__(input_range)
        pyiqa = require("pyiqa", f"NR-IQA model 'pyiqa:{metric}' (PolyForm Noncommercial licence)")
        known = list(pyiqa.list_models())
        if metric not in known:
            raise UnknownNameError("pyiqa metric", metric, known)
        options = {"as_loss": True, "loss_reduction": "none", "device": "cpu", **options}
        self.metric = pyiqa.create_metric(metric, **options)
        mode = getattr(self.metric, "metric_mode", "NR")
        if mode != "NR":
            raise ArgumentError(
                f"pyiqa metric {metric!r} is {mode} (needs a reference); choose a no-reference "
                "metric such as 'musiq', 'clipiqa' or 'niqe'"
            )
        self.higher_is_better = not bool(getattr(self.metric, "lower_better", False))
        try:
            reported = getattr(self.metric, "score_range", None)
            self.score_range = check_input_range(reported, "score_range", finite=False)
        except ArgumentError:  # pyiqa reports no usable range
            self.score_range = None
        self.name = f"pyiqa:{metric}"
        logger.info("pyiqa metric %r: PolyForm Noncommercial licence applies", metric)
        self.freeze()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        out = self.metric(images)
        return out.reshape(images.shape[0], -1)[:, 0] if out.numel() == images.shape[0] else out
