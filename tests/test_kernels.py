"""The NumPy kernels and the Pillow raster decoder against OpenCV, their oracle (the packs were trained with it).

* :func:`asdesk.preprocess.kernels.resize` equals ``cv2.resize`` on float32 images: ``INTER_AREA`` bit for bit,
  ``INTER_LINEAR`` within 1e-5 of the value range (OpenCV's x86 builds run it through Intel IPP, reproduced to
  float32 rounding; see the kernel's notes), for random sizes of 1-600 pixels shrinking, enlarging or both.
* ``clahe`` and ``equalize_hist`` equal ``cv2.createCLAHE(...).apply`` and ``cv2.equalizeHist`` bit for bit.
* The overlay's colour tables equal ``cv2.applyColorMap``.
* :func:`asdesk.io.read_image` gives, through Pillow, the arrays the OpenCV decoder gave (``imdecode`` with
  ``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``, alpha dropped, BGR -> RGB, gray detection).

OpenCV is imported only here, through ``pytest.importorskip``: without it these comparisons skip and the rest of
the suite runs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from asdesk.core.errors import NotAnImageError, ReadError
from asdesk.inference.colormaps import NAMES, colormap_rgb
from asdesk.inference.overlay import colourise
from asdesk.io import read_image
from asdesk.preprocess import kernels

cv2 = pytest.importorskip("cv2", reason="OpenCV is the oracle of these tests (installed for training and tests)")

INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
SIZES = st.integers(1, 600)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _image(seed: int, height: int, width: int) -> np.ndarray:
    """float32 values with a random offset and range (radiograph-like or small-valued maps)."""
    rng = np.random.default_rng(seed)
    scale = float(rng.choice([1.0, 255.0, 4095.0, 1e-3]))
    return (rng.random((height, width), dtype=np.float32) * scale + float(rng.integers(-2, 3)) * scale).astype(
        np.float32)


def _linear_tolerance(height: int, width: int) -> float:
    """1e-5 of the range; where OpenCV has no IPP (not an x86 wheel), plus its portable code's float32
    rounding of the source coordinate (half a step of a float32 of that size)."""
    if cv2.ipp.useIPP():
        return 1e-5
    return 1e-5 + max(height, width) * 2.0**-23


# ----------------------------------------------------------------------------------------------------------
# resize


@SETTINGS
@given(SIZES, SIZES, SIZES, SIZES, st.integers(0, 2**32 - 1), st.sampled_from(["linear", "area"]))
@example(3000, 2500, 224, 224, 1, "area")  # a radiograph to a model input
@example(3000, 2500, 224, 224, 1, "linear")
@example(224, 224, 3000, 2500, 2, "linear")  # a heat map back onto a radiograph
@example(600, 600, 1, 1, 3, "area")  # integer factors (OpenCV's resizeAreaFast): a long sum in OpenCV's order
@example(600, 400, 300, 200, 4, "area")  # 2 x 2 blocks (OpenCV's vector path and its scalar tail)
@example(30, 18, 15, 9, 4, "area")
@example(600, 599, 1, 2, 5, "area")  # fractional factors, weights below 1e-3 dropped
@example(100, 80, 30, 200, 6, "area")  # one axis shrinks, the other enlarges: OpenCV's bilinear variant
@example(100, 80, 30, 200, 6, "linear")
@example(1, 381, 263, 223, 7, "linear")  # a single row: OpenCV's portable code, not IPP
@example(37, 1, 5, 90, 8, "linear")
@example(1, 1, 5, 7, 9, "area")
@example(64, 64, 32, 32, 10, "linear")  # exactly half
def test_resize_equals_opencv(height, width, out_h, out_w, seed, interpolation):
    image = _image(seed, height, width)
    expected = cv2.resize(image, (out_w, out_h), interpolation=INTERPOLATION[interpolation])
    got = kernels.resize(image, out_h, out_w, interpolation)
    assert got.dtype == np.float32 and got.shape == expected.shape == (out_h, out_w)
    value_range = float(image.max() - image.min()) or 1.0
    if interpolation == "area" or height == 1 or width == 1:
        np.testing.assert_array_equal(got, expected)  # OpenCV's own code, reproduced bit for bit
    else:
        difference = float(np.abs(got.astype(np.float64) - expected).max())
        assert difference <= _linear_tolerance(height, width) * value_range


def test_resize_to_the_same_size_is_a_copy_and_bad_arguments_are_refused():
    image = _image(0, 5, 7)
    same = kernels.resize(image, 5, 7)
    np.testing.assert_array_equal(same, image)
    assert same is not image
    with pytest.raises(ValueError, match="2-D"):
        kernels.resize(np.zeros((4, 4, 3), np.float32), 2, 2)
    with pytest.raises(ValueError, match=">= 1"):
        kernels.resize(image, 0, 3)
    with pytest.raises(ValueError, match="interpolation"):
        kernels.resize(image, 3, 3, "cubic")


# ----------------------------------------------------------------------------------------------------------
# CLAHE and histogram equalisation


def _uint8_image(seed: int, height: int, width: int, kind: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == 0:
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if kind == 1:  # a narrow histogram, so that clipping and redistribution matter
        return np.clip(rng.normal(110, 12, (height, width)), 0, 255).astype(np.uint8)
    if kind == 2:
        return np.full((height, width), rng.integers(0, 256), dtype=np.uint8)
    return np.where(rng.random((height, width)) < 0.3, 40, 200).astype(np.uint8)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 16), st.integers(1, 16),
       st.one_of(st.just(0.0), st.floats(0.01, 60.0)), st.integers(0, 3), st.integers(0, 2**32 - 1))
@example(224, 224, 8, 8, 2.0, 0, 1)
@example(225, 224, 8, 8, 2.0, 1, 2)  # rows not divisible by the grid: padding adds a whole tile of columns too
@example(3, 2, 8, 8, 4.0, 0, 3)  # padding larger than the image: reflected repeatedly
@example(1, 1, 2, 2, 1.0, 0, 4)
def test_clahe_equals_opencv(height, width, tiles_y, tiles_x, clip_limit, kind, seed):
    image = _uint8_image(seed, height, width, kind)
    expected = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles_x, tiles_y)).apply(image)
    np.testing.assert_array_equal(kernels.clahe(image, clip_limit, (tiles_y, tiles_x)), expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_equalize_hist_equals_opencv(height, width, kind, seed):
    image = _uint8_image(seed, height, width, kind)
    np.testing.assert_array_equal(kernels.equalize_hist(image), cv2.equalizeHist(image))


def _real_radiographs() -> list[Path]:
    files = sorted((SHARED_DATA / "knee-xray-kl" / "val").glob("*/*.png"))[:24]
    files += sorted((SHARED_DATA / "knee-xray-osteoporosis").rglob("*.png"))[:8]
    files += sorted((SHARED_DATA / "knee-xray-osteoporosis").rglob("*.jp*g"))[:8]
    if not files:
        pytest.skip("no radiographs found under ../shared/data")
    return files


@requires_shared("data/knee-xray-kl", "data/knee-xray-osteoporosis")
def test_kernels_equal_opencv_on_real_radiographs():
    for path in _real_radiographs():
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        for clip_limit, grid in ((2.0, (8, 8)), (4.0, (3, 5)), (40.0, (7, 6))):
            expected = cv2.createCLAHE(clip_limit, (grid[1], grid[0])).apply(gray)
            np.testing.assert_array_equal(kernels.clahe(gray, clip_limit, grid), expected, err_msg=str(path))
        np.testing.assert_array_equal(kernels.equalize_hist(gray), cv2.equalizeHist(gray), err_msg=str(path))
        values = gray.astype(np.float32) / 255.0
        for size in ((224, 224), (256, 200), (gray.shape[0] // 2, gray.shape[1] // 3)):
            expected = cv2.resize(values, size[::-1], interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(kernels.resize(values, *size, "area"), expected, err_msg=str(path))
        expected = cv2.resize(values, (701, 650), interpolation=cv2.INTER_LINEAR)
        assert np.abs(kernels.resize(values, 650, 701, "linear") - expected).max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------
# colour maps


def test_colour_tables_equal_opencv_apply_color_map():
    levels = np.arange(256, dtype=np.uint8)[:, None]
    assert len(NAMES) == 8
    for name in NAMES:
        bgr = cv2.applyColorMap(levels, getattr(cv2, f"COLORMAP_{name.upper()}"))[:, 0]
        np.testing.assert_array_equal(colormap_rgb(name), bgr[:, ::-1], err_msg=name)
    heat = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    expected = cv2.applyColorMap(np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    np.testing.assert_array_equal(colourise(heat, "turbo"), expected[:, :, ::-1])


# ----------------------------------------------------------------------------------------------------------
# raster decoding


def _opencv_read(path: Path) -> np.ndarray:
    """What asdesk's raster reader returned with OpenCV: stored values, RGB, alpha dropped, gray detected."""
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image.ndim == 3:
        image = image[:, :, :3][:, :, ::-1]
        if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]):
            image = image[:, :, 0]
    return image


def _assert_read_as_opencv_did(path: Path) -> None:
    expected = _opencv_read(path)
    record = read_image(path)
    assert record.pixels.shape == expected.shape, path.name
    np.testing.assert_array_equal(record.pixels, expected.astype(np.float32), err_msg=path.name)
    assert record.metadata.bits_stored == expected.dtype.itemsize * 8, path.name
    assert record.metadata.photometric_interpretation == ("RGB" if expected.ndim == 3 else "MONOCHROME2")


def _synthetic_files(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (37, 41), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (37, 41), dtype=np.uint16)
    colour8 = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    smooth = (np.add.outer(np.arange(120), np.arange(90)) * 263 % 65536).astype(np.uint16)  # PNG filters at work
    colour16 = np.dstack([smooth, smooth[::-1], smooth[:, ::-1]])
    written: list[Path] = []

    def opencv(name: str, image: np.ndarray, *params: int) -> None:
        path = folder / name
        assert cv2.imwrite(str(path), image, list(params))
        written.append(path)

    def pillow(name: str, image: Image.Image, **options: object) -> None:
        path = folder / name
        image.save(path, **options)
        written.append(path)

    for extension in ("png", "tif", "bmp", "jpg"):
        opencv(f"gray8.{extension}", gray8)
        opencv(f"colour8.{extension}", colour8)
        opencv(f"gray-as-colour.{extension}", np.dstack([gray8, gray8, gray8]))
        if extension != "jpg":
            opencv(f"rgba8.{extension}", rng.integers(0, 256, (37, 41, 4), dtype=np.uint8))
    for extension in ("png", "tif"):
        opencv(f"gray16.{extension}", gray16)
        opencv(f"colour16.{extension}", colour16)
        opencv(f"rgba16.{extension}", np.dstack([colour16, smooth]))
    opencv("float32.tif", rng.random((37, 41), dtype=np.float32))
    opencv("colour16-lzw.tif", colour16, cv2.IMWRITE_TIFF_COMPRESSION, 5)
    opencv("progressive.jpg", colour8, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    opencv("smooth-q50.jpg", cv2.GaussianBlur(colour8, (5, 5), 2), cv2.IMWRITE_JPEG_QUALITY, 50)
    pillow("bilevel.png", Image.fromarray(gray8 > 127))
    pillow("bilevel.tif", Image.fromarray(gray8 > 127))
    pillow("gray-alpha.png", Image.fromarray(np.dstack([gray8, gray8[::-1]]), "LA"))
    pillow("palette.png", Image.fromarray(colour8).convert("P"))
    pillow("palette-4bit.png", Image.fromarray(colour8).quantize(16), bits=4)
    pillow("palette-transparent.png", Image.fromarray(colour8).convert("P"), transparency=3)
    pillow("gray-palette.png", Image.fromarray(gray8).convert("P"))
    pillow("palette.bmp", Image.fromarray(colour8).convert("P"))
    pillow("cmyk.jpg", Image.fromarray(rng.integers(0, 256, (37, 41, 4), dtype=np.uint8), "CMYK"))
    pillow("cmyk.tif", Image.fromarray(rng.integers(0, 256, (37, 41, 4), dtype=np.uint8), "CMYK"))
    pillow("int32.tif", Image.fromarray(rng.integers(-2**30, 2**30, (37, 41), dtype=np.int32), "I"))
    pillow("jpeg-in.tif", Image.fromarray(colour8), compression="jpeg")
    pillow("two-pages.tif", Image.fromarray(gray8), save_all=True, append_images=[Image.fromarray(gray8[::-1])])
    for orientation in range(1, 9):  # OpenCV applies the EXIF orientation: so must Pillow's path
        exif = Image.Exif()
        exif[0x0112] = orientation
        pillow(f"exif{orientation}.jpg", Image.fromarray(colour8), exif=exif.tobytes(), quality=95)
        pillow(f"exif{orientation}.png", Image.fromarray(colour8), exif=exif.tobytes())
        pillow(f"exif{orientation}-16.png", Image.fromarray(gray16), exif=exif.tobytes())
        pillow(f"exif{orientation}.tif", Image.fromarray(colour8), exif=exif)
    return written


def test_raster_files_are_read_as_opencv_read_them(tmp_path):
    files = _synthetic_files(tmp_path)
    assert len(files) > 60
    for path in files:
        _assert_read_as_opencv_did(path)


def test_sixteen_bit_colour_keeps_its_sixteen_bits(tmp_path):
    colour16 = np.random.default_rng(1).integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    for name in ("colour16.png", "colour16.tif"):
        assert cv2.imwrite(str(tmp_path / name), colour16[:, :, ::-1])
        record = read_image(tmp_path / name)
        np.testing.assert_array_equal(record.pixels, colour16.astype(np.float32))
        assert record.metadata.bits_stored == 16


@requires_shared("data/knee-xray-kl", "data/knee-xray-osteoporosis")
def test_real_radiographs_are_read_as_opencv_read_them():
    for path in _real_radiographs():
        _assert_read_as_opencv_did(path)


def test_damaged_data_is_refused_as_before(tmp_path):
    source = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)).save(source, "PNG")
    content = bytearray(source.getvalue())
    start = content.index(b"IDAT") + 4
    content[start + 10:start + 60] = bytes(50)  # the zlib stream is broken; IEND is still there
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(content))
    assert cv2.imdecode(np.frombuffer(bytes(content), np.uint8), cv2.IMREAD_ANYDEPTH) is None  # OpenCV refused it
    with pytest.raises((NotAnImageError, ReadError)) as error:
        read_image(path)
    assert str(path) in str(error.value)
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(jpeg, "JPEG")
    broken = jpeg.getvalue()[:40] + bytes(200) + b"\xff\xd9"
    (tmp_path / "broken.jpg").write_bytes(broken)
    with pytest.raises(NotAnImageError, match="damaged"):
        read_image(tmp_path / "broken.jpg")


def test_a_png_size_comes_from_its_ihdr_and_a_damaged_ihdr_is_refused(tmp_path):
    """The PNG header is read at its fixed place (no parser); a header whose CRC fails goes to Pillow, which
    refuses it, and a size edit with a valid CRC is caught by the image-data check."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.fromarray(np.arange(37 * 53, dtype=np.uint32).reshape(37, 53).astype(np.uint8)).save(buffer, "PNG")
    good = buffer.getvalue()
    assert read_image(_write(tmp_path / "good.png", good)).shape == (37, 53)

    bad_crc = bytearray(good)
    bad_crc[29] ^= 0xFF
    with pytest.raises(NotAnImageError, match="header cannot be read"):
        read_image(_write(tmp_path / "crc.png", bytes(bad_crc)))

    edited = bytearray(good)
    edited[20:24] = struct.pack(">I", 36)  # one row fewer, CRC made valid again
    edited[29:33] = struct.pack(">I", zlib.crc32(bytes(edited[12:29])))
    with pytest.raises(ReadError, match="more image data"):
        read_image(_write(tmp_path / "height.png", bytes(edited)))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
