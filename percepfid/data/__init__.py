"""Choosing among several ground truths by their quality: SMA/SMP sampling and AMO crops."""

from .amo import AMOSelection, ArgmaxPatchSelector
from .sampler import SAMPLER_MODES, IQAWeightedSampler, candidate_probabilities
from .scoring import IMAGE_EXTENSIONS, file_digest, find_candidates, score_candidates

__all__ = [
    "AMOSelection",
    "ArgmaxPatchSelector",
    "IMAGE_EXTENSIONS",
    "IQAWeightedSampler",
    "SAMPLER_MODES",
    "candidate_probabilities",
    "file_digest",
    "find_candidates",
    "score_candidates",
]
