"""Widgets of the workstation window, one test group per panel (pytest-qt, offscreen, no TensorFlow).

Images are real (the SI-joint STIR DICOM series and knee radiographs from ../shared/data); model cards,
probabilities and heat maps built here are TEST DATA.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from conftest import SHARED_DATA, requires_shared, skip_without_shared  # noqa: E402
from PySide6.QtCore import QPointF, Qt  # noqa: E402

import asdesk  # noqa: E402
from asdesk.core import AnalysisResult, ImageMetadata, ImageRecord, ModelInfo, Prediction, SeriesResult  # noqa: E402
from asdesk.core.settings import Settings, settings_path  # noqa: E402

DATA = SHARED_DATA
STIR_DIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"
KNEE_DIR = DATA / "knee-xray-kl" / "val" / "2"

pytestmark = [pytest.mark.gui]
needs_data = requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings, logs and user packs go to a temporary ASDESK_HOME."""
    monkeypatch.setenv("ASDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def stir_records() -> list[ImageRecord]:
    """The 15 slices of the real STIR series."""
    skip_without_shared("data/sij-mri-dicom")
    from asdesk.io import read_series

    records, errors = read_series(STIR_DIR)
    assert not errors
    return list(records)


def plain(text: str) -> str:
    """A label's rich text without its tags (entities decoded)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text))


def card_document(input_size: int = 32) -> dict:
    """A valid card (TEST DATA) for :class:`asdesk.inference.card.ModelCard`."""
    return {
        "schema_version": 1, "id": "panel-test-pack", "version": "0.0.1", "task": "TEST DATA",
        "labels": {"positive": "Positive (TEST)", "negative": "Negative (TEST)"},
        "modalities": ["", "MR"], "body_parts": [""], "architecture": "MobileNetV2",
        "input": {"height": input_size, "width": input_size, "channels": 3},
        "preprocessing": [
            {"name": "window", "mode": "percentile", "low": 1.0, "high": 99.5},
            {"name": "clahe", "clip_limit": 2.0, "tile_grid": [8, 8]},
            {"name": "resize", "height": input_size, "width": input_size, "mode": "pad"},
            {"name": "normalise", "backbone": "mobilenet_v2"},
        ],
        "gradcam_layer": "out_relu",
        "operating_points": {"high_sensitivity": {"threshold": 0.2, "sensitivity": 0.95},
                             "balanced": {"threshold": 0.5}, "high_specificity": {"threshold": 0.8},
                             "default": "balanced"},
        "performance": {"dataset": "TEST DATA", "auc": {"value": 0.812, "ci95": [0.701, 0.9]}},
        "training_data": {"name": "TEST", "licence": "CC BY 4.0"},
        "intended_use": asdesk.INTENDED_USE, "sha256": "ab" * 32, "asdesk_version": asdesk.__version__,
        "date": "2024-01-01",
        "study_rule": {"kind": "top_k_mean", "k": 3, "threshold": 0.5, "description": "mean of top 3 (TEST)"},
    }


@pytest.fixture(scope="module")
def card():
    from asdesk.inference.card import ModelCard

    return ModelCard.from_dict(card_document())


def fake_results(records: list[ImageRecord], card, probabilities: list[float]) -> list[AnalysisResult]:
    """AnalysisResults with TEST DATA probabilities and heat maps at each image's size."""
    info = ModelInfo(card.id, card.version, card.sha256, card.task, card.positive_label, card.negative_label)
    out = []
    for record, probability in zip(records, probabilities, strict=True):
        heatmap = np.zeros(record.shape, np.float32)
        heatmap[: record.shape[0] // 2, : record.shape[1] // 3] = 1.0
        positive = probability >= 0.5
        prediction = Prediction(probability, 0.5, "balanced", positive,
                                card.positive_label if positive else card.negative_label)
        out.append(AnalysisResult(record, np.zeros((32, 32), np.float32), prediction, info, heatmap))
    return out


# ----------------------------------------------------------------------------------------- settings
def test_settings_round_trip_and_defaults(private_home: Path):
    settings = Settings.load()
    assert settings == Settings()
    settings.overlay_opacity = 0.7
    settings.operating_point = "high_sensitivity"
    settings.default_model = "knee-xray-oa"
    for index in range(15):
        settings.add_recent(f"/data/case{index}")
    settings.add_recent("/data/case3")
    path = settings.save()
    assert path == settings_path() and path.parent == private_home / "config"
    loaded = Settings.load()
    assert loaded.overlay_opacity == 0.7 and loaded.operating_point == "high_sensitivity"
    assert loaded.recent_files[0] == str(Path("/data/case3")) and len(loaded.recent_files) == 10
    assert loaded.recent_files.count(str(Path("/data/case3"))) == 1


def test_settings_tolerate_damaged_file(private_home: Path):
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert Settings.load() == Settings()
    path.write_text(json.dumps({"overlay_opacity": "high", "operating_point": "nonsense", "unknown": 1,
                                "recent_files": ["/a", 3], "default_model": "m"}), encoding="utf-8")
    loaded = Settings.load()
    assert loaded.overlay_opacity == Settings().overlay_opacity
    assert loaded.operating_point == "" and loaded.recent_files == [] and loaded.default_model == "m"
    assert Settings(overlay_opacity=3.0).overlay_opacity == 1.0


# ------------------------------------------------------------------------------------------- viewer
@needs_data
def test_viewer_series_navigation_window_and_readout(qtbot, stir_records):
    from asdesk.gui.viewer import ImageViewer

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(800, 700)
    viewer.show()
    viewer.set_records(stir_records)
    # The window starts from the DICOM window tags (0028,1050/1051).
    meta = stir_records[0].metadata
    assert viewer.window.centre == meta.window_centre and viewer.window.width == meta.window_width
    assert viewer.preset_names()[0] == "From file"
    assert viewer.image_item.levels is not None
    assert np.allclose(viewer.image_item.levels, viewer.window.levels)
    # Slice navigation: slider, keys and Ctrl+wheel (via the view's signal) all move through the series.
    with qtbot.waitSignal(viewer.sig_slice_changed) as blocker:
        viewer.slider.setValue(4)
    assert blocker.args == [4] and viewer.current_index == 4
    viewer.graphics.setFocus()
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Down)
    assert viewer.current_index == 5
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Up)
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_Up)
    assert viewer.current_index == 3
    viewer.view.sig_slice_step.emit(1)
    assert viewer.current_index == 4
    qtbot.keyClick(viewer.graphics, Qt.Key.Key_End)
    assert viewer.current_index == len(stir_records) - 1
    record = stir_records[viewer.current_index]
    text = viewer.slice_text()
    assert f"{len(stir_records)} / {len(stir_records)}" in text
    assert f"instance {record.metadata.instance_number}" in text
    assert f"{record.metadata.slice_position_mm:.1f} mm" in text
    # Right drag: horizontal widens the window, vertical moves the level.
    before = viewer.window
    viewer.view.sig_window_drag.emit(50.0, 0.0)
    assert viewer.window.width > before.width and viewer.window.centre == before.centre
    viewer.view.sig_window_drag.emit(0.0, 20.0)
    assert viewer.window.centre < before.centre
    viewer.apply_preset("From file")
    assert viewer.window == before
    # Readout: value in modality units at (x=column, y=row), position in mm.
    readout = viewer.pixel_readout(100.5, 60.2)
    value = record.pixels[60, 100]
    assert readout.startswith("x 100  y 60  value ") and f"{float(value):.6g}" in readout
    assert "mm" in readout
    assert viewer.pixel_readout(-1, 5) == "" and viewer.pixel_readout(1000, 5) == ""


@needs_data
def test_viewer_zoom_fit_and_one_to_one(qtbot, stir_records):
    from asdesk.gui.viewer import ImageViewer

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(900, 800)
    viewer.show()
    qtbot.waitExposed(viewer)
    viewer.set_records(stir_records[:1])
    viewer.one_to_one()
    assert viewer.zoom_factor() == pytest.approx(1.0, rel=0.02)
    viewer.view.scaleBy((0.5, 0.5))
    assert viewer.zoom_factor() == pytest.approx(2.0, rel=0.05)
    viewer.fit()
    (x0, x1), (y0, y1) = viewer.view.viewRange()
    assert x0 <= 0 and x1 >= 256 and y0 <= 0 and y1 >= 256


@needs_data
def test_viewer_overlay_alignment_toggle_and_opacity(qtbot, stir_records, card):
    from asdesk.gui.viewer import ImageViewer

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.set_records(stir_records)
    results = fake_results(stir_records, card, [0.1] * len(stir_records))
    viewer.set_heatmaps([r.heatmap for r in results])
    viewer.set_slice(2)
    assert viewer.has_overlay() and viewer.colour_bar.isVisible()
    # Overlay and image share their grid: same rectangle, row 0 at the top (row-major, y inverted).
    assert viewer.overlay_item.boundingRect() == viewer.image_item.boundingRect()
    assert viewer.overlay_item.mapRectToParent(viewer.overlay_item.boundingRect()) == \
        viewer.image_item.mapRectToParent(viewer.image_item.boundingRect())
    assert viewer.view.yInverted()
    assert "Grad-CAM 1.00" in viewer.pixel_readout(5, 5)
    assert "Grad-CAM 0.00" in viewer.pixel_readout(250, 250)
    viewer.set_overlay_opacity(0.8)
    assert viewer.overlay_item.opacity() == pytest.approx(0.8)
    viewer.set_overlay_visible(False)
    assert not viewer.overlay_item.isVisible() and not viewer.colour_bar.isVisible()
    viewer.set_overlay_visible(True)
    assert viewer.overlay_item.isVisible()
    with pytest.raises(ValueError, match="does not match"):
        viewer.set_heatmaps([np.zeros((10, 10), np.float32)] * len(stir_records))
    with pytest.raises(ValueError, match="one per image"):
        viewer.set_heatmaps([None])


def test_viewer_monochrome1_and_rgb(qtbot):
    from asdesk.gui.viewer import ImageViewer, window_presets

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    pixels = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    inverted = ImageRecord(pixels, pixels / pixels.max(),
                           ImageMetadata(Path("x.dcm"), photometric_interpretation="MONOCHROME1", modality="CR"))
    viewer.set_records([inverted])
    lut = viewer.image_item.lut
    assert lut is not None and int(np.asarray(lut)[0, 0]) == 255  # low values drawn bright
    assert "From file" not in window_presets(inverted)
    colour = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    viewer.set_records([ImageRecord(colour, colour / 255, ImageMetadata(Path("c.png")))])
    assert viewer.pixel_readout(3, 4).startswith("x 3  y 4  value (")


# ----------------------------------------------------------------------------------------- metadata
@needs_data
def test_metadata_panel_shows_dicom_attributes(qtbot, stir_records):
    from asdesk.gui.metadata_panel import MetadataPanel

    panel = MetadataPanel()
    qtbot.addWidget(panel)
    record = stir_records[3]
    panel.set_record(record)
    meta = record.metadata
    assert panel.value("Modality") == "MR"
    assert panel.value("Patient").startswith(meta.patient_name.replace("^", " ").strip()[:3])
    assert panel.value("Pixel spacing").startswith(f"{meta.pixel_spacing_mm[0]:.4g}")
    assert panel.value("Window (file)") == f"C {meta.window_centre:.6g} / W {meta.window_width:.6g}"
    assert panel.value("Transfer syntax") == meta.transfer_syntax
    assert panel.value("Instance") == str(meta.instance_number)
    assert panel.value("Image size") == "256 × 256 px"
    assert panel.value("Body part") == (meta.body_part or "—")
    panel.set_record(None)
    assert panel.table.rowCount() == 0


# ------------------------------------------------------------------------------------ preprocessing
@needs_data
def test_preprocessing_panel_debounce_warning_and_reset(qtbot, card, stir_records):
    from asdesk.gui.preprocessing_panel import DEBOUNCE_MS, PreprocessingPanel

    panel = PreprocessingPanel()
    qtbot.addWidget(panel)
    panel.show()
    with qtbot.waitSignal(panel.sig_pipeline_changed, timeout=1000) as blocker:
        panel.set_card_steps(card.preprocessing, "panel-test-pack 0.0.1")
    assert not blocker.args[0].modified and not panel.banner.isVisible()
    assert panel.current_steps()[1] == {"name": "clahe", "clip_limit": 2.0, "tile_grid": [8, 8]}
    clip = panel.editor("clahe").editors["clip_limit"]
    received = []
    panel.sig_pipeline_changed.connect(received.append)
    clip.setValue(2.5)
    clip.setValue(3.0)  # two quick edits → one signal after the debounce delay
    assert received == []
    qtbot.waitUntil(lambda: len(received) == 1, timeout=DEBOUNCE_MS * 5)
    qtbot.wait(DEBOUNCE_MS + 50)
    assert len(received) == 1
    state = received[0]
    assert state.modified and "CLAHE clip_limit 2 → 3" in state.departures
    assert panel.banner.isVisible() and "outside the model's validation" in panel.banner.text()
    # The edited pipeline is a valid pipeline that really changes the model input.
    from asdesk.preprocess import build_pipeline

    edited = build_pipeline(state.steps)(stir_records[7]).image
    original = build_pipeline(card.preprocessing)(stir_records[7]).image
    assert edited.shape == original.shape == (32, 32) and not np.allclose(edited, original)
    # An optional step the card lacks can be switched on; then reset restores the card.
    histogram = panel.editor("histogram_equalisation")
    assert histogram is not None and not histogram.isChecked()
    histogram.setChecked(True)
    panel.flush()
    assert "Histogram equalisation added" in received[-1].departures
    with qtbot.waitSignal(panel.sig_pipeline_changed, timeout=1000) as blocker:
        panel.reset_to_defaults()
    assert not blocker.args[0].modified and not panel.banner.isVisible()
    assert panel.current_steps() == [dict(step) for step in card.preprocessing]
    # Invalid parameters never reach the pipeline.
    window = panel.editor("window")
    window.editors["low"].setValue(99.9)
    window.editors["high"].setValue(10.0)
    panel.flush()
    assert "Invalid parameters" in panel.error_label.text()


# ------------------------------------------------------------------------------------------ results
@needs_data
def test_results_panel_single_image_and_operating_points(qtbot, card, stir_records):
    from asdesk.gui.results_panel import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(450, 800)
    panel.show()
    result = fake_results(stir_records[:1], card, [0.35])
    panel.set_results(result, None, card)
    assert "Negative (TEST)" in panel.finding_label.text()
    assert "35.0 % < threshold 50.0 %" in plain(panel.probability_label.text())
    assert "balanced" in panel.probability_label.text()
    assert panel.bar.probability == pytest.approx(0.35)
    assert panel.bar.thresholds == {"high_sensitivity": 0.2, "balanced": 0.5, "high_specificity": 0.8}
    assert not panel.series_box.isVisible()
    assert "panel-test-pack" in panel.model_label.text() and "0.0.1" in panel.model_label.text()
    assert card.sha256[:16] in panel.model_label.text()
    assert "0.812" in panel.performance_label.text() and "0.701" in panel.performance_label.text()
    assert "not a medical device" in panel.intended_use_label.text()
    with qtbot.waitSignal(panel.sig_operating_point_changed) as blocker:
        panel.operating_point_box.setCurrentIndex(panel.operating_point_box.findData("high_sensitivity"))
        panel.operating_point_box.activated.emit(panel.operating_point_box.currentIndex())
    assert blocker.args == ["high_sensitivity"]
    assert "Positive (TEST)" in panel.finding_label.text() and panel.bar.active == "high_sensitivity"
    assert not panel.chance_label.isVisible()  # this card's AUC block is not in performance.metrics
    panel.grab()  # the bar paints without error


def test_results_panel_warns_when_the_model_is_not_shown_better_than_chance(qtbot, stir_records):
    from asdesk.gui.results_panel import ResultsPanel
    from asdesk.inference.card import ModelCard

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.show()
    weak = card_document()
    weak["performance"] = {"dataset": "TEST DATA", "metrics": {"auc": {"value": 0.62, "ci95": [0.49, 0.78]}}}
    card = ModelCard.from_dict(weak)
    panel.set_results(fake_results(stir_records[:1], card, [0.7]), None, card)
    assert panel.chance_label.isVisible()
    assert "0.490" in panel.chance_label.text() and "not shown to be better than chance" in panel.chance_label.text()
    strong = card_document()
    strong["performance"] = {"dataset": "TEST DATA", "metrics": {"auc": {"value": 0.82, "ci95": [0.79, 0.85]}}}
    card = ModelCard.from_dict(strong)
    panel.set_results(fake_results(stir_records[:1], card, [0.7]), None, card)
    assert not panel.chance_label.isVisible()


@needs_data
def test_results_panel_series_plot_click_jumps_to_slice(qtbot, card, stir_records):
    from asdesk.gui.results_panel import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(450, 900)
    panel.show()
    qtbot.waitExposed(panel)
    probabilities = list(np.linspace(0.05, 0.95, len(stir_records)))
    slices = fake_results(stir_records, card, probabilities)
    series = SeriesResult(tuple(slices), 0.9, Prediction(0.9, 0.5, "study", True, card.positive_label),
                          "mean of top 3 (TEST)")
    panel.set_results(slices, series, card)
    assert panel.series_box.isVisible()
    assert panel.probabilities() == pytest.approx(probabilities)
    assert "Study: Positive (TEST)" in panel.finding_label.text() and "90.0 %" in panel.probability_label.text()
    panel.set_current_slice(6)
    assert panel.slice_line.value() == 7 and "Slice 7 of 15" in panel.slice_label.text()
    assert "Study: Positive (TEST)" in panel.finding_label.text()  # the slice never replaces the study headline
    spots = panel.points.points()
    assert len(spots) == len(stir_records)
    with qtbot.waitSignal(panel.sig_slice_requested) as blocker:
        panel.points.sigClicked.emit(panel.points, [spots[11]], None)
    assert blocker.args == [11]
    # A real mouse click on a point of the plot.
    plot_item = panel.plot.getPlotItem()
    scene_point = plot_item.vb.mapViewToScene(QPointF(4.0, probabilities[3]))
    widget_point = panel.plot.mapFromScene(scene_point)
    with qtbot.waitSignal(panel.sig_slice_requested) as blocker:
        qtbot.mouseClick(panel.plot.viewport(), Qt.MouseButton.LeftButton, pos=widget_point)
    assert blocker.args == [3]


# -------------------------------------------------------------------------------------- model input
@needs_data
def test_model_input_view_shows_stages(qtbot, card, stir_records):
    from asdesk.gui.model_input_view import ModelInputView
    from asdesk.preprocess import build_pipeline

    view = ModelInputView()
    qtbot.addWidget(view)
    stages = build_pipeline(card.preprocessing).stages(stir_records[5])
    view.set_stages(stages, "caption")
    assert [view.stage_box.itemText(i) for i in range(view.stage_box.count())] == [
        "after window", "after CLAHE", "model input (after resize)"]
    assert view.current_image() is stages[-1][1] and view.current_image().shape == (32, 32)
    view.stage_box.setCurrentIndex(0)
    assert view.current_image().shape == (256, 256)
    assert view.image_item.image.shape == (256, 256)
    view.clear()
    assert view.current_image() is None


# ---------------------------------------------------------------------------------------- screening
@needs_data
def test_screening_view_table_sorting_resume_and_open(qtbot, tmp_path: Path):
    from asdesk.gui.jobs import ProgressEvent
    from asdesk.gui.screening import ScreeningRow, ScreeningView, default_csv_path, format_duration
    from asdesk.report import ScreeningCsv

    files = sorted(KNEE_DIR.glob("*.png"))[:3]
    view = ScreeningView()
    qtbot.addWidget(view)
    view.set_models(["knee-test"], "knee-test")
    assert view.model_box.currentData() == "knee-test"
    csv_path = tmp_path / "screen.csv"
    view.csv_edit.setText(str(csv_path))
    view.set_folder(KNEE_DIR)
    assert view.table_model.rowCount() == 0 and view.start_button.text() == "Start screening"
    with qtbot.waitSignal(view.sig_start_requested) as blocker:
        view.start_button.click()
    parameters = blocker.args[0]
    assert parameters.folder == KNEE_DIR and parameters.csv_path == csv_path and parameters.model_id == "knee-test"
    view.set_running(True)
    assert view.cancel_button.isEnabled() and not view.start_button.isEnabled()
    for file, probability in zip(files, (0.7, 0.2, 0.9), strict=True):
        view.add_row({"file": str(file), "frame": "", "patient_id": file.stem[:-1],
                      "probability": f"{probability:.6f}", "finding": "x", "error": ""})
    view.add_row(ScreeningRow(str(tmp_path / "bad.png"), "", "", None, "", "not an image"))
    assert view.table_model.rowCount() == 0  # queued, added in one group
    qtbot.waitUntil(lambda: view.table_model.rowCount() == 4, timeout=2000)
    view.on_progress(ProgressEvent(1, 4, 10, "Screening", "", elapsed_s=8.0))
    assert view.progress.maximum() == 10 and view.progress.value() == 4
    assert "12 s left" in view.progress_label.text()
    assert format_duration(125) == "2 min 05 s"
    view.on_finished("Done.")
    assert view.summary_label.text() == "Done."
    assert "3 image(s) analysed, 1 error(s)" in view.summary_label.toolTip()
    view.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    first = view.proxy.index(0, 2).data()
    last = view.proxy.index(3, 2).data()
    assert first == "90.0 %" and last == ""
    with qtbot.waitSignal(view.sig_open_case) as blocker:
        view.table.clicked.emit(view.proxy.index(0, 0))
    assert blocker.args == [str(files[2])]
    # Rows written by an earlier run come back when the same folder and CSV are chosen (resume).
    log = ScreeningCsv(csv_path)
    log.write_error(files[0], None, "TEST error", None)
    log.close()
    view.set_folder(str(KNEE_DIR) + os.sep)
    view.set_folder(KNEE_DIR)
    assert view.table_model.rowCount() == 1 and view.start_button.text() == "Resume screening"
    assert default_csv_path(KNEE_DIR) == default_csv_path(str(KNEE_DIR))
    assert default_csv_path(KNEE_DIR).suffix == ".csv"


# ------------------------------------------------------------------------------------ about, notifier
def test_about_dialog_lists_version_cards_and_licences(qtbot, card):
    from asdesk.gui.about import AboutDialog

    dialog = AboutDialog([card], "CPU (2 threads)", ["broken pack: TEST"])
    qtbot.addWidget(dialog)
    text = dialog.text()
    assert f"asdesk {asdesk.__version__}" in text and "not a medical device" in text
    assert "panel-test-pack" in text and card.sha256 in text and "0.812" in text and "CC BY 4.0" in text
    assert "pyqtgraph" in text and "MIT" in text and "LGPL" in text and "onnxruntime" in text
    assert "opencv" not in text.lower()  # not in the runtime any more (the train extra only)
    assert "broken pack: TEST" in text


def test_notifier_routes_errors_and_excepthook(qtbot):
    import sys

    from asdesk.gui.notifier import Notifier

    notifier = Notifier()
    with qtbot.waitSignal(notifier.sig_notice) as blocker:
        notifier.error("cannot read x", action_needed=True)
    assert blocker.args[0].level == "error" and blocker.args[0].action_needed
    notifier.install_excepthook()
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    finally:
        notifier.uninstall_excepthook()
    assert "RuntimeError: boom" in notifier.history[-1].message
    assert "Traceback" in notifier.history[-1].detail


def test_results_panel_shows_a_refusal_with_an_override_and_the_held_out_numbers(qtbot, stir_records):
    """A refused image: no finding, no probability, the reason and a visible override; an accepted one: the
    held-out sensitivity/specificity of the card at the operating point used, never the selection-data ones."""
    import dataclasses

    from asdesk.core import GateVerdict
    from asdesk.gui.results_panel import ResultsPanel
    from asdesk.inference.card import ModelCard

    document = card_document()
    document["operating_points"]["balanced"].update(sensitivity=0.99, specificity=0.98)  # on selection data
    document["performance"] = {
        "dataset": "TEST DATA", "protocol": "TEST PROTOCOL: held-out patients",
        "detail": {"at_operating_points": {"balanced": {"sensitivity": {"value": 0.61, "ci95": [0.5, 0.7]},
                                                        "specificity": {"value": 0.66, "ci95": [0.55, 0.77]}}}}}
    card = ModelCard.from_dict(document)

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(450, 800)
    panel.show()
    accepted = fake_results(stir_records[:1], card, [0.7])
    refused = [dataclasses.replace(accepted[0], gate=GateVerdict(reasons=("T1 sequence (the model accepts STIR)",)))]
    panel.set_results(refused, None, card)
    assert "not analysed" in panel.finding_label.text() and panel.probability_label.text() == ""
    assert panel.refusal_label.isVisible() and "T1 sequence" in panel.refusal_label.text()
    assert panel.override_button.isVisible() and panel.bar.probability is None
    with qtbot.waitSignal(panel.sig_override_requested):
        panel.override_button.click()
    panel.set_results(accepted, None, card)
    assert not panel.refusal_label.isVisible() and not panel.override_button.isVisible()
    assert "Positive (TEST)" in panel.finding_label.text()
    evidence = panel.evidence_label.text()
    assert "sensitivity 0.610 (0.500-0.700)" in evidence and "specificity 0.660" in evidence
    assert "TEST PROTOCOL" in evidence and "0.99" not in evidence and "0.98" not in evidence
    assert "held-out sens 0.61" in panel.operating_point_box.currentText()
    overridden = [dataclasses.replace(accepted[0], gate=GateVerdict(reasons=("axial plane",), overridden=True))]
    panel.set_results(overridden, None, card)
    assert panel.refusal_label.isVisible() and "outside validated use" in panel.refusal_label.text()


@pytest.mark.parametrize("pack_id", ["knee-xray-oa", "sij-mri-stir-inflammation"])
def test_preprocessing_panel_shows_each_shipped_pipeline_unmodified(qtbot, pack_id):
    """Every window mode a shipped card uses (the SIJ pack's tissue-referenced "reference" window included) is
    shown as it is: the panel's steps build the card's own pipeline and nothing is flagged as modified."""
    from asdesk.gui.preprocessing_panel import PreprocessingPanel, canonical_steps
    from asdesk.inference import load_pack

    card = load_pack(Path(__file__).resolve().parents[1] / "models" / pack_id).card
    panel = PreprocessingPanel()
    qtbot.addWidget(panel)
    panel.set_card_steps(card.preprocessing, f"{card.id} {card.version}")
    assert not panel.is_modified() and not panel.state().departures
    assert canonical_steps(panel.current_steps()) == canonical_steps(card.preprocessing)
