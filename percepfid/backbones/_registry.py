"""One registry: names and aliases -> :class:`BackboneSpec`."""

from __future__ import annotations

import fnmatch
from dataclasses import replace

from .._errors import ArgumentError, UnknownNameError
from ._spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, PreprocessConfig

# PAPERS.md section 1 [D]: DINOv2 sees the shortest side at 256, centre-cropped to 224,
# instead of timm's 518 default (the resolution the HLF study used).
_DINOV2_224 = PreprocessConfig((224, 224), IMAGENET_MEAN, IMAGENET_STD, resize_size=256)

_REGISTRY: dict[str, BackboneSpec] = {}
_ALIASES: dict[str, str] = {}
# what separates the model from its tag in a full spec: '<arch>.<tag>',
# '<model>/<pretrained>', '<org>/<repo>@<revision>'
_TAG_SEPARATORS = {"timm": ".", "open_clip": "/", "hf": "@"}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Add a spec (and its aliases) to the registry.

    Raises:
        ArgumentError: the name or an alias is taken and ``overwrite`` is False.
    """
    taken = [n for n in (spec.name, *spec.aliases) if n in _REGISTRY or n in _ALIASES]
    if taken and not overwrite:
        raise ArgumentError(f"backbone name(s) {taken} already registered; pass overwrite=True")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _builtin() -> None:
    # source, model, tag, aliases, description, preprocessing (None: upstream's)
    entries = []
    for family, title, patch, tag, data, preprocess in (
        ("dinov2", "DINOv2", 14, "lvd142m", "", _DINOV2_224),
        ("dinov3", "DINOv3", 16, "lvd1689m", " (LVD-1689M)", None),
    ):
        for size, aliases in (
            ("small", (f"{family}-s",)),
            ("base", (family, f"{family}-b")),
            ("large", (f"{family}-l",)),
        ):
            text = f"{title} ViT-{size[0].upper()}/{patch}{data}, CLS after final norm"
            model = f"vit_{size}_patch{patch}_{family}"
            entries.append(("timm", model, tag, aliases, text, preprocess))
    for model, tag, aliases, text in (
        ("ViT-B-16", "openai", ("clip",), "CLIP ViT-B/16 (OpenAI), encode_image"),
        ("ViT-L-14", "openai", ("clip-l",), "CLIP ViT-L/14 (OpenAI), encode_image"),
        ("PE-Core-B-16", "meta", ("pe-core",), "Perception Encoder Core B/16, encode_image"),
        (
            "PE-Core-L-14-336",
            "meta",
            ("pe-core-l",),
            "Perception Encoder Core L/14 at 336, encode_image",
        ),
        ("ViT-B-16-SigLIP2", "webli", ("siglip2",), "SigLIP 2 ViT-B/16, pooled image embedding"),
    ):
        entries.append(("open_clip", model, tag, aliases, text, None))
    text = "BLIP ITM base (COCO): vision_proj of the CLS token"
    entries.append(("hf", "Salesforce/blip-itm-base-coco", None, ("blip",), text, None))
    for source, model, tag, aliases, text, preprocess in entries:
        name = f"{source}:{model}" + (f"{_TAG_SEPARATORS[source]}{tag}" if tag else "")
        register_backbone(BackboneSpec(name, source, model, tag, aliases, preprocess, text))


_builtin()


def list_backbones(pattern: str = "*", *, aliases: bool = True) -> list[str]:
    """Sorted registered names matching a case-insensitive shell-style ``pattern``
    (e.g. ``'*dinov2*'``): the canonical full specs and, with ``aliases``, the aliases."""
    names = list(_REGISTRY) + (list(_ALIASES) if aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))


def get_spec(name: str) -> BackboneSpec:
    """Resolve an alias, a canonical name or a full spec (``timm:``, ``open_clip:``, ``hf:``).

    Raises:
        UnknownNameError: an unknown alias, with close matches.
        ArgumentError: a malformed full spec.
    """
    if not isinstance(name, str) or not name:
        raise ArgumentError(f"backbone must be a registered name or an nn.Module; got {name!r}")
    key = name.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key.lower() in _ALIASES:
        return _REGISTRY[_ALIASES[key.lower()]]
    source, sep, rest = key.partition(":")
    if not sep:
        raise UnknownNameError(
            "backbone",
            name,
            list(_ALIASES) + list(_REGISTRY),
            hint="Full specs look like 'timm:<arch>.<tag>', 'open_clip:<model>/<pretrained>', "
            "'hf:<org>/<repo>@<revision>'; or pass an nn.Module.",
        )
    if not rest:
        raise ArgumentError(f"backbone spec {name!r} names no model after {source!r}:")
    if source not in _TAG_SEPARATORS:
        raise ArgumentError(
            f"backbone spec {name!r}: unknown source {source!r}; expected 'timm', 'open_clip' or 'hf'"
        )
    model, _, tag = rest.partition(_TAG_SEPARATORS[source])
    spec = BackboneSpec(name=key, source=source, model=model, tag=tag or None)
    base = _REGISTRY.get(f"hf:{model}") if source == "hf" else None  # another revision
    if base is None:
        return spec
    return replace(spec, preprocess=base.preprocess, description=base.description)
