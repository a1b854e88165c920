"""Backbones: one registry from names to frozen, differentiable image encoders.

Model-family libraries (timm, open_clip, transformers) are imported only when a backbone
of that family is built.
"""

from ._backbone import Backbone, Embeddings, Preprocess, create_backbone, tile_grid
from ._blocks import block_list, last_block_parameters
from ._clip import ClipTowers, create_clip_backbone
from ._registry import get_spec, list_backbones, register_backbone
from ._spec import BackboneSpec, PreprocessConfig

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ClipTowers",
    "Embeddings",
    "Preprocess",
    "block_list",
    "last_block_parameters",
    "PreprocessConfig",
    "create_backbone",
    "create_clip_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
    "tile_grid",
]
