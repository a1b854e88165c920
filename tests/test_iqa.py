"""No-reference IQA models: CLIP-IQA against open_clip itself, wrappers, pyiqa bridge."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import require
from srnets import register_tiny_clip
from torch import nn

from percepfid import (
    ArgumentError,
    DTypeError,
    MissingDependencyError,
    RangeError,
    ShapeError,
    UnknownNameError,
)
from percepfid.iqa import CLIPIQA, CallableNRIQA, NRIQAModel, create_nriqa, list_nriqa

require("open_clip")
ARCH = register_tiny_clip()  # a tiny open_clip architecture, random weights
SIZE = 32


@pytest.fixture(scope="module")
def clipiqa() -> CLIPIQA:
    torch.manual_seed(11)
    return create_nriqa(f"clipiqa:{ARCH}", pretrained=False, image_size=SIZE)


def test_clipiqa_matches_open_clip_reference(clipiqa: CLIPIQA) -> None:
    import open_clip

    torch.manual_seed(11)  # the same random weights as the fixture
    reference = open_clip.create_model(ARCH, pretrained=None, force_image_size=SIZE).eval()
    tokenizer = open_clip.get_tokenizer(ARCH)
    images = torch.rand(3, 3, 45, 37)
    with torch.no_grad():
        text = reference.encode_text(tokenizer(["Good photo.", "Bad photo."]), normalize=True)
        x = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        image = reference.encode_image((x - mean) / std, normalize=True)
        logits = reference.logit_scale.exp() * image @ text.T
        expected = logits.softmax(dim=-1)[:, 0]
        got = clipiqa(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_create_clip_backbone_gives_the_image_tower_and_the_text_embeddings() -> None:
    import open_clip

    from percepfid.backbones import Backbone, create_clip_backbone

    texts = ["A sharp photo.", "Noise."]
    torch.manual_seed(5)
    towers = create_clip_backbone(f"open_clip:{ARCH}", texts, pretrained=False, image_size=SIZE)
    torch.manual_seed(5)  # the same random weights, straight from open_clip
    reference = open_clip.create_model(ARCH, pretrained=None, force_image_size=SIZE).eval()
    images = torch.rand(2, 3, SIZE, SIZE)  # the tower's size: no resize, no crop
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        text = reference.encode_text(open_clip.get_tokenizer(ARCH)(texts), normalize=True)
        expected = reference.encode_image((images - mean) / std)
        got = towers.backbone(images)
    assert isinstance(towers.backbone, Backbone)
    assert not any(p.requires_grad for p in towers.backbone.parameters())
    torch.testing.assert_close(towers.text_embeddings, text)
    torch.testing.assert_close(towers.logit_scale, reference.logit_scale.detach().exp())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ArgumentError, match="open_clip"):
        create_clip_backbone("timm:vit_tiny_patch16_224", texts, pretrained=False)
    with pytest.raises(ArgumentError, match="interpolation"):
        create_clip_backbone(f"open_clip:{ARCH}", texts, pretrained=False, interpolation="area")


def test_clipiqa_is_frozen_eval_locked_and_differentiable(clipiqa: CLIPIQA) -> None:
    assert clipiqa.higher_is_better is True and clipiqa.score_range == (0.0, 1.0)
    assert not any(p.requires_grad for p in clipiqa.parameters())
    clipiqa.train()
    assert not clipiqa.training and not any(m.training for m in clipiqa.modules())
    # the text tower is gone; its result is a buffer of normalised prompt embeddings
    assert [name for name, _ in clipiqa.named_children()] == ["visual"]
    assert clipiqa.text_embeddings.shape[:2] == (1, 2)
    torch.testing.assert_close(clipiqa.text_embeddings.norm(dim=-1), torch.ones(1, 2))
    images = torch.rand(2, 3, 40, 40, requires_grad=True)
    scores = clipiqa(images)
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_clipiqa_several_prompt_pairs_average() -> None:
    pairs = [("Good photo.", "Bad photo."), ("Sharp photo.", "Blurry photo.")]
    both = CLIPIQA(ARCH, None, prompts=pairs, image_size=SIZE)
    images = torch.rand(2, 3, SIZE, SIZE)
    together = both(images)
    embeddings = both.text_embeddings
    singles = []
    for index in range(2):
        both.text_embeddings = embeddings[index : index + 1]  # one pair at a time
        singles.append(both(images))
    torch.testing.assert_close(together, (singles[0] + singles[1]) / 2)
    assert not torch.allclose(singles[0], singles[1])


def test_clipiqa_bad_arguments() -> None:
    with pytest.raises(ArgumentError, match="pair"):
        CLIPIQA(ARCH, None, prompts=[("only one",)], image_size=SIZE)
    with pytest.raises(ArgumentError, match="prompts"):
        CLIPIQA(ARCH, None, prompts="Good photo.", image_size=SIZE)
    with pytest.raises(UnknownNameError, match="ViT-S-32"):
        CLIPIQA("ViT-S-33", None)
    with pytest.raises(DTypeError, match="pretrained"):
        CLIPIQA(ARCH, pretrained=True)
    with pytest.raises(ArgumentError, match="image_size"):
        CLIPIQA(ARCH, None, image_size=4)


def test_default_clipiqa_is_rn50_with_random_weights_when_not_pretrained() -> None:
    iqa = create_nriqa("clipiqa", pretrained=False, image_size=64)
    assert iqa.name == "clipiqa:RN50/random" and iqa.arch == "RN50"
    assert iqa(torch.rand(1, 3, 48, 48)).shape == (1,)


def test_clipiqa_input_validation(clipiqa: CLIPIQA) -> None:
    with pytest.raises(ShapeError, match="images"):
        clipiqa(torch.rand(3, 16, 16))
    with pytest.raises(RangeError, match="input_range"):
        clipiqa(torch.rand(1, 3, 16, 16) * 3)
    with pytest.raises(DTypeError, match="floating"):
        clipiqa(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def _tiny_scorer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )


def test_wrapped_module_is_frozen_and_gradchecks() -> None:
    net = _tiny_scorer().double()
    iqa = create_nriqa(net, higher_is_better=False, score_range=(-1, 1), name="tiny")
    assert isinstance(iqa, CallableNRIQA) and iqa.name == "tiny"
    assert iqa.higher_is_better is False and iqa.score_range == (-1.0, 1.0)
    assert not any(p.requires_grad for p in net.parameters())
    iqa.train()
    assert not net.training
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(iqa, (x,))
    torch.testing.assert_close(iqa(x), net(x)[:, 0])
    assert create_nriqa(iqa) is iqa  # an NRIQAModel passes through


def test_wrapped_callable_and_input_range() -> None:
    iqa = create_nriqa(lambda x: x.mean(dim=(1, 2, 3)), input_range=(-1, 1))
    x = torch.rand(3, 3, 5, 5) * 2 - 1
    torch.testing.assert_close(iqa(x), ((x + 1) / 2).mean(dim=(1, 2, 3)))
    with pytest.raises(ShapeError, match="one score per image"):
        create_nriqa(lambda x: x.mean())(torch.rand(2, 3, 4, 4))
    with pytest.raises(DTypeError, match="return a tensor"):
        create_nriqa(lambda x: 1.0)(torch.rand(2, 3, 4, 4))
    with pytest.raises(DTypeError):
        create_nriqa(3.0)


def test_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="clipiqa"):
        create_nriqa("clipqa", pretrained=False)


def test_pyiqa_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'percepfid\[pyiqa\]'"):
        create_nriqa("pyiqa:musiq")


def test_pyiqa_bridge_with_a_stand_in_module(monkeypatch: pytest.MonkeyPatch) -> None:
    created = {}

    class Metric(nn.Module):
        lower_better = True
        metric_mode = "NR"
        score_range = (0, 10)

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.mean(dim=(1, 2, 3)) * self.scale).unsqueeze(1)

    def create_metric(name, **options):
        created.update(options, name=name)
        return Metric()

    fake = types.ModuleType("pyiqa")
    fake.list_models = lambda metric_mode=None: ["musiq", "niqe"]
    fake.create_metric = create_metric
    monkeypatch.setitem(sys.modules, "pyiqa", fake)
    iqa = create_nriqa("pyiqa:musiq")
    assert created["name"] == "musiq" and created["as_loss"] is True
    assert iqa.higher_is_better is False and iqa.score_range == (0.0, 10.0)
    assert not any(p.requires_grad for p in iqa.parameters())
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = iqa(x)
    torch.testing.assert_close(out, x.mean(dim=(1, 2, 3)) * 2)
    out.sum().backward()
    assert x.grad is not None
    with pytest.raises(UnknownNameError, match="musiq"):
        create_nriqa("pyiqa:musik")


def test_list_nriqa() -> None:
    names = list_nriqa()
    assert "clipiqa" in names and "nr-head:dinov2" in names
    assert list_nriqa("clip*") == ["clipiqa"]


def test_base_class_requires_score() -> None:
    with pytest.raises(NotImplementedError):
        NRIQAModel()(torch.rand(1, 3, 4, 4))
