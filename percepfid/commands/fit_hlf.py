"""``percepfid fit-hlf``: fit an HLF calibration head on a CSV of human fidelity ratings,
optionally fine-tuning the backbone's last blocks with it."""

from __future__ import annotations

import argparse
import json

from .._vocab import EMBEDDINGS
from ._common import (
    EXIT_OK,
    add_runtime_options,
    echo,
    format_table,
    output_folder,
    random_weights_warning,
    resolve_device,
    warn,
)

RANDOM_WEIGHTS_WARNING = random_weights_warning("the fitted head and its statistics")
# how error messages name the option that sets each CSV column
FLAGS = {
    "image": "--sr-column",
    "reference": "--gt-column",
    "score": "--score-column",
    "group": "--group-column",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``fit-hlf`` subcommand."""
    parser = subparsers.add_parser(
        "fit-hlf",
        help="fit an HLF calibration head on human fidelity ratings",
        description=(
            "Fit an HLF calibration head (sigmoid(scale * cos + bias), or a small MLP) to "
            "human fidelity scores, optionally fine-tuning the backbone's last blocks with "
            "it. RATINGS is a CSV with columns sr, gt, score and group (source image); "
            "groups never cross the train/validation split."
        ),
    )
    parser.add_argument("ratings", help="CSV of human ratings")
    parser.add_argument("--backbone", default="dinov2", help="HLF backbone (default: dinov2)")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="cls", help="default: cls")
    parser.add_argument("--image-size", type=int, help="override the backbone input size")
    parser.add_argument(
        "--head",
        choices=("calibration", "mlp"),
        default="calibration",
        help="calibration: sigmoid(scale * cos + bias); mlp: MLP on the cosine and embedding "
        "differences (default: calibration)",
    )
    parser.add_argument("--hidden", type=int, default=16, help="MLP hidden width (default: 16)")
    parser.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=0,
        metavar="N",
        help="fine-tune the backbone's last N blocks with the head (default: 0, frozen)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default: 5)")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="head learning rate when fine-tuning (default: 1e-3)"
    )
    parser.add_argument(
        "--backbone-lr",
        type=float,
        default=1e-5,
        help="learning rate of the unfrozen blocks (default: 1e-5)",
    )
    parser.add_argument(
        "--sr-column", "--sr-col", default="sr", help="column of SR image paths (default: sr)"
    )
    parser.add_argument(
        "--gt-column", "--gt-col", default="gt", help="column of GT image paths (default: gt)"
    )
    parser.add_argument(
        "--score-column", "--score-col", default="score", help="human score column (default: score)"
    )
    parser.add_argument(
        "--group-column",
        "--group-col",
        default="group",
        help="source-image column (default: group; absent: the GT)",
    )
    parser.add_argument("--root", help="folder image paths are relative to (default: the CSV's)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of groups held out (default: 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
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
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=1024.0,
        help="memory for embeddings (or frozen-block activations when fine-tuning) kept "
        "across epochs; 0 recomputes them every time (default: 1024)",
    )
    add_runtime_options(parser, batch_size=16, unit="pairs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid fit-hlf``."""
    from ..train import RatingColumns, fit_hlf_head

    if args.output_dir is None and args.push_to_hub is None:
        warn("neither --output-dir nor --push-to-hub given: the fitted head is not saved")
    if args.random_weights:
        warn(RANDOM_WEIGHTS_WARNING)
    result = fit_hlf_head(
        args.ratings,
        args.backbone,
        pretrained=not args.random_weights,
        embedding=args.embedding,
        image_size=args.image_size,
        head=args.head,
        hidden=args.hidden,
        unfreeze_blocks=args.unfreeze_blocks,
        epochs=args.epochs,
        lr=args.lr,
        backbone_lr=args.backbone_lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        score_range=None if args.score_range is None else tuple(args.score_range),
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        output_dir=args.output_dir,
        push_to_hub=args.push_to_hub,
        private=not args.public,
        progress=not args.no_progress,
        cache_mb=args.cache_mb,
        columns=RatingColumns(
            image=args.sr_column,
            reference=args.gt_column,
            score=args.score_column,
            group=args.group_column,
            root=args.root,
            flags=FLAGS,
        ),
    )
    report = result.report() | {"random_weights": bool(args.random_weights)}
    if args.json:
        echo(json.dumps(report, indent=2))
        return EXIT_OK
    rows = []
    for split, stats in (("train", result.train), ("val", result.val)):
        if stats:
            rows.append(
                [
                    split,
                    stats["n"],
                    stats["srcc_cosine"],
                    stats["plcc_cosine"],
                    stats["srcc_head"],
                    stats["plcc_head"],
                ]
            )
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
