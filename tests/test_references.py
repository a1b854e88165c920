"""The reference-package policy of the test suite (tests/conftest.py): installed references
must import, and ``PERCEPFID_REQUIRE_REFERENCES=1`` (set by CI) turns "not installed" skips
into failures."""

from __future__ import annotations

import sys

import pytest
from conftest import REQUIRE_REFERENCES_ENV, require

# Every package a test compares against, by import name (all in the `test` extra).
REFERENCES = ["rqi", "rqi.models.maniqa", "cv2", "timm", "open_clip", "transformers", "peft"]
REFERENCES += ["scipy.stats", "scipy.special", "scipy.optimize", "PIL"]


@pytest.mark.parametrize("module", REFERENCES)
def test_reference_package_imports(module):
    assert require(module).__name__ == module


def test_missing_reference_skips_or_fails(monkeypatch):
    monkeypatch.delenv(REQUIRE_REFERENCES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="percepfid_no_such_package"):
        require("percepfid_no_such_package")
    monkeypatch.setenv(REQUIRE_REFERENCES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_REFERENCES_ENV}=1"):
        require("percepfid_no_such_package")
    monkeypatch.setenv(REQUIRE_REFERENCES_ENV, "0")
    with pytest.raises(pytest.skip.Exception, match="pip install rqi-iqa"):
        monkeypatch.setitem(sys.modules, "rqi", None)  # not importable
        monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
        require("rqi")


def test_installed_but_broken_reference_is_an_error(tmp_path, monkeypatch):
    package = tmp_path / "percepfid_broken_reference"
    package.mkdir()
    (package / "__init__.py").write_text("import percepfid_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(REQUIRE_REFERENCES_ENV, raising=False)
    with pytest.raises(ModuleNotFoundError, match="percepfid_missing_dependency"):
        require("percepfid_broken_reference")
