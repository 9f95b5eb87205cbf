"""asdesk.io DICOM reading on real files: the SI-joint study, pydicom's and pydicom-data's test files.

The core checks run on files that ship with pydicom / pydicom-data and with asdesk (``resources/samples``);
the SI-joint study in ``<repo>/../shared/data`` adds the real PACS export where it is present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import REPO, SHARED_DATA, requires_shared
from pydicom.data import get_testdata_file

from asdesk.core.errors import (
    DicomDecodeError,
    NoPixelDataError,
    NotAnImageError,
    ReadError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from asdesk.io import dicom as dicom_module
from asdesk.io import is_dicom, read_dicom_frame, read_frames, read_image

STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
T1 = SHARED_DATA / "sij-mri-dicom" / "patient1" / "T1"
SAMPLE_PNG = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"  # ships with asdesk
needs_sij_dicom = requires_shared("data/sij-mri-dicom")


def sample(name: str) -> Path:
    """A pydicom / pydicom-data test file, skipping the test if this pydicom build lacks it."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not available in this pydicom / pydicom-data installation")
    return Path(path)


def linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window, scaled to [0, 1]."""
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


# --- a DICOM file without extension (PACS export) ---------------------------------------------------------


def test_dicom_file_without_extension_is_recognised_and_read_with_its_metadata(tmp_path):
    source = sample("MR_small.dcm")
    path = tmp_path / "I0000001"  # the way PACS exports name files
    shutil.copy(source, path)
    assert is_dicom(path)
    record = read_image(path)
    dataset = pydicom.dcmread(source)
    assert record.pixels.shape == (64, 64) and record.pixels.dtype == np.float32
    np.testing.assert_array_equal(record.pixels, dataset.pixel_array.astype(np.float32))
    assert record.display.dtype == np.float32
    assert 0.0 <= record.display.min() and record.display.max() <= 1.0 and np.ptp(record.display) > 0.5
    meta = record.metadata
    assert meta.format == "DICOM" and meta.source == path
    assert meta.modality == "MR" and meta.patient_name == str(dataset.PatientName)
    assert meta.series_uid == dataset.SeriesInstanceUID and meta.sop_instance_uid == dataset.SOPInstanceUID
    assert meta.pixel_spacing_mm == pytest.approx((0.3125, 0.3125))
    assert meta.instance_number == 1 and meta.frame_index is None
    assert meta.transfer_syntax == "Explicit VR Little Endian"
    assert meta.photometric_interpretation == "MONOCHROME2" and not record.inverted


@needs_sij_dicom
def test_stir_file_without_extension_is_dicom_and_reads_with_full_metadata():
    path = STIR / "I1000000"
    assert path.suffix == ""
    assert is_dicom(path)
    record = read_image(path)
    assert record.pixels.shape == (256, 256) and record.pixels.dtype == np.float32
    assert record.display.shape == (256, 256) and record.display.dtype == np.float32
    assert 0.0 <= record.display.min() and record.display.max() <= 1.0
    meta = record.metadata
    assert meta.format == "DICOM" and meta.source == path
    assert meta.modality == "MR" and meta.manufacturer == "SIEMENS"
    assert meta.series_description == "CORO  Stir_FIL_1"
    assert meta.study_date == "20080222" and meta.series_date == "20080222"
    assert meta.patient_id == "02-01" and meta.patient_name == "02-01"
    assert meta.study_uid and meta.series_uid and meta.sop_instance_uid
    assert meta.pixel_spacing_mm == pytest.approx((0.9765625, 0.9765625))
    assert (meta.window_centre, meta.window_width) == (184.0, 444.0)
    assert meta.instance_number == 1 and meta.frame_index is None
    assert meta.slice_position_mm == pytest.approx(-147.997, abs=1e-2)  # equals its SliceLocation tag
    assert meta.transfer_syntax == "Explicit VR Little Endian"
    assert meta.photometric_interpretation == "MONOCHROME2" and meta.bits_stored == 12
    assert not record.inverted


@needs_sij_dicom
def test_stir_display_is_the_dicom_linear_window_of_the_pixels():
    record = read_image(STIR / "I5000000")
    dataset = pydicom.dcmread(STIR / "I5000000")
    np.testing.assert_array_equal(record.pixels, dataset.pixel_array.astype(np.float32))
    expected = linear_window(record.pixels.astype(np.float64), float(dataset.WindowCenter),
                             float(dataset.WindowWidth))
    np.testing.assert_allclose(record.display, expected, atol=1e-6)


@needs_sij_dicom
def test_t1_file_reads_with_window_tags():
    record = read_image(T1 / "I1000000")
    assert record.shape == (256, 256)
    assert record.metadata.window_centre is not None and record.metadata.window_width is not None
    assert record.metadata.series_uid != read_image(STIR / "I1000000").metadata.series_uid


# --- transfer syntaxes: compressed data must equal the uncompressed reference ------------------------------

PAIRS = [
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
    ("emri_small.dcm", "emri_small_RLE.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),
    ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
    ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm"),
]


@pytest.mark.parametrize(("reference", "compressed"), PAIRS)
def test_compressed_transfer_syntax_decodes_to_the_uncompressed_reference(reference, compressed):
    expected = read_frames(sample(reference))
    actual = read_frames(sample(compressed))
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(got.pixels, want.pixels)
        np.testing.assert_array_equal(got.display, want.display)
    assert actual[0].metadata.transfer_syntax != expected[0].metadata.transfer_syntax


def test_jpeg_ls_near_lossless_decodes():
    record = read_image(sample("JPEGLSNearLossless_16.dcm"))
    assert record.shape == (50, 10)
    assert record.metadata.transfer_syntax == "JPEG-LS Lossy (Near-Lossless) Image Compression"
    assert np.ptp(record.pixels) > 0


def test_jpeg_lossless_process_14_decodes_with_gdcm():
    record = read_image(sample("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert record.shape == (768, 1024)
    assert "Lossless" in record.metadata.transfer_syntax


# --- multi-frame, enhanced multi-frame, colour ----------------------------------------------------------


def test_multi_frame_file_gives_one_record_per_frame_and_read_image_the_first():
    path = sample("emri_small.dcm")
    frames = read_frames(path)
    assert len(frames) == 10
    assert [f.metadata.frame_index for f in frames] == list(range(10))
    reference = pydicom.dcmread(path).pixel_array
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.pixels, reference[index].astype(np.float32))
    first = read_image(path)
    assert first.metadata.frame_index == 0
    np.testing.assert_array_equal(first.pixels, frames[0].pixels)
    np.testing.assert_array_equal(read_dicom_frame(path, 7).pixels, frames[7].pixels)
    with pytest.raises(ReadError, match="frame 10"):
        read_dicom_frame(path, 10)


def test_enhanced_multi_frame_uses_functional_groups_for_rescale_window_spacing_position():
    frames = read_frames(sample("eCT_Supplemental.dcm"))
    assert len(frames) == 2
    meta = frames[0].metadata
    assert meta.pixel_spacing_mm == pytest.approx((0.388672, 0.388672))
    assert (meta.window_centre, meta.window_width) == (49.0, 102.0)
    assert frames[0].pixels.min() == -1024.0  # rescale intercept -1024 from the functional groups: HU
    positions = [f.metadata.slice_position_mm for f in frames]
    assert positions[0] != positions[1]
    expected = linear_window(frames[0].pixels.astype(np.float64), 49.0, 102.0)
    np.testing.assert_allclose(frames[0].display, expected, atol=1e-6)


def test_rgb_dicom_is_rgb_float32_in_rgb_order():
    record = read_image(sample("SC_rgb.dcm"))
    assert record.pixels.shape == (100, 100, 3) and record.pixels.dtype == np.float32
    np.testing.assert_array_equal(record.pixels[0, 0], [255.0, 0.0, 0.0])  # the top band is red
    np.testing.assert_allclose(record.display, record.pixels / 255.0)


def test_ybr_dicom_is_converted_to_rgb():
    rgb = read_image(sample("SC_rgb.dcm"))
    ybr = read_image(sample("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr.metadata.photometric_interpretation == "YBR_FULL_422"
    assert ybr.pixels.shape == (100, 100, 3)
    assert np.abs(ybr.pixels - rgb.pixels).max() <= 8  # YBR 4:2:2 rounding, not a colour swap
    jpeg = read_image(sample("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline, YBR_FULL
    assert np.abs(jpeg.pixels - rgb.pixels).max() <= 8


def test_palette_colour_is_expanded_to_rgb():
    record = read_image(sample("examples_palette.dcm"))
    assert record.pixels.ndim == 3 and record.pixels.shape[2] == 3
    assert 0.0 <= record.display.min() and record.display.max() <= 1.0


# --- grayscale pipeline: MONOCHROME1, VOI LUT, modality LUT ------------------------------------------------


def test_monochrome1_radiograph_is_inverted_after_the_window():
    record = read_image(sample("RG3_UNCR.dcm"))
    meta = record.metadata
    assert meta.photometric_interpretation == "MONOCHROME1" and record.inverted
    assert meta.modality == "CR"
    # pixels keep the stored values (no inversion); display = 1 - window(pixels): decreasing in pixels
    windowed = linear_window(record.pixels.astype(np.float64), meta.window_centre, meta.window_width)
    np.testing.assert_allclose(record.display, 1.0 - windowed, atol=1e-6)
    low, high = record.pixels.min(), record.pixels.max()
    assert record.display[record.pixels == low].min() > record.display[record.pixels == high].max()
    chosen = np.random.default_rng(0).choice(record.pixels.size, 20000, replace=False)
    assert np.corrcoef(record.pixels.ravel()[chosen], record.display.ravel()[chosen])[0, 1] < -0.9


def test_chest_radiograph_with_zero_pixel_spacing_has_no_spacing():
    record = read_image(sample("RG1_UNCR.dcm"))
    assert record.shape == (1955, 1841) and record.inverted
    assert record.metadata.body_part == "CHEST"
    assert record.metadata.pixel_spacing_mm is None  # the file says PixelSpacing 0\0


def test_voi_lut_sequence_is_preferred_and_monotonic():
    path = sample("vlut_04.dcm")
    record = read_image(path)
    dataset = pydicom.dcmread(path)
    lut = np.asarray(dataset.VOILUTSequence[0].LUTData)
    expected = pydicom.pixels.apply_voi(dataset.pixel_array, dataset).astype(np.float64)
    np.testing.assert_allclose(record.display, (expected - lut.min()) / (lut.max() - lut.min()), atol=1e-6)


def test_modality_lut_sequence_is_applied_to_pixels():
    path = sample("mlut_18.dcm")
    record = read_image(path)
    dataset = pydicom.dcmread(path)
    expected = pydicom.pixels.apply_modality_lut(dataset.pixel_array, dataset)
    np.testing.assert_array_equal(record.pixels, expected.astype(np.float32))


def test_image_without_window_is_shown_by_its_value_range():
    record = read_image(sample("CT_small.dcm"))
    assert record.metadata.window_centre is None
    assert record.display.min() == 0.0 and record.display.max() == 1.0
    assert record.pixels.min() < -800  # rescale intercept applied: HU


# --- files without preamble, files named anything ---------------------------------------------------------


def test_preambleless_dicom_is_recognised_and_read(tmp_path):
    source = sample("MR_small.dcm")
    dataset = pydicom.dcmread(source)
    bare = tmp_path / "IMG0001"
    dataset.preamble = None
    del dataset.file_meta
    pydicom.dcmwrite(bare, dataset, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    assert is_dicom(bare)
    record = read_image(bare)
    np.testing.assert_array_equal(record.pixels, read_image(source).pixels)
    assert record.metadata.transfer_syntax == "Implicit VR Little Endian"


def test_content_decides_not_the_name(tmp_path):
    disguised = tmp_path / "scan.png"
    shutil.copy(sample("MR_small.dcm"), disguised)
    assert read_image(disguised).metadata.format == "DICOM"
    assert not is_dicom(SAMPLE_PNG)
    assert read_image(SAMPLE_PNG).metadata.format == "PNG"


# --- bad files: each raises its own error, naming the file ------------------------------------------------


def assert_names_file(error: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(error.value)
    assert error.value.path == path


def test_text_file_named_dcm_is_not_an_image(tmp_path):
    path = tmp_path / "report.dcm"
    path.write_text("Patient report\nNo findings.\n" * 20)
    assert not is_dicom(path)
    with pytest.raises(NotAnImageError) as error:
        read_image(path)
    assert_names_file(error, path)


def test_empty_file_is_not_an_image(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert not is_dicom(path)
    with pytest.raises(NotAnImageError, match="empty") as error:
        read_image(path)
    assert_names_file(error, path)


def test_random_binary_without_extension_is_not_an_image(tmp_path):
    path = tmp_path / "BLOB0001"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert not is_dicom(path)
    with pytest.raises(NotAnImageError) as error:
        read_image(path)
    assert_names_file(error, path)


@pytest.mark.parametrize("fraction", [0.5, 0.05])
def test_truncated_native_dicom_is_reported_as_truncated(tmp_path, fraction):
    content = sample("MR_small.dcm").read_bytes()  # Explicit VR Little Endian: pixel data end at the file end
    path = tmp_path / "I1000000"
    path.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(TruncatedFileError) as error:
        read_image(path)
    assert_names_file(error, path)


@needs_sij_dicom
@pytest.mark.parametrize("fraction", [0.5, 0.999, 0.004])
def test_truncated_stir_file_is_reported_as_truncated(tmp_path, fraction):
    content = (STIR / "I1000000").read_bytes()
    path = tmp_path / "I1000000"
    path.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(TruncatedFileError) as error:
        read_image(path)
    assert_names_file(error, path)


def test_truncated_jpeg2000_dicom_is_reported_as_truncated(tmp_path):
    content = sample("MR_small_jp2klossless.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(TruncatedFileError) as error:
        read_image(path)
    assert_names_file(error, path)


def test_dicom_without_pixel_data(tmp_path):
    path = tmp_path / "RTPLAN"
    shutil.copy(sample("rtplan.dcm"), path)
    assert is_dicom(path)
    with pytest.raises(NoPixelDataError, match="RT Plan") as error:
        read_image(path)
    assert_names_file(error, path)


def test_transfer_syntax_without_any_decoder_is_unsupported(tmp_path):
    dataset = pydicom.dcmread(sample("MR_small_jp2klossless.dcm"))
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    path = tmp_path / "video.dcm"
    dataset.save_as(path)
    with pytest.raises(UnsupportedTransferSyntaxError, match="MPEG2") as error:
        read_image(path)
    assert_names_file(error, path)


def test_missing_decoder_plugin_names_the_package_to_install(monkeypatch):
    class NoPlugin:
        is_available = False

    monkeypatch.setattr(dicom_module, "get_decoder", lambda uid: NoPlugin())
    path = sample("MR_small_jp2klossless.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError, match="pylibjpeg-openjpeg") as error:
        read_image(path)
    assert_names_file(error, path)
    with pytest.raises(UnsupportedTransferSyntaxError, match="pyjpegls"):
        read_image(sample("emri_small_jpeg_ls_lossless.dcm"))


def test_corrupt_compressed_pixel_data_is_a_decode_error(tmp_path):
    dataset = pydicom.dcmread(sample("MR_small_jp2klossless.dcm"))
    codestream = next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
    garbage = codestream[:20] + bytes(len(codestream) - 20)
    dataset.PixelData = pydicom.encaps.encapsulate([garbage])
    path = tmp_path / "corrupt.dcm"
    dataset.save_as(path)
    with pytest.raises(DicomDecodeError) as error:
        read_image(path)
    assert_names_file(error, path)
