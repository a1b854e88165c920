"""percepfid.data's file readers: images of every bit depth and mode at their true scale,
typed errors naming the file, folder listing, size batching and rating tables.

Images are written by independent means: PNG and TIFF bytes assembled here with zlib and
struct, or Pillow's writer; the reader decodes them with Pillow and libpng."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from percepfid import ArgumentError, EmptyBatchError, PercepfidError
from percepfid.data import (
    ImageReadError,
    batches_by_size,
    image_size,
    list_images,
    read_image,
    read_rating_table,
)

# ----------------------------------------------------------------- independent writers

_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, array: np.ndarray) -> Path:
    """A PNG from ``(H, W)`` or ``(H, W, C)`` uint8 / uint16 samples (filter 0, one IDAT)."""
    pixels = array if array.ndim == 3 else array[:, :, None]
    height, width, channels = pixels.shape
    depth = 16 if array.dtype == np.uint16 else 8
    samples = pixels.astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + samples[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    return path


def write_rgb16_tiff(path: Path, array: np.ndarray) -> Path:
    """An uncompressed little-endian RGB TIFF with 16 bits per sample, one strip."""
    height, width, _ = array.shape
    data = array.astype("<u2").tobytes()
    entries = 10
    extra = 8 + 2 + entries * 12 + 4  # where the out-of-line values start
    bits_at, format_at, data_at = extra, extra + 6, extra + 12
    tags = [  # (tag, type, count, value): type 3 = SHORT, 4 = LONG
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, bits_at),  # BitsPerSample: 16, 16, 16 (out of line)
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, data_at),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 3, 1, height),  # RowsPerStrip
        (279, 4, 1, len(data)),  # StripByteCounts
        (339, 3, 3, format_at),  # SampleFormat: unsigned (out of line)
    ]
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries)
    for tag, kind, count, value in tags:
        if kind == 3 and count == 1:
            body += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            body += struct.pack("<HHII", tag, kind, count, value)
    body += struct.pack("<I", 0) + struct.pack("<3H", 16, 16, 16) + struct.pack("<3H", 1, 1, 1)
    path.write_bytes(body + data)
    return path


def expected(array: np.ndarray, scale: int) -> np.ndarray:
    """``(3, H, W)`` float32 of integer samples over ``scale``, grey repeated on 3 channels."""
    values = array.astype(np.float32) / np.float32(scale)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    return values[:, :, :3].transpose(2, 0, 1)


# ----------------------------------------------------------------- 16-bit and float


@pytest.mark.parametrize("writer", ["pillow", "by-hand"])
def test_16bit_grey_png_reads_at_true_scale(tmp_path: Path, writer: str) -> None:
    grey = np.full((5, 7), 30000, np.uint16)
    path = tmp_path / "grey16.png"
    if writer == "pillow":
        Image.fromarray(grey).save(path)
    else:
        write_png(path, grey)
    image = read_image(path)
    assert image.shape == (3, 5, 7) and image.dtype == torch.float32
    assert torch.equal(image, torch.full((3, 5, 7), np.float32(30000) / np.float32(65535)))


def test_16bit_grey_tiff_reads_at_true_scale(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    Image.fromarray(grey).save(tmp_path / "grey16.tif")
    np.testing.assert_array_equal(
        read_image(tmp_path / "grey16.tif").numpy(), expected(grey, 65535)
    )


@pytest.mark.parametrize("channels", [2, 3, 4], ids=["grey+alpha", "rgb", "rgba"])
def test_16bit_colour_png_reads_every_bit(tmp_path: Path, channels: int) -> None:
    samples = np.random.default_rng(channels).integers(0, 65536, (6, 5, channels), np.uint16)
    image = read_image(write_png(tmp_path / "colour16.png", samples)).numpy()
    colour = samples[:, :, 0] if channels == 2 else samples[:, :, :3]  # alpha dropped
    np.testing.assert_array_equal(image, expected(colour, 65535))
    # the low byte matters: an 8-bit reduction would fail this
    np.testing.assert_array_equal(np.round(image * 65535).astype(np.uint16), expected(colour, 1))


def test_16bit_colour_png_without_torchvision_decoder_keeps_its_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import percepfid.data.io as io

    monkeypatch.setattr(io, "_png16_decoder", lambda: None)
    samples = np.random.default_rng(9).integers(0, 65536, (3, 4, 3), np.uint16)
    image = read_image(write_png(tmp_path / "colour16.png", samples)).numpy()
    np.testing.assert_array_equal(image, expected(samples >> 8, 255))  # Pillow's high byte


def test_16bit_colour_tiff_keeps_its_scale_at_8_bits(tmp_path: Path) -> None:
    samples = np.random.default_rng(1).integers(0, 65536, (4, 6, 3), np.uint16)
    image = read_image(write_rgb16_tiff(tmp_path / "colour16.tif", samples)).numpy()
    # documented: Pillow keeps the high byte of each sample
    np.testing.assert_array_equal(image, expected(samples >> 8, 255))


def test_float_tiff_in_unit_range_is_read_as_stored(tmp_path: Path) -> None:
    values = np.random.default_rng(2).random((4, 5)).astype(np.float32)
    values[0, 0], values[0, 1] = 0.0, 1.0
    Image.fromarray(values).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "float.tif").numpy(), expected(values, 1))


@pytest.mark.parametrize(
    ("value", "message"), [(255.0, r"\[0, 255\].*\[0, 1\]"), (np.nan, "NaN"), (-0.5, "-0.5")]
)
def test_float_tiff_outside_unit_range_is_refused(tmp_path: Path, value: float, message: str):
    values = np.zeros((3, 3), np.float32)
    values[1, 1] = value
    Image.fromarray(values).save(tmp_path / "bad-float.tif")
    with pytest.raises(ImageReadError, match=message) as caught:
        read_image(tmp_path / "bad-float.tif")
    assert "bad-float.tif" in str(caught.value)


def test_32bit_integer_tiff_is_refused(tmp_path: Path) -> None:
    Image.new("I", (3, 2), 70000).save(tmp_path / "int32.tif")
    with pytest.raises(ImageReadError, match=r"int32\.tif.*32-bit integer"):
        read_image(tmp_path / "int32.tif")


# ----------------------------------------------------------------- 8-bit modes


def test_8bit_rgb_and_grey(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (4, 6, 3), np.uint8)
    grey = rgb[:, :, 1].copy()
    np.testing.assert_array_equal(
        read_image(write_png(tmp_path / "rgb.png", rgb)).numpy(), expected(rgb, 255)
    )
    np.testing.assert_array_equal(
        read_image(write_png(tmp_path / "grey.png", grey)).numpy(), expected(grey, 255)
    )
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.bmp").numpy(), expected(rgb, 255))


def test_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.random.default_rng(4).integers(0, 256, (3, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: compositing would change every value
    image = read_image(write_png(tmp_path / "rgba.png", rgba)).numpy()
    np.testing.assert_array_equal(image, expected(rgba[:, :, :3], 255))
    grey_alpha = rgba[:, :, [0, 3]].copy()
    image = read_image(write_png(tmp_path / "la.png", grey_alpha)).numpy()
    np.testing.assert_array_equal(image, expected(grey_alpha[:, :, 0], 255))


def test_palette_bilevel_and_cmyk_are_converted(tmp_path: Path) -> None:
    palette = Image.new("P", (3, 2))
    palette.putpalette([10, 20, 30, 200, 100, 0])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)
    image = read_image(tmp_path / "palette.png")
    assert image[:, 0, 0].mul(255).round().tolist() == [10, 20, 30]
    assert image[:, 0, 1].mul(255).round().tolist() == [200, 100, 0]

    bilevel = Image.new("1", (2, 2), 0)
    bilevel.putpixel((0, 0), 1)
    bilevel.save(tmp_path / "bilevel.png")
    assert read_image(tmp_path / "bilevel.png")[:, :, 0].tolist() == [[1.0, 0.0]] * 3

    # CMYK with K = 0 is RGB = 255 - CMY
    Image.new("CMYK", (2, 2), (0, 255, 55, 0)).save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(
        read_image(tmp_path / "cmyk.tif")[:, 0, 0].mul(255).round().numpy(), [255, 0, 200]
    )


# ----------------------------------------------------------------- errors


def test_missing_and_corrupt_files_raise_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    assert issubclass(ImageReadError, ArgumentError) and issubclass(ImageReadError, PercepfidError)
    with pytest.raises(ImageReadError, match=r"not found: .*absent\.png"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(5).bytes(300))
    with pytest.raises(ImageReadError, match=r"cannot read image .*noise\.png"):
        read_image(tmp_path / "noise.png")
    with pytest.raises(ImageReadError, match=r"cannot read image .*noise\.png"):
        image_size(tmp_path / "noise.png")
    with pytest.raises(ImageReadError, match=r"not found: .*absent\.png"):
        image_size(tmp_path / "absent.png")
    for name, samples in (
        ("rgb8.png", np.zeros((40, 40, 3), np.uint8)),
        ("rgb16.png", np.random.default_rng(6).integers(0, 65536, (40, 40, 3), np.uint16)),
    ):
        data = write_png(tmp_path / name, samples).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])  # the header still reads
        assert image_size(tmp_path / name) == (40, 40)
        with pytest.raises(ImageReadError, match=rf"cannot read image .*{name}"):
            read_image(tmp_path / name)


# ----------------------------------------------------------------- property: exact round trip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    samples=st.one_of(
        arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))),
        arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9))),
        arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9))),
        arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))),
    )
)
def test_integer_images_round_trip_exactly(tmp_path: Path, samples: np.ndarray) -> None:
    scale = 65535 if samples.dtype == np.uint16 else 255
    image = read_image(write_png(tmp_path / "any.png", samples)).numpy()
    np.testing.assert_array_equal(image, expected(samples, scale))
    np.testing.assert_array_equal(np.round(image * scale), expected(samples, 1))
    assert image_size(tmp_path / "any.png") == samples.shape[:2]


# ----------------------------------------------------------------- listing and batching


def test_list_images_by_suffix(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "notes.txt", "sub/c.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.tif"]
    assert list_images(tmp_path, extensions=(".webp",), allow_empty=True) == []
    with pytest.raises(ArgumentError, match=r"holds no images \(looked for \.webp\)"):
        list_images(tmp_path, extensions=(".webp",), what="--dist folder")
    with pytest.raises(ArgumentError, match="does not exist"):
        list_images(tmp_path / "absent")
    with pytest.raises(ArgumentError, match="is not a folder"):
        list_images(tmp_path / "a.jpg")


def test_batches_by_size() -> None:
    sizes = [(2, 2), (3, 3), (2, 2), (2, 2), (3, 3)]
    assert batches_by_size(sizes, 2) == [[0, 2], [3], [1, 4]]
    assert batches_by_size(sizes, 2, indices=[4, 3, 0]) == [[4], [3, 0]]
    shuffled = batches_by_size(sizes, 2, generator=torch.Generator().manual_seed(0))
    assert sorted(i for batch in shuffled for i in batch) == [0, 1, 2, 3, 4]
    assert all(len({sizes[i] for i in batch}) == 1 and len(batch) <= 2 for batch in shuffled)
    again = batches_by_size(sizes, 2, generator=torch.Generator().manual_seed(0))
    assert shuffled == again


# ----------------------------------------------------------------- rating tables


def _table(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_read_rating_table(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "ref.png"):
        (tmp_path / name).write_bytes(b"")
    absolute = str(tmp_path / "b.png")
    path = _table(
        tmp_path / "r.csv",
        [
            ["img", "q", "scene", "ref"],
            ["a.png", "1.5", "s1", "ref.png"],
            [absolute, "-2", "s2", "ref.png"],
        ],
    )
    rows = read_rating_table(
        path, image_column="img", score_column="q", group_column="scene", reference_column="ref"
    )
    assert [(r.image, r.score, r.group, r.reference) for r in rows] == [
        (tmp_path / "a.png", 1.5, "s1", tmp_path / "ref.png"),
        (tmp_path / "b.png", -2.0, "s2", tmp_path / "ref.png"),
    ]
    # an optional group column that is absent gives None; a required one is named
    rows = read_rating_table(
        path, image_column="img", score_column="q", group_column="x", group_optional=True
    )
    assert [r.group for r in rows] == [None, None]
    with pytest.raises(ArgumentError, match=r"no column 'x'.*'img', 'q'.*--scene-column"):
        read_rating_table(
            path,
            image_column="img",
            score_column="q",
            group_column="x",
            options={"group_column": "--scene-column"},
        )
    with pytest.raises(ArgumentError, match=r"no column 'mos'.*score_column="):
        read_rating_table(path, image_column="img")


def test_read_rating_table_errors_name_file_row_and_column(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    bad = _table(tmp_path / "bad.csv", [["image", "mos"], ["a.png", "3"], ["", "2"]])
    with pytest.raises(ArgumentError, match=r"bad\.csv: row 3, column 'image' is empty"):
        read_rating_table(bad)
    bad = _table(tmp_path / "bad.csv", [["image", "mos"], ["a.png", "inf"]])
    with pytest.raises(ArgumentError, match=r"bad\.csv: row 2, column 'mos': expected a finite"):
        read_rating_table(bad)
    bad = _table(tmp_path / "bad.csv", [["image", "mos"], ["a.png", "1"], ["gone.png", "2"]])
    with pytest.raises(ArgumentError, match=r"1 image file\(s\) not found.*gone\.png") as caught:
        read_rating_table(bad, options={"root": "--root"})
    assert "--root" in str(caught.value)
    bad = _table(tmp_path / "bad.csv", [["image", "mos"]])
    with pytest.raises(EmptyBatchError, match="no rows"):
        read_rating_table(bad)

    class TableError(ArgumentError):
        pass

    with pytest.raises(TableError, match=r"not found: .*absent\.csv"):
        read_rating_table(tmp_path / "absent.csv", error=TableError)


# ----------------------------------------------------------------- the command line


@pytest.mark.parametrize("kind", ["png16", "float-tiff"])
def test_score_16bit_and_float_pairs_is_not_blind(tmp_path: Path, kind: str) -> None:
    """Before the fix, 16-bit images above 255 read as white and float TIFFs as black, so
    every pair scored fidelity 1. Now the scores follow the content: they match the same
    pairs saved at 8 bits, and a pair of different images is not faithful."""
    from percepfid.cli import main

    rng = np.random.default_rng(7)
    ramp = np.linspace(0.02, 0.98, 32, dtype=np.float32)
    scenes = {
        "same": (np.outer(ramp, ramp),) * 2,
        "different": (np.outer(ramp, ramp), rng.random((32, 32)).astype(np.float32) * 0.9 + 0.05),
    }
    for folder in ("hi/gt", "hi/sr", "lo/gt", "lo/sr"):
        (tmp_path / folder).mkdir(parents=True)
    suffix = ".png" if kind == "png16" else ".tif"
    for name, (reference, distorted) in scenes.items():
        for role, values in (("gt", reference), ("sr", distorted)):
            eight = np.round(values * 255).astype(np.uint8)
            Image.fromarray(eight).save(tmp_path / "lo" / role / f"{name}.png")
            if kind == "png16":  # the 8-bit values scaled exactly to 16 bits (v * 257)
                write_png(tmp_path / "hi" / role / f"{name}{suffix}", eight.astype(np.uint16) * 257)
            else:
                exact = (eight.astype(np.float32) / np.float32(255)).astype(np.float32)
                Image.fromarray(exact).save(tmp_path / "hi" / role / f"{name}{suffix}")

    def score(root: Path) -> dict[str, float]:
        out = root / "scores.csv"
        argv = [
            "score", "--metric", "hlf:timm:vit_tiny_patch16_224.augreg_in21k", "--image-size",
            "32", "--random-weights", "--no-progress",
            "--ref", str(root / "gt"), "--dist", str(root / "sr"), "-o", str(out),
        ]  # fmt: skip
        torch.manual_seed(0)
        assert main(argv) == 0
        with out.open(newline="") as handle:
            return {Path(r["distorted"]).stem: float(r["score"]) for r in csv.DictReader(handle)}

    high, low = score(tmp_path / "hi"), score(tmp_path / "lo")
    assert high["same"] == pytest.approx(1.0, abs=1e-5)
    assert high["different"] < 1 - 1e-3
    assert high["different"] == pytest.approx(low["different"], abs=1e-5)
