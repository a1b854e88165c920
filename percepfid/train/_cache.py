"""Keep the trainers from re-running a frozen backbone every epoch: a bounded
:class:`EmbeddingCache`, and :class:`SplitEncoder` (a frozen prefix run once per input)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import nn


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.nbytes
    return sum(_nbytes(v) for v in value) if isinstance(value, (tuple, list)) else 0


class EmbeddingCache:
    """A least-recently-used map from hashable keys to tensors (or tuples of tensors),
    holding at most ``max_mb`` megabytes (0 disables it); ``hits`` and ``misses`` count the
    lookups answered from it and computed."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(float(max_mb) * 2**20)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._bytes = self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def fetch(
        self, keys: Sequence[Hashable], compute: Callable[[list[Hashable]], Sequence[Any]]
    ) -> list[Any]:
        """The values of ``keys``; the missing ones (each distinct key once) come from one
        call ``compute(missing_keys)``, which returns their values in that order (a value
        alone over the bound is not kept)."""
        unique = list(dict.fromkeys(keys))
        found = {key: self._items[key] for key in unique if key in self._items}
        missing = [key for key in unique if key not in found]
        for key in found:
            self._items.move_to_end(key)
        self.hits += len(found)
        self.misses += len(missing)
        for key, value in zip(missing, compute(missing) if missing else (), strict=True):
            found[key] = value
            size = _nbytes(value)
            if size <= self.max_bytes:
                self._items[key] = value
                self._bytes += size
            while self._bytes > self.max_bytes:
                self._bytes -= _nbytes(self._items.popitem(last=False)[1])
        return [found[key] for key in keys]


class SplitUnsupported(Exception):
    """The tower cannot be run in two parts (the caller runs it whole)."""


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


class SplitEncoder:
    """Run ``encode`` (images -> :class:`~percepfid.backbones.Embeddings`, through
    ``encoder``) as a frozen prefix, computed once per input, and the last ``tuned_blocks``
    blocks, checked against the whole tower on ``images``. It works on towers whose blocks
    are called one after the other with the activation as their only tensor argument (timm
    and open_clip vision transformers); on others it raises :class:`SplitUnsupported`.
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], Any],
        encoder: nn.Module,
        tuned_blocks: int,
        images: torch.Tensor,
    ):
        from ..backbones import block_list

        try:
            _, blocks = block_list(encoder)
        except Exception as error:  # noqa: BLE001 - any failure means: run it whole
            raise SplitUnsupported(str(error)) from error
        if not 1 <= tuned_blocks <= len(blocks):
            raise SplitUnsupported(f"{tuned_blocks} tuned blocks of {len(blocks)}")
        self.encode = encode
        self.blocks = list(blocks)
        self.first = len(blocks) - tuned_blocks
        with torch.no_grad():
            whole = encode(images)
            try:
                split = self.suffix(self.prefix(images), torch.zeros_like(images))
            except Exception as error:  # noqa: BLE001 - any failure means: run it whole
                raise SplitUnsupported(f"{type(error).__name__}: {error}") from error
        for a, b in zip(whole, split, strict=True):
            same = a is None if b is None else a is not None and a.shape == b.shape
            if not same or (a is not None and not torch.allclose(a, b, rtol=1e-4, atol=1e-5)):
                raise SplitUnsupported("the split run gives other values than the whole tower")

    @torch.no_grad()
    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The input of the first tuned block: ``(rows, ...)``, ``rows`` being the encoder's
        batch (``B``, or ``B * tiles``)."""
        captured = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:  # noqa: ARG001
            if (
                len(args) != 1
                or not isinstance(args[0], torch.Tensor)
                or any(isinstance(v, torch.Tensor) for v in kwargs.values())
            ):
                raise SplitUnsupported("the first tuned block takes more than one tensor")
            captured.append(args[0].detach())
            raise _Stop

        handle = self.blocks[self.first].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            self.encode(images)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise SplitUnsupported("the encoder never called its first tuned block")
        return captured[0]

    def suffix(self, activation: torch.Tensor, images: torch.Tensor) -> Any:
        """The output of ``encode`` from :meth:`prefix`'s ``activation`` on (the frozen blocks
        are skipped); ``images`` gives only the shape, as the stem's output is replaced."""

        def substitute(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:  # noqa: ARG001
            return (activation,), kwargs

        handle = self.blocks[self.first].register_forward_pre_hook(substitute, with_kwargs=True)
        for block in self.blocks[: self.first]:
            block.forward = lambda x, *args, **kwargs: x  # noqa: ARG005 - block signature
        try:
            return self.encode(images)
        finally:
            handle.remove()
            for block in self.blocks[: self.first]:
                del block.forward
