"""PDF report and image helpers, on a real knee radiograph and a real SI-joint STIR DICOM series.

The model identity, card and performance numbers below are TEST DATA made up for these tests; the
heat maps are synthetic Gaussian blobs, not Grad-CAM output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared
from pydicom.pixels import apply_modality_lut, apply_voi_lut

import asdesk
from asdesk.core import (
    AnalysisResult,
    AsdeskError,
    ImageMetadata,
    ImageRecord,
    ModelInfo,
    Prediction,
    SeriesResult,
)
from asdesk.report import ReportWriteError
from asdesk.report.images import array_to_qimage, blend_overlay, display_to_gray_uint8, png_bytes, save_png
from asdesk.report.pdf import ensure_gui_application, write_pdf_report

DATA = SHARED_DATA
KNEE_DIR = DATA / "knee-xray-kl" / "val" / "2"
STIR_DIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"

_HEADLESS = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
if sys.platform.startswith("linux") and _HEADLESS:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless: never abort on a missing display

pytestmark = requires_shared("data/knee-xray-kl", "data/sij-mri-dicom")

TEST_SHA = "0123456789abcdef" * 4  # TEST DATA, not a real model hash
TEST_MODEL = ModelInfo(pack_id="test-pack-knee", version="0.0.1-test", sha256=TEST_SHA,
                       task="TEST DATA: knee osteoarthritis KL >= 2 on radiographs",
                       positive_label="osteoarthritis KL2-4", negative_label="no osteoarthritis KL0-1")
TEST_CARD = {  # TEST DATA: a card-shaped dict, not a real model's card
    "id": "test-pack-knee", "version": "0.0.1-test", "task": TEST_MODEL.task,
    "labels": {"positive": "osteoarthritis KL2-4", "negative": "no osteoarthritis KL0-1"},
    "modalities": ["CR", "DX"], "body_parts": ["KNEE"], "architecture": "MobileNetV2",
    "gradcam_layer": "Conv_1",
    "operating_points": {"default": "balanced",
                         "high_sensitivity": {"threshold": 0.3, "sensitivity": 0.9, "specificity": 0.5},
                         "balanced": {"threshold": 0.5, "sensitivity": 0.8, "specificity": 0.7},
                         "high_specificity": {"threshold": 0.7}},
    "performance": {"dataset": "TEST DATA (not a measurement)", "n_patients": 8,
                    "metrics": {"auc": {"value": 0.8, "ci95": [0.7, 0.9]},
                                "sensitivity": {"value": 0.75, "ci95": [0.55, 0.88]}}},
    "training_data": {"sources": [{"name": "TEST DATA", "licence": "none"}]},
    "intended_use": "TEST CARD intended use: research only, not for patients.",
    "sha256": TEST_SHA, "asdesk_version": asdesk.__version__, "date": "2025-01-01",
}


def gaussian_blob(shape: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def heat_overlay(heatmap: np.ndarray) -> np.ndarray:
    """RGBA uint8: yellow → red with alpha growing with the heat map (like a 'hot' colour map)."""
    rgba = np.zeros(heatmap.shape + (4,), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.round(255 * (1 - heatmap)).astype(np.uint8)
    rgba[..., 3] = np.round(200 * heatmap).astype(np.uint8)
    return rgba


def knee_record() -> ImageRecord:
    path = sorted(KNEE_DIR.glob("*.png"))[0]
    pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return ImageRecord(pixels=pixels, display=pixels / 255.0,
                       metadata=ImageMetadata(source=path, format="PNG", bits_stored=8))


def dicom_record(path: Path) -> ImageRecord:
    """Read a DICOM slice with asdesk.io.read_image when it exists, else with pydicom here."""
    try:
        from asdesk.io import read_image  # written in parallel by another engineer
    except ImportError:
        read_image = None
    if read_image is not None:
        record = read_image(path)
        return record if isinstance(record, ImageRecord) else record[0]
    dataset = pydicom.dcmread(path)
    stored = dataset.pixel_array
    pixels = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float32)
    display = np.asarray(apply_voi_lut(stored, dataset, prefer_lut=True), dtype=np.float32)
    display = (display - display.min()) / max(float(np.ptp(display)), 1e-6)
    position = dataset.get("ImagePositionPatient")
    return ImageRecord(pixels=pixels, display=display, metadata=ImageMetadata(
        source=path, format="DICOM", patient_name=str(dataset.get("PatientName", "")),
        patient_id=str(dataset.get("PatientID", "")), study_uid=str(dataset.StudyInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID), study_date=str(dataset.get("StudyDate", "")),
        modality=str(dataset.Modality), series_description=str(dataset.get("SeriesDescription", "")),
        instance_number=int(dataset.InstanceNumber),
        slice_position_mm=float(position[0]) if position is not None else None,
        photometric_interpretation=str(dataset.PhotometricInterpretation)))


def analysis(record: ImageRecord, probability: float, model: ModelInfo = TEST_MODEL,
             with_overlay: bool = True) -> AnalysisResult:
    height, width = record.shape
    heatmap = gaussian_blob((height, width), (0.55 * height, 0.45 * width), 0.12 * max(height, width))
    positive = probability >= 0.5
    prediction = Prediction(probability=probability, threshold=0.5, operating_point="balanced",
                            positive=positive,
                            finding=model.positive_label if positive else model.negative_label)
    return AnalysisResult(record=record, model_input=record.display.astype(np.float32),
                          prediction=prediction, model=model, heatmap=heatmap,
                          overlay=heat_overlay(heatmap) if with_overlay else None)


def pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    completed = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                               check=True, timeout=60)
    # NFKC folds any typographic ligature (U+FB01 "fi") back to letters.
    return " ".join(unicodedata.normalize("NFKC", completed.stdout).split())


@pytest.fixture(scope="module")
def stir_series() -> SeriesResult:
    files = sorted(p for p in STIR_DIR.iterdir() if p.is_file())
    records = sorted((dicom_record(p) for p in files), key=lambda r: r.metadata.instance_number or 0)
    sij_model = ModelInfo(pack_id="test-pack-sij", version="0.0.1-test", sha256=TEST_SHA,
                          task="TEST DATA: active sacroiliitis on STIR", positive_label="oedema",
                          negative_label="no oedema")
    probabilities = [round(0.15 + 0.7 * np.exp(-((i - 6) ** 2) / 6.0), 4) for i in range(len(records))]
    slices = tuple(analysis(r, p, sij_model) for r, p in zip(records, probabilities, strict=True))
    top3 = float(np.mean(sorted(probabilities)[-3:]))
    study = Prediction(top3, 0.5, "balanced", top3 >= 0.5, "oedema" if top3 >= 0.5 else "no oedema")
    return SeriesResult(slices=slices, study_probability=top3, study_prediction=study,
                        study_rule="TEST RULE: mean of the 3 highest slice probabilities",
                        errors=("I9999999: TEST DATA truncated file",))


# ------------------------------------------------------------------------------------------ image helpers
def test_blend_overlay_is_the_alpha_over_operator():
    display = np.full((2, 3), 0.5, np.float32)  # gray 128
    overlay = np.zeros((2, 3, 4), np.uint8)
    overlay[..., 0] = 255
    overlay[0, :, 3] = 0
    overlay[1, 0, 3] = 255
    overlay[1, 1, 3] = 128
    blended = blend_overlay(display, overlay)
    assert blended.dtype == np.uint8 and blended.shape == (2, 3, 3)
    np.testing.assert_array_equal(blended[0], np.full((3, 3), 128))      # alpha 0: the image
    np.testing.assert_array_equal(blended[1, 0], [255, 0, 0])              # alpha 1: the colour
    np.testing.assert_allclose(blended[1, 1], [128 + 127 * 128 / 255, 128 * 127 / 255, 128 * 127 / 255],
                               atol=1)


def test_blend_overlay_rejects_a_wrong_size():
    with pytest.raises(ValueError, match="image's size"):
        blend_overlay(np.zeros((4, 4), np.float32), np.zeros((5, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="RGBA"):
        blend_overlay(np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8))


def test_display_to_gray_clips_and_handles_colour():
    gray = display_to_gray_uint8(np.array([[-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]], np.float32))
    np.testing.assert_array_equal(gray, [[0, 0, 128, 255, 255, 0]])
    colour = np.zeros((1, 1, 3), np.float32)
    colour[..., 1] = 1.0
    assert display_to_gray_uint8(colour)[0, 0] == round(0.587 * 255)


def test_qimage_owns_a_copy_and_png_round_trips(tmp_path):
    record = knee_record()
    gray = display_to_gray_uint8(record.display)
    image = array_to_qimage(gray)
    original = image.pixelColor(10, 20).red()
    gray[20, 10] = 255 - gray[20, 10]
    assert image.pixelColor(10, 20).red() == original           # not a view of the array
    rgb = blend_overlay(record.display, heat_overlay(gaussian_blob(record.shape, (100, 100), 20)))
    rgb_image = array_to_qimage(rgb)
    colour = rgb_image.pixelColor(100, 100)
    assert (colour.red(), colour.green(), colour.blue()) == tuple(int(v) for v in rgb[100, 100])
    assert png_bytes(rgb).startswith(b"\x89PNG\r\n\x1a\n")
    written = save_png(rgb, tmp_path / "overlay.png")
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(written)), cv2.COLOR_BGR2RGB), rgb)


# ---------------------------------------------------------------------------------------------- the PDF
def test_single_image_pdf_has_finding_probability_model_and_disclaimer(tmp_path):
    result = analysis(knee_record(), 0.6234)
    path = write_pdf_report(tmp_path / "knee.pdf", result, TEST_CARD,
                            operating_point_note="TEST NOTE: balanced point chosen on validation data.")
    assert path == tmp_path / "knee.pdf"
    assert path.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in tmp_path.iterdir()] == ["knee.pdf"]          # no temporary file left
    text = pdf_text(path)
    assert "asdesk analysis report" in text
    assert "osteoarthritis KL2-4" in text
    assert "62.3 %" in text and "50.0 %" in text and "balanced" in text
    assert "test-pack-knee" in text and "0.0.1-test" in text
    assert TEST_SHA[:12] in text and TEST_SHA in text
    assert result.record.metadata.source.name in text
    assert "TEST DATA (not a measurement)" in text
    assert re.search(r"AUC \(ROC\) 0\.800 0\.700 . 0\.900", text), text
    assert "TEST NOTE: balanced point" in text
    assert TEST_CARD["intended_use"] in text
    assert " ".join(asdesk.INTENDED_USE.split()) in text
    assert f"asdesk {asdesk.__version__}" in text


def test_pdf_page_shows_the_image_and_a_coloured_overlay(tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    path = write_pdf_report(tmp_path / "knee.pdf", analysis(knee_record(), 0.71), TEST_CARD)
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")],
                   check=True, timeout=60)
    page = cv2.cvtColor(cv2.imread(str(next(tmp_path.glob("page*.png")))), cv2.COLOR_BGR2RGB).astype(int)
    assert page.shape[0] > page.shape[1] * 1.3                           # A4 portrait
    red = (page[..., 0] > 180) & (page[..., 1] < 120) & (page[..., 2] < 120)
    assert red.sum() > 50                                               # the Grad-CAM blob is there
    gray = (np.abs(page[..., 0] - page[..., 1]) < 4) & (np.abs(page[..., 1] - page[..., 2]) < 4)
    mid_gray = gray & (page[..., 0] > 40) & (page[..., 0] < 215)
    assert mid_gray.sum() > 5000                                        # the radiograph is there


def test_series_pdf_lists_every_slice_and_the_study_result(tmp_path, stir_series):
    path = write_pdf_report(tmp_path / "series.pdf", stir_series, TEST_CARD)
    text = pdf_text(path)
    assert "Study-level finding" in text and "oedema" in text
    assert f"{100 * stir_series.study_probability:.1f} %" in text
    assert "TEST RULE: mean of the 3 highest slice probabilities" in text
    assert "I9999999: TEST DATA truncated file" in text
    for item in stir_series.slices:
        assert item.record.metadata.source.name in text
        assert f"{100 * item.prediction.probability:.1f} %" in text
    meta = stir_series.slices[0].record.metadata
    assert meta.series_uid in text and meta.patient_id in text
    top = max(stir_series.slices, key=lambda s: s.prediction.probability)
    assert f"instance {top.record.metadata.instance_number}" in text


def test_minimal_card_and_missing_overlay_still_make_a_report(tmp_path):
    record = knee_record()
    result = analysis(record, 0.2, with_overlay=False)
    path = write_pdf_report(tmp_path / "minimal.pdf", result, {})
    text = pdf_text(path)
    assert "states no measured performance" in text
    assert "Grad-CAM not available" in text
    assert "no osteoarthritis KL0-1" in text and "20.0 %" in text
    assert " ".join(asdesk.INTENDED_USE.split()) in text


def test_other_performance_shapes_are_rendered(tmp_path):
    card = dict(TEST_CARD, performance={  # TEST DATA
        "dataset": {"name": "TEST DATA set", "patients": 5},
        "slice": {"metrics": [{"name": "auc", "value": 0.66, "ci95_low": 0.51, "ci95_high": 0.79}]},
        "study": {"metrics": {"specificity": 0.625}},
    })
    text = pdf_text(write_pdf_report(tmp_path / "perf.pdf", analysis(knee_record(), 0.4), card))
    assert "TEST DATA set" in text
    assert re.search(r"AUC \(ROC\) 0\.660 0\.510 . 0\.790", text), text
    assert "Specificity 0.625" in text


def test_the_block_written_by_asdesk_evaluate_is_rendered(tmp_path):
    def entry(value, low, high):
        return {"value": value, "ci95": [low, high]}

    performance = {  # TEST DATA, in the shape asdesk.training.evaluate.performance_block writes
        "dataset": "TEST DATA sij-mri-spa", "protocol": "TEST leave-one-patient-out",
        "operating_point": "balanced", "n_images": 198, "n_patients": 8, "n_positive": 119,
        "metrics": {"auc": entry(0.7123, 0.61, 0.8), "sensitivity": entry(0.7, 0.55, 0.81),
                    "specificity": entry(None, None, None)},
        "detail": {"auc": entry(0.7123, 0.61, 0.8), "at_operating_points": {
            "balanced": {"threshold": 0.5, "sensitivity": entry(0.7, 0.55, 0.81)},
            "high_sensitivity": {"threshold": 0.2, "sensitivity": entry(0.9333, 0.85, 0.98),
                                 "specificity": entry(0.31, 0.2, 0.45),
                                 "confusion_matrix": [[1, 2], [3, 4]]}},
            "bootstrap": {"resamples": 4321, "unit": "patient"}},
        "study_level": {"rule": "TEST mean of the 3 highest slice probabilities", "n_studies": 8,
                        "sensitivity": 1.0, "specificity": None,
                        "note": "TEST specificity cannot be measured",
                        "studies": [{"patient": "SECRET-PATIENT-2011", "study_probability": 0.9}]},
    }
    result = analysis(knee_record(), 0.4)
    result = AnalysisResult(record=result.record, model_input=result.model_input, model=result.model,
                            heatmap=result.heatmap, overlay=result.overlay,
                            prediction=Prediction(0.4, 0.2, "high_sensitivity", True, "osteoarthritis KL2-4"))
    card = dict(TEST_CARD, performance=performance)
    text = pdf_text(write_pdf_report(tmp_path / "evaluated.pdf", result, card))
    assert "TEST DATA sij-mri-spa" in text and "TEST leave-one-patient-out" in text
    assert re.search(r"AUC \(ROC\) 0\.712 0\.610 . 0\.800", text), text
    assert re.search(r"Specificity n/a", text)
    assert "At the operating point used in this report (high sensitivity)" in text
    assert re.search(r"Sensitivity 0\.933 0\.850 . 0\.980", text), text
    assert "TEST mean of the 3 highest slice probabilities" in text and "TEST specificity cannot" in text
    assert "SECRET-PATIENT-2011" not in text                            # no per-patient lists
    assert "4321" not in text                                            # no bootstrap bookkeeping


def test_large_image_is_scaled_down_for_the_pdf(tmp_path):
    rows, columns = 2800, 2300
    ramp = np.linspace(0, 1, columns, dtype=np.float32)[None, :].repeat(rows, axis=0)
    record = ImageRecord(pixels=ramp * 4095, display=ramp,
                         metadata=ImageMetadata(source=tmp_path / "big.dcm", format="DICOM", modality="DX"))
    path = write_pdf_report(tmp_path / "big.pdf", analysis(record, 0.9), TEST_CARD)
    assert path.stat().st_size < 8_000_000


def test_unwritable_destinations_raise_a_clear_error(tmp_path):
    result = analysis(knee_record(), 0.5)
    with pytest.raises(ReportWriteError, match="does not exist") as caught:
        write_pdf_report(tmp_path / "missing" / "report.pdf", result, TEST_CARD)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, AsdeskError)
    with pytest.raises(ReportWriteError, match="is a folder"):
        write_pdf_report(tmp_path, result, TEST_CARD)
    if sys.platform.startswith("linux") and Path("/proc").is_dir():   # not writable, even for root
        with pytest.raises(ReportWriteError, match="cannot write in /proc"):
            write_pdf_report("/proc/report.pdf", result, TEST_CARD)
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ReportWriteError, match="cannot write"):
                write_pdf_report(locked / "report.pdf", result, TEST_CARD)
        finally:
            locked.chmod(0o700)


def test_an_existing_report_is_replaced(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"old content")
    write_pdf_report(path, analysis(knee_record(), 0.55), TEST_CARD)
    assert path.read_bytes()[:5] == b"%PDF-"


def test_gui_application_is_created_offscreen_without_a_display():
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    code = ("import os; from asdesk.report.pdf import ensure_gui_application as e; a = e(); "
            "print(os.environ['QT_QPA_PLATFORM'], type(a).__name__, e() is a)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env=environment, cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr
    expected = "offscreen" if sys.platform.startswith("linux") else ""
    assert completed.stdout.split()[1:] == ["QGuiApplication", "True"]
    if expected:
        assert completed.stdout.split()[0] == expected


def test_report_does_not_import_inference_or_widgets():
    code = ("import sys, asdesk.report, asdesk.report.pdf; "
            "bad = [m for m in sys.modules if m.startswith(('asdesk.inference', 'tensorflow', 'keras', "
            "'PySide6.QtWidgets'))]; print(bad)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_ensure_gui_application_returns_the_running_instance():
    assert ensure_gui_application() is ensure_gui_application()


def test_package_exports_the_writer_and_helpers_lazily():
    import asdesk.report
    import asdesk.report.images
    import asdesk.report.pdf

    assert asdesk.report.write_pdf_report is asdesk.report.pdf.write_pdf_report
    assert asdesk.report.blend_overlay is asdesk.report.images.blend_overlay
    with pytest.raises(AttributeError):
        asdesk.report.no_such_name  # noqa: B018


def test_a_model_not_shown_better_than_chance_is_flagged(tmp_path):
    result = analysis(knee_record(), 0.7)
    good = write_pdf_report(tmp_path / "good.pdf", result, TEST_CARD)
    assert "not shown to be better than chance" not in " ".join(pdf_text(good).split())
    weak_card = {**TEST_CARD, "performance": {**TEST_CARD["performance"],
                                              "metrics": {"auc": {"value": 0.51, "ci95": [0.38, 0.69]}}}}
    weak = write_pdf_report(tmp_path / "weak.pdf", result, weak_card)
    assert "not shown to be better than chance" in " ".join(pdf_text(weak).split())
