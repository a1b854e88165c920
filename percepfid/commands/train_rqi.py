"""Train an antisymmetric RQI head on a frozen backbone: dense ordered pairs of images of the
same scene, labels (q_i - q_j) normalised to [-1, 1], Huber loss, AdamW, aligned random crops
with joint flips, 8:2 split by scene, best head by validation SRCC saved to OUTPUT/best
(Hugging Face format), OUTPUT/last.pt to resume.
"""

from __future__ import annotations

import argparse

from .._vocab import RQI_EMBEDDINGS
from ._common import EXIT_OK, add_training_options, echo, output_folder, training_arguments

NAME = "train-rqi"
HELP = "train an RQI head (relative quality) on a frozen backbone from a rating CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="CSV with one row per image: path, group (scene) id, score")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=output_folder,
        help="output folder for checkpoints (created)",
    )
    parser.add_argument(
        "--embedding",
        choices=RQI_EMBEDDINGS,
        default="cls",
        help="cls: pooled embedding; patch: aligned patch tokens",
    )
    parser.add_argument(
        "--lower-is-better",
        action="store_true",
        help="the score is a DMOS: lower means better (default: higher is better)",
    )
    parser.add_argument("--weight-decay", type=float, default=1e-5, help="AdamW weight decay")
    parser.add_argument(
        "--delta",
        type=float,
        default=1.0,
        help="Huber switch point; labels lie in [-1, 1], so 1.0 is almost plain L2",
    )
    parser.add_argument(
        "--crop-size",
        type=int,
        default=224,
        help="side of the aligned crops; smaller images are upsampled",
    )
    parser.add_argument(
        "--crop-positions",
        type=int,
        default=8,
        help="random crop positions per group, drawn once from --seed, each with and without "
        "a flip, so each crop is embedded once; 0 draws a fresh position every time",
    )
    parser.add_argument(
        "--max-pairs-per-epoch",
        type=int,
        help="cap on the shuffled training pairs per epoch (default: all pairs)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    add_training_options(
        parser,
        columns=dict(
            image=(("--image-column",), "image", "column of image paths"),
            group=(
                ("--group-column", "--scene-column"),
                "scene",
                "column of the group (scene) id; pairs are made within a group and groups never "
                "cross the train/validation split",
            ),
            score=(
                ("--score-column", "--mos-column"),
                "mos",
                "column of the scores (MOS, or DMOS with --lower-is-better)",
            ),
        ),
        batch_size=(8, "image pairs"),
        epochs=(10, "passes over the training pairs"),
        lr=(1e-4, "AdamW learning rate"),
        seed="seed of the head, the split, the shuffles, crops and flips",
        cache_mb="memory for crop embeddings kept across epochs; 0 runs the backbone on every pair",
    )


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid train-rqi``."""
    from ..train import train_rqi

    result = train_rqi(
        args.csv,
        args.output,
        backbone=args.backbone,
        embedding=args.embedding,
        higher_is_better=not args.lower_is_better,
        weight_decay=args.weight_decay,
        delta=args.delta,
        crop_size=args.crop_size,
        crop_positions=args.crop_positions or None,
        max_pairs_per_epoch=args.max_pairs_per_epoch,
        resume=args.resume,
        **training_arguments(args, "the trained head and its statistics"),
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
