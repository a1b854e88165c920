"""Which parameters of a backbone are "the last N blocks", for partial fine-tuning."""

from __future__ import annotations

from torch import nn

from .._errors import ArgumentError

# Names of the module lists that hold the transformer blocks in the supported families:
# timm (``blocks``, ``stages``), open_clip (``resblocks``), Hugging Face (``layers``, ``layer``).
_BLOCK_LIST_NAMES = ("blocks", "resblocks", "layers", "layer", "stages")


def block_list(encoder: nn.Module) -> tuple[str, nn.Module]:
    """The module list holding the encoder's blocks: the longest list with a block-list name.

    Raises:
        ArgumentError: the encoder has no such list (e.g. a user module without blocks).
    """
    candidates = [
        (name, module)
        for name, module in encoder.named_modules()
        if isinstance(module, (nn.ModuleList, nn.Sequential))
        and name.rsplit(".", 1)[-1] in _BLOCK_LIST_NAMES
        and len(module) > 0
    ]
    if not candidates:
        raise ArgumentError(
            f"cannot find the transformer blocks of {type(encoder).__name__} (no module list "
            f"named one of {', '.join(_BLOCK_LIST_NAMES)}); use unfreeze_blocks=0 for this backbone"
        )
    return max(candidates, key=lambda item: len(item[1]))


def last_block_parameters(encoder: nn.Module, count: int) -> list[str]:
    """Names (relative to ``encoder``) of the parameters of its last ``count`` blocks and of
    every layer after them: the parameters registered after the block list (final norm,
    attention pooling, the projection of timm and BLIP towers) and an output projection
    held as a bare ``proj`` parameter above the blocks (open_clip towers).

    Args:
        encoder: a backbone's encoder (``Backbone.encoder``).
        count: how many blocks, from the last, ``1 <= count <= number of blocks``.

    Raises:
        ArgumentError: no block list, or ``count`` out of range.
    """
    name, blocks = block_list(encoder)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(blocks):
        raise ArgumentError(
            f"unfreeze_blocks must be an int in [1, {len(blocks)}] for this backbone "
            f"({len(blocks)} blocks in {name!r}); got {count!r}"
        )
    chosen = tuple(f"{name}.{i}." for i in range(len(blocks) - count, len(blocks)))
    parts = name.split(".")
    ancestors = {".".join(parts[:i]) for i in range(len(parts))}
    # registered before the blocks, applied after them
    projections = {
        f"{path}.proj" if path else "proj"
        for path in ancestors
        if isinstance(getattr(encoder.get_submodule(path), "proj", None), nn.Parameter)
    }
    selected, after = [], False
    for param_name, _ in encoder.named_parameters():
        in_list = param_name.startswith(name + ".")
        after = after or in_list
        if param_name in projections or param_name.startswith(chosen) or (after and not in_list):
            selected.append(param_name)
    return selected
