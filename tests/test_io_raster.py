"""asdesk.io raster reading: the real knee radiographs, and 16-bit / colour / TIFF files written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, skip_without_shared
from PIL import Image

from asdesk.core.errors import NotAnImageError, TruncatedFileError
from asdesk.io import is_dicom, is_raster, read_frames, read_image

KNEE = SHARED_DATA / "knee-xray-kl"
SAMPLE_PNG = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"  # a knee radiograph shipped with asdesk


def knee_files(count: int = 4) -> list[Path]:
    skip_without_shared("data/knee-xray-kl")
    files = sorted((KNEE / "val").glob("*/*.png"))[:count]
    if not files:
        pytest.skip(f"knee radiographs not found under {KNEE}")
    return files


def gradient16(height: int = 40, width: int = 50) -> np.ndarray:
    return (np.arange(height * width, dtype=np.uint32).reshape(height, width) * 31 % 65536).astype(np.uint16)


def assert_read_as_8bit_grayscale_without_stretching(path: Path) -> None:
    record = read_image(path)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert record.pixels.shape == (224, 224) and record.pixels.dtype == np.float32
    np.testing.assert_array_equal(record.pixels, stored.astype(np.float32))
    np.testing.assert_allclose(record.display, stored / 255.0, atol=1e-7)  # value / 255, not min-max
    meta = record.metadata
    assert meta.format == "PNG" and meta.bits_stored == 8 and meta.source == path
    assert meta.photometric_interpretation == "MONOCHROME2" and meta.modality == ""
    assert is_raster(path) and not is_dicom(path)


def test_shipped_knee_sample_is_read_as_8bit_grayscale_without_stretching():
    stored = cv2.imread(str(SAMPLE_PNG), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and stored.ndim == 2 and stored.min() < 40 < 215 < stored.max()
    assert_read_as_8bit_grayscale_without_stretching(SAMPLE_PNG)


def test_knee_png_is_read_as_8bit_grayscale_without_stretching():
    for path in knee_files():
        assert_read_as_8bit_grayscale_without_stretching(path)


def test_read_frames_of_a_raster_is_a_list_of_one():
    path = SAMPLE_PNG
    frames = read_frames(path)
    assert len(frames) == 1 and frames[0].metadata.frame_index is None


def test_16bit_png_keeps_its_values_and_is_displayed_over_65535(tmp_path):
    image = gradient16()
    path = tmp_path / "sixteen.png"
    assert cv2.imwrite(str(path), image)
    record = read_image(path)
    np.testing.assert_array_equal(record.pixels, image.astype(np.float32))
    np.testing.assert_allclose(record.display, image / 65535.0, atol=1e-7)
    assert record.metadata.bits_stored == 16 and record.metadata.format == "PNG"


def test_16bit_tiff_grayscale(tmp_path):
    image = gradient16()
    path = tmp_path / "sixteen.tif"
    assert cv2.imwrite(str(path), image)
    record = read_image(path)
    assert record.metadata.format == "TIFF" and record.metadata.bits_stored == 16
    np.testing.assert_array_equal(record.pixels, image.astype(np.float32))


def test_rgb_jpeg_comes_back_in_rgb_order(tmp_path):
    bgr = np.zeros((64, 64, 3), dtype=np.uint8)
    bgr[:, :, 2] = 220  # OpenCV writes BGR: this is a red image
    bgr[:, :32, 1] = 90
    path = tmp_path / "colour.jpg"
    assert cv2.imwrite(str(path), bgr)
    record = read_image(path)
    assert record.pixels.shape == (64, 64, 3)
    assert record.metadata.format == "JPEG" and record.metadata.photometric_interpretation == "RGB"
    red, green, blue = (record.pixels[:, 40:, c].mean() for c in range(3))
    assert red > 200 and green < 20 and blue < 20
    np.testing.assert_allclose(record.display, record.pixels / 255.0, atol=1e-7)


def test_rgb_tiff_and_bmp_are_exact(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for name in ("colour.tif", "colour.bmp"):
        path = tmp_path / name
        assert cv2.imwrite(str(path), rgb[:, :, ::-1])
        record = read_image(path)
        np.testing.assert_array_equal(record.pixels, rgb.astype(np.float32))


def test_rgba_drops_alpha_and_palette_is_expanded(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    record = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(record.pixels, rgba[:, :, :3].astype(np.float32))

    Image.fromarray(rgba[:, :, :3], "RGB").convert("P").save(tmp_path / "palette.png")
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"), dtype=np.float32)
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png").pixels, expected)


def test_grayscale_saved_as_rgb_comes_back_grayscale(tmp_path):
    gray = np.random.default_rng(4).integers(0, 256, (25, 35), dtype=np.uint8)
    path = tmp_path / "gray_as_rgb.png"
    assert cv2.imwrite(str(path), np.dstack([gray, gray, gray]))
    record = read_image(path)
    assert record.pixels.shape == (25, 35)
    np.testing.assert_array_equal(record.pixels, gray.astype(np.float32))


def test_raster_with_a_dicom_extension_is_read_by_content(tmp_path):
    path = tmp_path / "knee.dcm"
    shutil.copy(SAMPLE_PNG, path)
    assert read_image(path).metadata.format == "PNG"


def test_truncated_png_is_truncated(tmp_path):
    source = SAMPLE_PNG.read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(source[: len(source) // 2])
    with pytest.raises(TruncatedFileError) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_png_signature_with_garbage_body_is_not_an_image(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200) + b"IEND")
    with pytest.raises(NotAnImageError) as error:
        read_image(path)
    assert str(path) in str(error.value)
