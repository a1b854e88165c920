"""RQI on any backbone: a two-input head on frozen embeddings, saved in the Hub format."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_positive_int, check_same_shape
from .._errors import ArgumentError, ShapeError
from .._vocab import RQI_EMBEDDINGS
from ..heads import HubHead
from .maniqa import _score_branch


class RQIHead(HubHead):
    """A two-input head ``g(e_a, e_b)`` on backbone embeddings: an MLP on ``[e_a, e_b, e_a - e_b]``.

    For pooled embeddings ``(B, D)`` the MLP gives the score directly. For patch tokens
    ``(B, N, D)`` it scores every aligned token pair and averages the scores with learned
    sigmoid weights, as MANIQA does. The last layer has no activation, so the score can be
    negative. :class:`percepfid.RQILoss` antisymmetrises it: ``(g(a, b) - g(b, a)) / 2``.

    Args:
        embed_dim: the embedding (or token) width ``D`` of the backbone.
        hidden_dim: hidden width of the MLPs.
        dropout: dropout between the two layers while training.
        norm: layer-normalise the concatenated input (embedding scales vary a lot between
            backbones).

    Shape:
        - features_a, features_b: ``(B, D)`` or ``(B, N, D)``, the same shape.
        - output: ``(B,)``.

    Example:
        >>> head = RQIHead(8, hidden_dim=16)
        >>> head(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([4])
    """

    def __init__(
        self, embed_dim: int, hidden_dim: int = 256, dropout: float = 0.0, norm: bool = True
    ) -> None:
        super().__init__()
        check_positive_int(embed_dim, "embed_dim")
        check_positive_int(hidden_dim, "hidden_dim")
        if not 0.0 <= dropout < 1.0:
            raise ArgumentError(f"dropout must be in [0, 1); got {dropout!r}")
        self.embed_dim = embed_dim
        width = 3 * embed_dim
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.score = _score_branch(width, hidden_dim, dropout, gate=False, activation=nn.GELU)
        self.weight = _score_branch(width, hidden_dim, dropout, gate=True, activation=nn.GELU)

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        check_same_shape(features_a, features_b, ("features_a", "features_b"))
        if features_a.ndim not in (2, 3) or features_a.shape[-1] != self.embed_dim:
            raise ShapeError(
                f"RQIHead(embed_dim={self.embed_dim}) takes (B, {self.embed_dim}) or "
                f"(B, N, {self.embed_dim}) features; got {tuple(features_a.shape)}"
            )
        x = self.norm(torch.cat([features_a, features_b, features_a - features_b], dim=-1))
        score = self.score(x).squeeze(-1)
        if x.ndim == 2:
            return score
        weight = self.weight(x).squeeze(-1)
        return (score * weight).sum(dim=1) / (weight.sum(dim=1) + 1e-8)


class BackbonePairModel(nn.Module):
    """A frozen backbone and a two-input head: the same ``features`` / ``compare`` split as
    :class:`~percepfid.rqi.MANIQARQI`, so RQILoss treats both alike.

    Args:
        backbone: a :class:`percepfid.backbones.Backbone` (frozen, any input size).
        head: a module ``head(features_a, features_b) -> (B,)``, e.g. :class:`RQIHead`.
        embedding: ``'cls'`` (pooled embeddings) or ``'patch'`` (aligned patch tokens).
    """

    img_size: int | None = None

    def __init__(self, backbone: nn.Module, head: nn.Module, embedding: str = "cls") -> None:
        super().__init__()
        self.embedding = check_choice(embedding, "embedding", RQI_EMBEDDINGS)
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone embeddings of images in ``[0, 1]``: ``(B, D)`` or ``(B, N, D)``."""
        return self.backbone(x, embedding=self.embedding)

    def compare(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        """The head's raw score ``g(a, b)``: ``(B,)``."""
        return self.head(features_a, features_b)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.compare(self.features(a), self.features(b))
