"""Weights from the Hugging Face Hub: the manifest (``weights_manifest.json``), verified
downloads into the normal Hugging Face cache, offline use (see the README's "Weights" section).

Example (offline, runs anywhere)::

    >>> from percepfid import hub
    >>> "timm:vit_base_patch14_dinov2.lvd142m" in hub.list_weights(kind="backbone")
    True
    >>> hub.manifest_entry("rqi:maniqa-pipal").repo_id
    'shaolin999/rqi'
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

from ._checks import check_choice, check_int
from ._errors import ArgumentError, DTypeError, UnknownNameError, WeightsError
from ._version import __version__
from ._vocab import WEIGHT_KINDS as KINDS

__all__ = [
    "ChecksumError",
    "KINDS",
    "ManifestEntry",
    "download",
    "download_or_path",
    "is_offline",
    "list_weights",
    "load_manifest",
    "load_state_dict",
    "manifest_entry",
    "manifest_path",
    "resolve",
    "sha256_file",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: The manifest schema this code reads.
SCHEMA_VERSION = 1

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20


class ChecksumError(WeightsError):
    """A weights file does not have the expected sha256 (or size); a file from the Hugging
    Face cache has been removed before this is raised."""


@dataclass(frozen=True)
class ManifestEntry:
    """One weights artefact of ``weights_manifest.json``.

    Attributes:
        name: the canonical name, e.g. ``"timm:vit_base_patch14_dinov2.lvd142m"``.
        kind: one of :data:`KINDS`.
        repo_id: the Hub repository, ``"org/name"``.
        filename: the file inside the repository.
        revision: a branch, tag or 40-hex commit; ``None`` (the default branch) where no
            revision has been pinned yet.
        sha256: the lowercase hex sha256 of the file, ``None`` where not yet known.
        size: the file size in bytes, ``None`` where not yet known.
        licence: the licence of the weights as stated by their authors.
        source: the paper or upstream project the weights come from.
        notes: anything a user should know (aliases, caveats).
    """

    name: str
    kind: str
    repo_id: str
    filename: str
    revision: str | None
    sha256: str | None
    size: int | None
    licence: str
    source: str
    notes: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as the JSON object it was read from."""
        return asdict(self)


# field -> its type, in field order (the JSON schema of one entry)
_ENTRY_TYPES: dict[str, Any] = get_type_hints(ManifestEntry)


# --------------------------------------------------------------------------- manifest


def manifest_path() -> Path:
    """The path of the manifest packaged with percepfid."""
    return Path(__file__).with_name("weights_manifest.json")


def _validate_entry(raw: Any, index: int, where: str) -> ManifestEntry:
    at = f"{where}: entries[{index}]"
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{at} must be a JSON object; got {raw!r}")
    missing = [key for key in _ENTRY_TYPES if key not in raw]
    extra = [key for key in raw if key not in _ENTRY_TYPES]
    if missing or extra:
        raise WeightsError(
            f"{at} ({raw.get('name')!r}) must have exactly the fields "
            f"{', '.join(_ENTRY_TYPES)}; missing {missing}, unexpected {extra}"
        )
    for key, kind in _ENTRY_TYPES.items():
        if isinstance(raw[key], bool) or not isinstance(raw[key], kind):
            allowed = ManifestEntry.__annotations__[key].replace(" | None", " or null")
            raise WeightsError(f"{at}.{key} ({raw['name']!r}) must be {allowed}; got {raw[key]!r}")
    for key, valid, rule in (
        ("kind", raw["kind"] in KINDS, f"one of {KINDS}"),
        (
            "sha256",
            raw["sha256"] is None or _SHA256.fullmatch(raw["sha256"]),
            "64 lowercase hex digits",
        ),
        ("size", raw["size"] is None or raw["size"] > 0, "a positive number of bytes or null"),
        *((key, raw[key].strip(), "a non-empty str") for key in ("name", "repo_id", "filename")),
    ):
        if not valid:
            raise WeightsError(f"{at}.{key} ({raw['name']!r}) must be {rule}; got {raw[key]!r}")
    return ManifestEntry(**raw)


@lru_cache(maxsize=8)
def _load_manifest_cached(where: str) -> Mapping[str, ManifestEntry]:
    try:
        document = json.loads(Path(where).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        problem = "cannot read it" if isinstance(error, OSError) else "it is not valid JSON"
        raise WeightsError(f"the weights manifest {where}: {problem}: {error}") from error
    if not isinstance(document, Mapping) or "entries" not in document:
        raise WeightsError(f"{where}: expected a JSON object with 'schema_version' and 'entries'")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise WeightsError(
            f"{where}: schema_version {version!r} is not supported; this percepfid reads "
            f"schema_version {SCHEMA_VERSION}"
        )
    raw_entries = document["entries"]
    if not isinstance(raw_entries, list):
        raise WeightsError(f"{where}: 'entries' must be a list; got {type(raw_entries).__name__}")
    entries: dict[str, ManifestEntry] = {}
    for index, raw in enumerate(raw_entries):
        entry = _validate_entry(raw, index, where)
        if entry.name in entries:
            raise WeightsError(f"{where}: the name {entry.name!r} appears more than once")
        entries[entry.name] = entry
    return MappingProxyType(entries)


def load_manifest(path: PathLike | None = None) -> Mapping[str, ManifestEntry]:
    """A read-only mapping from entry name to :class:`ManifestEntry`, in file order, of the
    manifest ``path`` (default: the one packaged with percepfid), validated.

    Raises:
        WeightsError: the file is missing, not JSON, or an entry breaks the schema
            (missing or unexpected fields, wrong types, unknown kind, malformed sha256,
            duplicate names).
    """
    resolved = manifest_path() if path is None else Path(path)
    return _load_manifest_cached(str(resolved.resolve()))


def _as_manifest(
    manifest: Mapping[str, ManifestEntry] | PathLike | None,
) -> Mapping[str, ManifestEntry]:
    if manifest is None or isinstance(manifest, (str, os.PathLike)):
        return load_manifest(manifest)
    if isinstance(manifest, Mapping):
        return manifest
    raise DTypeError(
        "manifest must be None, a path or a mapping of name -> ManifestEntry; "
        f"got {type(manifest).__name__}"
    )


def manifest_entry(
    name: str, *, manifest: Mapping[str, ManifestEntry] | PathLike | None = None
) -> ManifestEntry:
    """The entry called ``name`` (e.g. ``"open_clip:ViT-B-16/openai"``) of ``manifest`` (a
    mapping or a path; default the packaged one); ``UnknownNameError``, listing close
    matches, when there is none."""
    if not isinstance(name, str):
        raise DTypeError(f"name must be a str; got {type(name).__name__} {name!r}")
    return _lookup(_as_manifest(manifest), name, "")


def _lookup(entries: Mapping[str, ManifestEntry], name: str, hint: str) -> ManifestEntry:
    if name not in entries:
        hint += "See percepfid.hub.list_weights() for every known name."
        raise UnknownNameError("weights entry", name, entries.keys(), hint=hint)
    return entries[name]


def list_weights(
    kind: str | None = None,
    *,
    pattern: str | None = None,
    manifest: Mapping[str, ManifestEntry] | PathLike | None = None,
) -> list[str]:
    """The sorted names of the manifest entries of ``kind`` (one of :data:`KINDS`, else an
    ``ArgumentError``) matching the shell ``pattern`` (e.g. ``"*dinov2*"``), each filter
    applied when given; ``manifest`` as for :func:`manifest_entry`."""
    if kind is not None:
        check_choice(kind, "kind", KINDS)
    return sorted(
        entry.name
        for entry in _as_manifest(manifest).values()
        if (kind is None or entry.kind == kind)
        and (pattern is None or fnmatch.fnmatchcase(entry.name, pattern))
    )


# --------------------------------------------------------------------------- hashing

_verified_lock = threading.Lock()
# (real path, size, mtime_ns, inode) -> sha256; a file is hashed once per process unless
# it changes on disk.
_hash_memo: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: PathLike) -> str:
    """The lowercase hex sha256 of a file, read in 1 MiB chunks (constant memory).

    Remembered for the process while the file keeps its size, mtime and inode.
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _verified_lock:
        if key in _hash_memo:
            return _hash_memo[key]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    with _verified_lock:
        _hash_memo[key] = digest.hexdigest()
    return _hash_memo[key]


def _expected(sha256: Any, size: Any) -> tuple[str | None, int | None]:
    """The ``sha256`` and ``size`` arguments, checked; the digest in lowercase."""
    if sha256 is not None:
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
            raise ArgumentError(f"sha256 must be 64 hex digits or None; got {sha256!r}")
        sha256 = sha256.lower()
    if size is not None:
        size = check_int(size, "size", minimum=1)
    return sha256, size


def _mismatch(path: Path, sha256: str | None, size: int | None) -> str | None:
    """How ``path`` differs from the expected size and sha256 (checked first), or None."""
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        return f"expected {size} bytes, found {actual_size} bytes"
    if sha256 is not None and (actual := sha256_file(path)) != sha256:
        return f"expected sha256 {sha256}, got {actual} ({actual_size} bytes)"
    return None


# --------------------------------------------------------------------------- downloads


def is_offline() -> bool:
    """True when Hub downloads are switched off (``HF_HUB_OFFLINE=1``).

    Read at call time, unlike ``huggingface_hub`` which reads it at import time; both are
    honoured.
    """
    from huggingface_hub import constants

    values = (
        os.environ.get(v, "").strip().upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return any(v in {"1", "ON", "YES", "TRUE"} for v in values) or bool(constants.HF_HUB_OFFLINE)


def _download(
    repo_id: Any,
    filename: Any,
    revision: Any,
    sha256: Any,
    size: Any,
    cache_dir: PathLike | None,
    local_files_only: bool | None,
    name: str | None,
    token: str | bool | None = None,
) -> Path:
    """:func:`download`; ``name``, a manifest name, goes into the pre-download hint."""
    from huggingface_hub import hf_hub_download

    for label, value in (("repo_id", repo_id), ("filename", filename)):
        if not isinstance(value, str) or not value:
            raise ArgumentError(f"{label} must be a non-empty str; got {value!r}")
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise ArgumentError(f"revision must be a non-empty str or None; got {revision!r}")
    sha256, size = _expected(sha256, size)
    offline = is_offline() if local_files_only is None else bool(local_files_only)
    where = f"{repo_id}/{filename} (revision {revision or 'main'})"
    try:
        path = Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=filename,
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
                local_files_only=offline,
                library_name="percepfid",
                library_version=__version__,
                token=token,
            )
        )
    except Exception as error:  # noqa: BLE001 - a transfer cut short, a network error, ...
        from huggingface_hub import errors

        flag = f" --revision {revision}" if revision else ""
        commands = [f"`percepfid weights download {name}`"] if name is not None else []
        commands.append(f"`hf download {repo_id} {filename}{flag}`")
        predownload = (
            "Pre-download it on a machine with network access with "
            + " or ".join(commands)
            + " (the same cache, HF_HOME or HF_HUB_CACHE, must be visible here), "
            "or pass the path of a local copy instead."
        )
        cut_off = (
            "downloads are switched off (HF_HUB_OFFLINE=1 or local_files_only=True)"
            if offline
            else "the Hub could not be reached (with no network, set HF_HUB_OFFLINE=1 to use "
            "the cache only and fail fast)"
        )
        reasons = {  # the first that fits: subclasses before their bases
            errors.LocalEntryNotFoundError: f" is not in the local Hugging Face cache and "
            f"{cut_off}. {predownload}",
            errors.GatedRepoError: ": the repository is gated. Accept its licence on "
            f"https://huggingface.co/{repo_id} and log in with `hf auth login`.",
            errors.RepositoryNotFoundError: f": the Hub repository {repo_id!r} does not exist "
            "or is private (log in with `hf auth login` if you have access).",
            errors.RevisionNotFoundError: f": the revision {revision!r} does not exist in "
            f"{repo_id!r}.",
            errors.EntryNotFoundError: f": the repository has no file {filename!r}.",
            errors.HfHubHTTPError: f": the Hub answered with an error: {error}",
            Exception: f": the download failed ({type(error).__name__}: {error}). Check the "
            "network and retry (the cache resumes partial downloads); with no network set "
            f"HF_HUB_OFFLINE=1 to use the cache only. {predownload}",
        }
        why = next(why for kind, why in reasons.items() if isinstance(error, kind))
        raise WeightsError(where + why) from error
    problem = _mismatch(path, sha256, size)
    if problem is not None:  # remove the blob and the snapshot entry pointing to it
        blob = os.path.realpath(path)
        with _verified_lock:
            for key in [key for key in _hash_memo if key[0] == blob]:
                del _hash_memo[key]
        for stale in (path, Path(blob)):
            try:
                stale.unlink(missing_ok=True)
            except OSError as error:  # pragma: no cover - depends on the filesystem
                logger.warning("could not remove the corrupt cached file %s: %s", stale, error)
        raise ChecksumError(
            f"{where} failed verification: {problem}. The file has been removed from the "
            f"cache ({path}); the next call downloads it again. If this repeats, the file "
            "on the Hub differs from the one percepfid expects: pin the revision, or update "
            "the sha256 you passed."
        )
    if sha256 is None:
        logger.debug("%s: no sha256 known, not verified", where)
    return path


def download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    size: int | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download one file from the Hugging Face Hub into the normal Hugging Face cache
    (``hf_hub_download``, ``library_name="percepfid"``), verified, and return its path. A
    cached copy is reused without network traffic when the revision is a commit hash or
    downloads are off.

    Args:
        repo_id: the Hub repository, ``"org/name"``.
        filename: the file inside the repository.
        revision: a branch, tag or commit hash; default the repository's main branch.
        sha256: the expected lowercase hex sha256. When given, the file is hashed (streamed,
            once per process) and must match.
        cache_dir: the Hugging Face cache folder; default ``HF_HUB_CACHE``.
        local_files_only: only look in the cache. ``None`` (default) follows
            ``HF_HUB_OFFLINE``, read at call time.
        size: the expected size in bytes (a positive int), checked before hashing.
        token: a Hugging Face token for a private repository (default: the logged-in one).

    Raises:
        ChecksumError: the file does not match ``sha256`` (or ``size``); it has been removed
            from the cache (blob and snapshot entry).
        WeightsError: offline and not cached (the message names the repository, the file and
            how to pre-download it), or the repository, revision or file does not exist.
        ArgumentError: ``sha256`` is not 64 hex digits, or an empty ``repo_id``/``filename``.

    Example:
        >>> from percepfid.hub import download
        >>> path = download("timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors")  # doctest: +SKIP
    """
    return _download(
        repo_id, filename, revision, sha256, size, cache_dir, local_files_only, None, token
    )


def download_or_path(source: PathLike, filename: str | None = None, **options: Any) -> Path:
    """The path of a local file, a file in a local folder, or a file downloaded from the Hub.

    Args:
        source: an existing file; an existing folder (then ``filename`` is taken inside it);
            or a Hub repository id (then ``filename`` is downloaded with :func:`download`).
            A :class:`os.PathLike` is always treated as a local path.
        filename: the file inside the folder or repository.
        **options: the keyword arguments of :func:`download` (``revision``, ``sha256``,
            ``size``, ``cache_dir``, ``local_files_only``); ``sha256`` and ``size`` are
            checked for local files too (they are never deleted).

    Raises:
        WeightsError: a local path that does not exist, or a repository id without
            ``filename``; and everything :func:`download` raises.
    """
    is_pathlike = isinstance(source, os.PathLike)
    if not is_pathlike and not isinstance(source, str):
        raise DTypeError(f"source must be a str or a path; got {type(source).__name__}")
    local = Path(source).expanduser()
    if not is_pathlike and not local.exists():
        if filename is None:
            raise WeightsError(
                f"{source!r} is neither an existing file nor folder; to download it from the "
                "Hub as a repository id, pass filename="
            )
        return download(source, filename, **options)
    inspect.signature(download).bind(source, filename, **options)  # TypeError on a typo
    if local.is_dir():
        if filename is None:
            raise WeightsError(f"{local} is a folder: pass filename= to pick a file in it")
        local = local / filename
    if not local.is_file():
        raise WeightsError(f"no such weights file: {local}")
    problem = _mismatch(local, *_expected(options.get("sha256"), options.get("size")))
    if problem is not None:  # a user's own file is never deleted
        raise ChecksumError(f"the local file {local} failed verification: {problem}.")
    return local


def resolve(
    name: PathLike,
    *,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    manifest: Mapping[str, ManifestEntry] | PathLike | None = None,
) -> Path:
    """The local path of a manifest entry's file, downloading and verifying it if needed.

    The entry's own repository, file, revision, sha256 and size are used. An existing local
    file path is accepted too and returned unchanged, so any argument that takes a weights
    name also takes a file.

    Args:
        name: a manifest name (see :func:`list_weights`) or the path of a local file.
        cache_dir, local_files_only: as for :func:`download`.
        manifest: as for :func:`manifest_entry`.

    Raises:
        UnknownNameError: ``name`` is neither a manifest name nor an existing file.
        WeightsError: as :func:`download` raises it (``ChecksumError`` included).

    Example:
        >>> from percepfid.hub import resolve
        >>> path = resolve("timm:vit_small_patch14_dinov2.lvd142m")  # doctest: +SKIP
    """
    if isinstance(name, os.PathLike):
        return download_or_path(name)
    if not isinstance(name, str):
        raise DTypeError(f"name must be a str or a path; got {type(name).__name__} {name!r}")
    entries = _as_manifest(manifest)
    if name not in entries and Path(name).expanduser().is_file():
        return Path(name).expanduser()
    e = _lookup(entries, name, "It is not an existing file either. ")
    return _download(
        e.repo_id, e.filename, e.revision, e.sha256, e.size, cache_dir, local_files_only, e.name
    )


# --------------------------------------------------------------------------- loading


def load_state_dict(path: PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """The mapping stored in a weights file (for safetensors, name -> tensor), read without
    executing code from it: ``.safetensors`` with safetensors, anything else (``.pt``,
    ``.pth``, ``.bin``) with ``torch.load(..., weights_only=True)``; tensors are placed on
    ``map_location``.

    Raises:
        WeightsError: the file is corrupt or truncated, holds objects that are not plain
            weights, or does not hold a mapping.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu" if map_location is None else str(map_location))
        except SafetensorError as error:
            raise WeightsError(
                f"{path} is not a valid safetensors file (corrupt or truncated?): {error}"
            ) from error
    import pickle

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path} holds objects other than weights (tensors and plain containers), which "
            "torch.load(weights_only=True) refuses: unpickling them runs code from the file. "
            "If you trust the file, convert its state dict once to safetensors "
            "(safetensors.torch.save_file) and pass that file."
        ) from None
    except Exception as error:  # RuntimeError on truncated zip archives, ...
        raise WeightsError(
            f"{path} could not be read with torch.load(weights_only=True): it is corrupt, "
            f"truncated, or holds objects other than weights ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return dict(state)
