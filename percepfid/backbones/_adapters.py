"""Adapters from model-family libraries to one encoder protocol.

Every encoder is an ``nn.Module`` whose ``forward(x)`` takes normalised input and returns
``(pooled, tokens)``: the pooled embedding ``(B, D)`` and the patch tokens ``(B, N, Dt)``
(``None`` when the model has none). Each builder imports its library inside the function.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ArgumentError, DTypeError, ShapeError, UnknownNameError, WeightsError
from .._imports import require
from ._spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_MEAN,
    OPENAI_STD,
    BackboneSpec,
    PreprocessConfig,
)

logger = logging.getLogger(__name__)


def _weights_file(spec: BackboneSpec, repo_id: str, filename: str) -> Path:
    """Local path of a backbone's weights: the manifest entry when there is one (pinned and
    verified), otherwise the upstream Hub file (unverified, logged)."""
    from .. import hub

    if spec.name in hub.load_manifest():
        return hub.resolve(spec.name)
    logger.info(
        "%s not in the weights manifest: downloading %s/%s unverified", spec.name, repo_id, filename
    )
    return hub.download(repo_id, filename)


# Random weights must still make embeddings depend on the image (see create_backbone's
# ``pretrained``): near-zero LayerScale gammas are set to 1, BLIP draws with a wider std.
_TINY_LAYER_SCALE = 1e-3
_RANDOM_BLIP_INIT_STD = 0.02


@torch.no_grad()
def lift_layer_scale(module: nn.Module) -> None:
    """Set every near-zero LayerScale gamma of ``module`` to 1 (random weights only)."""
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("gamma", "gamma_1", "gamma_2") and param.is_floating_point() and param.numel():
            if float(param.abs().max()) < _TINY_LAYER_SCALE:
                param.fill_(1.0)


def _patch_size(module: nn.Module | None) -> int | None:
    size = getattr(module, "patch_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return None if size is None else int(size)


def _timm_tokens(model: nn.Module) -> tuple[int, int, int | None]:
    """The prefix-token count, token width and patch size of a timm model."""
    width = int(getattr(model, "embed_dim", model.num_features))
    patch = _patch_size(getattr(model, "patch_embed", None))
    return int(getattr(model, "num_prefix_tokens", 0)), width, patch


# --------------------------------------------------------------------------- timm


class TimmEncoder(nn.Module):
    """A timm model: pooled = the model's own pre-logits pooling, tokens after the final norm."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.embed_dim = int(model.num_features)
        self.num_prefix_tokens, self.token_dim, self.patch_size = _timm_tokens(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        pooled = self.model.forward_head(features, pre_logits=True)
        if features.ndim == 4:  # convolutional trunk: (B, C, H, W) -> (B, HW, C)
            tokens = features.flatten(2).transpose(1, 2)
        else:
            tokens = features[:, self.num_prefix_tokens :]
        return pooled, tokens


def build_timm(
    spec: BackboneSpec, pretrained: bool, image_size: tuple[int, int] | None
) -> tuple[nn.Module, PreprocessConfig]:
    timm = require("timm", f"backbone {spec.name!r}")
    full = f"{spec.model}.{spec.tag}" if spec.tag else spec.model
    try:
        upstream = timm.models.get_pretrained_cfg(full)
    except Exception:  # noqa: BLE001 - timm raises various errors for unknown tags
        upstream = None
    if upstream is None and not timm.is_model(spec.model):
        raise ArgumentError(
            f"backbone {spec.name!r}: timm has no model {spec.model!r} "
            f"(see timm.list_models('*{spec.model.split('_')[0]}*'))"
        )
    config = spec.preprocess
    if config is None and upstream is None:
        config = PreprocessConfig((224, 224), IMAGENET_MEAN, IMAGENET_STD, resize_size=224)
    elif config is None:
        size = tuple(upstream.input_size[-2:])
        config = PreprocessConfig(
            size,
            tuple(upstream.mean),
            tuple(upstream.std),
            resize_size=math.floor(min(size) / (upstream.crop_pct or 1.0)),  # timm's scale size
            interpolation="bilinear" if upstream.interpolation == "bilinear" else "bicubic",
        )
    if image_size is not None:
        config = config.scaled(image_size)
    kwargs: dict = {"num_classes": 0, "img_size": config.image_size}
    if pretrained:
        hub_id = upstream.hf_hub_id if upstream and upstream.hf_hub_id else f"timm/{full}"
        path = _weights_file(spec, hub_id.rstrip("/"), "model.safetensors")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "hf_hub_id": None}
    name = full if upstream else spec.model
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError:  # convolutional models take no img_size
        kwargs.pop("img_size")
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if not pretrained:
        lift_layer_scale(model)
    return TimmEncoder(model), config


# ---------------------------------------------------------------------- open_clip


class OpenClipEncoder(nn.Module):
    """An open_clip image tower: pooled = ``encode_image`` (unnormalised), tokens when exposed."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.has_trunk = hasattr(visual, "trunk")
        if self.has_trunk:
            self.num_prefix_tokens, self.token_dim, self.patch_size = _timm_tokens(visual.trunk)
        elif hasattr(visual, "transformer"):
            visual.output_tokens = True
            self.num_prefix_tokens, self.token_dim = 0, int(visual.transformer.width)
            self.patch_size = _patch_size(visual)
        else:  # a convolutional tower (CLIP's ModifiedResNet): pooled embedding only
            self.num_prefix_tokens, self.token_dim, self.patch_size = 0, None, None
        self.embed_dim = int(visual.output_dim) if getattr(visual, "output_dim", None) else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.has_trunk:
            trunk = self.visual.trunk
            features = trunk.forward_features(x)
            pooled = self.visual.head(trunk.forward_head(features))
            return pooled, features[:, self.num_prefix_tokens :]
        out = self.visual(x)
        return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)


def build_open_clip(
    spec: BackboneSpec,
    pretrained: bool,
    image_size: tuple[int, int] | None,
    texts: Sequence[str] | None = None,
) -> tuple:
    """The image tower of ``spec`` and its preprocessing: ``(encoder, config)``.

    With ``texts``, the whole model is built once, its text tower embeds ``texts`` and is
    dropped: ``(encoder, config, text_embeddings, logit_scale)``, the text embeddings
    ``(T, D)`` L2-normalised and the logit scale (``exp`` of the learned log-scale) a
    scalar, both float32.
    """
    open_clip = require("open_clip", f"backbone {spec.name!r}")
    if spec.model not in open_clip.list_models():
        raise UnknownNameError("open_clip model", spec.model, open_clip.list_models())
    upstream = open_clip.get_pretrained_cfg(spec.model, spec.tag) if spec.tag else {}
    if spec.tag and not upstream:
        raise UnknownNameError(
            f"open_clip pretrained tag for {spec.model}",
            spec.tag,
            open_clip.list_pretrained_tags_by_model(spec.model),
        )
    model_cfg = open_clip.get_model_config(spec.model) or {}
    native = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    native = (native, native) if isinstance(native, int) else tuple(native)
    config = spec.preprocess or PreprocessConfig(
        image_size=native,
        mean=tuple(upstream.get("mean") or OPENAI_MEAN),
        std=tuple(upstream.get("std") or OPENAI_STD),
        interpolation=upstream.get("interpolation", "bicubic"),
        crop="squash" if upstream.get("resize_mode") == "squash" else "center",
    )
    if image_size is not None:
        config = config.scaled(image_size)
    size = config.image_size
    quick_gelu = bool(upstream.get("quick_gelu", False) or model_cfg.get("quick_gelu", False))
    weights = None
    if pretrained:
        hub_id = str(upstream.get("hf_hub", "")).rstrip("/")
        if not hub_id:
            raise WeightsError(f"backbone {spec.name!r}: open_clip lists no Hub weights for it")
        weights = _weights_file(spec, hub_id, "open_clip_model.safetensors")
    timm_trunk = "timm_model_name" in model_cfg["vision_cfg"]
    if texts is not None or (weights is not None and size != native and not timm_trunk):
        # both towers; open_clip's own loader resamples pretrained position embeddings
        model = open_clip.create_model(
            spec.model,
            pretrained=None if weights is None else str(weights),
            force_image_size=None if size == native else size[0] if size[0] == size[1] else size,
            force_quick_gelu=quick_gelu,
        )
        encoder = OpenClipEncoder(model.visual)
        if texts is None:
            return encoder, config
        with torch.no_grad():
            text = model.encode_text(open_clip.get_tokenizer(spec.model)(list(texts))).float()
        logit_scale = model.logit_scale.detach().exp().float().reshape(())
        return encoder, config, F.normalize(text, dim=-1), logit_scale
    # The image tower alone: the text tower is never needed (SigLIP 2's alone holds ~200M
    # parameters of token embeddings).
    vision_cfg = dict(model_cfg["vision_cfg"], image_size=native if timm_trunk else size)
    visual = open_clip.model._build_vision_tower(  # noqa: SLF001
        model_cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu
    )
    if weights is not None:
        state = {key[len("visual.") :]: v for key, v in _load_file(weights, "visual.").items()}
        if not state:
            raise WeightsError(f"{weights}: no 'visual.*' keys; not an open_clip checkpoint")
        _load_strict(visual, state, spec.name)
    if timm_trunk and size != native:
        # timm resamples the (possibly pretrained) position embeddings in place.
        visual.trunk.set_input_size(img_size=size)
        visual.image_size = size
    if weights is None:
        lift_layer_scale(visual)
    return OpenClipEncoder(visual), config


def _load_file(path: Path, *prefixes: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file whose names start with one of ``prefixes``."""
    from .. import hub

    return {k: v for k, v in hub.load_state_dict(path).items() if k.startswith(prefixes)}


def _load_strict(module: nn.Module, state: dict, name: str) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"backbone {name!r}: weights do not fit the architecture; "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


# --------------------------------------------------------------------- transformers

# The vision tower of Salesforce/blip-itm-base-coco (its config.json): ViT-B/16 at 384,
# ITC projection to 256.
_BLIP_VISION = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "patch_size": 16,
    "image_size": 384,
    "layer_norm_eps": 1e-5,
}
_BLIP_PROJ_DIM = 256


class BlipEncoder(nn.Module):
    """BLIP's vision model + ``vision_proj``: pooled = the ITC embedding of the CLS token."""

    def __init__(self, vision_model: nn.Module, vision_proj: nn.Linear) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.vision_proj = vision_proj
        self.embed_dim = vision_proj.out_features
        self.token_dim = vision_proj.in_features
        self.patch_size = int(vision_model.config.patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.vision_model(pixel_values=x).last_hidden_state
        return self.vision_proj(hidden[:, 0]), hidden[:, 1:]


def build_hf(
    spec: BackboneSpec, pretrained: bool, image_size: tuple[int, int] | None
) -> tuple[nn.Module, PreprocessConfig]:
    transformers = require("transformers", f"backbone {spec.name!r}")
    if "blip" not in spec.model.lower():
        raise ArgumentError(
            f"backbone {spec.name!r}: hf: specs support BLIP image-text repos "
            "(e.g. 'hf:Salesforce/blip-itm-base-coco'); for other models pass an nn.Module"
        )
    config = spec.preprocess or PreprocessConfig((384, 384), OPENAI_MEAN, OPENAI_STD, crop="squash")
    if image_size is not None:
        config = config.scaled(image_size)
    overrides = {"image_size": config.image_size[0]}
    if not pretrained:
        overrides["initializer_range"] = _RANDOM_BLIP_INIT_STD
    vision_config = transformers.BlipVisionConfig(**{**_BLIP_VISION, **overrides})
    vision_model = transformers.BlipVisionModel(vision_config)
    vision_proj = nn.Linear(vision_config.hidden_size, _BLIP_PROJ_DIM)
    encoder = BlipEncoder(vision_model, vision_proj)
    if pretrained:
        path = _weights_file(spec, spec.model, "model.safetensors")
        subset = _load_file(path, "vision_model.", "vision_proj.")
        stored = subset.get("vision_model.embeddings.position_embedding")
        if stored is not None and stored.shape != vision_model.embeddings.position_embedding.shape:
            raise WeightsError(
                f"backbone {spec.name!r}: pretrained position embeddings are for 384x384; "
                f"got image_size={config.image_size}. Use the native size with pretrained weights."
            )
        _load_strict(encoder, subset, spec.name)
    return encoder, config


# --------------------------------------------------------------------- user modules


class ModuleEncoder(nn.Module):
    """A user module: ``module(x)`` returns ``(B, D)``, ``(B, N, D)`` or ``(pooled, tokens)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.embed_dim = getattr(module, "embed_dim", None)
        self.token_dim = getattr(module, "token_dim", None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.module(x)
        if isinstance(out, (tuple, list)) and out:
            pooled, tokens = out[0], out[1] if len(out) > 1 else None
        else:
            pooled, tokens = out, None
        batch = x.shape[0]
        name = type(self.module).__name__
        if not isinstance(pooled, torch.Tensor) or (
            tokens is not None and not isinstance(tokens, torch.Tensor)
        ):
            raise DTypeError(
                f"backbone module {name} must return a tensor or (pooled, tokens) tensors; "
                f"got {type(out).__name__}"
            )
        if pooled.ndim < 2 or pooled.shape[0] != batch or not pooled.is_floating_point():
            raise ShapeError(
                f"backbone module {name} must return float embeddings (B, D), (B, N, D) or "
                f"(pooled, tokens) for a batch of B={batch}; got {pooled.dtype} of shape "
                f"{tuple(pooled.shape)}"
            )
        if tokens is not None and (tokens.ndim != 3 or tokens.shape[0] != batch):
            raise ShapeError(
                f"backbone module {name} returned tokens of shape {tuple(tokens.shape)}; "
                f"expected (B={batch}, N, D)"
            )
        if isinstance(out, (tuple, list)):
            return pooled, tokens
        if pooled.ndim == 3:
            return pooled.mean(1), pooled
        return pooled.flatten(1), None
