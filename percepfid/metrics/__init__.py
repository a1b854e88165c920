"""torchmetrics ``Metric`` wrappers for HLF and RQI (optional: ``pip install 'percepfid[metrics]'``).

``update`` accumulates per-image scores as summed states, so a distributed evaluation loop
(DDP, Lightning) reduces them across processes for free when ``compute`` is called.

Example:
    >>> import torch
    >>> from percepfid.metrics import HLFMetric
    >>> metric = HLFMetric("timm:vit_tiny_patch16_224.augreg_in21k", pretrained=False, image_size=32)
    >>> metric.update(torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24))
    >>> metric.compute().shape
    torch.Size([])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._imports import require

require("torchmetrics", "percepfid.metrics")

from torchmetrics import Metric  # noqa: E402

__all__ = ["HLFMetric", "RQIMetric"]

# the keywords that configure the torchmetrics ``Metric``; every other one goes to the loss
_METRIC_OPTIONS = frozenset(
    {"compute_on_cpu", "dist_sync_on_step", "process_group", "dist_sync_fn",
     "distributed_available_fn", "sync_on_compute", "compute_with_cache"}
)  # fmt: skip


class _MeanScore(Metric):
    """Mean of a per-image score (the loss method ``_method``) over every process."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    _method: str

    def __init__(self, loss: type[nn.Module], backbone: Any, kwargs: dict[str, Any]) -> None:
        super().__init__(**{k: kwargs.pop(k) for k in list(kwargs) if k in _METRIC_OPTIONS})
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.loss = loss(backbone, **kwargs)

    def update(self, images: torch.Tensor, reference: torch.Tensor) -> None:
        """Score a batch: ``images`` and ``reference`` are ``(B, 3, H, W)`` in [0, 1]."""
        with torch.no_grad():
            scores = getattr(self.loss, self._method)(images, reference).reshape(-1)
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        """The mean score, a float64 scalar (NaN before any update)."""
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count


class HLFMetric(_MeanScore):
    """Mean HLF fidelity of SR images to their GT (higher = more faithful).

    Args:
        backbone, pretrained, embedding, image_size: as for :class:`~percepfid.HLFLoss`.
        head: a calibration head (module, folder or Hub repo id); then the mean predicted
            human fidelity in [0, 1] instead of the mean cosine.
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``dist_sync_fn``, ...)
            and other :class:`~percepfid.HLFLoss` arguments.
    """

    _method = "fidelity"

    def __init__(
        self,
        backbone: str | nn.Module = "dinov2",
        *,
        pretrained: bool = True,
        head: nn.Module | str | Path | None = None,
        embedding: str = "cls",
        image_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        from ..losses import HLFLoss

        kwargs.update(pretrained=pretrained, head=head, embedding=embedding, image_size=image_size)
        super().__init__(HLFLoss, backbone, kwargs)


class RQIMetric(_MeanScore):
    """Mean Relative Quality Index of images against their references (> 0: better).

    Args:
        backbone, pretrained: as for :class:`~percepfid.RQILoss` (``None``: the released
            MANIQA-RQI model).
        **kwargs: other :class:`~percepfid.RQILoss` arguments (``head``, ``crop``, ...) and
            torchmetrics ``Metric`` options.
    """

    _method = "score"

    def __init__(
        self, backbone: str | nn.Module | None = None, *, pretrained: bool = True, **kwargs: Any
    ) -> None:
        from ..losses import RQILoss

        super().__init__(RQILoss, backbone, dict(kwargs, pretrained=pretrained))
