"""``percepfid backbones`` and ``percepfid weights`` against a local fake Hub."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from percepfid.cli import main
from percepfid.testing._fake_hub import FakeHub

REPO = "percepfid-test/weights"


def _entry(name: str, filename: str, sha256: str | None, kind: str = "head") -> dict:
    return {
        "name": name,
        "kind": kind,
        "repo_id": REPO,
        "filename": filename,
        "revision": None,
        "sha256": sha256,
        "size": None,
        "licence": "apache-2.0",
        "source": "test",
        "notes": "",
    }


@pytest.fixture
def manifest(tmp_path: Path, fake_hub: FakeHub) -> Path:
    good, unpinned, bad = b"good weights" * 10, b"unpinned" * 7, b"served bytes" * 5
    fake_hub.add_file(REPO, "good.bin", good)
    fake_hub.add_file(REPO, "unpinned.bin", unpinned)
    fake_hub.add_file(REPO, "bad.bin", bad)
    entries = [
        _entry("test:good", "good.bin", hashlib.sha256(good).hexdigest()),
        _entry("test:unpinned", "unpinned.bin", None, kind="rqi"),
        _entry("test:bad", "bad.bin", hashlib.sha256(b"something else").hexdigest()),
        _entry("test:absent", "absent.bin", None),
    ]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": entries}))
    return path


def test_weights_list_download_verify(
    manifest: Path, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    m = ["--manifest", str(manifest)]
    assert main(["weights", "list", *m]) == 0
    listing = capsys.readouterr().out
    assert "test:good" in listing and "not pinned" in listing and "not cached" in listing

    assert main(["weights", "download", "test:good", "test:unpinned", *m]) == 0
    out = capsys.readouterr().out
    assert out.count("ok      ") == 2

    assert main(["weights", "list", "test:*", "--kind", "head", *m]) == 0
    listing = capsys.readouterr().out
    good_line = next(line for line in listing.splitlines() if line.startswith("test:good"))
    assert good_line.rstrip().endswith("cached") and "not cached" not in good_line
    assert "test:unpinned" not in listing  # kind rqi filtered out

    # verify everything: the cached files pass, unpinned prints its hash, absent is skipped
    assert main(["weights", "verify", *m]) == 0
    out = capsys.readouterr().out
    assert "ok      test:good: sha256 matches" in out
    assert hashlib.sha256(b"unpinned" * 7).hexdigest() in out
    assert "test:absent: not cached" in out

    # a file whose pinned sha256 does not match is refused on download
    assert main(["weights", "download", "test:bad", *m]) == 4
    assert "FAILED  test:bad" in capsys.readouterr().out

    # naming a missing entry in verify is a failed check
    assert main(["weights", "verify", "test:absent", *m]) == 1
    assert "MISSING test:absent" in capsys.readouterr().out

    # offline: a cached entry still verifies without network, an absent one fails clearly
    with fake_hub.offline():
        seen = len(fake_hub.requests)
        assert main(["weights", "verify", "test:good", *m]) == 0
        assert len(fake_hub.requests) == seen
        assert main(["weights", "download", "test:absent", *m]) == 4
        out = capsys.readouterr().out
        assert "ok      test:good" in out
        assert "downloads are switched off" in out and "percepfid weights download" in out


def test_weights_verify_detects_a_corrupted_cache_file(
    manifest: Path, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    m = ["--manifest", str(manifest)]
    assert main(["weights", "download", "test:good", *m]) == 0
    out = capsys.readouterr().out
    cached = Path(out.split(" -> ")[1].strip())
    blob = cached.resolve()
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    assert main(["weights", "verify", "test:good", *m]) == 1
    assert "BAD     test:good" in capsys.readouterr().out
    assert not cached.exists()  # evicted so nothing trusts it later


def test_weights_errors(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = ["--manifest", str(manifest)]
    assert main(["weights", "download", *m]) == 4
    assert "pass --all" in capsys.readouterr().err
    assert main(["weights", "download", "test:goood", *m]) == 2
    assert "Did you mean 'test:good'" in capsys.readouterr().err
    assert main(["weights"]) == 2  # an action is required
