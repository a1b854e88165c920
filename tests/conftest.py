"""Shared fixtures. Tests run offline on the CPU; model weights are random."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_BACKBONE = "timm:vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_backbone_name() -> str:
    """A small timm ViT (192-d), built with random weights at 32x32 in tests."""
    return TINY_BACKBONE
