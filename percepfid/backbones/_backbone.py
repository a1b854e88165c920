"""The frozen backbone module every loss uses, and its factory."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_choice, check_input_range
from .._errors import ArgumentError, DTypeError
from .._frozen import exclude_from_state_dict
from . import _adapters
from ._preprocess import Preprocess
from ._registry import get_spec
from ._spec import CROPS, EMBEDDINGS, BackboneSpec, PreprocessConfig

_BUILDERS = {
    "timm": _adapters.build_timm,
    "open_clip": _adapters.build_open_clip,
    "hf": _adapters.build_hf,
}


class Embeddings(NamedTuple):
    """Both embeddings of a batch: ``pooled`` ``(B, D)`` or ``(B, T, D)`` with tiles, and
    ``tokens`` ``(B, N, Dt)`` (tiles concatenated along ``N``) or ``None``."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None


class Backbone(nn.Module):
    """A frozen image encoder with its own differentiable preprocessing.

    The encoder's parameters never require grad, the module stays in ``eval()`` even when a
    parent calls ``.train()``, and its weights are left out of ``state_dict()`` (they come
    from the Hub, not from the user's checkpoint). Gradients still flow to the input.

    Args:
        encoder: a module returning ``(pooled, tokens)`` from normalised input.
        spec: the backbone's record.
        preprocess: its preprocessing, or ``None`` to feed images unchanged.

    Shape:
        - images: ``(B, 3, H, W)`` in ``input_range``, any ``H, W``.
        - ``embedding='cls'``: ``(B, D)``; with ``crop='tiles'`` ``(B, T, D)``.
        - ``embedding='patch'``: ``(B, N, Dt)``.
    """

    def __init__(
        self, encoder: nn.Module, spec: BackboneSpec, preprocess: Preprocess | None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.preprocess = preprocess
        self.encoder.requires_grad_(False)
        self.embed_dim: int | None = getattr(encoder, "embed_dim", None)
        self.token_dim: int | None = getattr(encoder, "token_dim", None)
        super().train(False)
        if (self.embed_dim is None or self.token_dim is None) and preprocess is not None:
            self._infer_dims()
        # Frozen weights are not part of any parent's checkpoint (filled back on load).
        exclude_from_state_dict(self)

    @torch.no_grad()
    def _infer_dims(self) -> None:
        # Some towers do not state their output sizes: run one small forward to read them.
        probe = torch.zeros(
            1, 3, *self.preprocess.config.image_size, device=self.preprocess.mean.device
        )
        pooled, tokens = self.encoder((probe - self.preprocess.mean) / self.preprocess.std)
        self.embed_dim = int(pooled.shape[-1])
        self.token_dim = None if tokens is None else int(tokens.shape[-1])

    def train(self, mode: bool = True) -> Backbone:  # noqa: ARG002 - frozen tower
        return super().train(False)

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.preprocess is None else self.preprocess.config.image_size

    def encode(self, images: torch.Tensor, crop: str | None = None) -> Embeddings:
        """Pooled embedding and patch tokens of ``images`` (already validated)."""
        batch = images.shape[0]
        if self.preprocess is None:
            if crop == "tiles":
                raise ArgumentError("crop='tiles' needs a backbone with preprocessing")
            x = images
        else:
            crop = check_choice(crop or self.preprocess.config.crop, "crop", CROPS)
            x = self.preprocess(images, crop)
        pooled, tokens = self.encoder(x)
        if crop == "tiles":  # regroup the tiles per image
            tiles = x.shape[0] // batch
            pooled = pooled.reshape(batch, tiles, *pooled.shape[1:])
            if tokens is not None:
                tokens = tokens.reshape(batch, tiles * tokens.shape[1], tokens.shape[-1])
        return Embeddings(pooled, tokens)

    def forward(
        self, images: torch.Tensor, embedding: str = "cls", crop: str | None = None
    ) -> torch.Tensor | Embeddings:
        """Embed ``images``: ``'cls'`` (pooled), ``'patch'`` (tokens) or ``'cls+patch'`` (both)."""
        check_choice(embedding, "embedding", EMBEDDINGS)
        out = self.encode(images, crop)
        if embedding == "cls":
            return out.pooled
        if out.tokens is None:
            raise ArgumentError(
                f"backbone {self.spec.name!r} exposes no patch tokens; use embedding='cls'"
            )
        return out.tokens if embedding == "patch" else out

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, embed_dim={self.embed_dim}, token_dim={self.token_dim}"


def create_backbone(
    backbone: str | nn.Module,
    pretrained: bool = True,
    *,
    image_size: int | tuple[int, int] | None = None,
    crop: str | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    preprocess: PreprocessConfig | None = None,
) -> Backbone:
    """Build a frozen :class:`Backbone` from a registered name, a full spec or a module.

    Args:
        backbone: an alias (``'dinov2'``, ``'clip'``, ...), a full spec
            (``'timm:<arch>.<tag>'``, ``'open_clip:<model>/<pretrained>'``,
            ``'hf:<org>/<repo>@<revision>'``), a :class:`Backbone`, or any ``nn.Module``
            that maps a normalised batch to ``(B, D)``, ``(B, N, D)`` or ``(pooled, tokens)``.
        pretrained: load the weights listed in the manifest (downloaded through
            :mod:`percepfid.hub`); ``False`` builds random weights (tests, plumbing).
        image_size: override the model input size (e.g. a small size in tests).
        crop: default crop mode ``'center'``, ``'squash'`` or ``'tiles'``.
        input_range: value range of the images the backbone will receive.
        preprocess: for a user module, the preprocessing to apply (default: none).

    Returns:
        The frozen backbone, in ``eval()`` mode.

    Raises:
        UnknownNameError: an unknown alias (with suggestions).
        MissingDependencyError: the model family's library is not installed.
        WeightsError: weights cannot be found offline or fail verification.

    Example:
        >>> bb = create_backbone("timm:vit_tiny_patch16_224.augreg_in21k", pretrained=False, image_size=32)
        >>> bb(torch.rand(2, 3, 50, 40)).shape
        torch.Size([2, 192])
    """
    input_range = check_input_range(input_range)
    if crop is not None:
        check_choice(crop, "crop", CROPS)
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, nn.Module):
        spec = BackboneSpec(
            name=type(backbone).__name__, source="module", model=type(backbone).__name__
        )
        config = preprocess
        if config is not None and image_size is not None:
            config = config.scaled(image_size)
        if config is not None and crop is not None:
            config = PreprocessConfig(**{**config.__dict__, "crop": crop})
        pre = None if config is None else Preprocess(config, input_range)
        return Backbone(_adapters.ModuleEncoder(backbone), spec, pre)
    if not isinstance(backbone, str):
        raise DTypeError(
            f"backbone must be a registered name or an nn.Module; got {type(backbone).__name__}"
        )
    spec = get_spec(backbone)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None:
        if any(not isinstance(v, int) or v <= 0 for v in image_size):
            raise ArgumentError(f"image_size must be positive ints; got {image_size!r}")
    encoder, config = _BUILDERS[spec.source](spec, pretrained, image_size)
    patch = getattr(encoder, "patch_size", None)
    if patch and any(side % patch for side in config.image_size):
        raise ArgumentError(
            f"image_size={config.image_size} for backbone {spec.name!r} must be a multiple of "
            f"its patch size {patch} (e.g. {patch * max(1, round(config.image_size[0] / patch))})"
        )
    if crop is not None:
        config = PreprocessConfig(**{**config.__dict__, "crop": crop})
    return Backbone(encoder, spec, Preprocess(config, input_range))
