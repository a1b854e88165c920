"""percepfid.hub end to end against a fake Hub on 127.0.0.1 (the real huggingface_hub client
code runs; nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import constants, hf_hub_download, snapshot_download
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from percepfid import ArgumentError, UnknownNameError, WeightsError, __version__, hub
from percepfid.heads import HubHead
from percepfid.hub import ChecksumError, ManifestEntry
from percepfid.testing._fake_hub import FakeHub

REPO = "percepfid-test/weights"
FILE = "model.safetensors"


def _bytes(n: int, seed: int = 0) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), generator=generator, dtype=torch.uint8).tolist())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def payload() -> bytes:
    return _bytes(4096, seed=1)


def _blobs(cache: Path, repo_id: str = REPO) -> list[Path]:
    folder = cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return sorted(p for p in folder.glob("*") if not p.name.endswith(".incomplete"))


# ----------------------------------------------------------------------------- fake Hub


def test_fake_hub_patches_and_restores_huggingface_hub_constants(tmp_path):
    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE)
    env_before = os.environ.get("HF_ENDPOINT")
    with FakeHub() as server:
        with server.activate(tmp_path) as cache:
            assert constants.ENDPOINT == server.endpoint
            assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(server.endpoint + "/")
            assert constants.HF_HUB_CACHE == str(cache)
            assert os.environ["HF_ENDPOINT"] == server.endpoint
            assert server.endpoint.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError), server.activate(tmp_path):
            raise RuntimeError("restored even after an error")
    assert (
        constants.ENDPOINT,
        constants.HUGGINGFACE_CO_URL_TEMPLATE,
        constants.HF_HUB_CACHE,
    ) == before
    assert os.environ.get("HF_ENDPOINT") == env_before


def test_fake_hub_serves_real_client_with_hub_headers(fake_hub, payload):
    commit = fake_hub.add_file(REPO, FILE, payload)
    assert len(commit) == 40 and int(commit, 16) >= 0
    path = hf_hub_download(REPO, FILE)
    assert Path(path).read_bytes() == payload
    # The cache is keyed by what the server sent: commit folder and ETag (sha256) blob.
    assert Path(path).parent.name == commit
    assert Path(os.path.realpath(path)).name == _sha(payload)
    # by commit hash too
    assert Path(hf_hub_download(REPO, FILE, revision=commit)).read_bytes() == payload


# ----------------------------------------------------------------------------- download


def test_download_verifies_sha256_and_uses_library_name(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    path = hub.download(REPO, FILE, sha256=_sha(payload))
    assert isinstance(path, Path)
    assert path.read_bytes() == payload
    gets = fake_hub.requests_for(FILE, method="GET")
    assert len(gets) == 1
    assert f"percepfid/{__version__}" in gets[0].user_agent
    # uppercase hex is accepted
    assert hub.download(REPO, FILE, sha256=_sha(payload).upper()) == path


def test_offline_reload_from_cache_makes_no_request(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    first = hub.download(REPO, FILE, sha256=_sha(payload))
    seen = len(fake_hub.requests)
    with fake_hub.offline():
        assert hub.is_offline()
        assert hub.download(REPO, FILE, sha256=_sha(payload)) == first
    assert hub.download(REPO, FILE, sha256=_sha(payload), local_files_only=True) == first
    assert len(fake_hub.requests) == seen  # neither reload touched the server


def test_hf_hub_offline_env_is_read_at_call_time(fake_hub, payload, monkeypatch):
    fake_hub.add_file(REPO, FILE, payload)
    first = hub.download(REPO, FILE)
    seen = len(fake_hub.requests)
    # only the environment variable: huggingface_hub's import-time flag stays False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert constants.HF_HUB_OFFLINE is False
    assert hub.download(REPO, FILE) == first
    assert len(fake_hub.requests) == seen


def test_snapshot_download_local_files_only_after_download(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    fake_hub.add_file(REPO, "config.json", b'{"width": 3}')
    folder = Path(snapshot_download(REPO))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", FILE]
    seen = len(fake_hub.requests)
    again = Path(snapshot_download(REPO, local_files_only=True))
    assert again == folder
    assert (again / FILE).read_bytes() == payload
    assert len(fake_hub.requests) == seen


def test_offline_not_cached_names_repo_file_and_fix(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    with fake_hub.offline(), pytest.raises(WeightsError) as info:
        hub.download(REPO, FILE, revision="v1")
    message = str(info.value)
    assert REPO in message and FILE in message and "v1" in message
    assert f"hf download {REPO} {FILE} --revision v1" in message
    assert "HF_HUB_OFFLINE" in message
    assert fake_hub.requests == []


def test_resolve_offline_not_cached_suggests_percepfid_command(fake_hub):
    with fake_hub.offline(), pytest.raises(WeightsError) as info:
        hub.resolve("rqi:maniqa-pipal")
    message = str(info.value)
    assert "shaolin999/rqi" in message and "rqi_weights.pt" in message
    assert "percepfid weights download rqi:maniqa-pipal" in message


def test_corrupted_file_is_rejected_and_evicted(fake_hub, payload):
    corrupted = bytearray(payload)
    corrupted[100] ^= 0xFF
    fake_hub.add_file(REPO, FILE, bytes(corrupted))
    with pytest.raises(ChecksumError) as info:
        hub.download(REPO, FILE, sha256=_sha(payload))
    assert isinstance(info.value, ValueError) and isinstance(info.value, WeightsError)
    assert _sha(payload) in str(info.value) and _sha(bytes(corrupted)) in str(info.value)
    cache = Path(constants.HF_HUB_CACHE)
    assert _blobs(cache) == []  # the blob is gone
    assert not list(cache.rglob(FILE))  # and so is the snapshot entry
    # Nothing a later call trusts: neither huggingface_hub offline nor percepfid offline.
    with fake_hub.offline():
        with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
            hub.download(REPO, FILE, sha256=_sha(payload))
        with pytest.raises(Exception, match="(?i)cannot find|not.*cache"):
            hf_hub_download(REPO, FILE)
    # The server is fixed: the next call downloads the right file again.
    fake_hub.add_file(REPO, FILE, payload)
    path = hub.download(REPO, FILE, sha256=_sha(payload))
    assert path.read_bytes() == payload


def test_truncated_file_on_the_hub_is_rejected(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload[:1000])
    with pytest.raises(ChecksumError):
        hub.download(REPO, FILE, sha256=_sha(payload))
    assert _blobs(Path(constants.HF_HUB_CACHE)) == []
    fake_hub.add_file(REPO, FILE, payload)
    assert hub.download(REPO, FILE, sha256=_sha(payload)).read_bytes() == payload


def test_truncated_cache_blob_is_caught_on_reload(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    path = hub.download(REPO, FILE, sha256=_sha(payload))
    blob = Path(os.path.realpath(path))
    with open(blob, "r+b") as handle:  # a disk or copy error cuts the cached file
        handle.truncate(len(payload) // 2)
    with fake_hub.offline(), pytest.raises(ChecksumError):
        hub.download(REPO, FILE, sha256=_sha(payload))
    assert not blob.exists() and not path.exists()
    # back online, a fresh copy is fetched
    assert hub.download(REPO, FILE, sha256=_sha(payload)).read_bytes() == payload


def test_size_mismatch_is_rejected(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    with pytest.raises(ChecksumError, match=f"expected {len(payload) + 1} bytes"):
        hub.download(REPO, FILE, size=len(payload) + 1)
    assert hub.download(REPO, FILE, size=len(payload)).read_bytes() == payload


def test_missing_repo_revision_and_file_raise_weights_error(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    with pytest.raises(WeightsError, match="does not exist or is private"):
        hub.download("percepfid-test/absent", FILE)
    with pytest.raises(WeightsError, match="revision 'v9' does not exist"):
        hub.download(REPO, FILE, revision="v9")
    with pytest.raises(WeightsError, match="has no file 'absent.bin'"):
        hub.download(REPO, "absent.bin")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sha256": "abc"}, ArgumentError),
        ({"sha256": "g" * 64}, ArgumentError),
        ({"revision": ""}, ArgumentError),
    ],
)
def test_download_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        hub.download(REPO, FILE, **kwargs)


def test_download_rejects_empty_names():
    with pytest.raises(ArgumentError, match="repo_id"):
        hub.download("", FILE)
    with pytest.raises(ArgumentError, match="filename"):
        hub.download(REPO, "")


# ----------------------------------------------------------------------------- local paths


def test_local_paths_pass_through(tmp_path, payload):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(payload)
    assert hub.resolve(str(file)) == file
    assert hub.resolve(file) == file
    assert hub.download_or_path(file) == file
    assert hub.download_or_path(str(tmp_path), "weights.safetensors") == file
    assert hub.download_or_path(file, sha256=_sha(payload)) == file


def test_local_file_with_wrong_sha256_is_rejected_but_kept(tmp_path, payload):
    file = tmp_path / "weights.bin"
    file.write_bytes(payload)
    with pytest.raises(ChecksumError):
        hub.download_or_path(file, sha256="0" * 64)
    assert file.read_bytes() == payload  # a user's own file is never deleted


def test_local_path_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        hub.download_or_path(tmp_path / "absent.pt")
    with pytest.raises(WeightsError, match="is a folder"):
        hub.download_or_path(tmp_path)
    with pytest.raises(WeightsError, match="pass filename="):
        hub.download_or_path("org/not-a-local-path")
    with pytest.raises(UnknownNameError, match="not an existing file"):
        hub.resolve(str(tmp_path / "absent.pt"))


def test_download_or_path_downloads_repo_ids(fake_hub, payload):
    fake_hub.add_file(REPO, FILE, payload)
    path = hub.download_or_path(REPO, FILE, sha256=_sha(payload))
    assert path.read_bytes() == payload


# ----------------------------------------------------------------------------- resolve


def _entry(**overrides) -> ManifestEntry:
    fields = dict(
        name="test:weights",
        kind="head",
        repo_id=REPO,
        filename=FILE,
        revision=None,
        sha256=None,
        size=None,
        licence="apache-2.0",
        source="test",
        notes="",
    )
    fields.update(overrides)
    return ManifestEntry(**fields)


def test_resolve_uses_entry_revision_and_sha256(fake_hub):
    old, new = _bytes(2048, seed=2), _bytes(2048, seed=3)
    fake_hub.add_file(REPO, FILE, new)  # main moved on
    fake_hub.add_file(REPO, FILE, old, revision="v1.0")
    entry = _entry(revision="v1.0", sha256=_sha(old), size=len(old))
    path = hub.resolve(entry.name, manifest={entry.name: entry})
    assert path.read_bytes() == old
    assert {r.path for r in fake_hub.requests_for(FILE)} == {f"/{REPO}/resolve/v1.0/{FILE}"}
    # a pinned sha256 that the served file does not have is refused
    wrong = _entry(sha256=_sha(old))  # main serves `new`
    with pytest.raises(ChecksumError):
        hub.resolve(wrong.name, manifest={wrong.name: wrong})


def test_resolve_with_manifest_file(fake_hub, tmp_path, payload):
    commit = fake_hub.add_file(REPO, FILE, payload, revision="main")
    entry = _entry(revision=commit, sha256=_sha(payload))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "entries": [entry.to_dict()]}))
    path = hub.resolve("test:weights", manifest=manifest)
    assert path.read_bytes() == payload and path.parent.name == commit
    # pinned to a commit and cached: no request at all the second time
    seen = len(fake_hub.requests)
    assert hub.resolve("test:weights", manifest=manifest) == path
    assert len(fake_hub.requests) == seen


# ----------------------------------------------------------------------------- hashing / loading


@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000))
def test_sha256_file_matches_hashlib(tmp_path_factory, data):
    file = tmp_path_factory.mktemp("sha") / "blob"
    file.write_bytes(data)
    assert hub.sha256_file(file) == hashlib.sha256(data).hexdigest()


def test_sha256_file_streams_and_notices_changes(tmp_path):
    data = _bytes(int(2.5 * (1 << 20)), seed=4)  # more than two 1 MiB chunks
    file = tmp_path / "big.bin"
    file.write_bytes(data)
    assert hub.sha256_file(file) == hashlib.sha256(data).hexdigest()
    file.write_bytes(data[:-1])
    assert hub.sha256_file(file) == hashlib.sha256(data[:-1]).hexdigest()


def test_load_state_dict_safetensors_and_legacy_pickle(tmp_path):
    state = {"weight": torch.randn(3, 4), "bias": torch.arange(3.0)}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = hub.load_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        for key in state:
            assert torch.equal(loaded[key], state[key])


class _NotWeights:
    def __init__(self) -> None:
        self.payload = 1


def test_load_state_dict_refuses_arbitrary_pickles(tmp_path):
    torch.save({"object": _NotWeights()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights_only=True"):
        hub.load_state_dict(tmp_path / "evil.pt")


def test_load_state_dict_rejects_truncated_files(tmp_path):
    state = {"weight": torch.randn(64, 64)}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(WeightsError):
            hub.load_state_dict(tmp_path / name)
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(WeightsError, match="expected a state dict"):
        hub.load_state_dict(tmp_path / "tensor.pt")


# ----------------------------------------------------------------------------- HubHead


class HubRoundTripHead(HubHead):
    """A calibration-head stand-in: cosine -> predicted fidelity in [0, 1]."""

    def __init__(self, in_features: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)).squeeze(-1)


def _trained_head() -> HubRoundTripHead:
    torch.manual_seed(0)
    head = HubRoundTripHead(in_features=4, hidden=8)
    x = torch.randn(64, 4)
    y = torch.sigmoid(x.sum(dim=1))
    optimiser = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(30):
        loss = nn.functional.mse_loss(head(x), y)
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < first  # it did learn something
    return head.eval()


def test_hub_head_round_trip_through_fake_hub(fake_hub, tmp_path):
    head = _trained_head()
    saved = tmp_path / "saved"
    head.save_pretrained(saved)
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    commit = fake_hub.add_folder("percepfid-test/tiny-head", saved)

    loaded = HubRoundTripHead.from_pretrained("percepfid-test/tiny-head")
    assert isinstance(loaded, HubRoundTripHead)
    assert loaded.net[0].in_features == 4 and loaded.net[0].out_features == 8
    x = torch.randn(16, 4)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), head(x))

    # pinned revision, then offline from the cache
    pinned = HubRoundTripHead.from_pretrained("percepfid-test/tiny-head", revision=commit)
    with fake_hub.offline():
        offline = HubRoundTripHead.from_pretrained("percepfid-test/tiny-head", revision=commit)
    with torch.no_grad():
        assert torch.equal(pinned.eval()(x), head(x))
        assert torch.equal(offline.eval()(x), head(x))


def test_hub_head_from_a_missing_repo_says_what_it_tried(fake_hub):
    # a head goes through hub.download: the same reasons as any weights file, and the token
    with pytest.raises(WeightsError, match="not a local folder; as a Hub repo.*does not exist"):
        HubRoundTripHead.from_pretrained("percepfid-test/no-such-head", token="hf_test")
    assert fake_hub.requests_for("config.json")  # the one config request reached the server


def test_hub_head_config_records_constructor_arguments(tmp_path):
    HubRoundTripHead(in_features=5, hidden=3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["in_features"], config["hidden"]) == (5, 3)


def test_push_to_hub_calls_hf_api_and_lands_on_fake_hub(fake_hub):
    head = _trained_head()
    uploaded: dict[str, object] = {}

    def upload_folder(*, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploaded["files"] = sorted(p.name for p in folder.iterdir())
        uploaded["config"] = json.loads((folder / "config.json").read_text())
        uploaded["state"] = load_file(folder / "model.safetensors")
        fake_hub.add_folder(repo_id, folder)  # "the upload": the fake Hub now serves it
        return "https://hub/commit"

    with mock.patch("huggingface_hub.hub_mixin.HfApi") as api_class:
        api = api_class.return_value
        api.create_repo.return_value.repo_id = "percepfid-test/pushed-head"
        api.upload_folder.side_effect = upload_folder
        head.push_to_hub("percepfid-test/pushed-head", private=True)

    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.kwargs["repo_id"] == "percepfid-test/pushed-head"
    assert api.create_repo.call_args.kwargs["private"] is True
    api.upload_folder.assert_called_once()
    assert api.upload_folder.call_args.kwargs["repo_id"] == "percepfid-test/pushed-head"
    assert {"config.json", "model.safetensors"} <= set(uploaded["files"])
    assert (uploaded["config"]["in_features"], uploaded["config"]["hidden"]) == (4, 8)
    reference = head.state_dict()
    assert uploaded["state"].keys() == reference.keys()
    assert all(torch.equal(uploaded["state"][k], reference[k]) for k in reference)

    loaded = HubRoundTripHead.from_pretrained("percepfid-test/pushed-head")
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), head(x))
