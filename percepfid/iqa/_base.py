"""The common shell of every no-reference IQA model: validation, freezing, eval lock."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._checks import check_image, check_input_range
from .._errors import DTypeError, ShapeError


class NRIQAModel(nn.Module):
    """Base class of the no-reference IQA models: images ``(B, 3, H, W)`` -> scores ``(B,)``.

    Subclasses implement :meth:`score` on images already validated and mapped to ``[0, 1]``
    and call :meth:`freeze`: no parameter requires grad and the model stays in ``eval()``
    even when a parent calls ``.train()``; gradients still flow to the input images.

    Attributes:
        higher_is_better: whether a larger score means a better-looking image.
        score_range: the ``(low, high)`` range of the scores, or ``None`` when unknown.
        is_differentiable: whether gradients w.r.t. the input are meaningful.
        name: a short identifier (used as a cache key by :func:`score_candidates`).
    """

    higher_is_better: bool = True
    is_differentiable: bool = True
    score_range: tuple[float, float] | None = None
    name: str = "nriqa"

    def __init__(self, input_range: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.input_range = check_input_range(input_range)

    def freeze(self) -> NRIQAModel:
        """Stop gradients to every parameter and switch to ``eval()`` for good."""
        return self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> NRIQAModel:  # noqa: ARG002 - frozen model
        """Stay in ``eval()``: the IQA model is frozen; ``mode`` is ignored."""
        return super().train(False)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Scores of validated images in ``[0, 1]``; ``(B, 3, H, W)`` -> ``(B,)``."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` of images ``(B, 3, H, W)`` in ``input_range``.

        Raises:
            DTypeError, ShapeError, EmptyBatchError, RangeError, NonFiniteError: bad input.
        """
        check_image(images, "images", input_range=self.input_range)
        low, high = self.input_range
        if (low, high) != (0.0, 1.0):
            images = (images - low) / (high - low)
        scores = self.score(images)
        if not isinstance(scores, torch.Tensor):
            raise DTypeError(
                f"NR-IQA model {self.name!r} must return a tensor; got {type(scores).__name__}"
            )
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.shape != images.shape[:1]:
            raise ShapeError(
                f"NR-IQA model {self.name!r} must return one score per image, shape "
                f"({images.shape[0]},) or ({images.shape[0]}, 1); got {tuple(scores.shape)}"
            )
        return scores

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, higher_is_better={self.higher_is_better}, "
            f"score_range={self.score_range}"
        )


class CallableNRIQA(NRIQAModel):
    """Wrap any ``nn.Module`` (frozen) or callable (kept as is) as an NR-IQA model.

    Args:
        model: an ``nn.Module`` or callable taking ``(B, 3, H, W)`` images in ``[0, 1]``
            and returning ``(B,)`` or ``(B, 1)`` scores.
        higher_is_better, score_range, name: the attributes of :class:`NRIQAModel`
            (``name`` default: the class or function name).
        input_range: the value range of the images passed to :meth:`forward`; they are
            mapped to ``[0, 1]`` before ``model`` sees them.

    Example:
        >>> iqa = CallableNRIQA(lambda x: x.std(dim=(1, 2, 3)), score_range=(0.0, 0.5))
        >>> iqa(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        higher_is_better: bool = True,
        score_range: Sequence[float] | None = None,
        name: str | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__(input_range)
        if not callable(model):
            raise DTypeError(
                "model must be an nn.Module or a callable (create_nriqa also takes a model "
                f"name); got {type(model).__name__}"
            )
        if isinstance(model, nn.Module):
            self.model = model
        else:
            self._function = model  # data.scoring's fingerprint names it
        self.higher_is_better = bool(higher_is_better)
        self.score_range = check_input_range(score_range, "score_range", finite=False)
        self.name = name or getattr(model, "__name__", type(model).__name__)
        self.freeze()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return (self.model if "model" in self._modules else self._function)(images)
