"""torchmetrics wrappers: the mean of the loss's per-image scores, and mergeable states."""

from __future__ import annotations

import sys

import pytest
import torch

from percepfid._errors import MissingDependencyError

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"


def _images(seed: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, 24, 24, generator=generator)
    sr = (gt + 0.2 * torch.rand(n, 3, 24, 24, generator=generator)).clamp(0, 1)
    return sr, gt


def test_hlf_metric_is_the_mean_fidelity_and_merges_like_a_sync() -> None:
    from percepfid.losses.hlf import HLFLoss
    from percepfid.metrics import HLFMetric

    torch.manual_seed(0)
    metric = HLFMetric(TINY, pretrained=False, image_size=32)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    torch.manual_seed(0)
    reference = HLFLoss(TINY, pretrained=False, image_size=32)
    batches = [_images(1), _images(2, n=2)]
    for sr, gt in batches:
        metric.update(sr, gt)
    with torch.no_grad():
        expected = torch.cat([reference.fidelity(sr, gt) for sr, gt in batches]).double().mean()
    torch.testing.assert_close(metric.compute(), expected, atol=1e-6, rtol=0)

    # two "processes" each seeing one batch, merged with the states' reduction functions,
    # give the same mean as one process that saw both
    torch.manual_seed(0)
    other = HLFMetric(TINY, pretrained=False, image_size=32)
    torch.manual_seed(0)
    first = HLFMetric(TINY, pretrained=False, image_size=32)
    first.update(*batches[0])
    other.update(*batches[1])
    first.merge_state(other)
    torch.testing.assert_close(first.compute(), expected, atol=1e-6, rtol=0)
    metric.reset()
    assert int(metric.count) == 0


def test_rqi_metric_mean_of_scores() -> None:
    from percepfid.losses.rqi import RQILoss
    from percepfid.metrics import RQIMetric

    kwargs = {"pretrained": False, "crop": "center", "crop_size": 32}
    torch.manual_seed(0)
    metric = RQIMetric(TINY, **kwargs)
    torch.manual_seed(0)
    reference = RQILoss(TINY, **kwargs)
    sr, gt = _images(3)
    metric.update(sr, gt)
    with torch.no_grad():
        expected = reference.score(sr, gt).double().mean()
    torch.testing.assert_close(metric.compute(), expected, atol=1e-6, rtol=0)


def test_missing_torchmetrics_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "percepfid.metrics", raising=False)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(MissingDependencyError, match=r"percepfid\[metrics\]"):
        import percepfid.metrics  # noqa: F401
