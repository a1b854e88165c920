"""Fit an HLF calibration head (sigmoid(scale * cos + bias), or a small MLP) to human fidelity
scores, optionally fine-tuning the backbone's last blocks with it. RATINGS is a CSV with
columns sr, gt, score and group (source image); groups never cross the train/validation split.
"""

from __future__ import annotations

import argparse
import json

from .._vocab import EMBEDDINGS
from ._common import (
    EXIT_OK,
    add_training_options,
    echo,
    format_table,
    output_folder,
    training_arguments,
    warn,
)

NAME = "fit-hlf"
HELP = "fit an HLF calibration head on human fidelity ratings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ratings", help="CSV of human ratings")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="cls", help="HLF embedding")
    parser.add_argument(
        "--head",
        choices=("calibration", "mlp"),
        default="calibration",
        help="calibration: sigmoid(scale * cos + bias); mlp: MLP on the cosine and embedding "
        "differences",
    )
    parser.add_argument("--hidden", type=int, default=16, help="MLP hidden width")
    parser.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=0,
        metavar="N",
        help="fine-tune the backbone's last N blocks with the head (default: 0, frozen)",
    )
    parser.add_argument("--backbone-lr", type=float, default=1e-5, help="lr of unfrozen blocks")
    parser.add_argument(
        "--score-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="human scores mapped to 0 and 1 (default: the training min and max)",
    )
    parser.add_argument(
        "--output-dir", "-o", type=output_folder, help="save the head here (save_pretrained)"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the head to the Hub")
    parser.add_argument("--public", action="store_true", help="make the pushed repo public")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_training_options(
        parser,
        columns=dict(
            image=(("--sr-column", "--sr-col"), "sr", "column of SR image paths"),
            reference=(("--gt-column", "--gt-col"), "gt", "column of GT image paths"),
            score=(("--score-column", "--score-col"), "score", "human score column"),
            group=(
                ("--group-column", "--group-col"),
                "group",
                "source-image column; absent: the GT",
            ),
        ),
        batch_size=(16, "pairs"),
        epochs=(5, "fine-tuning epochs"),
        lr=(1e-3, "head learning rate when fine-tuning"),
        seed="split seed",
        cache_mb="memory for embeddings (or frozen-block activations when fine-tuning) kept "
        "across epochs; 0 recomputes them every time",
    )


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid fit-hlf``."""
    from ..train import fit_hlf_head

    if args.output_dir is None and args.push_to_hub is None:
        warn("neither --output-dir nor --push-to-hub given: the fitted head is not saved")
    result = fit_hlf_head(
        args.ratings,
        args.backbone,
        embedding=args.embedding,
        head=args.head,
        hidden=args.hidden,
        unfreeze_blocks=args.unfreeze_blocks,
        backbone_lr=args.backbone_lr,
        score_range=None if args.score_range is None else tuple(args.score_range),
        output_dir=args.output_dir,
        push_to_hub=args.push_to_hub,
        private=not args.public,
        **training_arguments(args, "the fitted head and its statistics"),
    )
    report = result.report() | {"random_weights": bool(args.random_weights)}
    if args.json:
        echo(json.dumps(report, indent=2))
        return EXIT_OK
    keys = ("n", "srcc_cosine", "plcc_cosine", "srcc_head", "plcc_head")
    splits = (("train", result.train), ("val", result.val))
    rows = [[split, *(stats[key] for key in keys)] for split, stats in splits if stats]
    echo(format_table(["split", "n", "srcc_cos", "plcc_cos", "srcc_head", "plcc_head"], rows))
    config = report["head_config"]
    if "scale" in config:
        echo(f"head: sigmoid({config['scale']:.4g} * cos + {config['bias']:.4g})")
    else:
        echo(f"head: {config['class']}(hidden={config.get('hidden')})")
    if result.unfreeze_blocks:
        line = (
            f"fine-tuned the last {result.unfreeze_blocks} backbone block(s) for "
            f"{len(result.history) - 1} epoch(s); kept epoch {result.best_epoch}"
        )
        if result.best_epoch == 0:
            line += (
                ": fine-tuning did not beat the frozen fit on validation SRCC + PLCC, so the "
                "saved head and blocks are the frozen fit's"
            )
        echo(line)
    if result.output_dir:
        echo(f"saved to {result.output_dir}")
    if result.repo_id:
        echo(f"pushed to {result.repo_id}")
    return EXIT_OK
