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
    parser.add_argument("csv", help="CSV with one row per image: path, scene id, score")
    parser.add_argument(
        "--output", "-o", required=True, type=output_folder, help="output folder for checkpoints"
    )
    parser.add_argument(
        "--backbone", default="dinov2", help="registered backbone name (default dinov2)"
    )
    parser.add_argument("--embedding", choices=RQI_EMBEDDINGS, default="cls")
    parser.add_argument(
        "--image-size", type=int, default=None, help="override the backbone input size"
    )
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--scene-column", default="scene")
    parser.add_argument("--mos-column", default="mos")
    parser.add_argument(
        "--root", default=None, help="folder image paths are relative to (default: the CSV's)"
    )
    parser.add_argument(
        "--lower-is-better", action="store_true", help="the score is a DMOS (lower means better)"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--delta", type=float, default=1.0, help="Huber delta (labels in [-1, 1])")
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--max-pairs-per-epoch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    add_runtime_options(parser, batch_size=8, unit="image pairs")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of ``percepfid train-rqi``."""
    from ..train import train_rqi

    if args.random_weights:
        warn(random_weights_warning("the trained head and its statistics"))
    result = train_rqi(
        args.csv,
        args.output,
        backbone=args.backbone,
        embedding=args.embedding,
        pretrained=not args.random_weights,
        image_size=args.image_size,
        image_column=args.image_column,
        scene_column=args.scene_column,
        mos_column=args.mos_column,
        root=args.root,
        higher_is_better=not args.lower_is_better,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        delta=args.delta,
        crop_size=args.crop_size,
        val_fraction=args.val_fraction,
        max_pairs_per_epoch=args.max_pairs_per_epoch,
        seed=args.seed,
        resume=args.resume,
        device=resolve_device(args.device),
        progress_bar=not args.no_progress,
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
