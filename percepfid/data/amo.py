"""AMO (argmax-online) target selection, Zhang et al., arXiv 2504.18524."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from .._checks import check_generator, check_positive_int, check_tensor
from .._errors import ArgumentError, DTypeError, EmptyBatchError, ShapeError
from ..iqa import NRIQAModel, create_nriqa


class AMOSelection(NamedTuple):
    """What :class:`ArgmaxPatchSelector` returns (all without autograd history).

    Attributes:
        patch: ``(B, 3, patch_size, patch_size)`` the best candidate's crop.
        index: ``(B,)`` int64, the chosen candidate (ties: the lowest index). Always an
            eligible one: when every eligible score of a sample is NaN (or the worst
            possible), its first eligible candidate.
        top: ``(B,)`` int64, the crop's top row in the candidates' coordinates.
        left: ``(B,)`` int64, the crop's left column. The matching LR crop starts at
            ``(top // scale, left // scale)`` with side ``patch_size // scale``.
        scores: ``(B, K)`` the crops' scores (``NaN`` for masked-out candidates).
    """

    patch: torch.Tensor
    index: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    scores: torch.Tensor


class ArgmaxPatchSelector(nn.Module):
    """Pick the best candidate crop per sample, at one crop location shared by its candidate
    ground truths, as scored by a no-reference IQA model (SMA/SMP at temperature zero, per
    patch and per step).

    Args:
        iqa: an NR-IQA name (see :func:`~percepfid.iqa.create_nriqa`), model or callable.
        patch_size: side of the square crop (in ground-truth pixels).
        scale: the SR factor; crop corners are multiples of it so the LR crop aligns
            exactly (``patch_size`` must be divisible by it).
        pretrained: load the IQA model's real weights (``False``: random, tests only).
        chunk_size: score at most this many crops per IQA call (``None``: all at once).
        iqa_kwargs: extra options for :func:`~percepfid.iqa.create_nriqa`.

    Shape:
        - candidates: ``(B, K, 3, H, W)`` in the IQA model's input range, ``H, W >= patch_size``.
        - mask: optional ``(B, K)`` bool, ``True`` = eligible.
        - output: an :class:`AMOSelection`.

    Example:
        >>> selector = ArgmaxPatchSelector(lambda x: x.mean(dim=(1, 2, 3)), patch_size=8)
        >>> out = selector(torch.rand(2, 4, 3, 16, 16))
        >>> out.patch.shape, out.index.shape
        (torch.Size([2, 3, 8, 8]), torch.Size([2]))
    """

    def __init__(
        self,
        iqa: str | nn.Module | Callable[[torch.Tensor], torch.Tensor],
        patch_size: int,
        *,
        scale: int = 1,
        pretrained: bool = True,
        chunk_size: int | None = None,
        iqa_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size = check_positive_int(patch_size, "patch_size")
        self.scale = scale = check_positive_int(scale, "scale")
        if patch_size % scale:
            raise ArgumentError(
                f"patch_size={patch_size} must be divisible by scale={scale} so the LR crop aligns"
            )
        if chunk_size is not None:
            chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.chunk_size = chunk_size
        self.iqa: NRIQAModel = create_nriqa(iqa, pretrained=pretrained, **(iqa_kwargs or {}))

    def train(self, mode: bool = True) -> ArgmaxPatchSelector:  # noqa: ARG002 - no training state
        return super().train(False)

    @torch.no_grad()
    def forward(
        self,
        candidates: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        top: torch.Tensor | None = None,
        left: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AMOSelection:
        """Select the best crop of each sample (``candidates``, ``mask``: see the class).

        Args:
            top, left: ``(B,)`` integer crop corners to use instead of random ones, both or
                neither; multiples of ``scale``, so the LR crop aligns.
            generator: random source of the crop locations (CPU generator).

        Raises:
            ShapeError: wrong rank, channels, crop larger than the image, bad ``mask`` or
                location shapes, or a location outside the image.
            ArgumentError: a sample with no eligible candidate.
        """
        check_tensor(candidates, "candidates")
        if candidates.ndim != 5 or candidates.shape[2] != 3:
            raise ShapeError(
                f"candidates must have shape (B, K, 3, H, W); got {tuple(candidates.shape)}"
            )
        batch, count, _, height, width = candidates.shape
        if batch == 0 or count == 0:
            raise EmptyBatchError(f"candidates must have B, K >= 1; got {tuple(candidates.shape)}")
        p, s = self.patch_size, self.scale
        if height < p or width < p:
            raise ShapeError(f"candidates of size {height}x{width} are smaller than patch_size={p}")
        if mask is None:
            mask = torch.ones(batch, count, dtype=torch.bool)
        else:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise DTypeError("mask must be a bool tensor of shape (B, K)")
            if mask.shape != (batch, count):
                raise ShapeError(
                    f"mask must have shape ({batch}, {count}); got {tuple(mask.shape)}"
                )
            empty = (~mask.any(dim=1)).nonzero().flatten()
            if len(empty):
                raise ArgumentError(f"samples {empty.tolist()} have no eligible candidate in mask")
        mask = mask.to(candidates.device)
        if (top is None) != (left is None):
            raise ArgumentError("pass both top and left, or neither")
        generator = check_generator(generator)
        if top is None:
            top = torch.randint((height - p) // s + 1, (batch,), generator=generator) * s
            left = torch.randint((width - p) // s + 1, (batch,), generator=generator) * s
        else:
            top, left = _location(top, "top", batch), _location(left, "left", batch)
            if s > 1 and ((top % s).any() or (left % s).any()):
                raise ShapeError(
                    f"with scale={s} the crop corners must be multiples of {s} so the LR crop "
                    f"(top // {s}, left // {s}) aligns; got top={top.tolist()}, "
                    f"left={left.tolist()}"
                )
            inside = (top >= 0) & (top <= height - p) & (left >= 0) & (left <= width - p)
            if not inside.all():
                raise ShapeError(
                    f"crop locations must keep a {p}x{p} crop inside {height}x{width}; "
                    f"got top={top.tolist()}, left={left.tolist()}"
                )

        corners = enumerate(zip(top.tolist(), left.tolist(), strict=True))
        crops = torch.stack([candidates[b, ..., t : t + p, c : c + p] for b, (t, c) in corners])
        flat = crops.reshape(batch * count, 3, p, p)
        model_dtype = next((t.dtype for t in self.iqa.parameters() if t.is_floating_point()), None)
        if model_dtype is not None and flat.dtype != model_dtype:
            flat = flat.to(model_dtype)  # float64 / half candidates: scored in the model's dtype
        chunk = self.chunk_size or flat.shape[0]
        scores = torch.cat([self.iqa(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
        scores = scores.reshape(batch, count).float()
        oriented = scores if self.iqa.higher_is_better else -scores
        # NaN scores (a broken crop) never win; masked candidates never win
        oriented = oriented.nan_to_num(nan=-torch.inf).masked_fill(~mask, -torch.inf)
        index = oriented.argmax(dim=1)  # the first maximum: ties go to the lowest index
        # a sample whose eligible scores are all NaN / -inf: its first eligible candidate
        scored = (oriented > -torch.inf).any(dim=1)
        index = torch.where(scored, index, mask.to(torch.uint8).argmax(dim=1))
        patch = crops[torch.arange(batch, device=crops.device), index]
        return AMOSelection(
            patch.detach().clone(),
            index.cpu(),
            top,
            left,
            scores.masked_fill(~mask, torch.nan).detach(),
        )


def _location(value: Any, name: str, batch: int) -> torch.Tensor:
    """An explicit crop coordinate: ``(B,)`` integers (not bools, not floats), on the CPU."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise DTypeError(f"{name} must be ({batch},) integers; got {value!r} ({error})") from None
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise DTypeError(f"{name} must hold integers; got dtype {tensor.dtype}")
    if tensor.shape != (batch,):
        raise ShapeError(
            f"top and left must have shape ({batch},); got {name} {tuple(tensor.shape)}"
        )
    return tensor.to(torch.long).cpu()
