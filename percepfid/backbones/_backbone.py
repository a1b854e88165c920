"""The frozen backbone module every loss uses, its differentiable preprocessing, and its
factory."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_input_range, check_positive_int
from .._errors import ArgumentError, DTypeError
from .._frozen import exclude_from_state_dict, mark_frozen
from .._vocab import BACKBONE_CROPS, EMBEDDINGS
from ..functional import to_unit
from . import _adapters
from ._registry import get_spec
from ._spec import BackboneSpec, PreprocessConfig

_BUILDERS = {
    "timm": _adapters.build_timm,
    "open_clip": _adapters.build_open_clip,
    "hf": _adapters.build_hf,
}


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)


def tile_grid(height: int, width: int, tile: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the aligned tile grid used by ``crop='tiles'``.

    The image is resized so that each side is the nearest whole number (at least one) of
    tiles, then split into non-overlapping tiles; every part of the image lands in a tile.
    """
    rows = max(1, int(math.floor(height / tile[0] + 0.5)))
    cols = max(1, int(math.floor(width / tile[1] + 0.5)))
    return rows, cols


class Preprocess(nn.Module):
    """Turn images in ``input_range`` into normalised backbone input, differentiably.

    Args:
        config: the preprocessing record (size, resize, mean/std, interpolation, crop).
        input_range: the value range of incoming images.

    Shape:
        - images: ``(B, 3, H, W)``, any ``H, W``.
        - output: ``(B, 3, h, w)`` for ``'center'`` / ``'squash'``; ``(B * T, 3, h, w)`` for
          ``'tiles'`` (tiles of one image are consecutive), with ``(h, w) = config.image_size``.
        - dtype: float16 / bfloat16 images are preprocessed in float32 (the output is
          float32 then); float32 and float64 keep their dtype.
    """

    def __init__(self, config: PreprocessConfig, input_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.config = config
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, crop: str | None = None) -> torch.Tensor:
        crop = check_choice(crop or self.config.crop, "crop", BACKBONE_CROPS)
        if images.dtype in (torch.float16, torch.bfloat16):
            # fp32 arithmetic for the resize (the CPU has no half antialiased kernels, and
            # half resampling loses precision); the caller casts to the encoder's dtype.
            images = images.float()
        images = to_unit(images, self.input_range)
        size = self.config.image_size
        mode = self.config.interpolation
        height, width = images.shape[-2:]
        if crop == "squash":
            images = _resize(images, size, mode)
        elif crop == "center":
            # torchvision's geometry (timm's and open_clip's eval transforms): the short side
            # becomes `shortest`, the long side is truncated, the crop offset is rounded
            shortest = self.config.resize_size or min(size)
            if height <= width:
                resized = (shortest, int(shortest * width / height))
            else:
                resized = (int(shortest * height / width), shortest)
            resized = (max(size[0], resized[0]), max(size[1], resized[1]))
            images = _resize(images, resized, mode)
            top = int(round((resized[0] - size[0]) / 2.0))
            left = int(round((resized[1] - size[1]) / 2.0))
            images = images[..., top : top + size[0], left : left + size[1]]
        else:
            rows, cols = tile_grid(height, width, size)
            images = _resize(images, (rows * size[0], cols * size[1]), mode)
            batch = images.shape[0]
            # (B, 3, rows, h, cols, w) -> (B, rows, cols, 3, h, w) -> (B * T, 3, h, w)
            images = images.reshape(batch, 3, rows, size[0], cols, size[1])
            images = images.permute(0, 2, 4, 1, 3, 5).reshape(batch * rows * cols, 3, *size)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"image_size={c.image_size}, resize_size={c.resize_size}, crop={c.crop!r}, "
            f"interpolation={c.interpolation!r}, input_range={self.input_range}"
        )


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
        mark_frozen(self.encoder)
        self.embed_dim: int | None = getattr(encoder, "embed_dim", None)
        self.token_dim: int | None = getattr(encoder, "token_dim", None)
        super().train(False)
        if (self.embed_dim is None or self.token_dim is None) and preprocess is not None:
            # read the output sizes the tower does not state from one small forward
            probe = torch.zeros(1, 3, *preprocess.config.image_size, device=preprocess.mean.device)
            with torch.no_grad():
                pooled, tokens = encoder((probe - preprocess.mean) / preprocess.std)
            self.embed_dim = int(pooled.shape[-1])
            self.token_dim = None if tokens is None else int(tokens.shape[-1])
        # Frozen weights are not part of any parent's checkpoint (filled back on load).
        exclude_from_state_dict(self)

    def train(self, mode: bool = True) -> Backbone:  # noqa: ARG002 - frozen tower
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Backbone:
        """``requires_grad_(True)`` is a no-op (to fine-tune blocks, set ``requires_grad`` on
        their parameters one by one)."""
        if not requires_grad:
            for parameter in self.parameters():
                parameter.requires_grad_(False)
        return self

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.preprocess is None else self.preprocess.config.image_size

    def encode(self, images: torch.Tensor, crop: str | None = None) -> Embeddings:
        """Pooled embedding and patch tokens of ``images`` (already validated).

        Images of any floating dtype are accepted: the encoder's input is cast to the
        encoder's own parameter dtype (float16/bfloat16 images are preprocessed in float32
        first). Images on another device than the encoder raise :class:`DTypeError`.
        """
        batch = images.shape[0]
        tensors = itertools.chain(self.encoder.parameters(), self.encoder.buffers())
        reference = next((tensor for tensor in tensors if tensor.is_floating_point()), None)
        if reference is not None and images.device != reference.device:
            raise DTypeError(
                f"images are on {images.device} but backbone {self.spec.name!r} is on "
                f"{reference.device}; move the loss with .to({str(images.device)!r}) or the "
                f"images with .to({str(reference.device)!r})"
            )
        if self.preprocess is None:
            if crop == "tiles":
                raise ArgumentError("crop='tiles' needs a backbone with preprocessing")
            x = images
        else:
            crop = crop or self.preprocess.config.crop
            x = self.preprocess(images, crop)  # checks crop
        if reference is not None and x.dtype != reference.dtype:
            x = x.to(reference.dtype)
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


def _check_options(
    input_range: object, image_size: object, crop: object
) -> tuple[tuple[float, float], tuple[int, int] | None]:
    """The checked ``input_range``, and ``image_size`` as ``(H, W)`` or None; checks ``crop``."""
    if crop is not None:
        check_choice(crop, "crop", BACKBONE_CROPS)
    input_range = check_input_range(input_range)
    if image_size is None:
        return input_range, None
    sides = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    try:
        if len(sides) == 2:
            return input_range, tuple(check_positive_int(side, "image_size") for side in sides)
    except ArgumentError:
        pass
    raise ArgumentError(
        f"image_size must be a positive int or a pair of positive ints (H, W); got {image_size!r}"
    )


def _assemble(
    encoder: nn.Module,
    spec: BackboneSpec,
    config: PreprocessConfig | None,
    input_range: tuple[float, float],
    **changes: str | None,
) -> Backbone:
    """The :class:`Backbone` of ``encoder``, its ``config`` overridden by the given ``changes``."""
    if config is None:
        return Backbone(encoder, spec, None)
    config = replace(config, **{key: value for key, value in changes.items() if value is not None})
    return Backbone(encoder, spec, Preprocess(config, input_range))


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
            :mod:`percepfid.hub`); ``False`` builds random weights (tests, plumbing). Random
            weights are re-initialised where the upstream init would make the embedding
            ignore the image: near-zero LayerScale gammas (DINOv2's 1e-5) are set to 1 and
            BLIP's weights are drawn with std 0.02 instead of 1e-10.
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
    input_range, image_size = _check_options(input_range, image_size, crop)
    if preprocess is not None and not isinstance(preprocess, PreprocessConfig):
        raise DTypeError(
            f"preprocess must be a PreprocessConfig or None; got {type(preprocess).__name__}"
        )
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, nn.Module):
        name = type(backbone).__name__
        config = preprocess
        if config is not None and image_size is not None:
            config = config.scaled(image_size)
        spec = BackboneSpec(name=name, source="module", model=name)
        return _assemble(_adapters.ModuleEncoder(backbone), spec, config, input_range, crop=crop)
    if not isinstance(backbone, str):
        raise DTypeError(
            f"backbone must be a registered name or an nn.Module; got {type(backbone).__name__}"
        )
    spec = get_spec(backbone)
    encoder, config = _BUILDERS[spec.source](spec, pretrained, image_size)
    patch = getattr(encoder, "patch_size", None)
    if patch and any(side % patch for side in config.image_size):
        raise ArgumentError(
            f"image_size={config.image_size} for backbone {spec.name!r} must be a multiple of "
            f"its patch size {patch} (e.g. {patch * max(1, round(config.image_size[0] / patch))})"
        )
    return _assemble(encoder, spec, config, input_range, crop=crop)
