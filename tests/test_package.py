"""Package-level contracts: import hygiene, public surface, registry <-> manifest, Hub loading."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save

import percepfid
from percepfid import hub
from percepfid.backbones import create_backbone, get_spec, list_backbones
from percepfid.testing import FakeHub

HEAVY = ("timm", "open_clip", "transformers", "peft", "triton")


def test_import_percepfid_imports_no_model_family_library():
    code = (
        "import sys, percepfid, percepfid.losses, percepfid.backbones, percepfid.functional, percepfid.kernels; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_surface_snapshot():
    expected = {
        "HLFLoss",
        "RQILoss",
        "LoRANRIQALoss",
        "IQAWeightedSampler",
        "ArgmaxPatchSelector",
        "create_nriqa",
        "cosine_similarity",
        "__version__",
    }
    assert expected <= set(percepfid.__all__)
    for name in percepfid.__all__:
        assert hasattr(percepfid, name), name
    assert percepfid.__version__


def test_registry_and_manifest_agree():
    manifest = hub.load_manifest()
    registered = set(list_backbones(aliases=False))
    backbones = {name for name, entry in manifest.items() if entry.kind == "backbone"}
    assert registered == backbones
    for name in registered:
        spec, entry = get_spec(name), manifest[name]
        if spec.source == "timm":
            assert entry.repo_id == f"timm/{spec.model}.{spec.tag}"
            assert entry.filename == "model.safetensors"
        elif spec.source == "hf":
            assert entry.repo_id == spec.model
    assert "rqi:maniqa-pipal" in manifest and manifest["rqi:maniqa-pipal"].kind == "rqi"


def test_pretrained_backbone_loads_through_the_hub(tmp_path):
    """The real loading path: weights served by a local Hub, downloaded, loaded into timm."""
    name = "timm:vit_tiny_patch16_224.augreg_in21k"
    source = create_backbone(name, pretrained=False)  # native 224: stands in for the release
    payload = save({k: v.contiguous() for k, v in source.encoder.model.state_dict().items()})
    with FakeHub() as server, server.activate(tmp_path / "hf"):
        server.add_file("timm/vit_tiny_patch16_224.augreg_in21k", "model.safetensors", payload)
        loaded = create_backbone(name, pretrained=True)
        with server.offline():
            again = create_backbone(name, pretrained=True)  # from the cache, no request
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(images), source(images))
        assert torch.equal(again(images), source(images))


def test_pretrained_offline_without_cache_names_the_fix(tmp_path):
    with FakeHub() as server, server.activate(tmp_path / "hf"), server.offline():
        with pytest.raises(percepfid.WeightsError, match="percepfid weights download"):
            create_backbone("dinov2-s", pretrained=True)
