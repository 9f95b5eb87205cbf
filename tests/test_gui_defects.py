"""The "Defects seen" of issue 13 (the reading room), one test each, on real images (pytest-qt, offscreen).

Model packs are REAL tiny packs (MobileNetV2, random weights, 32 x 32): their findings are TEST DATA. Images
are real: the SI-joint STIR series (15 extensionless DICOM slices) and knee radiographs from ../shared/data.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import fnmatch  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QLabel, QScrollArea  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "gui_xvfb"))
from conftest import REPO, SHARED_DATA, requires_shared  # noqa: E402
from tiny_pack import build_tiny_pack  # noqa: E402

from asdesk.core import AnalysisResult, ModelInfo, Prediction, SeriesResult  # noqa: E402
from asdesk.core.formatting import format_probability  # noqa: E402

STIR_DIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
KNEE_VAL = SHARED_DATA / "knee-xray-kl" / "val"
PACK_ID = "defects-pack"
WAIT_MS = 120_000

pytestmark = [pytest.mark.gui, requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")]


def plain(text: str) -> str:
    """A label's rich text as read on screen (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^<>]*>", "", text))


def knee(grade: int = 0, index: int = 0) -> Path:
    return sorted((KNEE_VAL / str(grade)).glob("*.png"))[index]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def pack_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    return build_tiny_pack(tmp_path_factory.mktemp("defect-packs") / PACK_ID, PACK_ID, 32)


def install_pack(home: Path, source: Path, pack_id: str, modalities: list[str] | None = None) -> None:
    """Copy the tiny pack into the user model folder under another id (and other modalities)."""
    target = home / "data" / "models" / pack_id
    shutil.copytree(source, target)
    card = json.loads((target / "card.json").read_text(encoding="utf-8"))
    card["id"] = pack_id
    if modalities is not None:
        card["modalities"] = modalities
    (target / "card.json").write_text(json.dumps(card), encoding="utf-8")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pack_source: Path) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ASDESK_HOME", str(path))
    install_pack(path, pack_source, PACK_ID)
    return path


@pytest.fixture
def bare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ASDESK_HOME without packs (for what needs no model)."""
    path = tmp_path / "bare-home"
    monkeypatch.setenv("ASDESK_HOME", str(path))
    return path


def make_window(qtbot: Any, start: bool = True, default_model: str = PACK_ID,  # noqa: ANN401
                model_directories: list[Path] | None = None) -> Any:  # noqa: ANN401
    from asdesk.core.settings import Settings
    from asdesk.gui.main_window import MainWindow
    from asdesk.gui.notifier import Notifier
    from asdesk.gui.worker import ModelService

    settings = Settings.load()
    settings.default_model = default_model
    service = ModelService(model_directories)
    window = MainWindow(settings, service, Notifier())
    window.show_dialogs = False
    qtbot.addWidget(window)
    window.show()
    if start:
        with qtbot.waitSignal(service.sig_models_ready, timeout=WAIT_MS):
            service.start()
    return window


@pytest.fixture
def window(qtbot: Any, home: Path) -> Any:  # noqa: ANN401
    main_window = make_window(qtbot)
    yield main_window
    main_window.close()


def open_and_wait(qtbot: Any, window: Any, path: Path) -> Any:  # noqa: ANN401
    with qtbot.waitSignal(window.sig_analysis_shown, timeout=WAIT_MS) as blocker:
        window.open_paths([str(path)])
    return blocker.args[0]


def card_for_test(study_rule: bool = True) -> Any:  # noqa: ANN401
    """A card (TEST DATA) with nested, partly empty performance blocks, as ``asdesk evaluate`` writes them."""
    import asdesk
    from asdesk.inference.card import ModelCard

    metric = {"value": 0.8213, "ci95": [0.787, 0.8531]}
    document = {
        "schema_version": 1, "id": "defects-card", "version": "0.0.1", "task": "TEST task: KL >= 2",
        "labels": {"positive": "Positive (TEST)", "negative": "Negative (TEST)"},
        "modalities": ["", "CR", "DX"], "body_parts": ["KNEE", ""], "architecture": "MobileNetV2",
        "input": {"height": 32, "width": 32, "channels": 3},
        "preprocessing": [{"name": "window", "mode": "display"},
                          {"name": "resize", "height": 32, "width": 32, "mode": "pad"},
                          {"name": "normalise", "backbone": "mobilenet_v2"}],
        "gradcam_layer": "out_relu",
        "operating_points": {"high_sensitivity": {"threshold": 0.2, "sensitivity": 0.9, "specificity": None},
                             "balanced": {"threshold": 0.5}, "high_specificity": {"threshold": 0.8},
                             "default": "balanced"},
        "performance": {
            "dataset": "TEST DATA set", "protocol": "TEST protocol: held-out patients", "operating_point": "balanced",
            "n_images": 826, "n_patients": 413,
            "metrics": {"auc": metric, "sensitivity": {"value": 0.7826, "ci95": [0.73, 0.83]},
                        "specificity": None},
            "detail": {"at_operating_points": {"balanced": {"threshold": 0.5, "sensitivity": {"value": 0.78},
                                                            "specificity": None}},
                       "bootstrap": {"resamples": 2000, "unit": "patient"}},
            "study_level": {"rule": "TEST rule", "sensitivity": 0.875, "specificity": None},
        },
        "training_data": {"name": "TEST", "licence": "CC BY 4.0"},
        "intended_use": asdesk.INTENDED_USE, "sha256": "ab" * 32, "asdesk_version": asdesk.__version__,
        "date": "2024-01-01",
    }
    if study_rule:
        document["study_rule"] = {"kind": "top_k_mean", "k": 3, "threshold": 0.5, "description": "top 3 (TEST)"}
    return ModelCard.from_dict(document)


def fake_results(records: list[Any], card: Any, probabilities: list[float]) -> list[AnalysisResult]:  # noqa: ANN401
    info = ModelInfo(card.id, card.version, card.sha256, card.task, card.positive_label, card.negative_label)
    out = []
    for record, probability in zip(records, probabilities, strict=True):
        positive = probability >= 0.5
        prediction = Prediction(probability, 0.5, "balanced", positive,
                                card.positive_label if positive else card.negative_label)
        out.append(AnalysisResult(record, np.zeros((32, 32), np.float32), prediction, info,
                                  np.zeros(record.shape, np.float32)))
    return out


@pytest.fixture(scope="module")
def stir_records() -> list[Any]:  # noqa: ANN401
    from asdesk.io import read_series

    records, errors = read_series(STIR_DIR)
    assert not errors and len(records) == 15
    return list(records)


# ------------------------------------------------------------------------------------ results panel
def test_a_new_case_opens_with_the_results_panel_scrolled_to_the_finding(qtbot, window):
    """The next case opened on "Measured performance" with the finding out of view."""
    window.resize(1400, 700)
    open_and_wait(qtbot, window, knee(0))
    scroll = window.results_panel.findChild(QScrollArea)
    bar = scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=5000)
    bar.setValue(bar.maximum())
    assert bar.value() > 0
    open_and_wait(qtbot, window, knee(3))
    qtbot.wait(50)
    assert bar.value() == 0
    finding = window.results_panel.finding_label
    top = finding.mapTo(scroll.widget(), finding.rect().topLeft()).y()
    assert top < scroll.viewport().height()  # the finding is in view


def test_for_a_series_the_study_result_leads_and_the_slice_follows(qtbot, stir_records):
    """Going back to slice 1 put its big green negative above the red study-level positive."""
    from asdesk.gui.results_panel import ResultsPanel

    card = card_for_test()
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(440, 900)
    panel.show()
    probabilities = [0.1] + [0.9] * 14
    slices = fake_results(stir_records, card, probabilities)
    series = SeriesResult(tuple(slices), 0.9, Prediction(0.9, 0.5, "study", True, card.positive_label),
                          "mean of top 3 (TEST)")
    panel.set_results(slices, series, card)
    panel.set_current_slice(0)  # slice 1: negative
    headline = panel.finding_label
    assert headline.text() == "Study: Positive (TEST)" and "c0392b" in headline.styleSheet()  # red: positive
    assert "90.0 % ≥ threshold 50.0 %" in plain(panel.probability_label.text())
    secondary = panel.slice_label
    assert "Slice 1 of 15: Negative (TEST)" in plain(secondary.text()) and secondary.isVisible()
    assert "10.0 % < threshold 50.0 %" in plain(secondary.text())
    assert headline.font().pointSizeF() > secondary.font().pointSizeF()  # the study is the headline
    assert secondary.geometry().top() > headline.geometry().bottom()  # the slice follows it
    # A single image keeps its own finding as the headline, and no slice line.
    panel.set_results(slices[:1], None, card)
    assert headline.text() == "Negative (TEST)" and not secondary.isVisible()


def test_the_probability_bar_names_are_inside_the_bar_and_never_overlap(qtbot):
    """"Bal" / "Spec" were clipped at the right end and under the bar."""
    from asdesk.gui.results_panel import ProbabilityBar

    bar = ProbabilityBar()
    qtbot.addWidget(bar)
    bar.resize(300, 40)
    bar.show()
    bar.set_values(0.95, {"high_sensitivity": 0.95, "balanced": 0.97, "high_specificity": 0.995}, "balanced")
    qtbot.waitUntil(lambda: bar.height() >= bar.minimumHeight(), timeout=2000)
    # What the bar draws fits its height: drawn on a taller canvas, nothing appears below that height.
    height = bar.height()
    bar.resize(bar.width(), height + 60)
    taller = bar.grab().toImage()
    bar.resize(bar.width(), height)
    background = taller.pixelColor(2, taller.height() - 2)
    below = [taller.pixelColor(x, y) != background for y in range(height, taller.height())
             for x in range(taller.width())]
    assert not any(below), "names or scale drawn below the widget's height (clipped)"
    labels, scale = bar.label_layout()
    assert [name for name, _rect in labels] == ["high_sensitivity", "balanced", "high_specificity"]
    for _name, rect in labels:
        assert rect.left() >= 0 and rect.right() <= bar.width() and rect.bottom() <= bar.height(), rect
    for index, (_name, first) in enumerate(labels):
        for _other, second in labels[index + 1:]:
            assert not first.intersects(second)
    assert scale.bottom() <= bar.height()
    bar.grab()  # paints


def test_the_per_slice_plot_keeps_its_axes_when_the_finding_wraps(qtbot, stir_records):
    from asdesk.gui.results_panel import ResultsPanel

    card = card_for_test()
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(260, 500)  # a narrow dock: the finding wraps over several lines
    panel.show()
    slices = fake_results(stir_records, card, list(np.linspace(0.1, 0.9, 15)))
    series = SeriesResult(tuple(slices), 0.9, Prediction(0.9, 0.5, "study", True,
                                                         "Positive finding with a long name (TEST) " * 3),
                          "mean of top 3 (TEST)")
    panel.set_results(slices, series, card)
    qtbot.wait(50)
    plot = panel.plot
    assert plot.height() >= 150
    axis = plot.getPlotItem().getAxis("bottom")
    bottom = plot.mapFromScene(axis.sceneBoundingRect().bottomLeft()).y()
    assert bottom <= plot.height()  # the slice axis is drawn whole


def test_the_model_card_reads_as_a_table_without_empty_values(qtbot):
    """The model card in the results panel was a raw nested dump ("specificity: None")."""
    from asdesk.gui.results_panel import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_card(card_for_test())
    rich = panel.performance_label.text()
    text = plain(rich)
    assert "None" not in text and "null" not in text
    assert "<table" in rich and "TEST task: KL >= 2" in text and "TEST DATA set" in text
    assert "826 images, 413 patients" in text and "TEST protocol: held-out patients" in text
    assert re.search(r"AUC\s*0\.821\s*0\.787–0\.853", text)  # metric, value, 95 % CI in one row
    assert re.search(r"Balanced \(in use\)\s*50\.0 %\s*0\.780", text)  # operating point, threshold, held-out
    assert "n images" not in text and "at operating points" not in text  # no raw keys


def test_negative_findings_say_below_the_threshold(qtbot, stir_records):
    """Positives said "≥ threshold"; negatives gave a bare number."""
    from asdesk.gui.results_panel import ResultsPanel

    card = card_for_test()
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    slices = fake_results(stir_records, card, [0.2] * 15)
    series = SeriesResult(tuple(slices), 0.2, Prediction(0.2, 0.5, "study", False, card.negative_label),
                          "mean of top 3 (TEST)")
    panel.set_results(slices, series, card)
    assert "Study score 20.0 % < threshold 50.0 %" in plain(panel.probability_label.text())
    assert "20.0 % < threshold 50.0 %" in plain(panel.slice_label.text())


# ------------------------------------------------------------------------------------------ window
def test_the_open_dialog_shows_extensionless_dicom_by_default(qtbot, bare_home, monkeypatch):
    """The default filter was "Images (*.dcm ...)": the STIR folder of PACS files looked empty."""
    seen: dict[str, Any] = {}

    def fake_dialog(_parent, _caption, _folder, filters, selected=""):  # noqa: ANN001, ANN202
        seen["filters"], seen["selected"] = filters, selected
        return [], ""

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(fake_dialog))
    window = make_window(qtbot, start=False)
    try:
        window.open_files_dialog()
    finally:
        window.close()
    default = seen["selected"] or seen["filters"].split(";;")[0]  # Qt shows the first filter unless one is chosen
    patterns = re.search(r"\(([^)]*)\)", default).group(1).split()
    names = [path.name for path in STIR_DIR.iterdir()]
    assert names and all("." not in name for name in names)  # PACS export: no extension
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in names)


def test_open_recent_is_filled_as_soon_as_a_file_is_opened(qtbot, bare_home):
    """"Open recent" stayed greyed out for the whole first session."""
    window = make_window(qtbot, start=False)
    try:
        assert not window.recent_menu.isEnabled()  # a first session: nothing opened yet
        path = knee(2)
        with qtbot.waitSignal(window.sig_case_shown, timeout=WAIT_MS):
            window.open_paths([str(path)])
        assert window.recent_menu.isEnabled()
        assert [action.text() for action in window.recent_menu.actions()] == [str(path)]
    finally:
        window.close()


def test_the_pack_the_opened_file_needs_loads_first_and_the_status_bar_says_so(qtbot, tmp_path, monkeypatch,
                                                                                  pack_source):
    """Launch to first result waited for every pack; nothing said what was loading."""
    home = tmp_path / "home"
    monkeypatch.setenv("ASDESK_HOME", str(home))
    install_pack(home, pack_source, "aaa-raster-pack", [""])  # first by id; not for MR
    install_pack(home, pack_source, "zzz-mr-pack", ["MR"])
    # Only these two packs (not the bundled ones): automatic choice by the image's modality.
    window = make_window(qtbot, start=False, default_model="", model_directories=[home / "data" / "models"])
    events: list[str] = []
    window.service.sig_models_ready.connect(lambda _status: events.append("ready"))
    window.service.sig_model_load.connect(
        lambda e: events.append(f"{'background ' if e.background else ''}{'loaded' if e.finished else 'loading'} "
                                f"{e.pack_id}"))
    window.sig_analysis_shown.connect(lambda _outcome: events.append("result shown"))
    notices: list[str] = []
    window.notifier.sig_notice.connect(lambda notice: notices.append(notice.message))
    try:
        with qtbot.waitSignal(window.sig_analysis_shown, timeout=WAIT_MS):
            window.open_paths([str(STIR_DIR)])
            window.service.start()
        qtbot.waitUntil(lambda: "background loaded aaa-raster-pack" in events, timeout=WAIT_MS)
        # Discovery is announced before any model loads; the STIR series' pack loads first, for its analysis;
        # the other pack only afterwards, in the background.
        assert events[0] == "ready", events
        assert events.index("loading zzz-mr-pack") < events.index("result shown") < events.index(
            "background loading aaa-raster-pack"), events
        assert "loading aaa-raster-pack" not in events  # never loaded in the foreground
        loading = next(i for i, n in enumerate(notices) if n.startswith("Loading model zzz-mr-pack"))
        result = next(i for i, n in enumerate(notices) if n.startswith("Analysed STIR"))
        assert loading < result, notices
        assert "zzz-mr-pack" not in window.device_label.text()
    finally:
        window.close()


def test_case_names_are_shortened_in_the_middle_with_the_full_name_in_the_tooltip(qtbot, window, tmp_path):
    long_name = tmp_path / ("patient-0001-knee-radiograph-left-standing-" + "x" * 40 + "-9003175L.png")
    shutil.copy(knee(0), long_name)
    open_and_wait(qtbot, window, long_name)
    window.cases_dock.resize(170, 400)
    qtbot.wait(50)
    item = window.case_list.item(0)
    assert window.case_list.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert not window.case_list.horizontalScrollBar().isVisible()  # shortened, not cut off behind a scroll bar
    assert long_name.name in item.toolTip() and str(long_name) in item.toolTip()
    assert format_probability(window.case.outcome.results[0].prediction.probability) in item.text()


def test_the_window_preset_drop_down_shows_its_whole_text(qtbot, stir_records):
    from asdesk.gui.viewer import ImageViewer

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(900, 700)
    viewer.show()  # as at launch: the viewer is on screen, empty, before any image is opened
    qtbot.waitExposed(viewer)
    qtbot.wait(50)
    viewer.set_records(stir_records)
    qtbot.wait(50)
    box = viewer.preset_box
    widest = max(box.fontMetrics().horizontalAdvance(box.itemText(i)) for i in range(box.count()))
    assert "Auto (1–99 %)" in [box.itemText(i) for i in range(box.count())]
    assert box.width() >= widest + 20  # text plus the arrow


def test_window_centre_and_width_of_integer_images_are_whole_numbers(qtbot, stir_records):
    """C/W read 263.8/543.8 on MR signal, which has whole values."""
    from asdesk.gui.viewer import ImageViewer, WindowLevel

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.set_records(stir_records)
    viewer.set_window(WindowLevel(263.8, 543.8))
    assert viewer.window_label.text() == "W 544  L 264"  # as the corner text (asdesk.viewing.format_window)


def test_only_the_final_stage_is_called_what_the_model_received(qtbot, stir_records):
    from asdesk.gui.model_input_view import ModelInputView
    from asdesk.preprocess import build_pipeline

    card = card_for_test()
    view = ModelInputView()
    qtbot.addWidget(view)
    stages = build_pipeline(card.preprocessing).stages(stir_records[5])
    assert len(stages) >= 2
    view.set_stages(stages, "Exactly what the model received for this image. 32×32 px.")
    assert "Exactly what the model received" in view.caption.text()
    view.stage_box.setCurrentIndex(0)
    assert "model received" not in view.caption.text() and "Intermediate stage" in view.caption.text()
    view.stage_box.setCurrentIndex(len(stages) - 1)
    assert "Exactly what the model received" in view.caption.text()


def test_the_result_stays_in_the_status_bar_when_a_tip_is_shown_and_timings_are_readable(qtbot, window):
    """Menu tips overwrote the result; a fast analysis read "in 0.0 s"."""
    notices: list[str] = []
    window.notifier.sig_notice.connect(lambda notice: notices.append(notice.message))
    outcome = open_and_wait(qtbot, window, knee(4))
    prediction = outcome.results[0].prediction
    bar = window.statusBar()
    bar.showMessage("Open image files (DICOM with or without extension, PNG, JPEG, TIFF)")
    qtbot.wait(20)
    shown = [w.text() for w in bar.findChildren(QLabel) if w.isVisible()]  # what the status bar shows now
    assert any(prediction.finding in text for text in shown), shown  # a tip never hides the result
    bar.clearMessage()
    label = window.result_label
    assert label.isVisible() and prediction.finding in label.text()
    assert format_probability(prediction.probability) in label.text()
    window.statusBar().showMessage("Open image files (DICOM with or without extension, PNG, JPEG, TIFF)")
    qtbot.wait(20)
    assert label.isVisible() and prediction.finding in label.text()  # a tip never hides the result
    analysed = next(n for n in notices if n.startswith("Analysed "))
    assert "0.0 s" not in analysed and re.search(r" in (\d+ ms|< 1 ms|\d+\.\d s) on ", analysed), analysed
    relation = "≥ threshold" if prediction.positive else "< threshold"
    assert relation in analysed and relation in label.text()  # negatives say "< threshold" too


def test_a_probability_reads_the_same_in_the_window_the_cli_and_the_pdf(qtbot, window, capsys):
    """The window said 0.674 where the PDF said 67.4 %."""
    from asdesk import cli
    from asdesk.report import pdf

    path = knee(2, 3)
    outcome = open_and_wait(qtbot, window, path)
    probability = outcome.results[0].prediction.probability
    shown = format_probability(probability)
    assert shown.endswith(" %")
    assert shown in plain(window.results_panel.probability_label.text())
    assert shown in window.case_list.item(0).text() and shown in window.result_label.text()
    assert pdf._percent(probability) == shown
    assert cli.main(["analyze", str(path), "--model", PACK_ID, "--no-gradcam", "-q"]) == 0
    assert f"probability {shown}" in capsys.readouterr().out


def test_the_cli_writes_the_relation_for_a_series_study_score(qtbot, home, capsys):
    """`asdesk analyze` printed "study score 0.300 (threshold 0.500)" without saying below or above."""
    from asdesk import cli

    cli.main(["analyze", str(STIR_DIR), "--model", PACK_ID, "--no-gradcam", "-q", "--force"])
    out = capsys.readouterr().out
    assert re.search(r"study score [\d.]+ % (≥|<) threshold [\d.]+ %", out), out


def test_the_about_dialog_joins_only_the_parts_a_card_states(qtbot):
    """Stray commas: "KNEE," and ", CR, DX" from the cards' empty entries."""
    from asdesk.gui.about import AboutDialog

    dialog = AboutDialog([card_for_test()], "CPU")
    qtbot.addWidget(dialog)
    text = dialog.text()
    assert "body parts: KNEE" in text and "KNEE," not in text and "KNEE, " not in text
    assert "Modalities: raster (PNG/JPEG), CR, DX" in text and ": , " not in text
    assert "None" not in text


def test_the_pdf_model_section_joins_only_the_parts_a_card_states():
    from asdesk.report import pdf

    assert pdf._text(["KNEE", ""]) == "KNEE" and pdf._text(["", "CR", "DX"]) == "CR, DX"


# ---------------------------------------------------------------------------------------- screening
def write_rows(csv_path: Path, files: list[Path]) -> None:
    from asdesk.report import ScreeningCsv

    with ScreeningCsv(csv_path) as log:
        for file in files:
            log.write_error(file, None, "TEST row", None)


def test_a_finished_screening_offers_screen_again_and_resume_only_when_rows_remain(qtbot, bare_home, tmp_path):
    from asdesk.gui.screening import ScreeningView

    folder = tmp_path / "knees"
    folder.mkdir()
    files = [shutil.copy(knee(1, i), folder) for i in range(3)]
    csv_path = tmp_path / "screen.csv"
    write_rows(csv_path, [Path(f) for f in files[:2]])
    view = ScreeningView()
    qtbot.addWidget(view)
    view.show()
    view.csv_edit.setText(str(csv_path))
    view.set_folder(folder)
    qtbot.waitUntil(lambda: view.remaining is not None, timeout=20_000)
    assert view.start_button.text() == "Resume screening (1 left)" and not view.open_results_button.isVisible()
    # A run that finished: every file has its row.
    view.set_running(True)
    write_rows(csv_path, [Path(files[2])])
    view.add_row({"file": str(files[2]), "frame": "", "error": "TEST row"})
    view.on_finished("Screening finished.", complete=True)
    assert view.start_button.text() == "Screen again" and "Resume" not in view.start_button.text()
    assert view.open_results_button.isVisible()
    with qtbot.waitSignal(view.sig_open_results_requested) as blocker:
        view.open_results_button.click()
    assert blocker.args == [str(csv_path)]
    # Choosing the same folder again later: counted from disk, still "Screen again".
    view.set_folder(str(folder) + os.sep)
    view.set_folder(folder)
    qtbot.waitUntil(lambda: view.remaining == 0, timeout=20_000)
    assert view.start_button.text() == "Screen again"
    # Screening again keeps the earlier CSV and starts a new one.
    with qtbot.waitSignal(view.sig_start_requested) as blocker:
        view.start_button.click()
    assert blocker.args[0].csv_path == csv_path and not csv_path.exists()
    kept = [p for p in tmp_path.glob("screen-*.csv")]
    assert len(kept) == 1 and len(list(csv.DictReader(kept[0].open(encoding="utf-8")))) == 3
    assert view.table_model.rowCount() == 0


def test_a_new_screening_run_does_not_show_the_last_runs_count(qtbot, bare_home, tmp_path):
    """A stale "27 / 27" stayed until the first row of the next run."""
    from asdesk.gui.jobs import ProgressEvent
    from asdesk.gui.screening import ScreeningView

    view = ScreeningView()
    qtbot.addWidget(view)
    view.csv_edit.setText(str(tmp_path / "screen.csv"))
    view.set_folder(tmp_path)
    view.set_running(True)
    view.on_progress(ProgressEvent(1, 27, 27, "Screening", "", elapsed_s=30.0))
    assert view.progress.text() == "27 / 27"
    view.on_finished("Screening finished.", complete=True)
    view.set_running(True)  # the next run
    assert view.progress.value() == 0 and "27" not in view.progress.text()
    assert "27" not in view.progress_label.text()
    # It first walks the folder: files looked at are not rows done.
    view.on_progress(ProgressEvent(2, 27, 27, "Looking for images in knees", "", elapsed_s=0.2))
    assert "27 / 27" not in view.progress.text() and "looking for images" in view.progress_label.text()
    view.on_progress(ProgressEvent(2, 3, 27, "Screening knees", "", elapsed_s=1.0))
    assert view.progress.text() == "3 / 27"


# -------------------------------------------------------------------------------------------- launch
@pytest.mark.skipif(shutil.which("nproc") is None, reason="POSIX only")
def test_no_cuda_lines_on_the_terminal_when_tensorflow_starts(tmp_path):
    """Starting the TensorFlow runtime printed oneDNN/CUDA probing lines ("failed call to cuInit")."""
    pytest.importorskip("tensorflow")
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env.update(ASDESK_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    code = ("import logging; from asdesk.core.logsetup import configure_logging; configure_logging(); "
            "from asdesk.inference.runtime import configure_device; print(configure_device())")
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().startswith(("CPU", "GPU"))
    noise = [line for line in completed.stderr.splitlines() if line.strip()]
    assert not noise, noise
    log = (tmp_path / "home" / "logs" / "asdesk.log").read_text(encoding="utf-8")
    assert log.count("TensorFlow") == 1 and "runs models on" in log  # the device chosen, logged once
