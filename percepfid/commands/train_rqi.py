"""``percepfid train-rqi``: train an RQI head on a frozen backbone from a rating CSV."""

from __future__ import annotations

import argparse

from .._vocab import RQI_EMBEDDINGS
from ._common import (
    EXIT_OK,
    add_runtime_options,
    echo,
    output_folder,
    random_weights_warning,
    resolve_device,
    warn,
)

# how error messages name the option that sets each CSV column
FLAGS = {"image": "--image-column", "score": "--score-column", "group": "--group-column"}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train-rqi`` subcommand."""
    parser = subparsers.add_parser(
        "train-rqi",
        help="train an RQI head (relative quality) on a frozen backbone from a rating CSV",
        description=(
            "Train an antisymmetric RQI head on a frozen backbone: dense ordered pairs of images "
            "of the same scene, labels (q_i - q_j) normalised to [-1, 1], Huber loss, AdamW, "
            "aligned random crops with joint flips, 8:2 split by scene, best head by validation "
            "SRCC saved to OUTPUT/best (Hugging Face format), OUTPUT/last.pt to resume."
        ),
    )
    parser.add_argument("csv", help="CSV with one row per image: path, group (scene) id, score")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=output_folder,
        help="output folder for checkpoints (created)",
    )
    parser.add_argument(
        "--backbone", default="dinov2", help="registered backbone name (default: %(default)s)"
    )
    parser.add_argument(
        "--embedding",
        choices=RQI_EMBEDDINGS,
        default="cls",
        help="cls: pooled embedding; patch: aligned patch tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="override the backbone input size (default: the backbone's own)",
    )
    parser.add_argument(
        "--image-column", default="image", help="column of image paths (default: %(default)s)"
    )
    parser.add_argument(
        "--group-column",
        "--scene-column",
        default="scene",
        help="column of the group (scene) id; pairs are made within a group and groups never "
        "cross the train/validation split (default: %(default)s)",
    )
    parser.add_argument(
        "--score-column",
        "--mos-column",
        default="mos",
        help="column of the scores (MOS, or DMOS with --lower-is-better) (default: %(default)s)",
    )
    parser.add_argument(
        "--root", default=None, help="folder image paths are relative to (default: the CSV's)"
    )
    parser.add_argument(
        "--lower-is-better",
        action="store_true",
        help="the score is a DMOS: lower means better (default: higher is better)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="passes over the training pairs (default: %(default)s)",
    )
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="AdamW learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=1e-5, help="AdamW weight decay (default: %(default)s)"
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=1.0,
        help="Huber switch point; labels lie in [-1, 1], so 1.0 is almost plain L2 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--crop-size",
        type=int,
        default=224,
        help="side of the aligned crops; smaller images are upsampled (default: %(default)s)",
    )
    parser.add_argument(
        "--crop-positions",
        type=int,
        default=8,
        help="random crop positions per group, drawn once from --seed, each with and without "
        "a flip, so each crop is embedded once; 0 draws a fresh position every time "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of groups held out for validation (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pairs-per-epoch",
        type=int,
        default=None,
        help="cap on the shuffled training pairs per epoch (default: all pairs)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the head, the split, the shuffles, crops and flips (default: %(default)s)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/last.pt (default: start afresh)",
    )
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=1024.0,
        help="memory for crop embeddings kept across epochs; 0 runs the backbone on every "
        "pair (default: %(default)s)",
    )
    add_runtime_options(parser, batch_size=8, unit="image pairs")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid train-rqi``."""
    from ..train import RatingColumns, train_rqi

    if args.random_weights:
        warn(random_weights_warning("the trained head and its statistics"))
    result = train_rqi(
        args.csv,
        args.output,
        backbone=args.backbone,
        embedding=args.embedding,
        pretrained=not args.random_weights,
        image_size=args.image_size,
        columns=RatingColumns(
            image=args.image_column,
            score=args.score_column,
            group=args.group_column,
            root=args.root,
            flags=FLAGS,
        ),
        higher_is_better=not args.lower_is_better,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        delta=args.delta,
        crop_size=args.crop_size,
        crop_positions=args.crop_positions or None,
        cache_mb=args.cache_mb,
        val_fraction=args.val_fraction,
        max_pairs_per_epoch=args.max_pairs_per_epoch,
        seed=args.seed,
        resume=args.resume,
        device=resolve_device(args.device),
        progress=not args.no_progress,
    )
    for row in result.history:
        echo(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.5f}, val SRCC {row['val_srcc']:.4f}"
        )
    echo(
        f"best val SRCC {result.best_srcc:.4f} (epoch {result.best_epoch}); head saved to {result.output_dir / 'best'}"
    )
    if args.random_weights:
        echo("note: random backbone weights (--random-weights): these numbers mean nothing")
    return EXIT_OK
