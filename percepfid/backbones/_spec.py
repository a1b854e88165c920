"""Records that describe a backbone: where it comes from and how its input is prepared."""

from __future__ import annotations

from dataclasses import dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image in [0, 1] becomes the backbone's input.

    Attributes:
        image_size: the model's input size ``(H, W)``.
        resize_size: for ``crop='center'``, the shortest side after resizing (before the
            centre crop to ``image_size``). ``None`` means ``min(image_size)``.
        mean, std: per-channel mean and standard deviation of the normalisation.
        interpolation: ``'bicubic'`` or ``'bilinear'`` (always antialiased when shrinking).
        crop: the default crop mode, ``'center'``, ``'squash'`` or ``'tiles'``.
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int | None = None
    interpolation: str = "bicubic"
    crop: str = "center"

    def scaled(self, image_size: int | tuple[int, int]) -> PreprocessConfig:
        """The same preprocessing at another input size (resize ratio kept)."""
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        resize = None
        if self.resize_size is not None:
            ratio = self.resize_size / min(self.image_size)
            resize = int(round(min(image_size) * ratio))
        return replace(self, image_size=tuple(image_size), resize_size=resize)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its canonical name, source library and preprocessing policy.

    Attributes:
        name: canonical full spec, e.g. ``'timm:vit_base_patch14_dinov2.lvd142m'``.
        source: ``'timm'``, ``'open_clip'``, ``'hf'`` or ``'module'`` (a user module).
        model: the architecture name inside the source library (or Hub repo for ``hf``).
        tag: the pretrained tag (timm tag, open_clip pretrained name, or Hub revision).
        aliases: short names that resolve to this spec.
        preprocess: percepfid's preprocessing decision for this backbone where it differs
            from the upstream config (``None``: take everything from upstream).
        description: one line for listings.
    """

    name: str
    source: str
    model: str
    tag: str | None = None
    aliases: tuple[str, ...] = ()
    preprocess: PreprocessConfig | None = None
    description: str = ""
