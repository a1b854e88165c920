"""Shared fixtures, reference-package policy and hypothesis profiles.

Tests run offline on the CPU; model weights are random.

Reference packages (the upstream libraries the tests compare against) are imported through
:func:`require`, never ``pytest.importorskip``:

* a package that is installed must import: its ``ImportError`` fails the test (a broken
  install is a bug, not a skip);
* a package that is not installed skips the test, unless the environment sets
  ``PERCEPFID_REQUIRE_REFERENCES=1`` (CI does), which turns the skip into a failure. In CI a
  skip can then only mean "no CUDA device".

Hypothesis profiles: ``dev`` (default) and ``ci`` (``HYPOTHESIS_PROFILE=ci``). Tests draw
:func:`examples` ``(dev, ci)`` examples: a few locally, hundreds on the core properties in CI.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_BACKBONE = "timm:vit_tiny_patch16_224.augreg_in21k"

#: Set to 1 (CI does) to fail, instead of skip, a test whose reference package is missing.
REQUIRE_REFERENCES_ENV = "PERCEPFID_REQUIRE_REFERENCES"

# import name -> the pip requirement that provides it (for the messages)
_DISTRIBUTIONS = {
    "rqi": "rqi-iqa",
    "open_clip": "open_clip_torch",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
}


def references_required() -> bool:
    """True when missing reference packages must fail the tests (CI)."""
    return os.environ.get(REQUIRE_REFERENCES_ENV, "").strip().lower() in ("1", "true", "yes")


def require(module: str) -> ModuleType:
    """Import a reference package for a test.

    Not installed: skip (fail when ``PERCEPFID_REQUIRE_REFERENCES=1``). Installed: import it
    and let any ``ImportError`` fail the test. Usable at module level too.
    """
    top = module.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        dist = _DISTRIBUTIONS.get(top, top)
        message = f"reference package {top!r} is not installed (pip install {dist})"
        if references_required():
            pytest.fail(f"{message}, and {REQUIRE_REFERENCES_ENV}=1 forbids skipping", False)
        pytest.skip(message, allow_module_level=True)
    return importlib.import_module(module)


# ------------------------------------------------------------------------------- hypothesis

settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def in_ci_profile() -> bool:
    return os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"


def examples(dev: int, ci: int) -> int:
    """``max_examples`` for a property: ``dev`` locally, ``ci`` under ``HYPOTHESIS_PROFILE=ci``."""
    return ci if in_ci_profile() else dev


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_backbone_name() -> str:
    """A small timm ViT (192-d), built with random weights at 32x32 in tests."""
    return TINY_BACKBONE


@pytest.fixture
def fake_hub(tmp_path):
    """A FakeHub server that huggingface_hub talks to, with its cache under ``tmp_path``."""
    from percepfid.testing import FakeHub

    with FakeHub() as server, server.activate(tmp_path / "hf_home"):
        yield server
