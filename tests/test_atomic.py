"""Atomic writes keep the old file (or none) when writing fails, and leave no temporary."""

from __future__ import annotations

from pathlib import Path

import pytest

from percepfid._atomic import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "weights.bin"
    with atomic_path(target) as partial:
        assert partial.parent == target.parent and partial != target
        partial.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights.bin"]
