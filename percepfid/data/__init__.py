"""Data: reading images and rating tables, and choosing among several ground truths by
their quality (SMA/SMP sampling and AMO crops)."""

from .amo import AMOSelection, ArgmaxPatchSelector
from .io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    Rating,
    batches_by_size,
    image_size,
    list_images,
    parse_number,
    read_image,
    read_rating_table,
    read_table,
    require_columns,
)
from .sampler import SAMPLER_MODES, IQAWeightedSampler, candidate_probabilities
from .scoring import find_candidates, score_candidates

__all__ = [
    "AMOSelection",
    "ArgmaxPatchSelector",
    "IMAGE_EXTENSIONS",
    "IQAWeightedSampler",
    "ImageReadError",
    "Rating",
    "SAMPLER_MODES",
    "batches_by_size",
    "candidate_probabilities",
    "find_candidates",
    "image_size",
    "list_images",
    "parse_number",
    "read_image",
    "read_rating_table",
    "read_table",
    "require_columns",
    "score_candidates",
]
