"""``percepfid backbones``: the registry with the weights status of each entry."""

from __future__ import annotations

import json

import pytest

from percepfid.backbones import list_backbones
from percepfid.cli import main
from percepfid.testing._fake_hub import FakeHub


def test_backbones_lists_registry_with_status(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backbones", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == set(list_backbones(aliases=False))
    dinov2 = next(r for r in records if "dinov2" in r["aliases"])
    assert dinov2["source"] == "timm"
    assert dinov2["weights"] == "not cached"  # a fresh cache
    assert main(["backbones", "dinov2*"]) == 0  # an alias pattern finds the backbones
    table = capsys.readouterr().out
    assert "timm:vit_base_patch14_dinov2.lvd142m" in table
    assert "open_clip" not in table
    assert main(["backbones", "nothing-like-this"]) == 0
    assert "no backbone matches" in capsys.readouterr().out
