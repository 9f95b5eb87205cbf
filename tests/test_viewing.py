"""The viewer's computations without Qt: orientation markers, measurements, linked slices, study groups, corners.

Real data: the SI-joint STIR and T1 series of one study (../shared/data/sij-mri-dicom/patient1) and a real CR
radiograph from pydicom-data; written DICOM files where a known value (pixel spacing) must be checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared, skip_without_shared
from dicom_factory import write_dicom
from pydicom.data import get_testdata_file

from asdesk.core.records import ImageMetadata, ImageRecord
from asdesk.viewing import (
    ViewState,
    corner_text,
    direction_label,
    edge_labels,
    format_window,
    group_by_study,
    linked_slice,
    measure_line,
    measure_roi,
    shape_mask,
)
from asdesk.viewing.orientation import edge_labels_from_cosines, edge_labels_from_patient_orientation

PATIENT1 = SHARED_DATA / "sij-mri-dicom" / "patient1"


@pytest.fixture(scope="module")
def study() -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The STIR and T1 series of the real SI-joint study, in series order."""
    skip_without_shared("data/sij-mri-dicom")
    from asdesk.io import read_series

    stir, stir_errors = read_series(PATIENT1 / "STIR")
    t1, t1_errors = read_series(PATIENT1 / "T1")
    assert not stir_errors and not t1_errors
    return list(stir), list(t1)


def meta(**fields) -> ImageMetadata:
    return ImageMetadata(Path("x.dcm"), **fields)


# ------------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize(("orientation", "expected"), [
    # (row cosines, column cosines) -> (left, right, top, bottom)
    ((1, 0, 0, 0, 0, -1), ("R", "L", "H", "F")),   # coronal, seen from the front
    ((1, 0, 0, 0, 1, 0), ("R", "L", "A", "P")),    # axial, seen from the feet
    ((0, 1, 0, 0, 0, -1), ("A", "P", "H", "F")),   # sagittal, seen from the patient's left
    ((-1, 0, 0, 0, 0, -1), ("L", "R", "H", "F")),  # coronal seen from behind (a flipped row)
])
def test_edge_labels_of_the_standard_planes(orientation, expected):
    labels = edge_labels(meta(image_orientation=tuple(float(v) for v in orientation)))
    assert (labels.left, labels.right, labels.top, labels.bottom) == expected
    assert labels.source == "ImageOrientationPatient"


def test_oblique_directions_get_a_second_letter_only_beyond_the_threshold():
    tilt = math.radians(38.0)  # an oblique coronal SI-joint slice, tilted towards posterior
    labels = edge_labels_from_cosines((1, 0, 0, 0, math.sin(tilt), -math.cos(tilt)))
    assert (labels.top, labels.bottom) == ("HA", "FP")
    small = math.radians(5.0)  # a few degrees read as the plain plane
    labels = edge_labels_from_cosines((1, 0, 0, 0, math.sin(small), -math.cos(small)))
    assert (labels.top, labels.bottom) == ("H", "F")
    assert direction_label((0.1, 0.2, -0.97), oblique_threshold_deg=5.0, max_letters=3) == "FPL"
    assert direction_label((0.6, 0.0, 0.8)) == "HL" and direction_label((-0.8, 0.0, -0.6)) == "RF"
    with pytest.raises(ValueError, match="zero length"):
        direction_label((0, 0, 0))
    with pytest.raises(ValueError, match="6 values"):
        edge_labels_from_cosines((1, 0, 0))


@requires_shared("data/sij-mri-dicom")
def test_edge_labels_of_the_real_oblique_coronal_stir():
    path = PATIENT1 / "STIR" / "I1000000"
    cosines = [float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImageOrientationPatient]
    assert cosines[:3] == [1.0, 0.0, 0.0] and cosines[4] > 0.5 and cosines[5] < -0.7  # rows to L, columns F + P
    from asdesk.io import read_image

    labels = edge_labels(read_image(path).metadata)
    assert (labels.left, labels.right, labels.top, labels.bottom) == ("R", "L", "HA", "FP")


def test_radiographs_are_labelled_from_patient_orientation_and_other_images_not_at_all():
    labels = edge_labels(meta(patient_orientation=("L", "F")))
    assert (labels.left, labels.right, labels.top, labels.bottom, labels.source) == ("R", "L", "H", "F",
                                                                                      "PatientOrientation")
    assert edge_labels_from_patient_orientation(("A", "FR")).top == "HL"
    assert edge_labels_from_patient_orientation(("CR", "M")) is None  # quadruped terms: not labelled
    assert edge_labels(meta()) is None  # a PNG: no markers rather than a guess
    path = get_testdata_file("RG3_UNCR.dcm")
    if path is None:
        pytest.skip("RG3_UNCR.dcm (pydicom-data) is not installed")
    from asdesk.io import read_image

    real = edge_labels(read_image(path).metadata)
    assert (real.left, real.right, real.top, real.bottom) == ("L", "R", "H", "F")  # PatientOrientation R\F


# ---------------------------------------------------------------------------------------- measurements
def test_line_length_in_mm_from_a_written_pixel_spacing(tmp_path: Path):
    from asdesk.io import read_image

    pixels = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    path = write_dicom(tmp_path / "mr", pixels, Modality="MR", PixelSpacing=[0.5, 0.25])
    spacing = [float(v) for v in pydicom.dcmread(path).PixelSpacing]  # (row, column) as written
    metadata = read_image(path).metadata
    line = measure_line((2.0, 3.0), (10.0, 9.0), metadata)  # 8 columns across, 6 rows down
    assert line.unit == "mm" and line.note == ""
    assert line.length == pytest.approx(math.hypot(8 * spacing[1], 6 * spacing[0])) == pytest.approx(math.sqrt(13))
    assert line.length_px == pytest.approx(10.0) and line.text() == "3.6 mm"


def test_line_length_at_the_detector_and_without_spacing():
    detector = measure_line((0, 0), (0, 100), meta(pixel_spacing_mm=(0.15, 0.15),
                                                   pixel_spacing_source="ImagerPixelSpacing"))
    assert detector.length == pytest.approx(15.0) and detector.text() == "15.0 mm (at detector)"
    plain = measure_line((0, 0), (30, 40), meta())
    assert plain.unit == "px" and plain.length == pytest.approx(50.0)
    assert plain.text() == "50.0 px (no pixel spacing)"
    with pytest.raises(ValueError, match="image pixels"):
        measure_line((0, math.nan), (1, 1), meta())


def test_shape_mask_takes_the_pixels_whose_centres_are_inside():
    rectangle = shape_mask((6, 8), "rectangle", (1.0, 2.0), (3.0, 2.0))
    expected = np.zeros((6, 8), bool)
    expected[2:4, 1:4] = True
    np.testing.assert_array_equal(rectangle, expected)
    ellipse = shape_mask((50, 60), "ellipse", (10.0, 5.0), (30.0, 20.0))
    rows, columns = np.nonzero(ellipse)
    assert np.all(((columns + 0.5 - 25.0) / 15.0) ** 2 + ((rows + 0.5 - 15.0) / 10.0) ** 2 <= 1.0)
    assert ellipse.sum() == pytest.approx(math.pi * 15 * 10, rel=0.03)
    rotated = shape_mask((40, 40), "rectangle", (20.0, 20.0), (10.0, 2.0), angle_deg=90.0)
    assert rotated[25, 19] and not rotated[21, 25]  # turned to point down (+y), to the left of x = 20
    with pytest.raises(ValueError, match="unknown ROI shape"):
        shape_mask((4, 4), "polygon", (0, 0), (1, 1))  # type: ignore[arg-type]


@requires_shared("data/sij-mri-dicom")
def test_roi_mean_sd_and_area_equal_numpy_on_the_same_pixels_of_a_real_slice(study):
    record = study[0][7]
    origin, size = (100.0, 80.0), (40.0, 25.0)
    stats = measure_roi(record.pixels, "ellipse", origin, size, record.metadata)
    # The same pixels chosen independently: centres inside the inscribed ellipse.
    inside = [record.pixels[row, column] for row in range(256) for column in range(256)
              if ((column + 0.5 - 120.0) / 20.0) ** 2 + ((row + 0.5 - 92.5) / 12.5) ** 2 <= 1.0]
    values = np.asarray(inside, dtype=np.float64)
    assert stats.n_pixels == values.size
    assert stats.mean == pytest.approx(values.mean()) and stats.sd == pytest.approx(values.std(ddof=1))
    assert (stats.minimum, stats.maximum) == (values.min(), values.max())
    row_mm, column_mm = record.metadata.pixel_spacing_mm
    assert stats.area == pytest.approx(math.pi / 4 * 40 * 25 * row_mm * column_mm) and stats.area_unit == "mm²"
    assert stats.text().startswith(f"mean {values.mean():.1f}  SD {values.std(ddof=1):.1f}\narea ")
    square = measure_roi(record.pixels, "rectangle", (10.0, 20.0), (5.0, 4.0), record.metadata)
    block = record.pixels[20:24, 10:15].astype(np.float64)
    assert square.mean == pytest.approx(block.mean()) and square.sd == pytest.approx(block.std(ddof=1))
    assert square.n_pixels == 20


def test_roi_without_spacing_is_in_pixels_and_ct_values_in_hu():
    pixels = np.arange(100, dtype=np.float32).reshape(10, 10)
    stats = measure_roi(pixels, "rectangle", (0, 0), (2, 2), meta(modality="CT"))
    assert stats.area_unit == "px²" and stats.note == "no pixel spacing" and stats.value_unit == "HU"
    assert stats.mean == pytest.approx(5.5) and "HU" in stats.text()
    empty = measure_roi(pixels, "ellipse", (3.2, 3.2), (0.2, 0.2), meta())
    assert empty.n_pixels == 0 and math.isnan(empty.mean) and "no pixel inside" in empty.text()


# -------------------------------------------------------------------------------------------- linking
@requires_shared("data/sij-mri-dicom")
def test_linked_slices_follow_position_not_index(study):
    stir, t1 = study
    # Reverse the T1 series and drop its first four slices: index k of STIR is no longer index k of T1.
    targets = list(reversed(t1[4:]))
    for k, record in enumerate(stir):
        link = linked_slice(record, targets)
        assert link is not None
        expected = min(range(len(targets)), key=lambda i: abs(
            (targets[i].metadata.slice_position_mm or 0.0) - (record.metadata.slice_position_mm or 0.0)))
        assert link.index == expected
        if k >= 4:  # the same slice position exists in T1: distance 0
            assert targets[link.index].metadata.image_position == pytest.approx(record.metadata.image_position)
            assert link.distance_mm == pytest.approx(0.0, abs=1e-3)
        else:  # beyond T1's first kept slice: the nearest end, 5 mm apart per missing slice
            assert link.index == len(targets) - 1 and link.distance_mm == pytest.approx(5.0 * (4 - k), abs=0.05)


@requires_shared("data/sij-mri-dicom")
def test_no_link_across_planes_or_without_positions(study):
    stir, t1 = study
    axial = [ImageRecord(r.pixels, r.display, ImageMetadata(Path("a"), image_orientation=(1, 0, 0, 0, 1, 0),
                                                              image_position=(0.0, 0.0, float(z))))
             for z, r in enumerate(t1)]
    assert linked_slice(stir[0], axial) is None
    no_position = ImageRecord(stir[0].pixels, stir[0].display, ImageMetadata(Path("p")))
    assert linked_slice(no_position, t1) is None and linked_slice(stir[0], []) is None


# --------------------------------------------------------------------------------------------- studies
def test_series_are_grouped_by_study_in_opening_order():
    groups = group_by_study(["1.2.3", "", "1.2.9", "1.2.3", ""])
    assert [(g.study_uid, g.members, g.is_study) for g in groups] == [
        ("1.2.3", (0, 3), True), ("", (1,), False), ("1.2.9", (2,), False), ("", (4,), False)]


# --------------------------------------------------------------------------------------------- corners
def test_window_values_read_as_whole_numbers():
    assert format_window(263.8, 543.8) == "W 544  L 264"
    assert format_window(0.425, 0.85) == "W 0.85  L 0.425"


@requires_shared("data/sij-mri-dicom")
def test_corner_text_of_a_real_stir_slice(study):
    record = study[0][4]
    meta_ = record.metadata
    text = corner_text(meta_, ViewState(index=4, count=15, window_centre=183.6, window_width=443.7, zoom=1.523,
                                        inverted=True))
    assert text.top_left == ("02-01", "ID 02-01")
    assert meta_.study_description == "050"  # as the anonymised export has it
    assert text.top_right == ("MR 2008-02-22", "050", "Se 10: CORO Stir_FIL_1")
    assert text.bottom_left == (f"Slice 5 / 15 · Im {meta_.instance_number}",
                                f"Pos {meta_.slice_position_mm:.1f} mm")
    assert text.bottom_right == ("W 444  L 184", "Zoom 152 %", "Inverted")
    # A PNG: no patient, no series, no position; the window and zoom still show.
    png = corner_text(ImageMetadata(Path("knee.png"), format="PNG"), ViewState(window_centre=128, window_width=256))
    assert png.top_left == () and png.bottom_left == () and png.bottom_right == ("W 256  L 128",)
    located = corner_text(meta(slice_location_mm=-12.34, patient_name="Doe^John", series_number=3), ViewState())
    assert located.bottom_left == ("Loc -12.3 mm",) and located.top_left == ("DOE, John",)
    assert located.top_right == ("Se 3",)  # a series number without a description
