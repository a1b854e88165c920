"""Files in, tensors and rows out: image reading, folder listing, size batching, CSV tables."""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch loads on first use: the command line reads tables without it
    import torch

from .._errors import ArgumentError, EmptyBatchError

logger = logging.getLogger(__name__)

#: File suffixes treated as images when a folder is listed (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES_WITH_CHANNELS = (2, 4, 6)  # RGB, grey + alpha, RGBA
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageReadError(ArgumentError):
    """An image file is missing, corrupt, or stored in a form percepfid does not read."""


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor ``(3, H, W)`` in ``[0, 1]``, at its true
    scale: an 8-bit value ``v`` reads as ``v / 255``, a 16-bit one as ``v / 65535``, a float
    one as it is.

    Read: 8-bit images of every mode Pillow opens; 16-bit greyscale PNG, TIFF and PGM;
    16-bit colour PNG at full precision (8-bit, logged once, where torchvision has no PNG
    decoder); 16-bit colour TIFF at 8-bit precision; float greyscale TIFF in ``[0, 1]``.
    Grey is repeated on the three channels; alpha is dropped (not composited); the EXIF
    orientation is not applied; only the first frame is read.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt, a float
            image with NaN or values outside ``[0, 1]``, or in a form not listed above
            (32-bit integer, multi-channel float, ...).
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise ImageReadError(
            f"image not found: {file}" if not file.exists() else f"image {file} is not a file"
        )
    array = _read_pil(file)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _is_16bit_colour_png(file: Path) -> bool:
    """Whether the file's PNG header says 16 bits per sample with more than one channel."""
    with file.open("rb") as handle:
        header = handle.read(26)
    return (
        len(header) == 26
        and header[:8] == _PNG_SIGNATURE
        and header[12:16] == b"IHDR"
        and header[24] == 16
        and header[25] in _PNG_COLOUR_TYPES_WITH_CHANNELS
    )


def _read_pil(file: Path) -> np.ndarray:
    """The image as float32 ``(H, W)`` or ``(H, W, 3)`` in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()  # decodes everything: a corrupt file fails here
            if image.format == "PNG" and _is_16bit_colour_png(file):
                # Pillow has 8 bits of these; torchvision's libpng reads all 16, and only
                # after Pillow has checked the file (libpng crashes on some corrupt files)
                precise = _read_png16(file)
                if precise is not None:
                    return precise
            return _pil_to_array(image, file)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read image {file}: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # truncated or corrupt
        raise ImageReadError(f"cannot read image {file}: {type(error).__name__}: {error}") from None


def _pil_to_array(image, file: Path) -> np.ndarray:  # noqa: ANN001 - a PIL image
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image).astype(np.float32) / np.float32(65535)
    if mode == "I":  # 32-bit integers: read when the file declares 16-bit samples
        bits = None
        if image.format in ("PNG", "PPM"):
            bits = 16  # Pillow uses mode I for these formats only for 16-bit samples
        elif image.format == "TIFF":
            declared = image.tag_v2.get(258)
            bits = int(declared[0]) if isinstance(declared, tuple) and declared else declared
        values = np.asarray(image)
        if bits != 16:
            raise ImageReadError(
                f"image {file} has {bits or 'unknown'}-bit integer samples; percepfid reads 8- "
                "and 16-bit integer images and float images in [0, 1]: convert it to one of those"
            )
        if values.min() < 0 or values.max() > 65535:
            raise ImageReadError(
                f"image {file} declares 16-bit samples but holds values in "
                f"[{values.min()}, {values.max()}]; save it as unsigned 16-bit"
            )
        return values.astype(np.float32) / np.float32(65535)
    if mode == "F":  # a float image at its own scale, which must be [0, 1]
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageReadError(f"float image {file} holds NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ImageReadError(
                f"float image {file} holds values in [{low:g}, {high:g}]; percepfid reads float "
                "images as intensities in [0, 1]: clip or rescale it to [0, 1] (or save it as "
                "8- or 16-bit)"
            )
        return values
    if mode in ("P", "PA"):  # through RGBA, so a transparent palette entry is not warned about
        image = image.convert("RGBA")
    elif mode != "RGB":
        try:
            image = image.convert("RGB")  # L, 1, LA, RGBA, CMYK, YCbCr, ...: alpha dropped
        except ValueError as error:
            raise ImageReadError(
                f"image {file} is in mode {mode!r}, which cannot be converted to RGB "
                f"({error}); save it as 8- or 16-bit RGB or greyscale"
            ) from None
    return np.asarray(image)[:, :, :3].astype(np.float32) / np.float32(255)


@functools.cache
def _png16_decoder() -> Any:
    """torchvision's PNG decoder, or None where this torchvision has none (logged once)."""
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError as error:
        logger.warning(
            "torchvision has no PNG decoder (%s): 16-bit colour PNGs are read at 8-bit "
            "precision (still at their true scale)",
            error,
        )
        return None
    return functools.partial(decode_png, mode=ImageReadMode.UNCHANGED)


def _read_png16(file: Path) -> np.ndarray | None:
    """A 16-bit colour PNG at full precision (None when no decoder is available)."""
    import torch

    decode = _png16_decoder()
    if decode is None:
        return None
    data = torch.frombuffer(bytearray(file.read_bytes()), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():  # torchvision announces the move of its decoders
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode(data)
    except RuntimeError as error:
        raise ImageReadError(f"cannot read image {file}: {error}") from None
    # older torchvision returns 16-bit PNGs as int32, newer as uint16: both hold 0..65535
    values = decoded.to(torch.int32).numpy().astype(np.float32) / np.float32(65535)
    if values.shape[0] in (1, 2):  # grey, grey + alpha
        return values[0]
    return values[:3].transpose(1, 2, 0)  # RGB, RGBA: alpha dropped


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(H, W)`` of an image, read from its header without decoding the pixels.

    Raises:
        ImageReadError: the file is missing or is not an image Pillow can open.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    try:
        with Image.open(file) as image:
            width, height = image.size
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {file}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"cannot read image {file}: {error}") from None
    return height, width


def list_images(
    folder: str | os.PathLike[str],
    *,
    recursive: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    allow_empty: bool = False,
    what: str = "folder",
    error: type[Exception] = ArgumentError,
) -> list[Path]:
    """The image files of ``folder``, sorted, recognised by their suffix.

    Args:
        recursive: include sub-folders.
        extensions: the suffixes to accept (case-insensitive).
        allow_empty: return an empty list instead of raising when no image is found.
        what: how messages name the folder (e.g. ``"--dist folder"``).
        error: the exception class to raise.

    Raises:
        error: the folder does not exist, is not a folder, or holds no images.
    """
    root = Path(folder)
    if not root.exists():
        raise error(f"{what} {root} does not exist")
    if not root.is_dir():
        raise error(f"{what} {root} is not a folder")
    suffixes = {suffix.lower() for suffix in extensions}
    entries = root.rglob("*") if recursive else root.iterdir()
    images = sorted(p for p in entries if p.is_file() and p.suffix.lower() in suffixes)
    if not images and not allow_empty:
        raise error(f"{what} {root} holds no images (looked for {', '.join(extensions)})")
    return images


def batches_by_size(
    sizes: Sequence[Hashable],
    batch_size: int,
    *,
    indices: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Split items into batches (lists of indices into ``sizes``) whose images share one
    size, so each batch stacks.

    Args:
        sizes: a size key per item (e.g. ``(H, W)``, or ``(size_a, size_b)`` for pairs).
        batch_size: the most items per batch.
        indices: the items to batch (default: all of them), as indices into ``sizes``.
        generator: shuffle the items before grouping and the batches after (training);
            ``None`` keeps the items in their order, and the batches of each size in the
            order of that size's first item.
    """
    import torch

    order = list(range(len(sizes)) if indices is None else indices)
    if generator is not None:
        order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
    groups: dict[Hashable, list[int]] = {}
    for index in order:
        groups.setdefault(sizes[index], []).append(index)
    batches = [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


# --------------------------------------------------------------------------- tables


def read_table(
    path: str | os.PathLike[str],
    *,
    what: str,
    error: type[Exception] = ArgumentError,
    allow_empty: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """The column names and rows of a CSV file with a header row, names and cells stripped
    (a UTF-8 byte-order mark is ignored).

    Raises:
        error: the file is missing, empty, not UTF-8 text, not CSV, has no header, a column
            name twice or (unless ``allow_empty``) no rows; messages name it as ``what``
            (e.g. ``"ratings CSV"``).
    """
    file = Path(path)
    if not file.is_file():
        raise error(f"{what} not found: {file}")
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise error(f"{what} {file} is empty; expected a CSV with a header row")
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
    except UnicodeDecodeError as problem:
        raise error(
            f"{what} {file} is not UTF-8 text ({problem.reason} at byte {problem.start}); "
            "save it as a UTF-8 CSV"
        ) from None
    except csv.Error as problem:
        raise error(f"{what} {file} is not a readable CSV: {problem}") from None
    fields = [name.strip() for name in reader.fieldnames]
    repeated = sorted({field for field in fields if fields.count(field) > 1})
    if repeated:
        raise error(
            f"{what} {file}: column(s) {', '.join(map(repr, repeated))} appear more than once "
            "in the header row; give every column its own name"
        )
    if not rows and not allow_empty:
        raise error(f"{what} {file} has a header but no rows")
    return fields, rows


def require_columns(
    fields: Sequence[str],
    columns: Mapping[str, str],
    *,
    what: str,
    error: type[Exception] = ArgumentError,
) -> None:
    """Raise unless every key of ``columns`` (column -> the option that names it) is one
    of ``fields``; the message lists the columns present and the option to change."""
    for column, option in columns.items():
        if column not in fields:
            raise error(
                f"{what} has no column {column!r} (columns: {', '.join(map(repr, fields))}); "
                f"choose one with {option}"
            )


def parse_number(
    value: str,
    *,
    what: str,
    row: int,
    column: str,
    finite: bool = True,
    error: type[Exception] = ArgumentError,
) -> float:
    """A CSV cell as a float (finite unless ``finite=False``), naming the cell on failure."""
    try:
        number = float(value)
    except ValueError:
        raise error(
            f"{what}: row {row}, column {column!r}: expected a number; got {value!r}"
        ) from None
    if finite and not math.isfinite(number):
        raise error(
            f"{what}: row {row}, column {column!r}: expected a finite number; got {value!r}"
        )
    return number


def shorten_list(items: Sequence[object], limit: int = 5) -> str:
    """The first ``limit`` items (paths, names) comma-separated, and how many there are in all
    when that is more, e.g. ``'a.png, b.png, ... (7 in all)'``."""
    shown = ", ".join(map(str, items[:limit]))
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"


@dataclass(frozen=True)
class Rating:
    """One row of a rating table: a rated image and its score.

    Attributes:
        image: the rated (distorted, super-resolved) image.
        score: its score (a MOS, a fidelity judgement: any scale).
        group: the scene / source image it belongs to, or None when the table has none.
        reference: its reference image for full-reference ratings, or None.
    """

    image: Path
    score: float
    group: str | None = None
    reference: Path | None = None


def read_rating_table(
    path: str | os.PathLike[str],
    *,
    image_column: str = "image",
    score_column: str = "mos",
    group_column: str | None = None,
    reference_column: str | None = None,
    group_optional: bool = False,
    root: str | os.PathLike[str] | None = None,
    what: str = "ratings CSV",
    options: Mapping[str, str] | None = None,
    error: type[Exception] = ArgumentError,
) -> list[Rating]:
    """Read a CSV of rated images (header row required): one :class:`Rating` per row, in
    file order, every image checked to exist.

    Args:
        image_column, score_column: the columns of the rated images and their scores.
        group_column: the column of the scene / source-image ids, or None for no groups.
        reference_column: the column of the reference images, or None (no-reference data).
        group_optional: when ``group_column`` is absent from the file, give every row the
            group None instead of raising.
        root: the folder relative image paths start from (default: the CSV's folder);
            ``~`` is expanded, absolute paths are kept.
        what, error: how messages name the file, and the exception class for bad content.
        options: how messages name the option that sets each column, keyed by argument
            name (e.g. ``{"image_column": "--image-column"}``; default ``<argument>=``).

    Raises:
        error: as :func:`read_table`; a column is missing, an image cell is empty, a score
            is not a finite number, or image files do not exist.
        EmptyBatchError: the file has a header but no rows.
    """
    file = Path(path)
    described = f"{what} {file}"

    def option(argument: str) -> str:
        return (options or {}).get(argument, f"{argument}=")

    fields, table = read_table(file, what=what, error=error, allow_empty=True)
    required = {image_column: option("image_column"), score_column: option("score_column")}
    if reference_column is not None:
        required[reference_column] = option("reference_column")
    use_group = group_column is not None and (group_column in fields or not group_optional)
    if use_group:
        required[group_column] = option("group_column")
    require_columns(fields, required, what=described, error=error)
    if not table:
        raise EmptyBatchError(f"{described} has a header but no rows")

    base = Path(root) if root is not None else file.parent
    image_columns = [image_column] + ([reference_column] if reference_column is not None else [])
    ratings, missing = [], []
    for number, row in enumerate(table, start=2):  # row 1 is the header
        score = parse_number(
            row[score_column], what=described, row=number, column=score_column, error=error
        )
        images = []
        for column in image_columns:
            if not row[column]:
                raise error(f"{described}: row {number}, column {column!r} is empty")
            image = Path(row[column]).expanduser()
            image = image if image.is_absolute() else base / image
            if not image.is_file():
                missing.append(image)
            images.append(image)
        group = row[group_column] if use_group else None
        reference = images[1] if reference_column is not None else None
        ratings.append(Rating(images[0], score, group, reference))
    if missing:
        raise error(
            f"{described}: {len(missing)} image file(s) not found (relative paths start from "
            f"{base}; change it with {option('root')}): {shorten_list(missing)}"
        )
    return ratings
