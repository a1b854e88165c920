"""The base class of percepfid's trainable heads: an nn.Module that saves to and loads from
the Hugging Face Hub format (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .._atomic import atomic_path
from .._errors import ArgumentError, MissingDependencyError, UnknownNameError, WeightsError
from ..hub import download, is_offline

# The key in config.json that names the head class, so load_head can rebuild any head.
CLASS_KEY = "percepfid_head"
# The key in config.json that records a backbone update saved next to the head.
BACKBONE_KEY = "percepfid_backbone"
# The key in config.json that records what a fitted head was fitted on (backbone spec name,
# embedding, image size), so a loss with another backbone refuses it.
FITTED_ON_KEY = "percepfid_fitted_on"
BACKBONE_FILE = "backbone.safetensors"
_WEIGHTS_FILE = "model.safetensors"
_HEADS: dict[str, type[HubHead]] = {}


@dataclass
class BackboneUpdate:
    """Backbone weights fine-tuned together with a head (the last ``blocks`` blocks).

    Attributes:
        backbone: the backbone's spec name; the update only applies to that backbone.
        blocks: how many of its last blocks were fine-tuned.
        state: the tuned tensors, keyed by name relative to ``Backbone.encoder``.
    """

    backbone: str
    blocks: int
    state: dict[str, torch.Tensor]

    def apply(self, backbone: nn.Module) -> None:
        """Load the tuned tensors into ``backbone`` (a :class:`~percepfid.backbones.Backbone`).

        The load is strict: the update must hold exactly the tensors of the encoder's last
        ``blocks`` blocks (and the layers after them), with their shapes.

        Raises:
            ArgumentError: ``backbone`` is not the one the update was fitted on.
            WeightsError: the tensors do not fit its encoder (none, missing or unknown
                names, wrong shapes).
        """
        name = backbone.spec.name
        if name != self.backbone:
            raise ArgumentError(
                f"this head was fitted with the last {self.blocks} block(s) of backbone "
                f"{self.backbone!r} fine-tuned; it cannot be used with backbone {name!r}. "
                f"Pass backbone={self.backbone!r}."
            )
        from ..backbones import last_block_parameters

        own = backbone.encoder.state_dict()
        unknown = sorted(set(self.state) - set(own))
        if not self.state:
            raise WeightsError(
                f"backbone update for {name!r} holds no tensors; re-save the head with its "
                "fine-tuned blocks (fit_hlf_head(unfreeze_blocks=N)) or drop the update"
            )
        try:
            expected = set(last_block_parameters(backbone.encoder, self.blocks))
        except ArgumentError as error:
            raise WeightsError(f"backbone update for {name!r}: {error}") from error
        if unknown:
            raise WeightsError(
                f"backbone update for {name!r} holds {len(unknown)} tensor(s) its encoder does "
                f"not have (first: {unknown[0]!r}); the file does not match this backbone"
            )
        missing = sorted(expected - set(self.state))
        if missing:
            raise WeightsError(
                f"backbone update for {name!r} (last {self.blocks} block(s)) lacks "
                f"{len(missing)} tensor(s) of those blocks (first: {missing[0]!r}); the file "
                "is incomplete: re-save or re-download the head"
            )
        for key, tensor in self.state.items():
            if tensor.shape != own[key].shape:
                raise WeightsError(
                    f"backbone update tensor {key!r} has shape {tuple(tensor.shape)}; the "
                    f"encoder expects {tuple(own[key].shape)}"
                )
        backbone.encoder.load_state_dict(self.state, strict=False)


def _read(path: Path, what: str, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, any failure to read it a :class:`WeightsError`."""
    from safetensors import SafetensorError

    try:
        return read(path)
    except (OSError, UnicodeDecodeError, ValueError, SafetensorError) as error:
        raise WeightsError(
            f"{path}: unreadable {what} ({error}); re-save or re-download the head"
        ) from error


class HubHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="percepfid",
    tags=["percepfid", "image-quality-assessment", "super-resolution"],
    repo_url="https://github.com/percepfid/percepfid",
):
    """An ``nn.Module`` with ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

    Subclasses take only JSON-serialisable constructor arguments, which the mixin records
    in ``config.json`` (with the class name, for :func:`load_head`) to rebuild the head
    before loading ``model.safetensors``. A head fitted with the last blocks of its
    backbone carries them in :attr:`backbone_update`, saved as ``backbone.safetensors``
    (:class:`~percepfid.HLFLoss` loads them into its backbone).
    """

    backbone_update: BackboneUpdate | None = None
    #: What the head was fitted on (``config.json``'s ``percepfid_fitted_on``), or ``None``.
    fitted_on: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HEADS[cls.__name__] = cls

    def save_pretrained(self, save_directory, *, config: dict | None = None, **kwargs: Any):
        config = dict(config if config is not None else (self._hub_mixin_config or {}))
        config[CLASS_KEY] = type(self).__name__
        update = self.backbone_update
        if update is not None:
            config[BACKBONE_KEY] = {"name": update.backbone, "blocks": update.blocks}
        result = super().save_pretrained(save_directory, config=config, **kwargs)
        if update is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in update.state.items()}
            metadata = {"backbone": update.backbone, "blocks": str(update.blocks)}
            with atomic_path(Path(save_directory) / BACKBONE_FILE) as partial:
                save_file(state, str(partial), metadata=metadata)
        return result

    # push_to_hub needs no override: the mixin saves through save_pretrained into a
    # temporary folder and uploads that, so the config keys and backbone update travel too.

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs: Any):
        """Load the head (and its backbone update, when saved with one), strictly: the folder
        or repo must hold a ``config.json`` and a ``model.safetensors`` with exactly the head's
        tensors. ``HF_HUB_OFFLINE=1`` (read at call time) searches the local cache only. On
        ``HubHead`` itself (as :func:`load_head`), it builds the class the config names.

        Raises:
            UnknownNameError: on ``HubHead``, the config names a head class percepfid does
                not know.
            WeightsError: no such folder or reachable repo, a missing or unreadable
                ``config.json`` / ``model.safetensors``, a config that does not build this
                head, or weights that do not fit it; the message gives the fix.
        """
        source = str(pretrained_model_name_or_path)
        if is_offline() and "local_files_only" not in kwargs:
            kwargs["local_files_only"] = True
        fetch = _fetcher(pretrained_model_name_or_path, kwargs)
        config_path = fetch("config.json")  # fails fast, before the mixin
        config = _read(config_path, "head config", lambda p: json.loads(p.read_text()))
        if not isinstance(config, dict):
            raise WeightsError(
                f"{config_path}: a head config must be a JSON object; got {type(config).__name__}"
            )
        head_class = cls
        if cls is HubHead:
            name = config.get(CLASS_KEY)
            if name not in _HEADS:
                hint = f"(read from {config_path})"
                raise UnknownNameError("head class", str(name), _HEADS, hint=hint)
            head_class = _HEADS[name]
        weights_path = fetch(_WEIGHTS_FILE)
        kwargs.setdefault("strict", True)
        try:
            # huggingface_hub prints "Loading weights from local directory": keep stdout clean
            with contextlib.redirect_stdout(io.StringIO()):
                head = super(HubHead, head_class).from_pretrained(source, **kwargs)
        except (WeightsError, MissingDependencyError):
            raise
        except Exception as error:  # noqa: BLE001 - any failure here means a bad head folder
            raise WeightsError(
                f"head {source!r} could not be loaded as a {head_class.__name__} from {config_path} "
                f"and {weights_path} ({type(error).__name__}: {error}). The files are corrupt "
                "or were not written by this head's save_pretrained: re-save or re-download it."
            ) from error
        fitted_on = config.get(FITTED_ON_KEY)
        head.fitted_on = dict(fitted_on) if isinstance(fitted_on, dict) else None
        record = config.get(BACKBONE_KEY)
        if record is not None:
            from safetensors.torch import load_file

            state = _read(fetch(BACKBONE_FILE), "backbone update", lambda p: load_file(str(p)))
            try:
                update = BackboneUpdate(str(record["name"]), int(record["blocks"]), state)
            except (KeyError, TypeError, ValueError) as error:
                raise WeightsError(
                    f"{config_path}: malformed {BACKBONE_KEY!r} entry {record!r}"
                ) from error
            head.backbone_update = update
        return head


def _fetcher(path_or_repo_id: str | Path, hub_kwargs: dict[str, Any]):
    """A function ``filename -> local path`` for a head folder or Hub repo id."""
    local = Path(path_or_repo_id)
    if local.is_dir():

        def fetch(filename: str) -> Path:
            path = local / filename
            if not path.is_file():
                raise WeightsError(
                    f"head folder {str(local)!r} has no {filename} (save it with save_pretrained)"
                )
            return path

    elif (
        isinstance(path_or_repo_id, Path)
        or str(path_or_repo_id).startswith(("/", "./", "../", "~", "\\"))
        or str(path_or_repo_id).count("/") > 1
    ):
        raise WeightsError(
            f"head folder {str(path_or_repo_id)!r} does not exist (a Hub repo id looks like "
            "'org/name'); save a head there with save_pretrained or fix the path"
        )
    else:
        options = {
            k: hub_kwargs[k]
            for k in ("revision", "cache_dir", "local_files_only", "token")
            if k in hub_kwargs
        }

        def fetch(filename: str) -> Path:
            try:
                return download(str(path_or_repo_id), filename, **options)
            except WeightsError as error:
                raise WeightsError(
                    f"head {str(path_or_repo_id)!r} is not a local folder; as a Hub repo: {error}"
                ) from error

    return fetch


def load_head(path_or_repo_id: str | Path, **hub_kwargs: Any) -> HubHead:
    """Load any percepfid head (the class its ``config.json`` names, with its
    :attr:`~HubHead.backbone_update`) from a ``save_pretrained`` folder or a Hub repo id
    ``"<org>/<repo>"``; ``hub_kwargs`` (``revision``, ``cache_dir``, ...) and errors are
    those of :meth:`HubHead.from_pretrained`."""
    return HubHead.from_pretrained(path_or_repo_id, **hub_kwargs)
