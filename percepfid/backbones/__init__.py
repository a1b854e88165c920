"""Backbones: one registry from names to frozen, differentiable image encoders.

Model-family libraries (timm, open_clip, transformers) are imported only when a backbone
of that family is built.
"""

from ._backbone import Backbone, Embeddings, create_backbone
from ._preprocess import Preprocess, tile_grid
from ._registry import get_spec, list_backbones, register_backbone
from ._spec import CROPS, EMBEDDINGS, BackboneSpec, PreprocessConfig

__all__ = [
    "CROPS",
    "EMBEDDINGS",
    "Backbone",
    "BackboneSpec",
    "Embeddings",
    "Preprocess",
    "PreprocessConfig",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
    "tile_grid",
]
