"""Numeric tests of every preprocessing transform and of build_pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, skip_without_shared

from asdesk.core import ImageMetadata, ImageRecord, PreprocessError
from asdesk.preprocess import (
    Clahe,
    CropMillimetres,
    Geometry,
    HistogramEqualisation,
    Normalise,
    Resize,
    Window,
    build_pipeline,
    to_grayscale,
)

KNEE = SHARED_DATA / "knee-xray-kl" / "val" / "2"


def record(pixels: np.ndarray, photometric: str = "MONOCHROME2", spacing: tuple[float, float] | None = None,
           display: np.ndarray | None = None) -> ImageRecord:
    pixels = pixels.astype(np.float32)
    if display is None:
        display = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-6)
    meta = ImageMetadata(source=Path("synthetic"), photometric_interpretation=photometric, pixel_spacing_mm=spacing)
    return ImageRecord(pixels=pixels, display=display.astype(np.float32), metadata=meta)


def real_knee() -> np.ndarray:
    skip_without_shared("data/knee-xray-kl")
    files = sorted(KNEE.glob("*.png"))
    return cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def test_to_grayscale_uses_bt601_weights():
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 50, 10
    assert np.allclose(to_grayscale(rgb), 0.299 * 100 + 0.587 * 50 + 0.114 * 10)
    with pytest.raises(PreprocessError):
        to_grayscale(np.zeros((2, 2, 4)))


def test_fixed_window_is_linear_and_clipped():
    values = np.array([[0, 50, 100, 150, 200]], np.float32)
    out = Window(mode="fixed", centre=100, width=100)(record(values))
    assert np.allclose(out, [[0, 0, 0.5, 1, 1]])


def test_window_inverts_monochrome1_after_voi():
    values = np.array([[0, 50, 100, 150, 200]], np.float32)
    out = Window(mode="fixed", centre=100, width=100)(record(values, "MONOCHROME1"))
    assert np.allclose(out, [[1, 1, 0.5, 0, 0]])


def test_percentile_window_ignores_background_and_outliers():
    rng = np.random.default_rng(0)
    values = np.zeros((100, 100), np.float32)
    values[20:80, 20:80] = rng.uniform(100, 200, (60, 60))
    values[50, 50] = 10_000  # one hot pixel
    out = Window(mode="percentile", low=1, high=99)(record(values))
    inside = out[20:80, 20:80]
    assert inside.max() == 1.0 and np.median(inside) == pytest.approx(0.5, abs=0.06)
    assert out[0, 0] == 0.0


def test_reference_window_is_independent_of_the_scanner_scale_on_real_stir():
    """STIR has no absolute scale: the same slice at 3x the signal must reach the model unchanged, and
    the tissue reference must sit near the normal-marrow region the VHI readers drew (0.7-1.5x)."""
    skip_without_shared("data/sij-mri-spa")
    from asdesk.io import nifti_slices
    from asdesk.io.nifti import read_nifti_volume
    from asdesk.preprocess.transforms import tissue_reference

    root = SHARED_DATA / "sij-mri-spa"
    slices = nifti_slices(root / "stir" / "Pre_Scans" / "1003_STIR.nii.gz")
    normal = read_nifti_volume(root / "normal_marrow_masks" / "1003_normal_marrow.nii.gz")[0] > 0
    window = Window(mode="reference", low=20.0, high=4.0)
    for index in np.flatnonzero(normal.any(axis=(1, 2))):
        source = slices[index]
        brighter = record(source.pixels * 3.0)
        np.testing.assert_allclose(window(brighter), window(record(source.pixels)), atol=1e-6)
        ratio = tissue_reference(source.pixels) / float(source.pixels[normal[index]].mean())
        assert 0.7 < ratio < 1.5, (index, ratio)
    out = window(slices[12])
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert 0.2 < float(np.median(out[out > 0])) < 0.35  # tissue near 1/4 of the range: 4x the reference is 1


def test_reference_window_of_an_empty_image_is_zero_not_nan():
    out = Window(mode="reference", low=20.0, high=4.0)(record(np.zeros((8, 8))))
    assert np.all(out == 0.0)


def test_display_window_returns_record_display():
    display = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = Window(mode="display")(record(np.zeros((4, 4)), display=display))
    assert np.array_equal(out, display)


def test_window_rejects_bad_parameters():
    with pytest.raises(PreprocessError):
        Window(mode="fixed", centre=10, width=0)
    with pytest.raises(PreprocessError):
        Window(mode="percentile", low=90, high=10)
    with pytest.raises(PreprocessError):
        Window(mode="auto")
    with pytest.raises(PreprocessError):
        Window(mode="reference", low=20, high=0)


def test_crop_millimetres_uses_pixel_spacing():
    image = np.arange(100 * 200, dtype=np.float32).reshape(100, 200)
    crop = CropMillimetres(height_mm=25, width_mm=50)
    assert crop.box((100, 200), (0.5, 0.5)) == (25, 50, 75, 150)
    assert crop(image, (0.5, 0.5)).shape == (50, 100)
    assert crop(image, None).shape == (100, 200)  # no spacing: whole image
    assert crop(image, (0.1, 0.1)).shape == (100, 200)  # larger than the image: whole extent


def test_clahe_raises_local_contrast_on_real_radiograph():
    image = real_knee() * 0.3 + 0.35  # a low-contrast version
    out = Clahe(clip_limit=2.0, tile_grid=(8, 8))(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 1.5 * image.std()
    expected = cv2.createCLAHE(2.0, (8, 8)).apply(np.rint(image * 255).astype(np.uint8)) / 255.0
    assert np.allclose(out, expected, atol=1e-6)


def test_histogram_equalisation_flattens_the_histogram():
    image = real_knee() * 0.5
    out = HistogramEqualisation()(image)
    histogram = np.histogram(out, bins=8, range=(0, 1))[0] / out.size
    assert np.abs(histogram - 1 / 8).max() < 0.06
    assert np.abs(np.histogram(image, bins=8, range=(0, 1))[0] / image.size - 1 / 8).max() > 0.2


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_resize_modes_and_geometry_round_trip(mode):
    image = np.zeros((100, 200), np.float32)
    image[40:60, 90:110] = 1.0  # a bright square in the middle
    out, geometry = Resize(64, 64, mode).apply(image, Geometry.identity(image.shape))
    assert out.shape == (64, 64)
    if mode == "pad":
        top, left, bottom, right = geometry.content_box
        assert (left, right) == (0, 64) and bottom - top == 32
        assert out[:top].max() == 0.0
    back = geometry.to_image(out)
    assert back.shape == image.shape
    assert back[50, 100] > 0.9 and back[5, 5] < 0.05


def test_resize_rejects_tiny_output():
    with pytest.raises(PreprocessError):
        Resize(4, 4)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "vgg16", "resnet50", "densenet121"])
def test_normalise_matches_keras_preprocess_input(backbone):
    keras = pytest.importorskip("keras")
    image = np.random.default_rng(1).uniform(0, 1, (8, 8)).astype(np.float32)
    module = {"mobilenet_v2": keras.applications.mobilenet_v2, "vgg16": keras.applications.vgg16,
              "resnet50": keras.applications.resnet50, "densenet121": keras.applications.densenet}[backbone]
    rgb255 = np.repeat(image[:, :, None] * 255.0, 3, axis=2)
    expected = np.asarray(module.preprocess_input(rgb255.copy()))
    assert np.allclose(Normalise(backbone)(image), expected, atol=1e-4)


def test_build_pipeline_runs_card_steps_on_real_image():
    knee = real_knee()
    spec = [{"name": "window", "mode": "display"}, {"name": "clahe", "clip_limit": 2.0, "tile_grid": [8, 8]},
            {"name": "resize", "height": 96, "width": 96, "mode": "pad"}, {"name": "normalise", "backbone": "vgg16"}]
    pipeline = build_pipeline(spec)
    result = pipeline(record(knee * 255.0, display=knee))
    assert result.tensor.shape == (96, 96, 3) and result.tensor.dtype == np.float32
    assert result.image.shape == (96, 96) and 0 <= result.image.min() and result.image.max() <= 1
    assert np.allclose(result.tensor, Normalise("vgg16")(result.image))
    names = [name for name, _ in pipeline.stages(record(knee * 255.0, display=knee))]
    assert names == ["window", "clahe", "resize"]


@pytest.mark.parametrize("spec, message", [
    ([{"name": "resize", "height": 32, "width": 32}, {"name": "normalise"}], "starts with"),
    ([{"name": "window"}, {"name": "normalise"}, {"name": "resize", "height": 32, "width": 32}], "ends with"),
    ([{"name": "window"}, {"name": "sharpen"}, {"name": "resize", "height": 32, "width": 32},
      {"name": "normalise"}], "unknown preprocessing step"),
    ([{"name": "window", "bogus": 1}, {"name": "resize", "height": 32, "width": 32}, {"name": "normalise"}],
     "bad parameters"),
])
def test_build_pipeline_rejects_bad_specs(spec, message):
    with pytest.raises(PreprocessError, match=message):
        build_pipeline(spec)
