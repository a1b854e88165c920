"""The base class of percepfid's trainable heads: an nn.Module that saves to and loads from
the Hugging Face Hub format (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .._errors import UnknownNameError, WeightsError

# The key in config.json that names the head class, so load_head can rebuild any head.
CLASS_KEY = "percepfid_head"
_HEADS: dict[str, type[HubHead]] = {}


class HubHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="percepfid",
    tags=["percepfid", "image-quality-assessment", "super-resolution"],
    repo_url="https://github.com/percepfid/percepfid",
):
    """An ``nn.Module`` with ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

    Subclasses take only JSON-serialisable constructor arguments (ints, floats, strings,
    lists); the mixin records them in ``config.json`` so ``from_pretrained`` rebuilds the
    same architecture before loading ``model.safetensors``. The class name is recorded too,
    so :func:`load_head` can load any head without knowing its class.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HEADS[cls.__name__] = cls

    def save_pretrained(self, save_directory, *, config: dict | None = None, **kwargs: Any):
        config = dict(config if config is not None else (self._hub_mixin_config or {}))
        config[CLASS_KEY] = type(self).__name__
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def push_to_hub(self, repo_id: str, *, config: dict | None = None, **kwargs: Any):
        config = dict(config if config is not None else (self._hub_mixin_config or {}))
        config[CLASS_KEY] = type(self).__name__
        return super().push_to_hub(repo_id, config=config, **kwargs)


def load_head(path_or_repo_id: str | Path, **hub_kwargs: Any) -> HubHead:
    """Load any percepfid head from a ``save_pretrained`` folder or a Hub repo id.

    Args:
        path_or_repo_id: a local folder or ``"<org>/<repo>"``.
        **hub_kwargs: passed to ``from_pretrained`` (``revision``, ``cache_dir``,
            ``local_files_only``, ...).

    Raises:
        WeightsError: the folder/repo holds no percepfid head config.
        UnknownNameError: the config names a head class percepfid does not know.
    """
    local = Path(path_or_repo_id)
    if local.is_dir():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise WeightsError(
                f"head folder {str(local)!r} has no config.json (save it with save_pretrained)"
            )
    else:
        from huggingface_hub import hf_hub_download

        allowed = {
            k: hub_kwargs[k]
            for k in ("revision", "cache_dir", "local_files_only", "token")
            if k in hub_kwargs
        }
        try:
            config_path = Path(
                hf_hub_download(
                    str(path_or_repo_id), "config.json", library_name="percepfid", **allowed
                )
            )
        except Exception as error:  # noqa: BLE001 - report any hub failure the same way
            raise WeightsError(
                f"head {str(path_or_repo_id)!r} is neither a local folder nor a reachable Hub repo "
                f"with a config.json ({type(error).__name__}: {error})"
            ) from error
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{config_path}: unreadable head config ({error})") from error
    name = config.get(CLASS_KEY)
    if name not in _HEADS:
        raise UnknownNameError("head class", str(name), _HEADS, hint=f"(read from {config_path})")
    return _HEADS[name].from_pretrained(str(path_or_repo_id), **hub_kwargs)
