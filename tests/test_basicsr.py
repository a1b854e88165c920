"""percepfid inside BasicSR: its registries, its SRModel, its metric calls and option parser.

Everything runs through BasicSR's own code (``build_loss``, ``build_model``,
``calculate_metric``, ``parse_options``, ``train_pipeline``) offline, with random weights
at small sizes. Outputs BasicSR writes go to ``tmp_path``.
"""

from __future__ import annotations

import copy
import importlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import require
from torch import nn

require("basicsr")  # the basicsr extra, in [test]

from basicsr.losses import build_loss  # noqa: E402
from basicsr.metrics import calculate_metric  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY  # noqa: E402

import percepfid.integrations.basicsr as pb  # noqa: E402
from percepfid import ArgumentError, DTypeError, HLFLoss, MissingDependencyError, RQILoss  # noqa: E402
from percepfid.iqa import create_nriqa  # noqa: E402
from percepfid.rqi import SMALL_MODEL_KWARGS  # noqa: E402

TINY = "timm:vit_tiny_patch16_224.augreg_in21k"
# The small MANIQA-RQI of tests/test_rqi_model.py (32 x 32 crops).
SMALL_RQI = SMALL_MODEL_KWARGS
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "basicsr"
EXAMPLE_YAML = EXAMPLE / "train_MSRResNet_percepfid_x4.yml"

HLF_OPT = {"backbone": TINY, "pretrained": False, "image_size": 32}
RQI_OPT = {"pretrained": False, "model_kwargs": SMALL_RQI}
NRIQA_OPT = {"iqa": f"nr-head:{TINY}", "pretrained": False, "image_size": 32}


class PercepfidTinySR(nn.Module):
    """A 2x upsampler near the identity: nearest upsampling plus a small learned residual."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return up + 0.1 * self.shuffle(self.body(x))


if "PercepfidTinySR" not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(PercepfidTinySR)


def _offline(block: object) -> object:
    """A copy of a BasicSR option tree with every percepfid entry switched to random,
    small, offline models (and every mapping a plain dict)."""
    if isinstance(block, Mapping):
        out = {k: _offline(v) for k, v in block.items()}
        kind = str(out.get("type", ""))
        if kind in ("PercepfidHLFLoss", "calculate_percepfid_hlf"):
            out.update(HLF_OPT)
        elif kind in ("PercepfidRQILoss", "calculate_percepfid_rqi"):
            out.update(RQI_OPT)
        elif kind in ("PercepfidNRIQALoss", "calculate_percepfid_nriqa"):
            out.update(NRIQA_OPT)
        return out
    if isinstance(block, list):
        return [_offline(v) for v in block]
    return block


def _bgr(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _rgb_tensor(bgr: np.ndarray, crop: int) -> torch.Tensor:
    """By hand: crop, BGR -> RGB, uint8 -> [0, 1], HWC -> (1, 3, H, W)."""
    cropped = bgr[crop:-crop, crop:-crop] if crop else bgr
    rgb = cropped[:, :, [2, 1, 0]].astype(np.float32) / 255.0
    return torch.tensor(rgb).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------- import hygiene


def test_import_percepfid_does_not_import_basicsr():
    code = "import sys, percepfid, percepfid.integrations; print('basicsr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_missing_basicsr_raises_naming_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "basicsr", None)
    monkeypatch.delitem(sys.modules, "percepfid.integrations.basicsr")
    with pytest.raises(MissingDependencyError, match=r"percepfid\[basicsr\]") as info:
        importlib.import_module("percepfid.integrations.basicsr")
    assert "not installed" in str(info.value)


def test_names_are_registered_beside_basicsrs_own():
    for cls in (
        pb.PercepfidHLFLoss,
        pb.PercepfidRQILoss,
        pb.PercepfidNRIQALoss,
        pb.PercepfidSumLoss,
    ):
        assert LOSS_REGISTRY.get(cls.__name__) is cls
    for fn in (
        pb.calculate_percepfid_hlf,
        pb.calculate_percepfid_rqi,
        pb.calculate_percepfid_nriqa,
    ):
        assert METRIC_REGISTRY.get(fn.__name__) is fn
    # BasicSR's own entries are untouched
    assert LOSS_REGISTRY.get("L1Loss").__module__.startswith("basicsr.")
    assert METRIC_REGISTRY.get("calculate_psnr").__module__.startswith("basicsr.")
    # registering again (a reloaded module) does not trip BasicSR's duplicate-name assertion
    pb._register(LOSS_REGISTRY, pb.PercepfidHLFLoss)
    assert LOSS_REGISTRY.get("PercepfidHLFLoss") is pb.PercepfidHLFLoss


# ------------------------------------------------------------------------------ losses


def test_loss_weight_and_reduction_map_onto_percepfid():
    loss = build_loss(
        {"type": "PercepfidHLFLoss", "loss_weight": 0.25, "reduction": "none", **HLF_OPT}
    )
    assert loss.weight == 0.25 and loss.reduction == "none"
    out = (torch.rand(3, 3, 40, 40) * 1.4 - 0.2).requires_grad_(True)  # leaves [0, 1]
    gt = torch.rand(3, 3, 40, 40)
    value = loss(out, gt)
    with torch.no_grad():  # reference: the frozen backbone's embeddings, torch's cosine
        e_out, e_gt = loss.backbone(out.clamp(0, 1)), loss.backbone(gt)
        expected = 0.25 * (1 - F.cosine_similarity(e_out, e_gt, dim=-1))
    assert value.shape == (3,)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    value.sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_as_tuple_gives_the_perceptual_slot_pair():
    single = build_loss({"type": "PercepfidRQILoss", "loss_weight": 0.1, **RQI_OPT})
    torch.manual_seed(0)
    pair = build_loss({"type": "PercepfidRQILoss", "loss_weight": 0.1, "as_tuple": True, **RQI_OPT})
    out, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    tensor = single(out, gt)
    first, second = pair(out, gt)
    assert isinstance(tensor, torch.Tensor) and tensor.ndim == 0
    assert second is None and first.ndim == 0
    # the wrapper is weight * mean(-score) of percepfid's own RQI score
    torch.testing.assert_close(tensor, -0.1 * single.score(out, gt).mean())


def test_loss_options_are_checked():
    with pytest.raises(ArgumentError, match="loss_weight"):
        build_loss({"type": "PercepfidHLFLoss", "weight": 0.1, **HLF_OPT})
    with pytest.raises(DTypeError, match="as_tuple"):
        build_loss({"type": "PercepfidHLFLoss", "as_tuple": "yes", **HLF_OPT})
    with pytest.raises(ArgumentError, match="reduction"):
        build_loss({"type": "PercepfidNRIQALoss", "reduction": "avg", **NRIQA_OPT})
    with pytest.raises(ArgumentError, match="at least one"):
        build_loss({"type": "PercepfidSumLoss", "losses": []})
    with pytest.raises(ArgumentError, match="'type'"):
        build_loss({"type": "PercepfidSumLoss", "losses": [{"loss_weight": 1.0}]})


def test_nriqa_loss_is_the_negated_weighted_score():
    loss = build_loss(
        {"type": "PercepfidNRIQALoss", "loss_weight": 0.5, "q_scale": 2.0, **NRIQA_OPT}
    )
    out = (torch.rand(2, 3, 24, 24) * 1.2 - 0.1).requires_grad_(True)
    value = loss(out, torch.rand(2, 3, 24, 24))
    with torch.no_grad():
        expected = -0.5 * 2.0 * loss.iqa(out.clamp(0, 1)).mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert out.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    assert list(loss.state_dict()) == []  # the frozen IQA model is not checkpointed


def test_sum_loss_adds_its_terms_including_basicsr_ones():
    loss = build_loss(
        {
            "type": "PercepfidSumLoss",
            "loss_weight": 2.0,
            "losses": [
                {"type": "L1Loss", "loss_weight": 1.0},
                {"type": "PercepfidHLFLoss", "loss_weight": 0.1, "as_tuple": True, **HLF_OPT},
            ],
        }
    )
    out, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        hlf = (
            0.1
            * (
                1 - F.cosine_similarity(loss.terms[1].backbone(out), loss.terms[1].backbone(gt))
            ).mean()
        )
    expected = 2.0 * (F.l1_loss(out, gt) + hlf)
    torch.testing.assert_close(loss(out, gt), expected, rtol=1e-5, atol=1e-6)
    assert loss.names == ["L1Loss", "PercepfidHLFLoss"]


# ------------------------------------------------------------------------------- SRModel


def _sr_options(tmp_path: Path, num_gpu: int) -> dict:
    return {
        "name": "percepfid_srmodel",
        "model_type": "SRModel",
        "scale": 2,
        "num_gpu": num_gpu,
        "dist": False,
        "rank": 0,
        "world_size": 1,
        "is_train": True,
        "network_g": {"type": "PercepfidTinySR", "scale": 2},
        "path": {
            "pretrain_network_g": None,
            "strict_load_g": True,
            "resume_state": None,
            "models": str(tmp_path / "models"),
        },
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-2},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "pixel_opt": {"type": "PercepfidRQILoss", "loss_weight": 0.1, **RQI_OPT},
            "perceptual_opt": {
                "type": "PercepfidHLFLoss",
                "loss_weight": 0.1,
                "as_tuple": True,
                **HLF_OPT,
            },
        },
    }


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_srmodel_trains_with_percepfid_losses(tmp_path, device):
    model = build_model(_sr_options(tmp_path, num_gpu=int(device == "cuda")))
    hlf, rqi = model.cri_perceptual, model.cri_pix
    assert isinstance(hlf, pb.PercepfidHLFLoss) and isinstance(rqi, pb.PercepfidRQILoss)
    # .to(device): BasicSR moved the losses, frozen towers included
    assert model.device.type == device
    for loss in (hlf, rqi):
        assert {t.device.type for t in [*loss.parameters(), *loss.buffers()]} == {device}
    # frozen, eval-locked towers that stay out of checkpoints
    assert not any(p.requires_grad for p in [*hlf.parameters(), *rqi.parameters()])
    hlf.train(), rqi.train()
    assert not hlf.backbone.encoder.training and not rqi.model.training
    assert hlf.state_dict() == {} and rqi.state_dict() == {}
    hlf.load_state_dict({}, strict=True)

    frozen = {k: v.clone() for k, v in hlf.backbone.encoder.state_dict().items()}
    net_before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        lq = (0.2 + 0.6 * torch.rand(2, 3, 16, 16, generator=g)).to(device)
        gt = torch.rand(2, 3, 32, 32, generator=g).to(device)
        model.feed_data({"lq": lq, "gt": gt})
        with torch.no_grad():  # reference, from the network's output before this step
            out = model.net_g(lq).clamp(0, 1)
            e_out, e_gt = hlf.backbone(out), hlf.backbone(gt)
            l_percep = 0.1 * (1 - F.cosine_similarity(e_out, e_gt, dim=-1)).mean()
            l_pix = -0.1 * rqi.score(out, gt).mean()
        model.optimize_parameters(step)
        log = model.get_current_log()
        assert set(log) == {"l_pix", "l_percep"}
        assert log["l_percep"] == pytest.approx(l_percep.item(), rel=1e-4, abs=1e-6)
        assert log["l_pix"] == pytest.approx(l_pix.item(), rel=1e-4, abs=1e-6)

    # gradients reached the network; the frozen backbone did not move
    assert any(not torch.equal(net_before[k], v) for k, v in model.net_g.state_dict().items())
    for k, v in hlf.backbone.encoder.state_dict().items():
        assert torch.equal(frozen[k], v), k

    # BasicSR's own checkpointing round-trips the network (make_exp_dirs made this folder)
    (tmp_path / "models").mkdir()
    model.save_network(model.net_g, "net_g", 3)
    saved = tmp_path / "models" / "net_g_3.pth"
    reloaded = build_model(_sr_options(tmp_path, num_gpu=int(device == "cuda")))
    reloaded.load_network(reloaded.net_g, str(saved), strict=True)
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(reloaded.net_g.state_dict()[k], v), k


# ------------------------------------------------------------------------------ metrics


def test_hlf_metric_equals_percepfids_score_on_the_rgb_images():
    img, img2 = _bgr(1), _bgr(2)
    opt = {"type": "calculate_percepfid_hlf", "crop_border": 4, "better": "higher", **HLF_OPT}
    pb.clear_metric_cache()
    torch.manual_seed(0)
    value = calculate_metric({"img": img, "img2": img2}, opt)
    torch.manual_seed(0)
    reference = HLFLoss(**HLF_OPT)
    sr, gt = _rgb_tensor(img, 4), _rgb_tensor(img2, 4)
    assert sr.shape == (1, 3, 32, 32)
    with torch.no_grad():
        expected = reference.fidelity(sr, gt).item()
        as_bgr = reference.fidelity(sr.flip(1), gt.flip(1)).item()
        uncropped = reference.fidelity(_rgb_tensor(img, 0), _rgb_tensor(img2, 0)).item()
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the checks above would notice a missing channel swap or crop
    assert abs(as_bgr - expected) > 1e-4 and abs(uncropped - expected) > 1e-4


def test_rqi_metric_equals_percepfids_score_on_the_rgb_images():
    img, img2 = _bgr(3), _bgr(4)
    opt = {"type": "calculate_percepfid_rqi", "crop_border": 4, **RQI_OPT}
    pb.clear_metric_cache()
    torch.manual_seed(0)
    value = calculate_metric({"img": img, "img2": img2}, opt)
    torch.manual_seed(0)
    reference = RQILoss(**RQI_OPT)
    with torch.no_grad():
        expected = reference.score(_rgb_tensor(img, 4), _rgb_tensor(img2, 4)).item()
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # same images again: the same number (seeded crops), the same model
    assert calculate_metric({"img": img, "img2": img2}, opt) == value
    # the multi-scale protocol runs too and is antisymmetric like the score
    forward = pb.calculate_percepfid_rqi(img, img2, 4, protocol="paper", **RQI_OPT)
    backward = pb.calculate_percepfid_rqi(img2, img, 4, protocol="paper", **RQI_OPT)
    assert forward == pytest.approx(-backward, abs=1e-5)


def test_nriqa_metric_scores_the_output_alone():
    img = _bgr(5)
    opt = {"type": "calculate_percepfid_nriqa", "crop_border": 2, **NRIQA_OPT}
    pb.clear_metric_cache()
    torch.manual_seed(0)
    value = calculate_metric({"img": img, "img2": _bgr(6)}, opt)
    torch.manual_seed(0)
    options = {k: v for k, v in NRIQA_OPT.items() if k != "iqa"}
    reference = create_nriqa(NRIQA_OPT["iqa"], **options)
    with torch.no_grad():
        expected = reference(_rgb_tensor(img, 2)).item()
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert calculate_metric({"img": img, "img2": _bgr(7)}, opt) == value


def test_metric_model_is_built_once_per_option_set(monkeypatch):
    built = []

    class Counting(HLFLoss):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(pb, "HLFLoss", Counting)
    pb.clear_metric_cache()
    opt = {"type": "calculate_percepfid_hlf", "crop_border": 0, **HLF_OPT}
    for seed in range(3):
        calculate_metric({"img": _bgr(seed), "img2": _bgr(seed + 10)}, opt)
    assert len(built) == 1
    calculate_metric({"img": _bgr(0), "img2": _bgr(1)}, {**opt, "embedding": "patch"})
    assert len(built) == 2
    pb.clear_metric_cache()


def test_metric_inputs_are_checked():
    img = _bgr(0)
    with pytest.raises(DTypeError, match="uint8"):
        pb.calculate_percepfid_hlf(img.astype(np.float32), img, 0, **HLF_OPT)
    with pytest.raises(ArgumentError, match="test_y_channel"):
        pb.calculate_percepfid_hlf(img, img, 0, test_y_channel=True, **HLF_OPT)
    with pytest.raises(ArgumentError, match="crop_border"):
        pb.calculate_percepfid_hlf(img, img, -1, **HLF_OPT)
    with pytest.raises(ArgumentError, match="input_order"):
        pb.calculate_percepfid_hlf(img, img, 0, input_order="WHC", **HLF_OPT)
    # CHW order gives the HWC result
    chw = pb.calculate_percepfid_hlf(
        img.transpose(2, 0, 1), _bgr(1).transpose(2, 0, 1), 0, input_order="CHW", **HLF_OPT
    )
    assert chw == pytest.approx(pb.calculate_percepfid_hlf(img, _bgr(1), 0, **HLF_OPT))


# ------------------------------------------------------------------------ the example


def _parse_example(monkeypatch, tmp_path: Path, yaml_path: Path) -> dict:
    from basicsr.utils.options import parse_options

    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(yaml_path)])
    opt, _ = parse_options(str(tmp_path), is_train=True)
    return opt


def test_example_yaml_parses_and_builds_its_losses_and_metrics(monkeypatch, tmp_path):
    opt = _parse_example(monkeypatch, tmp_path, EXAMPLE_YAML)
    assert opt["path"]["experiments_root"].startswith(str(tmp_path))
    train = _offline(opt["train"])
    percep = build_loss(train["perceptual_opt"])
    assert isinstance(percep, pb.PercepfidSumLoss)
    assert [type(t) for t in percep.terms] == [pb.PercepfidHLFLoss, pb.PercepfidRQILoss]
    assert [t.weight for t in percep.terms] == [0.01, 0.1]
    out, gt = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    value, style = percep(out, gt)
    assert style is None and value.ndim == 0 and torch.isfinite(value)

    metrics = _offline(opt["val"]["metrics"])
    assert {m["type"] for m in metrics.values()} >= {
        "calculate_percepfid_hlf",
        "calculate_percepfid_rqi",
    }
    pb.clear_metric_cache()
    for name, metric in metrics.items():
        result = calculate_metric({"img": _bgr(0), "img2": _bgr(1)}, metric)
        assert np.isfinite(result), name

    # the whole model, with the example's network made small, takes a training step
    small = _offline(copy.deepcopy(dict(opt)))
    small["num_gpu"] = 0
    small["network_g"].update(num_feat=8, num_block=1)
    model = build_model(small)
    model.feed_data({"lq": torch.rand(1, 3, 10, 10), "gt": torch.rand(1, 3, 40, 40)})
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {"l_pix", "l_percep"}


def _write_pairs(root: Path, gt_dir: str, lq_dir: str, count: int, size: int, scale: int) -> None:
    import cv2

    rng = np.random.default_rng(0)
    (root / gt_dir).mkdir(parents=True)
    (root / lq_dir).mkdir(parents=True)
    for i in range(count):
        gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / gt_dir / f"{i:02d}.png"), gt)
        cv2.imwrite(str(root / lq_dir / f"{i:02d}.png"), lq)


@pytest.mark.slow
def test_example_launch_command_trains_and_validates(tmp_path):
    """``python examples/basicsr/train.py -opt <yml>`` runs BasicSR's pipeline end to end."""
    from basicsr.utils.options import yaml_load

    opt = _offline(yaml_load(str(EXAMPLE_YAML)))
    train_set, val_set = opt["datasets"]["train"], opt["datasets"]["val"]
    _write_pairs(tmp_path, train_set["dataroot_gt"], train_set["dataroot_lq"], 2, 48, 4)
    _write_pairs(tmp_path, val_set["dataroot_gt"], val_set["dataroot_lq"], 1, 48, 4)
    train_set.update(
        gt_size=32, num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1
    )
    opt["num_gpu"] = 0
    opt["network_g"].update(num_feat=8, num_block=1)
    opt["train"]["total_iter"] = 2
    opt["val"]["val_freq"] = 2
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump(opt))

    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "-opt", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    experiment = tmp_path / "experiments" / opt["name"]
    (log,) = experiment.glob("train_*.log")
    text = log.read_text()
    assert "l_percep:" in text and "l_pix:" in text
    for metric in ("hlf", "rqi", "psnr"):
        assert f"# {metric}:" in text, metric
    assert (experiment / "models" / "net_g_latest.pth").is_file()
