"""The base class of percepfid's trainable heads: an nn.Module that saves to and loads from
the Hugging Face Hub format (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

from huggingface_hub import PyTorchModelHubMixin
from torch import nn


class HubHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="percepfid",
    tags=["percepfid", "image-quality-assessment", "super-resolution"],
    repo_url="https://github.com/percepfid/percepfid",
):
    """An ``nn.Module`` with ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

    Subclasses take only JSON-serialisable constructor arguments (ints, floats, strings,
    lists); the mixin records them in ``config.json`` so ``from_pretrained`` rebuilds the
    same architecture before loading ``model.safetensors``.
    """
