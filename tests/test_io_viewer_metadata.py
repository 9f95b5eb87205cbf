"""The attributes the viewer's corner text, orientation markers, rulers and linked slices read from DICOM:
SeriesNumber, SliceLocation, ImagePositionPatient, PatientOrientation and where the pixel spacing came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared
from dicom_factory import write_dicom
from pydicom.data import get_testdata_file

from asdesk.io import read_image

PATIENT1 = SHARED_DATA / "sij-mri-dicom" / "patient1"


@requires_shared("data/sij-mri-dicom")
@pytest.mark.parametrize(("series", "number"), [("STIR", 10), ("T1", 11)])
def test_series_number_position_and_slice_location_of_the_real_study(series: str, number: int):
    path = PATIENT1 / series / "I1000001"
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    meta = read_image(path).metadata
    assert meta.series_number == number == int(dataset.SeriesNumber)
    assert meta.image_position == pytest.approx([float(v) for v in dataset.ImagePositionPatient])
    assert meta.slice_location_mm == pytest.approx(float(dataset.SliceLocation))
    assert meta.pixel_spacing_source == "PixelSpacing"
    assert meta.patient_orientation is None  # an MR image states ImageOrientationPatient instead


def test_patient_orientation_of_a_real_radiograph():
    path = get_testdata_file("RG3_UNCR.dcm")
    if path is None:
        pytest.skip("RG3_UNCR.dcm (pydicom-data) is not installed")
    meta = read_image(path).metadata
    assert meta.patient_orientation == ("R", "F") and meta.image_orientation is None
    assert meta.image_position is None and meta.pixel_spacing_source == "" and meta.pixel_spacing_mm is None


def test_imager_pixel_spacing_is_marked_as_at_the_detector(tmp_path: Path):
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 100  # not blank: the reader refuses blank images
    detector = read_image(write_dicom(tmp_path / "dx", pixels, Modality="DX", ImagerPixelSpacing=[0.15, 0.2],
                                      PatientOrientation=["A", "FR"])).metadata
    assert detector.pixel_spacing_mm == pytest.approx((0.15, 0.2))
    assert detector.pixel_spacing_source == "ImagerPixelSpacing"
    assert detector.patient_orientation == ("A", "FR")
    both = read_image(write_dicom(tmp_path / "both", pixels, Modality="DX", ImagerPixelSpacing=[0.15, 0.15],
                                  PixelSpacing=[0.125, 0.125])).metadata
    assert both.pixel_spacing_mm == pytest.approx((0.125, 0.125)) and both.pixel_spacing_source == "PixelSpacing"
    none = read_image(write_dicom(tmp_path / "none", pixels, PatientOrientation="L")).metadata
    assert none.pixel_spacing_source == "" and none.patient_orientation is None  # one value is not an orientation
