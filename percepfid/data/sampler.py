"""IQA-weighted choice among several candidate ground truths per training input (SMA / SMP),
Zhang et al., arXiv 2504.18524."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Sampler

from .._checks import (
    MAX_SEED,
    check_choice,
    check_int,
    check_positive,
    check_positive_int,
    check_seed,
)
from .._errors import ArgumentError, DTypeError, EmptyBatchError, NonFiniteError, ShapeError

SAMPLER_MODES = ("softmax", "argmax", "uniform")


def _as_matrix(value: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value).detach().cpu()
        if (
            not isinstance(value, torch.Tensor)
            and tensor.dtype == torch.float32
            and str(getattr(value, "dtype", "")) != "float32"
        ):
            # Python floats are float64: torch's float32 default would turn 1e300 into inf.
            tensor = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise DTypeError(
            f"{name} must be a 2-D array-like; got {type(value).__name__} ({error})"
        ) from None
    if tensor.ndim != 2:
        raise ShapeError(
            f"{name} must have shape (items, candidates); got {tensor.ndim} dims {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise EmptyBatchError(
            f"{name} must have at least one item and one candidate; got {tuple(tensor.shape)}"
        )
    if dtype == torch.bool:
        if tensor.dtype != torch.bool:
            raise DTypeError(f"{name} must be a boolean mask; got dtype {tensor.dtype}")
        return tensor
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise DTypeError(f"{name} must hold numbers; got dtype {tensor.dtype}")
    return tensor.to(dtype)


def candidate_probabilities(
    scores: Any,
    *,
    mode: str = "softmax",
    temperature: float = 10.0,
    candidates: Any = None,
    higher_is_better: bool = True,
) -> torch.Tensor:
    """The probability of drawing each candidate of each item: ``(items, candidates)``
    float64, each row summing to 1, ineligible entries 0.

    Args:
        scores: ``(items, candidates)`` quality scores; ``NaN`` marks an absent candidate.
        mode: ``'softmax'`` (``softmax(score / temperature)``), ``'argmax'`` (the best
            eligible candidate, ties to the lowest index) or ``'uniform'``.
        temperature: softmax temperature on the scores' own scale (the paper uses 10 on
            MUSIQ's 0-100 scale; use about 0.1 for scores in ``[0, 1]``).
        candidates: optional boolean mask ``(items, candidates)``: ``True`` = eligible
            (all: SMA; human positives: SMP).
        higher_is_better: ``False`` for a score where lower means better (it is negated).

    Raises:
        ArgumentError: an item has no eligible candidate; bad ``mode``/``temperature``.
        NonFiniteError: an eligible score is infinite.
        ShapeError, DTypeError: malformed ``scores`` or ``candidates``.
    """
    check_choice(mode, "mode", SAMPLER_MODES)
    check_positive(temperature, "temperature")
    values = _as_matrix(scores, "scores", torch.float64)
    eligible = ~torch.isnan(values)
    if candidates is not None:
        mask = _as_matrix(candidates, "candidates", torch.bool)
        if mask.shape != values.shape:
            raise ShapeError(
                f"candidates must have the shape of scores {tuple(values.shape)}; got {tuple(mask.shape)}"
            )
        eligible &= mask
    empty = (~eligible.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ArgumentError(
            f"items {empty[:10].tolist()} have no eligible candidate (all NaN or masked out); "
            "drop those items or unmask at least one candidate each"
        )
    if torch.isinf(values[eligible]).any():
        raise NonFiniteError("scores holds infinite values for eligible candidates")
    if not higher_is_better:
        values = -values
    if mode == "uniform":
        probabilities = eligible.to(torch.float64)
    elif mode == "argmax":
        best = values.masked_fill(~eligible, -math.inf).argmax(dim=1)  # ties: lowest index
        probabilities = F.one_hot(best, values.shape[1]).to(torch.float64)
    else:
        logits = (values / temperature).masked_fill(~eligible, -math.inf)
        if torch.isinf(logits[eligible]).any():
            raise ArgumentError(
                f"temperature={temperature!r} is too small for the scores' scale: score / "
                "temperature overflows; use a temperature on the scores' own scale"
            )
        probabilities = torch.softmax(logits, dim=1)
    return probabilities / probabilities.sum(dim=1, keepdim=True)


class IQAWeightedSampler(Sampler[tuple[int, int]]):
    """Yield ``(item, candidate)`` pairs, the candidate drawn by its quality score.

    Each epoch visits the items in a shuffled order (``num_samples`` draws in all,
    repeating the items when it exceeds their number) and draws a candidate for each visit
    from :func:`candidate_probabilities`. The draw is a pure function of ``(seed, epoch)``:
    every rank computes the same epoch and keeps its own slice, like
    ``torch.utils.data.DistributedSampler``, so ranks are disjoint and equally long. Call
    :meth:`set_epoch` at the start of every epoch.

    The dataset receives the pair as its index: ``dataset[(item, candidate)]``.

    Args:
        scores, mode, temperature, candidates, higher_is_better: as for
            :func:`candidate_probabilities` (``'softmax'``: SMA/SMP; ``'argmax'``,
            ``'uniform'``: the Rand/UPos baselines).
        num_samples: draws per epoch over all ranks (default: the number of items).
        seed: base seed, shared by all ranks.
        shuffle: visit the items in a random order (``False``: ``0, 1, 2, ...``).
        num_replicas: number of ranks (default: ``torch.distributed`` world size, or 1).
        rank: this rank (default: ``torch.distributed`` rank, or 0).
        drop_last: drop the tail that does not divide evenly among the ranks instead of
            padding it by wrapping around.

    Example:
        >>> scores = torch.tensor([[60.0, 70.0, float("nan")], [50.0, 40.0, 45.0]])
        >>> sampler = IQAWeightedSampler(scores, temperature=10.0, seed=0)
        >>> sampler.set_epoch(0)
        >>> sorted(item for item, _ in sampler)
        [0, 1]
    """

    def __init__(
        self,
        scores: Any,
        mode: str = "softmax",
        temperature: float = 10.0,
        candidates: Any = None,
        num_samples: int | None = None,
        seed: int = 0,
        *,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        higher_is_better: bool = True,
    ) -> None:
        self.probabilities = candidate_probabilities(
            scores,
            mode=mode,
            temperature=temperature,
            candidates=candidates,
            higher_is_better=higher_is_better,
        )
        self.mode = mode
        self.temperature = float(temperature)
        self.num_items = self.probabilities.shape[0]
        self.num_samples = num_samples = check_positive_int(
            self.num_items if num_samples is None else num_samples, "num_samples"
        )
        self.seed = check_seed(seed)
        self.shuffle = bool(shuffle)
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        self.num_replicas = num_replicas = check_int(num_replicas, "num_replicas", minimum=1)
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        self.rank = check_int(rank, "rank", minimum=0, maximum=num_replicas - 1)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.per_rank = (
            num_samples // num_replicas if self.drop_last else math.ceil(num_samples / num_replicas)
        )
        if self.per_rank == 0:
            raise ArgumentError(
                f"drop_last=True with num_samples={num_samples} < num_replicas={num_replicas} "
                "leaves every rank empty"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw :meth:`__iter__` yields (call it every epoch)."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def epoch_draw(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole epoch over all ranks, before sharding: ``(items, candidates)`` int64.

        A pure function of ``(seed, epoch)`` and the sampler's settings.
        """
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", minimum=0)
        # seed + epoch wraps around 2**64, the range manual_seed accepts
        generator = torch.Generator().manual_seed((self.seed + epoch) % (MAX_SEED + 1))
        total = self.per_rank * self.num_replicas
        repeats = math.ceil(self.num_samples / self.num_items)
        if self.shuffle:
            order = [torch.randperm(self.num_items, generator=generator) for _ in range(repeats)]
        else:
            order = [torch.arange(self.num_items)] * repeats
        items = torch.cat(order)[: self.num_samples]
        # pad by wrapping around (or trim with drop_last) so every rank gets the same count
        items = items.repeat(math.ceil(total / len(items)))[:total]
        if self.mode == "argmax":
            chosen = self.probabilities[items].argmax(dim=1)
        else:
            chosen = torch.multinomial(self.probabilities[items], 1, generator=generator).flatten()
        return items, chosen

    def __iter__(self) -> Iterator[tuple[int, int]]:
        items, chosen = self.epoch_draw()
        mine = slice(self.rank, len(items), self.num_replicas)
        yield from zip(items[mine].tolist(), chosen[mine].tolist(), strict=True)

    def __len__(self) -> int:
        return self.per_rank
