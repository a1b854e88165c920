"""Score every candidate ground truth under ROOT/<item>/ with a no-reference IQA model, for
IQA-weighted GT sampling (SMA/SMP) during SR training: one row per candidate (item, candidate
index, path, score), ready for IQAWeightedSampler. --cache keeps the scores by file content
and model.
"""

from __future__ import annotations

import argparse
import math

from ._common import (
    EXIT_OK,
    add_output_options,
    add_runtime_options,
    echo,
    output_file,
    runtime_arguments,
    write_records,
)

NAME = "score-candidates"
HELP = "score candidate GTs (ROOT/<item>/<image>) with an NR-IQA model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="folder with one sub-folder of candidate images per item")
    parser.add_argument("--iqa", default="clipiqa", help="NR-IQA model name, e.g. pyiqa:musiq")
    add_output_options(parser)
    parser.add_argument(
        "--cache",
        type=output_file,
        help="JSON score cache, keyed by file content and by the model (weights, settings); "
        "a file that is not such a cache is refused, never overwritten",
    )
    add_runtime_options(parser, batch_size=16, unit="images")


def run(args: argparse.Namespace) -> int:
    """Score the candidates and write the table."""
    from ..data import find_candidates, score_candidates

    names, groups = find_candidates(args.root)
    scores = score_candidates(
        groups, args.iqa, cache=args.cache, **runtime_arguments(args, "the scores")
    )
    records = [
        {"item": name, "candidate": k, "path": str(path), "score": float(scores[i, k])}
        for i, (name, group) in enumerate(zip(names, groups, strict=True))
        for k, path in enumerate(group)
        if not math.isnan(float(scores[i, k]))
    ]
    metadata = {"iqa": args.iqa, "random_weights": bool(args.random_weights)}
    write_records(records, args.output, fmt=args.format, metadata=metadata)
    if args.output not in (None, "-"):
        echo(f"scored {len(records)} candidates of {len(names)} items -> {args.output}")
    return EXIT_OK
