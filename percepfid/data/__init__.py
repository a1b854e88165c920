"""Data: reading images and rating tables, and choosing among several ground truths by
their quality (SMA/SMP sampling and AMO crops)."""

from .._lazy import lazy_attributes as _lazy_attributes

# Loaded on first use: the command line reads tables through this package without
# importing torch.
_LAZY = {
    "AMOSelection": "amo",
    "ArgmaxPatchSelector": "amo",
    "IMAGE_EXTENSIONS": "io",
    "IQAWeightedSampler": "sampler",
    "ImageReadError": "io",
    "Rating": "io",
    "SAMPLER_MODES": "sampler",
    "batches_by_size": "io",
    "candidate_probabilities": "sampler",
    "find_candidates": "scoring",
    "image_size": "io",
    "list_images": "io",
    "parse_number": "io",
    "read_image": "io",
    "read_rating_table": "io",
    "read_table": "io",
    "require_columns": "io",
    "score_candidates": "scoring",
    "shorten_list": "io",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY, globals())
