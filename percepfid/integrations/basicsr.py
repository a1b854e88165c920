"""percepfid in BasicSR: importing this module registers the losses and validation metrics
of ``__all__`` in BasicSR's ``LOSS_REGISTRY`` and ``METRIC_REGISTRY`` (see the README's "Use
in BasicSR"). Clamped output pixels pass no gradient through these losses. A metric builds
its model on the first call and reuses it for later calls with the same options.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import (
    check_choice,
    check_image,
    check_input_range,
    check_int,
    check_number,
    check_reduction,
    check_seed,
)
from .._errors import ArgumentError, DTypeError, MissingDependencyError, ShapeError
from .._frozen import exclude_from_state_dict
from .._imports import install_hint
from ..functional import nriqa_reward_loss, to_unit
from ..iqa import create_nriqa
from ..losses import HLFLoss, RQILoss
from ..rqi import evaluate as rqi_evaluate

try:
    from basicsr.losses import build_loss
    from basicsr.utils.registry import LOSS_REGISTRY, METRIC_REGISTRY
except ImportError as _error:  # pragma: no cover - exercised in a test by hiding basicsr
    _why = (
        "BasicSR is not installed"
        if isinstance(_error, ModuleNotFoundError)
        and (_error.name or "").partition(".")[0] == "basicsr"
        else f"BasicSR is installed but failed to import ({_error}); the original 'basicsr' "
        "1.4.2 release imports a torchvision module removed in torchvision 0.17, "
        "'basicsr-fixed' does not"
    )
    raise MissingDependencyError(
        f"percepfid.integrations.basicsr requires BasicSR: {_why}. "
        f"Install it with: {install_hint('basicsr')}"
    ) from _error

logger = logging.getLogger(__name__)

__all__ = [
    "PercepfidHLFLoss",
    "PercepfidNRIQALoss",
    "PercepfidRQILoss",
    "PercepfidSumLoss",
    "calculate_percepfid_hlf",
    "calculate_percepfid_nriqa",
    "calculate_percepfid_rqi",
    "clear_metric_cache",
]


# --------------------------------------------------------------------------- losses


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise DTypeError(f"{name} must be true or false; got {type(value).__name__} {value!r}")
    return value


def _reject_weight(options: Mapping[str, Any], loss: str) -> None:
    if "weight" in options:
        raise ArgumentError(
            f"{loss}: BasicSR configs scale a loss with loss_weight; got weight={options['weight']!r}. "
            "Write loss_weight instead."
        )


def _clamped(output: Any, input_range: tuple[float, float] | None) -> torch.Tensor:
    """The network output clamped to ``input_range``, as BasicSR clamps it to save it."""
    check_image(output, "output", input_range=None)
    return output if input_range is None else output.clamp(*input_range)


def _slot(loss: torch.Tensor, as_tuple: bool) -> torch.Tensor | tuple[torch.Tensor, None]:
    """One tensor for ``pixel_opt``-style slots, ``(loss, None)`` for ``perceptual_opt``."""
    return (loss, None) if as_tuple else loss


class _BasicSROptions:
    """BasicSR's loss options on a percepfid loss (a mixin placed before the loss class)."""

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        as_tuple: bool = False,
        **options: Any,
    ) -> None:
        _reject_weight(options, type(self).__name__)
        super().__init__(weight=loss_weight, reduction=reduction, **options)
        self.as_tuple = _check_flag(as_tuple, "as_tuple")

    def forward(self, output: torch.Tensor, gt: torch.Tensor) -> Any:
        """The wrapped loss of ``clamp(output)`` against ``gt``, alone or as ``(loss, None)``."""
        loss = super().forward(_clamped(output, self.input_range), gt)  # type: ignore[misc]
        return _slot(loss, self.as_tuple)


class PercepfidHLFLoss(_BasicSROptions, HLFLoss):
    """:class:`percepfid.HLFLoss` with BasicSR's loss options.

    Args:
        loss_weight: scale of the loss (percepfid's ``weight``; the HLF paper uses 0.01
            next to an L1 loss).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        as_tuple: return ``(loss, None)``, the form BasicSR's ``perceptual_opt`` slot
            unpacks; ``False`` (default) returns one tensor, for ``pixel_opt``-style slots.
        **options: keyword arguments of :class:`percepfid.HLFLoss` (``backbone``,
            ``pretrained``, ``embedding``, ``crop``, ``head``, ``image_size``, ...).

    Example (YAML)::

        perceptual_opt:
          type: PercepfidHLFLoss
          backbone: dinov2
          loss_weight: 0.01
          as_tuple: true
    """


class PercepfidRQILoss(_BasicSROptions, RQILoss):
    """:class:`percepfid.RQILoss` with BasicSR's loss options.

    Args:
        loss_weight, reduction, as_tuple: as for :class:`PercepfidHLFLoss` (``loss_weight``
            about 0.1 next to a pixel loss).
        **options: keyword arguments of :class:`percepfid.RQILoss` (``backbone``, ``head``,
            ``pretrained``, ``crop``, ``seed``, ``model_kwargs``, ...).
    """


class PercepfidNRIQALoss(nn.Module):
    """A no-reference quality reward as a plain loss: ``loss_weight * q_scale * reduce(-Q)``.

    ``Q`` is a frozen NR-IQA model from :func:`percepfid.create_nriqa` (left out of
    ``state_dict()``), scored on the output clamped to ``input_range`` and negated when the
    model's ``higher_is_better`` is ``False``, so lowering the loss always means a
    better-looking output. For LoRA fine-tuning with this reward use
    :class:`percepfid.LoRANRIQALoss` in your own loop.

    Args:
        iqa: an NR-IQA name: ``'clipiqa'``, ``'clipiqa:<arch>[/<tag>]'``,
            ``'nr-head:<backbone>'`` (with ``weights``), ``'pyiqa:<metric>'``.
        loss_weight, reduction, as_tuple: as for :class:`PercepfidHLFLoss`.
        pretrained: load the IQA model's weights (``False``: random, tests only).
        q_scale: multiplies ``Q`` (e.g. 100 to put a ``[0, 1]`` score on a 0-100 scale).
        input_range: the value range of the images.
        **iqa_options: other keyword arguments of :func:`percepfid.create_nriqa`
            (``weights``, ``image_size``, ``prompts``, ...).

    Shape:
        - output: ``(B, 3, H, W)``; gt: ignored.
        - result: scalar, or ``(B,)`` with ``reduction='none'``.
    """

    higher_is_better = False
    is_differentiable = True

    def __init__(
        self,
        iqa: str = "clipiqa",
        loss_weight: float = 1.0,
        reduction: str = "mean",
        as_tuple: bool = False,
        pretrained: bool = True,
        q_scale: float = 1.0,
        input_range: Sequence[float] = (0.0, 1.0),
        **iqa_options: Any,
    ) -> None:
        super().__init__()
        _reject_weight(iqa_options, type(self).__name__)
        if not isinstance(iqa, str):
            raise DTypeError(f"iqa must be an NR-IQA model name; got {type(iqa).__name__}")
        self.loss_weight = check_number(loss_weight, "loss_weight")
        self.q_scale = check_number(q_scale, "q_scale")
        self.reduction = check_reduction(reduction)
        self.as_tuple = _check_flag(as_tuple, "as_tuple")
        self.input_range = check_input_range(input_range)
        self.iqa = create_nriqa(iqa, pretrained=pretrained, **iqa_options)
        exclude_from_state_dict(self, "iqa")

    def quality(self, output: torch.Tensor) -> torch.Tensor:
        """``Q`` of the clamped output, oriented so that higher is better; ``(B,)``."""
        scores = self.iqa(to_unit(_clamped(output, self.input_range), self.input_range))
        return scores if self.iqa.higher_is_better else -scores

    def forward(self, output: torch.Tensor, gt: torch.Tensor | None = None) -> Any:
        """``loss_weight * q_scale * reduce(-quality(output))``, alone or as ``(loss, None)``."""
        loss = nriqa_reward_loss(
            self.quality(output),
            weight=self.loss_weight,
            q_scale=self.q_scale,
            reduction=self.reduction,
        )
        return _slot(loss, self.as_tuple)

    def extra_repr(self) -> str:
        return (
            f"loss_weight={self.loss_weight}, q_scale={self.q_scale}, "
            f"reduction={self.reduction!r}, as_tuple={self.as_tuple}"
        )


class PercepfidSumLoss(nn.Module):
    """The sum of several losses from ``LOSS_REGISTRY``, for one loss slot.

    Each entry of ``losses`` is an option block as in any ``*_opt`` slot (with its own
    ``type`` and ``loss_weight``) and is built with BasicSR's ``build_loss``, so BasicSR's
    own losses (``L1Loss``, ``PerceptualLoss``, ...) can be terms too. A term that returns
    a tuple contributes the sum of its non-``None`` parts. BasicSR logs only the total
    (under the slot's name); the README's "Use in BasicSR" shows one in a config.

    Args:
        losses: a non-empty list of loss option blocks.
        loss_weight: scale of the sum.
        as_tuple: return ``(sum, None)`` for BasicSR's ``perceptual_opt`` slot.
    """

    def __init__(
        self, losses: Sequence[Mapping[str, Any]], loss_weight: float = 1.0, as_tuple: bool = False
    ) -> None:
        super().__init__()
        if isinstance(losses, (str, bytes, Mapping)) or not isinstance(losses, Sequence):
            raise DTypeError(
                f"losses must be a list of loss option blocks; got {type(losses).__name__}"
            )
        if not losses:
            raise ArgumentError("losses must name at least one loss; got an empty list")
        for index, block in enumerate(losses):
            if not isinstance(block, Mapping) or "type" not in block:
                raise ArgumentError(
                    f"losses[{index}] must be an option block with a 'type' key; got {block!r}"
                )
        self.names = [str(block["type"]) for block in losses]
        self.terms = nn.ModuleList(build_loss(dict(block)) for block in losses)
        self.loss_weight = check_number(loss_weight, "loss_weight")
        self.as_tuple = _check_flag(as_tuple, "as_tuple")

    def forward(self, output: torch.Tensor, gt: torch.Tensor) -> Any:
        """``loss_weight * sum(term(output, gt))``, alone or as ``(sum, None)``."""
        values = [term(output, gt) for term in self.terms]
        parts = [p for v in values for p in (v if isinstance(v, tuple) else (v,)) if p is not None]
        if not parts:
            raise ArgumentError(f"every term of PercepfidSumLoss({self.names}) returned None")
        return _slot(self.loss_weight * sum(parts[1:], start=parts[0]), self.as_tuple)

    def extra_repr(self) -> str:
        return f"names={self.names}, loss_weight={self.loss_weight}, as_tuple={self.as_tuple}"


# -------------------------------------------------------------------------- metrics

_MODELS: dict[tuple[str, str, str], nn.Module] = {}


def clear_metric_cache() -> None:
    """Drop the models built by the metric functions (the next call builds them again)."""
    _MODELS.clear()


def _image_tensor(
    img: Any, name: str, crop_border: Any, input_order: str, device: torch.device
) -> torch.Tensor:
    """BasicSR's uint8 BGR image -> an RGB float batch ``(1, 3, H', W')`` in ``[0, 1]``."""
    if not isinstance(img, np.ndarray):
        raise DTypeError(
            f"{name} must be a numpy array (BasicSR's tensor2img); got {type(img).__name__}"
        )
    check_choice(input_order, "input_order", ("HWC", "CHW"))
    shape = img.shape
    if input_order == "CHW" and img.ndim == 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[2] != 3:
        layout = "(H, W, 3)" if input_order == "HWC" else "(3, H, W)"
        raise ShapeError(
            f"{name} must be a {layout} BGR image as BasicSR's tensor2img writes; got shape {shape}"
        )
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
    if scale is None:
        raise DTypeError(
            f"{name} must be a uint8 (or uint16) image as BasicSR's tensor2img writes; got dtype {img.dtype}"
        )
    crop_border = check_int(crop_border, "crop_border", minimum=0)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        if img.size == 0:
            raise ShapeError(f"crop_border={crop_border} leaves nothing of {name}")
    rgb = np.ascontiguousarray(img[..., ::-1])  # BGR -> RGB
    tensor = torch.from_numpy(rgb).to(device=device, dtype=torch.float32).div_(scale)
    return tensor.permute(2, 0, 1).unsqueeze(0)


_METRIC_ARGS = """
    Args:
        img, img2: uint8 (or uint16) BGR images as BasicSR's validation passes them.
        crop_border: pixels cut from each side before scoring.
        input_order: ``'HWC'`` or ``'CHW'``.
        test_y_channel: must be false (the model scores RGB).
        device: where the model runs; default CUDA when available.
        better: BasicSR's ``better`` key (read by BasicSR, ignored here).
        **options: """


def _metric(
    kind: str,
    build: Callable[..., nn.Module],
    score: Callable[..., torch.Tensor],
    summary: str,
    options_doc: str,
    score_options: tuple[str, ...] = (),
    reference: bool = True,
) -> Callable[..., float]:
    """BasicSR's metric ``calculate_percepfid_<kind>``: ``score(model, img, img2, **scoring)``
    (``img2`` only with ``reference``), ``scoring`` being the options named in
    ``score_options``, the model ``build(**other options)``, made once per option set."""

    def metric(
        img: np.ndarray,
        img2: np.ndarray | None = None,
        crop_border: int = 0,
        input_order: str = "HWC",
        test_y_channel: bool = False,
        device: Any = None,
        better: str | None = None,
        **options: Any,
    ) -> float:
        if test_y_channel:
            raise ArgumentError(
                "percepfid metrics score RGB images; set test_y_channel: false (or leave it out)"
            )
        scoring = {key: options.pop(key) for key in score_options if key in options}
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except (TypeError, RuntimeError) as error:
            raise ArgumentError(
                f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}"
            ) from error
        named = (("img", img), ("img2", img2))[: 1 + reference]
        images = [_image_tensor(x, name, crop_border, input_order, dev) for name, x in named]
        key = (kind, str(dev), json.dumps(options, sort_keys=True, default=repr))
        if key not in _MODELS:
            logger.info("building the %s metric model (%s) on %s", kind, key[2], dev)
            _MODELS[key] = build(**options).to(dev).eval()
        with torch.no_grad():
            return float(score(_MODELS[key], *images, **scoring).item())

    metric.__name__ = metric.__qualname__ = f"calculate_percepfid_{kind}"
    metric.__doc__ = f"{summary}\n{_METRIC_ARGS}{options_doc}"
    return metric


calculate_percepfid_hlf = _metric(
    "hlf",
    lambda **options: HLFLoss(**options),  # looked up per call, so a test can patch it
    lambda model, sr, gt: model.fidelity(sr, gt),
    """HLF fidelity of ``img`` (SR) to ``img2`` (GT): :meth:`percepfid.HLFLoss.fidelity`.

    The cosine of the two embeddings in ``[-1, 1]``, or with a calibration ``head`` the
    predicted human fidelity in ``[0, 1]``; higher is better.""",
    """keyword arguments of :class:`percepfid.HLFLoss` (``backbone``,
            ``pretrained``, ``head``, ``embedding``, ``crop``, ``image_size``, ...).""",
)


def _rqi_score(
    model: RQILoss, sr: torch.Tensor, gt: torch.Tensor, protocol: str | None = None, seed: int = 0
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(check_seed(seed))
    if protocol is None:
        return model.score(sr, gt, generator=generator)
    return rqi_evaluate(model, sr, gt, protocol, generator)


calculate_percepfid_rqi = _metric(
    "rqi",
    RQILoss,
    _rqi_score,
    """RQI score of ``img`` (SR) relative to ``img2`` (GT): > 0 when ``img`` looks better.

    With ``protocol=None`` (default) one aligned crop pair is scored
    (:meth:`percepfid.RQILoss.score`); ``'paper'`` or ``'official'`` runs the multi-scale
    protocol of :func:`percepfid.rqi.evaluate` (many crops; slower). Crop positions come
    from a generator seeded with ``seed`` (default 0) on every call, so repeated
    validations of the same image agree.""",
    """``protocol``, ``seed`` and the keyword arguments of :class:`percepfid.RQILoss`
            (``backbone``, ``head``, ``pretrained``, ``crop``, ``model_kwargs``, ...).""",
    ("protocol", "seed"),
)

calculate_percepfid_nriqa = _metric(
    "nriqa",
    lambda iqa="clipiqa", **options: create_nriqa(iqa, **options),
    lambda model, img: model(img),
    """No-reference quality of ``img`` from :func:`percepfid.create_nriqa` (``img2``, the GT
    BasicSR passes, is ignored).

    The score is the model's own (see its ``higher_is_better``: set BasicSR's ``better``
    key to match, e.g. ``better: higher`` for CLIP-IQA).""",
    """``iqa`` (the model name, default ``'clipiqa'``) and the keyword arguments
            of :func:`percepfid.create_nriqa` (``pretrained``, ``weights``, ``image_size``, ...).""",
    reference=False,
)


# ---------------------------------------------------------------------- registration


def _register(registry: Any, obj: Any) -> None:
    name = obj.__name__
    if name in registry:  # a second import (e.g. importlib.reload): keep the first
        logger.debug("%s is already registered in BasicSR's %s registry", name, registry._name)
        return
    registry.register(obj)


for _loss in (PercepfidHLFLoss, PercepfidRQILoss, PercepfidNRIQALoss, PercepfidSumLoss):
    _register(LOSS_REGISTRY, _loss)
for _metric in (calculate_percepfid_hlf, calculate_percepfid_rqi, calculate_percepfid_nriqa):
    _register(METRIC_REGISTRY, _metric)
