"""Calibration heads that map HLF cosine fidelity to predicted human fidelity."""

from __future__ import annotations

import torch
from torch import nn

from .._errors import ArgumentError
from ._base import HubHead


class CalibrationHead(HubHead):
    """``s = sigmoid(scale * cos + bias)``: cosine fidelity -> predicted human fidelity in [0, 1].

    Monotone in the cosine (for ``scale > 0``): it changes PLCC / RMSE against human scores,
    never the ranking (SRCC). Fit it with :func:`percepfid.train.fit_hlf_head`. Every HLF
    head is called ``head(cosine, sr_embedding, gt_embedding)`` = :meth:`from_features`
    (learned) of :meth:`features` (fixed), so a trainer computes the features once.

    Args:
        scale: initial slope. The default maps cos 0.5 -> 0.5 and cos 1.0 -> 0.993.
        bias: initial offset.

    Shape:
        - cosine: ``(B,)``; the embeddings are not used (they may be ``None``).
        - output: ``(B,)`` in ``[0, 1]``

    Example:
        >>> head = CalibrationHead()
        >>> head(torch.tensor([0.5, 1.0]))
        tensor([0.5000, 0.9933], grad_fn=<SigmoidBackward0>)
    """

    num_features = 1

    def __init__(self, scale: float = 10.0, bias: float = -5.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    @staticmethod
    def features(
        cosine: torch.Tensor,
        sr_embedding: torch.Tensor | None = None,  # noqa: ARG004 - one signature for all heads
        gt_embedding: torch.Tensor | None = None,  # noqa: ARG004
    ) -> torch.Tensor:
        """The head's input ``(B, 1)``: the cosine alone."""
        return cosine.unsqueeze(-1)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted fidelity ``(B,)`` from :meth:`features`."""
        return torch.sigmoid(self.scale * features[..., 0] + self.bias)

    def forward(
        self,
        cosine: torch.Tensor,
        sr_embedding: torch.Tensor | None = None,
        gt_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.from_features(self.features(cosine, sr_embedding, gt_embedding))


class MLPCalibrationHead(HubHead):
    """An MLP on ``[cos, mean|e_sr - e_gt|, max|e_sr - e_gt|]`` -> fidelity in [0, 1].

    A richer alternative to :class:`CalibrationHead` (PAPERS.md section 1 [D]). The features
    are standardised by the buffers ``feature_mean`` / ``feature_std`` (set by
    :func:`percepfid.train.fit_hlf_head`, saved with the head), so it copes with backbones
    whose cosines crowd near 1.

    Args:
        hidden: width of the hidden layer.

    Shape:
        - cosine: ``(B,)``; sr_embedding, gt_embedding: pooled embeddings ``(B, D)``.
        - output: ``(B,)`` in ``[0, 1]``.
    """

    num_features = 3

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(self.num_features, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))

    @staticmethod
    def features(
        cosine: torch.Tensor, sr_embedding: torch.Tensor, gt_embedding: torch.Tensor
    ) -> torch.Tensor:
        """The head's input features ``(B, 3)`` from the cosine and both embeddings."""
        if sr_embedding is None or gt_embedding is None:
            raise ArgumentError(
                "MLPCalibrationHead needs both pooled embeddings: head(cosine, sr_embedding, "
                "gt_embedding)"
            )
        diff = (sr_embedding - gt_embedding).abs().flatten(1).float()
        scale = gt_embedding.flatten(1).float().norm(dim=1, keepdim=True).clamp_min(1e-8)
        diff = diff / scale * diff.shape[1] ** 0.5
        return torch.stack([cosine.float(), diff.mean(1), diff.amax(1)], dim=1)

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """Standardise inputs like ``features`` ``(N, 3)``: their mean and std become the buffers."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-6) if len(features) > 1 else 1.0)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted fidelity ``(B,)`` from :meth:`features`."""
        x = (features - self.feature_mean) / self.feature_std
        return torch.sigmoid(self.net(x).squeeze(-1))

    forward = CalibrationHead.forward
