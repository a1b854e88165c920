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


def test_public_surface_is_exactly_the_documented_one():
    # Equality, not a subset: a name added to the top level must be added here on purpose.
    expected = {
        "HLFLoss",
        "RQILoss",
        "LoRANRIQALoss",
        "IQAWeightedSampler",
        "ArgmaxPatchSelector",
        "ReferenceEmbedding",
        "ArgumentError",
        "DTypeError",
        "EmptyBatchError",
        "KernelUnavailableError",
        "MissingDependencyError",
        "NonFiniteError",
        "PercepfidError",
        "RangeError",
        "ShapeError",
        "UnknownNameError",
        "WeightsError",
        "__version__",
    }
    assert set(percepfid.__all__) == expected
    public = {name for name in dir(percepfid) if not name.startswith("_")}
    subpackages = {
        name for name in public if getattr(percepfid, name).__class__.__name__ == "module"
    }
    # What dir() shows besides __all__ is only the subpackages already imported.
    assert public - expected == subpackages
    assert "annotations" not in public
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


def test_no_module_imports_a_private_module_of_another_package():
    # Packages import each other through their __init__; top-level plumbing (percepfid/_x.py)
    # is shared by all.
    import ast
    from pathlib import Path

    root = Path(percepfid.__file__).parent
    offences = []
    for path in root.rglob("*.py"):
        package = path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else ""
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.level == 0 and not node.module.startswith("percepfid."):
                continue
            parts = node.module.split(".") if node.level else node.module.split(".")[1:]
            if node.level == 1 and package:
                parts = [package, *parts]
            elif node.level == 1 and not package:
                parts = parts
            target_package = parts[0] if len(parts) > 1 else ""
            private = [p for p in parts[1:] if p.startswith("_")]
            if target_package and target_package != package and private:
                offences.append(f"{path.relative_to(root)}: from {'.' * node.level}{node.module}")
    assert offences == []


def test_no_import_cycle_between_modules():
    # The module-level import graph (imports inside functions are lazy and do not count):
    # ``from pkg import name`` depends on pkg's __init__ unless ``name`` is a submodule.
    import ast
    from pathlib import Path

    root = Path(percepfid.__file__).parent

    def module_name(path: Path) -> str:
        parts = ("percepfid", *path.with_suffix("").relative_to(root).parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    paths = {module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = graph.setdefault(name, set())
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if not target.startswith("percepfid"):
                    continue
                for alias in node.names:
                    if f"{target}.{alias.name}" in paths:
                        edges.add(f"{target}.{alias.name}")
                    elif target in paths and target != name:
                        edges.add(target)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in paths and a.name != name)

    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
