"""Score every image of --dist against the image of the same name in --ref, or the pairs of
a --pairs CSV, and write CSV (default) or JSON. Metrics: hlf:<backbone> (hlf is hlf:dinov2),
the HLF cosine fidelity of each image to its reference, or the predicted human fidelity
with --head; rqi, the signed Relative Quality Index of each image against its reference;
nr:<name>, a no-reference IQA model (nr:clipiqa, nr:nr-head, ...) that needs no references.
Under torchrun the pairs are sharded across the processes (gloo on CPU, nccl on CUDA) and
rank 0 writes one output with every row, in the order a single process writes them.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, PercepfidError
from .._version import __version__
from .._vocab import EMBEDDINGS, MATCH_MODES
from ._common import (
    EXIT_OK,
    InputError,
    add_output_options,
    add_runtime_options,
    int_type,
    positive_int,
    resolve_device,
    seed_int,
    warn_random_weights,
    write_records,
)

if TYPE_CHECKING:  # torch and the image readers load only when a command runs
    import torch

    from ._pairs import Pair

logger = logging.getLogger(__name__)


NAME = "score"
HELP = "score images against references (HLF, RQI) or alone (NR-IQA)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("images")
    source.add_argument("--dist", help="folder of images to score (e.g. SR outputs)")
    source.add_argument("--ref", help="folder of references (e.g. ground truths)")
    source.add_argument("--pairs", help="pairs CSV (columns distorted/dist/sr, reference/ref/gt)")
    source.add_argument("--dist-col", help="distorted-image column of --pairs")
    source.add_argument("--ref-col", help="reference column of --pairs")
    source.add_argument(
        "--match",
        choices=MATCH_MODES[1:],
        default="name",
        help="pair folder images by file name, or by name without extension",
    )
    source.add_argument("--recursive", action="store_true", help="include sub-folders")
    source.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="leave out images without a reference instead of failing",
    )
    model = parser.add_argument_group("metric")
    model.add_argument("--metric", required=True, help="hlf:<backbone>, rqi or nr:<name>")
    model.add_argument("--head", help="HLF calibration head: a save_pretrained folder or Hub id")
    model.add_argument("--embedding", choices=EMBEDDINGS, default="cls", help="HLF embedding")
    model.add_argument("--image-size", type=positive_int, help="override the backbone input size")
    model.add_argument("--weights", help="NR model weights (folder or Hub id), e.g. for nr-head")
    model.add_argument("--seed", type=seed_int, default=0, help="seed for random weights")
    run_group = parser.add_argument_group("run")
    add_runtime_options(run_group, batch_size=8, unit="images")
    run_group.add_argument("--workers", type=int_type(0), default=0, help="image reader processes")
    add_output_options(parser.add_argument_group("output"))


# --------------------------------------------------------------------------- metrics


@dataclass
class Scorer:
    """A metric ready to score batches: ``function(distorted, reference) -> (B,)``."""

    name: str
    higher_is_better: bool
    function: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _parse_metric(metric: str) -> tuple[str, str | None]:
    family, _, name = metric.partition(":")
    family = family.strip().lower()
    if family == "hlf":
        return "hlf", name or "dinov2"
    if family == "rqi" and name:
        raise ArgumentError(f"--metric rqi takes no name; got {metric!r}")
    if family == "nr" and not name:
        raise ArgumentError(f"--metric nr needs a model name, e.g. nr:clipiqa; got {metric!r}")
    if family not in ("rqi", "nr"):
        raise ArgumentError(
            f"--metric must be 'hlf:<backbone>', 'rqi' or 'nr:<name>'; got {metric!r}"
        )
    return family, name or None


def build_scorer(
    args: argparse.Namespace, family: str, name: str | None, device: torch.device
) -> Scorer:
    """Build the metric of ``--metric`` (parsed by :func:`_parse_metric`) on ``device``."""
    pretrained = not args.random_weights
    if family == "hlf":
        from ..losses import HLFLoss

        options = {"head": args.head, "embedding": args.embedding, "image_size": args.image_size}
        loss = HLFLoss(name, pretrained=pretrained, **options).to(device).eval()
        return Scorer(f"hlf:{name}", True, loss.fidelity)
    if args.head is not None:
        raise ArgumentError("--head applies to hlf metrics only")
    if family == "rqi":
        from ..losses import RQILoss

        rqi = RQILoss(pretrained=pretrained).to(device).eval()
        return Scorer("rqi", True, rqi.score)
    from ..iqa import create_nriqa

    given = {"weights": args.weights, "image_size": args.image_size}
    kwargs = {key: value for key, value in given.items() if value is not None}
    model = create_nriqa(name, pretrained=pretrained, **kwargs).to(device).eval()
    higher = bool(getattr(model, "higher_is_better", True))
    return Scorer(f"nr:{name}", higher, lambda dist, ref: model(dist))


# --------------------------------------------------------------------------- distribution


@dataclass
class _World:
    rank: int = 0
    size: int = 1
    local_rank: int | None = None
    created: bool = False


def _world_from_env() -> _World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return _World()
    local = os.environ.get("LOCAL_RANK")
    return _World(int(os.environ.get("RANK", "0")), size, None if local is None else int(local))


def _init_distributed(world: _World, device: torch.device) -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    world.created = True
    logger.info("rank %d/%d: process group initialised (%s)", world.rank, world.size, backend)


def _gather(
    world: _World, rows: list[tuple[int, float]], failure: BaseException | None
) -> list[tuple[int, float]]:
    """All ranks' rows; re-raises a failure of any rank on every rank."""
    if world.size == 1:
        return rows
    import torch.distributed as dist

    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, (rows, message))
    if failure is not None:
        raise failure
    for rank, (_, peer_message) in enumerate(gathered):
        if peer_message is not None:
            raise InputError(f"rank {rank} failed: {peer_message}")
    return [row for part, _ in gathered for row in part]


# --------------------------------------------------------------------------- scoring


def _collate(pairs: list[Pair]):  # noqa: ANN202 - runs in the loader's workers
    """Read a batch of pairs: (pair indices, distorted images, reference images or None)."""
    import torch

    from ..data import read_image

    distorted = torch.stack([read_image(pair.distorted) for pair in pairs])
    references = None
    if pairs[0].reference is not None:
        references = torch.stack([read_image(pair.reference) for pair in pairs])
    return [pair.index for pair in pairs], distorted, references


def score_pairs(
    scorer: Scorer,
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    progress: bool = True,
) -> list[tuple[int, float]]:
    """Score pairs in batches of equal image size; return ``(pair.index, score)`` rows.

    Raises:
        ImageReadError: an image cannot be read.
    """
    import torch
    from tqdm.auto import tqdm

    from ..data import batches_by_size

    batches = batches_by_size([(p.distorted_size, p.reference_size) for p in pairs], batch_size)
    loader = torch.utils.data.DataLoader(
        list(pairs), batch_sampler=batches, collate_fn=_collate, num_workers=workers
    )
    rows: list[tuple[int, float]] = []
    with (
        tqdm(total=len(pairs), desc="score", unit="img", disable=not progress) as bar,
        torch.inference_mode(),
    ):
        for indices, distorted, reference in loader:
            distorted = distorted.to(device, non_blocking=True)
            if reference is not None:
                reference = reference.to(device, non_blocking=True)
            values = scorer.function(distorted, reference).float().reshape(-1).cpu().tolist()
            rows += zip(indices, values, strict=True)
            bar.update(len(indices))
    return rows


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid score``."""
    import torch

    from ._pairs import find_pairs

    family, name = _parse_metric(args.metric)
    world = _world_from_env()
    device = resolve_device(args.device, world.local_rank)
    # Every rank lists and checks all pairs (headers only), so input errors are the same
    # everywhere and no rank waits for a peer that already failed.
    pairs = find_pairs(args, needs_reference=family != "nr")
    warning = warn_random_weights(args, "these scores", show=world.rank == 0)
    if world.size > 1:
        _init_distributed(world, device)
    try:
        failure: BaseException | None = None
        rows: list[tuple[int, float]] = []
        try:
            torch.manual_seed(args.seed)  # identical random weights on every rank
            scorer = build_scorer(args, family, name, device)
            rows = score_pairs(
                scorer,
                pairs[world.rank :: world.size],
                batch_size=args.batch_size,
                device=device,
                workers=args.workers,
                progress=not args.no_progress and world.rank == 0,
            )
        except PercepfidError as error:
            if world.size == 1:
                raise
            failure = error  # reported to the peers so that none waits forever
        scores = dict(_gather(world, rows, failure))
    finally:
        if world.created:
            torch.distributed.destroy_process_group()
    if world.rank != 0:
        return EXIT_OK
    records = [
        {
            "distorted": str(pair.distorted),
            "reference": str(pair.reference or ""),
            "score": scores[pair.index],
        }
        for pair in pairs
    ]
    metadata = {
        "metric": scorer.name,
        "higher_is_better": scorer.higher_is_better,
        "random_weights": bool(args.random_weights),
        "head": args.head,
        "embedding": args.embedding if family == "hlf" else None,
        "count": len(records),
        "processes": world.size,
        "percepfid_version": __version__,
    }
    if args.random_weights:
        metadata["warning"] = warning
    write_records(records, args.output, fmt=args.format, metadata=metadata)
    return EXIT_OK
