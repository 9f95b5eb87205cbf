"""The viewer's reading tools (pytest-qt, offscreen): rulers and ROIs drawn with the mouse, their keys and
lifetime, corner annotations, orientation markers and invert.

Images are real (the SI-joint STIR series from ../shared/data, a knee radiograph) or DICOM files written here
with a known pixel spacing, read back through asdesk's reader.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from conftest import SHARED_DATA, requires_shared, skip_without_shared  # noqa: E402
from dicom_factory import write_dicom  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402

from asdesk.core import ImageMetadata, ImageRecord  # noqa: E402

STIR_DIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
KNEE = SHARED_DATA / "knee-xray-kl" / "val" / "2"

pytestmark = [pytest.mark.gui]


@pytest.fixture(scope="module")
def stir_records() -> list[ImageRecord]:
    """The 15 slices of the real STIR series."""
    skip_without_shared("data/sij-mri-dicom")
    from asdesk.io import read_series

    records, errors = read_series(STIR_DIR)
    assert not errors
    return list(records)


@pytest.fixture
def viewer(qtbot):
    from asdesk.gui.viewer import ImageViewer

    widget = ImageViewer()
    qtbot.addWidget(widget)
    widget.resize(800, 700)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def widget_point(viewer, x: float, y: float) -> QPoint:
    """The viewport pixel over image point (x = column, y = row)."""
    return viewer.graphics.mapFromScene(viewer.view.mapViewToScene(QPointF(x, y)))


def drag(qtbot, viewer, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    """A real left-button drag on the viewport, from image point ``start`` to ``end``.

    pyqtgraph drops mouse moves closer than 1 / ``mouseRateLimit`` s (10 ms) to the previous one, as a real
    mouse never sends them: the moves here are 15 ms apart.
    """
    port = viewer.graphics.viewport()
    a, b = widget_point(viewer, *start), widget_point(viewer, *end)
    qtbot.wait(15)
    qtbot.mousePress(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    for step in range(1, steps + 1):
        qtbot.wait(15)
        qtbot.mouseMove(port, a + (b - a) * (step / steps))
    qtbot.mouseRelease(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def written_record(tmp_path: Path, spacing: list[float], **attributes) -> tuple[ImageRecord, Path]:
    from asdesk.io import read_image

    pixels = (np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) % 997) + 10
    path = write_dicom(tmp_path / "image", pixels, Modality="MR", PixelSpacing=spacing, **attributes)
    return read_image(path), path


# ------------------------------------------------------------------------------------------------ ruler
def test_a_ruler_drawn_with_the_mouse_gives_mm_from_the_pixel_spacing(qtbot, viewer, tmp_path: Path):
    record, path = written_record(tmp_path, [0.5, 0.25])  # rows 0.5 mm apart, columns 0.25 mm
    row_mm, column_mm = (float(v) for v in pydicom.dcmread(path).PixelSpacing)
    viewer.set_records([record])
    viewer.set_tool("ruler")
    drag(qtbot, viewer, (10.5, 20.5), (90.5, 20.5))  # 80 columns across
    drag(qtbot, viewer, (5.5, 4.5), (5.5, 60.5))     # 56 rows down
    across, down = viewer.measurements.measurements()
    (x0, y0), (x1, y1) = across.points()
    assert across.result.unit == "mm"
    assert across.result.length == pytest.approx(math.hypot((x1 - x0) * column_mm, (y1 - y0) * row_mm))
    assert across.result.length == pytest.approx(80 * 0.25, abs=2 * 0.25)  # within the mouse's pixel grid
    assert down.result.length == pytest.approx(56 * 0.5, abs=2 * 0.5)
    assert across.label.textItem.toPlainText() == across.result.text() and across.result.text().endswith(" mm")
    assert viewer.measurements.selected is down  # the last drawn is selected (Delete removes it)


@requires_shared("data/sij-mri-dicom")
def test_a_ruler_on_the_real_stir_uses_its_pixel_spacing(qtbot, viewer, stir_records):
    spacing = [float(v) for v in pydicom.dcmread(stir_records[0].metadata.source).PixelSpacing]
    viewer.set_records(stir_records)
    viewer.set_tool("ruler")
    drag(qtbot, viewer, (40.5, 128.5), (210.5, 128.5))
    line = viewer.measurements.measurements()[0].result
    assert line.length == pytest.approx(line.length_px * spacing[1], rel=1e-3)
    assert line.length == pytest.approx(170 * spacing[1], abs=2 * spacing[1])


def test_rulers_without_spacing_are_in_pixels_and_at_the_detector_say_so(qtbot, viewer, tmp_path: Path):
    pixels = np.random.default_rng(0).uniform(0, 255, (50, 60)).astype(np.float32)
    plain = ImageRecord(pixels, pixels / 255, ImageMetadata(Path("knee.png"), format="PNG"))
    viewer.set_records([plain])
    viewer.set_tool("ruler")
    drag(qtbot, viewer, (5.5, 5.5), (45.5, 35.5))
    assert viewer.measurements.measurements()[0].text().endswith(" px (no pixel spacing)")
    from asdesk.io import read_image

    stored = (np.arange(50 * 60, dtype=np.uint16).reshape(50, 60) % 400) + 1
    detector = read_image(write_dicom(tmp_path / "dx", stored, Modality="DX", ImagerPixelSpacing=[0.2, 0.2]))
    viewer.set_records([detector])
    assert viewer.measurements.measurements() == []  # a new image: no measurement carried over
    drag(qtbot, viewer, (5.5, 5.5), (45.5, 5.5))
    assert viewer.measurements.measurements()[0].text().endswith(" mm (at detector)")


# ------------------------------------------------------------------------------------------------- ROIs
@requires_shared("data/sij-mri-dicom")
@pytest.mark.parametrize("tool", ["ellipse", "rectangle"])
def test_an_roi_gives_mean_and_sd_of_the_pixels_inside(qtbot, viewer, stir_records, tool: str):
    viewer.set_records(stir_records)
    viewer.set_slice(7)
    viewer.set_tool(tool)
    drag(qtbot, viewer, (90.5, 140.5), (140.5, 175.5))
    roi = viewer.measurements.measurements()[0]
    stats = roi.result
    (x0, y0), (x1, y1) = roi.points()
    assert x1 - x0 == pytest.approx(50, abs=2) and y1 - y0 == pytest.approx(35, abs=2)
    # The pixels inside, chosen here independently of asdesk.viewing: centres inside the shape drawn.
    pixels = stir_records[7].pixels
    rows, columns = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]] + 0.5
    if tool == "ellipse":
        cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        inside = ((columns - cx) / a) ** 2 + ((rows - cy) / b) ** 2 <= 1.0
        area_px = math.pi * a * b
    else:
        inside = (columns >= x0) & (columns < x1) & (rows >= y0) & (rows < y1)
        area_px = (x1 - x0) * (y1 - y0)
    values = pixels[inside].astype(np.float64)
    assert stats.n_pixels == values.size > 1000
    assert stats.mean == pytest.approx(values.mean()) and stats.sd == pytest.approx(values.std(ddof=1))
    row_mm, column_mm = stir_records[7].metadata.pixel_spacing_mm
    assert stats.area == pytest.approx(area_px * row_mm * column_mm) and stats.area_unit == "mm²"
    assert f"mean {values.mean():.1f}" in roi.label.textItem.toPlainText()


# ------------------------------------------------------------------------------------- keys and lifetime
@requires_shared("data/sij-mri-dicom")
def test_measurement_keys_slices_and_a_new_case(qtbot, viewer, stir_records):
    viewer.set_records(stir_records)
    viewer.set_slice(3)
    viewer.graphics.setFocus()
    assert not viewer.wants_key(Qt.Key.Key_Escape)  # no tool: Esc stays the window's (cancel analysis)
    viewer.set_tool("ruler")
    for start in (10.5, 30.5, 50.5):
        drag(qtbot, viewer, (start, 20.5), (start + 40, 60.5))
    first, second, third = viewer.measurements.measurements(3)
    # Delete removes the selected (the last drawn, or one clicked); Ctrl+Z the last of the slice.
    viewer.measurements.select(first)
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Delete)
    assert viewer.measurements.measurements(3) == [second, third]
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert viewer.measurements.measurements(3) == [second]
    assert first.roi.scene() is None and third.roi.scene() is None  # gone from the view
    # Measurements belong to their slice.
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Down)
    assert viewer.current_index == 4 and not second.roi.isVisible()
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert viewer.measurements.measurements() == [second]  # nothing on slice 5 to undo
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Up)
    assert second.roi.isVisible() and second.label.isVisible()
    # Esc leaves the tool: the left button pans again.
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Escape)
    assert viewer.tool is None and not viewer.view.drawing_tool
    before = viewer.view.viewRange()
    drag(qtbot, viewer, (200.5, 200.5), (150.5, 180.5))
    assert viewer.measurements.measurements() == [second] and viewer.view.viewRange() != before
    # Another case: no measurement carried over.
    viewer.set_records(stir_records[:2])
    assert viewer.measurements.measurements() == [] and second.roi.scene() is None


# ------------------------------------------------------------------------ corners, markers and invert
@requires_shared("data/sij-mri-dicom")
def test_corner_text_shows_patient_series_slice_window_and_zoom(qtbot, viewer, stir_records):
    viewer.set_records(stir_records)
    viewer.set_slice(9)
    meta = stir_records[9].metadata
    corners = viewer.corner_texts()
    assert corners["top_left"] == (meta.patient_name, f"ID {meta.patient_id}")
    assert f"Se {meta.series_number}: CORO Stir_FIL_1" in corners["top_right"]
    assert corners["bottom_left"] == (f"Slice 10 / 15 · Im {meta.instance_number}",
                                      f"Pos {meta.slice_position_mm:.1f} mm")
    assert corners["bottom_right"][0] == "W 444  L 184"  # the file's window (0028,1050/1051)
    assert corners["bottom_right"][1] == f"Zoom {viewer.zoom_factor() * 100:.0f} %"
    viewer.view.sig_window_drag.emit(37.0, -11.0)  # right drag: window and level become fractional
    assert viewer.window.width != int(viewer.window.width)
    window_line = viewer.corner_texts()["bottom_right"][0]
    assert window_line == f"W {round(viewer.window.width)}  L {round(viewer.window.centre)}"
    assert viewer.window_label.text() == window_line  # the tool bar reads the same, no 263.8/543.8
    viewer.view.scaleBy((0.5, 0.5))
    assert viewer.corner_texts()["bottom_right"][1] == f"Zoom {viewer.zoom_factor() * 100:.0f} %"
    # A (the main window's action) hides every annotation.
    viewer.set_annotations_visible(False)
    assert not viewer.annotations.isVisible() and viewer.corner_texts()["top_left"] == ()
    viewer.set_annotations_visible(True)
    assert viewer.annotations.isVisible()


@requires_shared("data/sij-mri-dicom")
def test_orientation_markers_are_painted_at_the_edges(qtbot, viewer, stir_records):
    viewer.set_records(stir_records)
    edges = viewer.annotations.edges
    assert (edges.left, edges.right, edges.top, edges.bottom) == ("R", "L", "HA", "FP")
    qtbot.wait(50)
    image = viewer.graphics.grab().toImage()
    rect = viewer.view.sceneBoundingRect()

    def yellow_near(x: float, y: float, radius: int = 12) -> bool:
        for dx in range(-radius, radius + 1):
            for dy in range(-radius, radius + 1):
                colour = image.pixelColor(int(x + dx), int(y + dy))
                if colour.red() > 200 and colour.green() > 170 and colour.blue() < 120:
                    return True
        return False

    assert yellow_near(rect.center().x(), rect.top() + 14)     # "HA" at the top
    assert yellow_near(rect.center().x(), rect.bottom() - 12)  # "FP" at the bottom
    assert yellow_near(rect.left() + 12, rect.center().y())    # "R" on the left
    assert yellow_near(rect.right() - 12, rect.center().y())   # "L" on the right
    viewer.set_annotations_visible(False)
    qtbot.wait(50)
    image = viewer.graphics.grab().toImage()
    assert not yellow_near(rect.left() + 12, rect.center().y())


@requires_shared("data/knee-xray-kl")
def test_a_png_has_no_orientation_markers(qtbot, viewer):
    from asdesk.io import read_image

    viewer.set_records([read_image(sorted(KNEE.glob("*.png"))[0])])
    assert viewer.annotations.edges is None
    assert viewer.corner_texts()["top_left"] == () and viewer.corner_texts()["bottom_right"][0].startswith("W ")


def test_invert_reverses_the_grey_scale_and_says_so(qtbot, viewer):
    pixels = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    plain = ImageRecord(pixels, pixels / pixels.max(), ImageMetadata(Path("x.dcm"), modality="MR"))
    viewer.set_records([plain])
    assert viewer.image_item.lut is None and "Inverted" not in viewer.corner_texts()["bottom_right"]
    viewer.set_inverted(True)
    lut = np.asarray(viewer.image_item.lut)
    assert int(lut[0, 0]) == 255 and int(lut[-1, 0]) == 0
    assert "Inverted" in viewer.corner_texts()["bottom_right"]
    # MONOCHROME1 is already shown inverted; inverting it again shows low values dark.
    mono1 = ImageRecord(pixels, pixels / pixels.max(),
                        ImageMetadata(Path("y.dcm"), modality="CR", photometric_interpretation="MONOCHROME1"))
    viewer.set_records([mono1])
    assert viewer.inverted and viewer.image_item.lut is None
    viewer.set_inverted(False)
    assert int(np.asarray(viewer.image_item.lut)[0, 0]) == 255


def test_corner_lines_are_elided_only_where_they_would_meet(qtbot, viewer):
    from PySide6.QtGui import QFontMetricsF

    from asdesk.gui.annotation_layer import MARGIN

    pixels = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    long_name = "Averylongfamilyname^Withaverylonggivenname^Andmiddle"
    meta = ImageMetadata(Path("x.dcm"), modality="MR", patient_name=long_name, patient_id="ID-0123456789",
                         study_date="20080222", study_description="SACROILIAC JOINTS BOTH SIDES WITH CONTRAST",
                         series_number=10, series_description="CORO Stir_FIL_1",
                         image_orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    viewer.resize(420, 500)
    viewer.set_records([ImageRecord(pixels, pixels / pixels.max(), meta)])
    qtbot.wait(20)
    layer = viewer.annotations
    shown = layer.elided_corners()
    metrics = QFontMetricsF(layer.text_font)
    full = layer.boundingRect().width() - 3 * MARGIN
    assert shown.top_left[0].endswith("…") and metrics.horizontalAdvance(shown.top_left[0]) <= layer.corner_width()
    assert shown.top_right[2] == "Se 10: CORO Stir_FIL_1"  # nothing beside it on its row: kept whole
    for left, right in zip(shown.top_left, shown.top_right, strict=False):
        assert metrics.horizontalAdvance(left) + metrics.horizontalAdvance(right) <= full
    assert shown.top_right[1].endswith("…")  # the study description meets the patient ID on row 2
