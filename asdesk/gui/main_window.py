"""The main window: viewer, panels, menus, drag-and-drop, screening, and the wiring to the model worker.

Nothing here blocks the event loop: files are read on the thread pool (:func:`asdesk.gui.jobs.run_in_pool`
calling :func:`asdesk.tasks.analysis.read_path`, the CLI's reader), analyses and screening run on the model
worker (:class:`asdesk.gui.worker.ModelService`), and reports are written on the pool.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QTabWidget,
    QToolBar,
    QWidget,
)

from asdesk.core import ImageRecord
from asdesk.core.formatting import format_elapsed, format_probability, probability_versus_threshold
from asdesk.core.paths import user_data_dir
from asdesk.core.settings import Settings
from asdesk.gui.about import AboutDialog
from asdesk.gui.case_browser import CaseBrowser
from asdesk.gui.jobs import JobFailure, ProgressEvent, run_in_pool
from asdesk.gui.metadata_panel import MetadataPanel
from asdesk.gui.model_input_view import ModelInputView
from asdesk.gui.notifier import Notice, Notifier
from asdesk.gui.preprocessing_panel import PipelineState, PreprocessingPanel, canonical_steps
from asdesk.gui.reader_decision import ReaderDecisionPanel, ask_reader_name
from asdesk.gui.results_panel import ResultsPanel
from asdesk.gui.screening import ScreeningParameters, ScreeningView, format_duration
from asdesk.gui.slice_keys import SliceKeyRouter
from asdesk.gui.viewer import ImageViewer
from asdesk.gui.viewer_actions import ViewerActions
from asdesk.gui.viewer_pane import SeriesChoice, ViewerPane
from asdesk.gui.worker import AnalysisOutcome, ModelLoadEvent, ModelService, ModelsStatus, ScreenOutcome

LOGGER = logging.getLogger(__name__)

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
OPEN_FILE_FILTERS = ("All files, DICOM without extension too (*)",
                     "Images (*.dcm *.DCM *.dicom *.png *.jpg *.jpeg *.tif *.tiff)")
"""File → Open's filters, the default first: PACS exports have no file extension, so the default shows every
file (the reader decides DICOM by content, DESIGN.md)."""
SCREEN_OFFER_MIN_IMAGES = 2
"""A dropped folder with image files in sub-folders, or at least this many PNG/JPEG/TIFF files, is offered
for screening rather than opened as one series."""


@dataclass
class Case:
    """One opened file or series.

    Attributes
    ----------
    source : str
        The file or folder.
    records : list of ImageRecord
        The images, in series order.
    read_errors : list of str
        Files of the series that could not be read.
    is_series : bool
        A folder or a multi-frame file.
    outcome : AnalysisOutcome or None
        The latest analysis.
    job_id : int or None
        The analysis queued or running for it.
    """

    source: str
    records: list[ImageRecord]
    read_errors: list[str] = field(default_factory=list)
    is_series: bool = False
    outcome: AnalysisOutcome | None = None
    job_id: int | None = None

    @property
    def name(self) -> str:
        """Short name for lists and titles."""
        return Path(self.source).name or self.source


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds, counted without reading any image.

    Attributes
    ----------
    folder : Path
    n_files : int
        Files directly in the folder.
    n_raster : int
        PNG/JPEG/TIFF/BMP files anywhere under it.
    n_nested : int
        Files in sub-folders.
    """

    folder: Path
    n_files: int
    n_raster: int
    n_nested: int

    @property
    def offers_screening(self) -> bool:
        """Many separate images (or several series): screening fits better than one series."""
        return self.n_nested > 0 or self.n_raster >= SCREEN_OFFER_MIN_IMAGES


def scan_folder(folder: str | Path, limit: int = 20000) -> FolderScan:
    """Count the files of a folder (no image is read; stops after ``limit`` files).

    Parameters
    ----------
    folder : str or Path
    limit : int

    Returns
    -------
    FolderScan
    """
    root = Path(folder)
    n_files = n_raster = n_nested = 0
    seen = 0
    for directory, _subdirs, files in os.walk(root):
        nested = Path(directory) != root
        for name in files:
            if name.startswith("."):
                continue
            seen += 1
            if nested:
                n_nested += 1
            else:
                n_files += 1
            if name.lower().endswith(RASTER_SUFFIXES):
                n_raster += 1
        if seen >= limit:
            break
    return FolderScan(root, n_files, n_raster, n_nested)


def read_case(path: str) -> Case:
    """Read a file or series folder for the viewer (runs on the thread pool).

    Uses :func:`asdesk.tasks.analysis.read_path`, the reader of ``asdesk analyze``.

    Raises
    ------
    asdesk.core.ReadError
        Not an image, unreadable, or a folder without images.
    """
    from asdesk.tasks.analysis import read_path

    records, errors, is_series = read_path(path)
    return Case(str(path), list(records), list(errors), bool(is_series))


def preview_stages(steps: Sequence[dict[str, Any]], record: ImageRecord) -> list[tuple[str, np.ndarray]]:
    """Run a pipeline on one image and return every stage (thread-pool job of the live preview)."""
    from asdesk.preprocess import build_pipeline

    return build_pipeline(steps).stages(record)


def redecide(outcome: AnalysisOutcome, operating_point: str) -> AnalysisOutcome:
    """The same outcome judged at another of its card's operating points (:func:`asdesk.tasks.redecide`)."""
    from asdesk.tasks import redecide as judge_again

    results, series = judge_again(outcome.results, outcome.series, outcome.card, operating_point)
    return dataclasses.replace(outcome, results=results, series=series)


def outcome_summary(outcome: AnalysisOutcome) -> str:
    """One line for the status bar and the case list's tooltip: the finding (for a series the study's), the
    probability and the threshold with the relation that decided it.

    Parameters
    ----------
    outcome : AnalysisOutcome
        As judged for display (:func:`redecide`).

    Returns
    -------
    str
        E.g. ``"Active inflammation (study score 67.4 % ≥ threshold 62.8 %)"`` or ``"not analysed: outside
        what the model was validated for"``.
    """
    series = outcome.series
    if series is not None:
        if series.refused:
            return "not analysed: outside what the model was validated for"
        study = series.study_prediction
        return (f"{study.finding} (study score "
                f"{probability_versus_threshold(series.study_probability, study.threshold, study.positive)})")
    result = outcome.results[0]
    if result.refused:
        return "not analysed: outside what the model was validated for"
    prediction = result.prediction
    mark = " [outside validated use]" if result.gate.overridden else ""
    return (f"{prediction.finding}{mark} "
            f"({probability_versus_threshold(prediction.probability, prediction.threshold, prediction.positive)})")


def write_report(path: str, outcome: AnalysisOutcome, operating_point: str, decision: Any = None) -> str:  # noqa: ANN401
    """Write the PDF report of an outcome, with the reader's decision if any (thread-pool job). Returns ``path``."""
    from asdesk.report import write_pdf_report

    judged = redecide(outcome, operating_point)
    note = ""
    if judged.preprocessing_modified:
        note = ("Preprocessing was modified from the model card's pipeline for this analysis: the result is "
                "outside the model's validation.")
    write_pdf_report(path, judged.report_result, dict(judged.card.raw), operating_point_note=note,
                     reader_decision=decision)
    return path


def write_dicom(folder: str, outcome: AnalysisOutcome, operating_point: str, decision: Any = None) -> str:  # noqa: ANN401
    """Write the DICOM Secondary Captures and Structured Report of an outcome (thread-pool job). Returns ``folder``."""
    from asdesk.tasks.dicom_export import export_dicom

    judged = redecide(outcome, operating_point)
    export_dicom(judged.report_result, dict(judged.card.raw), folder, decision=decision)
    return folder


def copy_file(source: str, target: str) -> str:
    """Copy a file byte for byte (thread-pool job). Returns ``target``."""
    shutil.copyfile(source, target)
    return target


def write_results_csv(path: str, outcome: AnalysisOutcome, operating_point: str) -> str:
    """Write an outcome's per-image rows in the screening CSV format (thread-pool job). Returns ``path``."""
    from asdesk.report import ScreeningCsv

    target = Path(path)
    if target.exists():
        target.unlink()
    with ScreeningCsv(target) as log:
        for result in redecide(outcome, operating_point).results:
            log.write_result(result)
    return path


class MainWindow(QMainWindow):
    """The asdesk workstation window.

    Parameters
    ----------
    settings : Settings
        Loaded settings; saved when the window closes.
    service : ModelService
        The model worker (started by :func:`asdesk.gui.app.run_gui`, or on first use).
    notifier : Notifier
        Where errors go.

    Signals
    -------
    sig_case_shown(Case)
        A case was read and is on screen.
    sig_analysis_shown(AnalysisOutcome)
        An analysis result is on screen.
    sig_preview_updated()
        The model-input view shows a new live preview.
    sig_file_written(str)
        A report or CSV export finished.
    """

    sig_case_shown = Signal(object)
    sig_analysis_shown = Signal(object)
    sig_preview_updated = Signal()
    sig_file_written = Signal(str)

    def __init__(self, settings: Settings, service: ModelService, notifier: Notifier,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.service = service
        self.notifier = notifier
        self.cases: list[Case] = []
        self.case: Case | None = None
        self.card: Any = None
        self.show_dialogs = True
        self.folder_choice: str | None = None  # tests: "screen" or "series" instead of asking
        self._pipeline_state: PipelineState | None = None
        self._preview_generation = 0
        self._screen_job: int | None = None
        self._export_pdfs_job: int | None = None
        self._dialogs: list[QMessageBox] = []
        self._closing = False
        self._device_text = "Loading models…"
        self._opening = 0  # read and scan jobs running
        self._background_requested = False

        self.setWindowTitle("asdesk — research use; not a medical device")
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self._build_widgets()
        self._build_docks()
        self._build_actions()
        self._build_menus_and_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_state()

    # ------------------------------------------------------------------------------------------ build
    def _build_widgets(self) -> None:
        self.viewer = ImageViewer()
        self.viewer.set_overlay_opacity(self.settings.overlay_opacity)
        self.viewer.set_overlay_visible(self.settings.overlay_visible)
        self.viewer_pane = ViewerPane(self.viewer, lambda: [SeriesChoice(c.name, c.records) for c in self.cases])
        self.screening = ScreeningView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.viewer_pane, "Viewer")
        self.tabs.addTab(self.screening, "Screening")
        self.setCentralWidget(self.tabs)
        self.results_panel = ResultsPanel()
        self.reader_panel = ReaderDecisionPanel(
            name_provider=lambda force: ask_reader_name(self, self.settings, force, self.show_dialogs),
            reader_name=self.settings.reader_name)
        self.results_panel.add_section(self.reader_panel)
        self.metadata_panel = MetadataPanel()
        self.preprocessing_panel = PreprocessingPanel()
        self.model_input_view = ModelInputView()
        self.case_list = CaseBrowser()
        # Long names are shortened in the middle (the start and the file's end stay readable).
        self.case_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.case_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.slice_keys = SliceKeyRouter(self, lambda: self.viewer_pane.active_viewer()
                                         if self.tabs.currentWidget() is self.viewer_pane else None)

    def _dock(self, title: str, widget: QWidget, name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        return dock

    def _build_docks(self) -> None:
        self.results_dock = self._dock("Results", self.results_panel, "results")
        self.model_input_dock = self._dock("Model input", self.model_input_view, "model_input")
        self.preprocessing_dock = self._dock("Preprocessing", self.preprocessing_panel, "preprocessing")
        self.metadata_dock = self._dock("Metadata", self.metadata_panel, "metadata")
        self.cases_dock = self._dock("Cases", self.case_list, "cases")
        area = Qt.DockWidgetArea.RightDockWidgetArea
        self.addDockWidget(area, self.results_dock)
        self.addDockWidget(area, self.model_input_dock)
        self.splitDockWidget(self.results_dock, self.model_input_dock, Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.model_input_dock, self.preprocessing_dock)
        self.tabifyDockWidget(self.preprocessing_dock, self.metadata_dock)
        self.model_input_dock.raise_()
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.cases_dock)
        self.resizeDocks([self.results_dock, self.model_input_dock], [520, 380], Qt.Orientation.Vertical)
        self.resizeDocks([self.results_dock], [440], Qt.Orientation.Horizontal)
        self.resizeDocks([self.cases_dock], [170], Qt.Orientation.Horizontal)

    def _action(self, text: str, slot: Any, shortcut: QKeySequence | str | None = None,  # noqa: ANN401
                tip: str = "", checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip + (f" ({action.shortcut().toString()})" if shortcut else ""))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.open_action = self._action("&Open file(s)…", self.open_files_dialog, QKeySequence.StandardKey.Open,
                                        "Open image files (DICOM with or without extension, PNG, JPEG, TIFF)")
        self.open_folder_action = self._action("Open DICOM &folder…", self.open_folder_dialog, "Ctrl+Shift+O",
                                               "Open a folder holding one DICOM series")
        self.screen_action = self._action("&Screen folder…", self.screen_folder_dialog, "Ctrl+B",
                                          "Analyse every image of a folder into a table")
        self.export_pdf_action = self._action("&Export report (PDF)…", self.export_report_dialog, "Ctrl+E",
                                              "Write the PDF report of the case shown")
        self.export_csv_action = self._action("Export &results (CSV)…", self.export_csv_dialog, "Ctrl+Shift+E",
                                              "Write the case's per-image results as CSV")
        self.export_dicom_action = self._action("Export &DICOM…", self.export_dicom_dialog, "Ctrl+Shift+D",
                                                "Write DICOM results a PACS can store: a Secondary Capture per image "
                                                "and a Structured Report of the finding")
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit, "Quit asdesk")
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.analyse_action = self._action("&Analyse", self.analyse_current, "F5",
                                           "Analyse the case shown with the selected model and preprocessing")
        self.cancel_action = self._action("&Cancel", self.cancel_current, "Esc", "Cancel the running analysis")
        self.overlay_action = self._action("Grad-CAM &overlay", self.viewer.set_overlay_visible, "G",
                                           "Show or hide the Grad-CAM heat map", checkable=True)
        self.overlay_action.setChecked(self.settings.overlay_visible)
        self.fit_action = self._action("&Fit to window", self.viewer.fit, None, "Fit the image (F)")
        self.one_to_one_action = self._action("&1:1", self.viewer.one_to_one, None, "One image pixel per "
                                              "screen pixel (1)")
        self.about_action = self._action("&About asdesk", self.show_about, None, "Version, model cards, licences")
        self.log_action = self._action("Show &log folder", self._show_log_folder, None, "Where the log is")
        self.overlay_action.toggled.connect(self._on_overlay_toggled)
        self.viewer_actions = ViewerActions(self, self.viewer_pane, self.notifier.info)

    def _build_menus_and_toolbar(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.open_folder_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        file_menu.addSeparator()
        file_menu.addAction(self.screen_action)
        file_menu.addSeparator()
        file_menu.addAction(self.export_pdf_action)
        file_menu.addAction(self.export_csv_action)
        file_menu.addAction(self.export_dicom_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        view_menu = menu.addMenu("&View")
        view_menu.addAction(self.overlay_action)
        view_menu.addAction(self.fit_action)
        view_menu.addAction(self.one_to_one_action)
        self.viewer_actions.add_to_menu(view_menu)
        view_menu.addSeparator()
        for dock in (self.results_dock, self.model_input_dock, self.preprocessing_dock, self.metadata_dock,
                     self.cases_dock):
            view_menu.addAction(dock.toggleViewAction())
        analysis_menu = menu.addMenu("&Analysis")
        analysis_menu.addAction(self.analyse_action)
        analysis_menu.addAction(self.cancel_action)
        self.operating_point_menu = analysis_menu.addMenu("&Operating point")
        self.operating_point_group = QActionGroup(self)
        for name, title in (("", "Model default"), ("high_sensitivity", "High sensitivity"),
                            ("balanced", "Balanced"), ("high_specificity", "High specificity")):
            action = QAction(title, self, checkable=True)
            action.setData(name)
            action.setChecked(name == self.settings.operating_point)
            action.triggered.connect(lambda _checked=False, n=name: self.set_operating_point(n))
            self.operating_point_group.addAction(action)
            self.operating_point_menu.addAction(action)
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.about_action)
        help_menu.addAction(self.log_action)

        toolbar = QToolBar("Main")
        toolbar.setObjectName("main_toolbar")
        toolbar.setMovable(False)
        self.addToolBar(toolbar)
        toolbar.addAction(self.open_action)
        toolbar.addAction(self.open_folder_action)
        toolbar.addAction(self.screen_action)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Model "))
        self.model_box = QComboBox()
        self.model_box.setMinimumWidth(230)
        self.model_box.setToolTip("Model pack used for analysis (automatic: by the image's modality and "
                                  "body part)")
        self.model_box.addItem("Loading models…", "")
        self.model_box.setEnabled(False)
        self.model_box.activated.connect(self._on_model_chosen)
        toolbar.addWidget(self.model_box)
        toolbar.addAction(self.analyse_action)
        toolbar.addSeparator()
        toolbar.addAction(self.overlay_action)
        toolbar.addWidget(QLabel(" Opacity "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(round(self.settings.overlay_opacity * 100)))
        self.opacity_slider.setFixedWidth(120)
        self.opacity_slider.setToolTip("Grad-CAM overlay opacity")
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        toolbar.addWidget(self.opacity_slider)
        toolbar.addSeparator()
        toolbar.addAction(self.export_pdf_action)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_label = QLabel("Ready.")
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setMinimumWidth(300)
        bar.addWidget(self.status_label, 1)
        self.progress_bar = QProgressBar()
        # Wide enough for "826 / 826 · 1 min 20 s left" in the status bar.
        self.progress_bar.setMinimumWidth(240)
        self.progress_bar.setMaximumWidth(300)
        self.progress_bar.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_current)
        # The result of the case shown stays in the status bar as a permanent widget: menu and toolbar tips
        # (temporary messages) replace the notices on the left, never the result.
        self.result_label = QLabel("")
        self.result_label.setTextFormat(Qt.TextFormat.PlainText)
        self.result_label.setStyleSheet("QLabel { border-left: 1px solid #9aa7b4; padding-left: 6px; }")
        self.result_label.setToolTip("Result of the case shown")
        self.result_label.setVisible(False)
        self.device_label = QLabel("Loading models…")
        self.device_label.setToolTip("Where the models run")
        disclaimer = QLabel("Research use only — not a medical device")
        disclaimer.setStyleSheet("color: #8a1c00; font-weight: bold;")
        bar.addPermanentWidget(self.result_label)
        bar.addPermanentWidget(self.progress_bar)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(disclaimer)

    def _connect(self) -> None:
        self.service.sig_models_ready.connect(self._on_models_ready)
        self.service.sig_model_load.connect(self._on_model_load)
        self.service.sig_started.connect(self._on_job_started)
        self.service.sig_progress.connect(self._on_progress)
        self.service.sig_analysis_done.connect(self._on_analysis_done)
        self.service.sig_failed.connect(self._on_failed)
        self.service.sig_screen_row.connect(self.screening.add_row)
        self.service.sig_screen_done.connect(self._on_screen_done)
        self.notifier.sig_notice.connect(self._on_notice)
        self.viewer.sig_slice_changed.connect(self._on_slice_changed)
        self.results_panel.sig_slice_requested.connect(self.viewer.set_slice)
        self.results_panel.sig_operating_point_changed.connect(self.set_operating_point)
        self.results_panel.sig_override_requested.connect(self.analyse_anyway)
        self.preprocessing_panel.sig_pipeline_changed.connect(self._on_pipeline_changed)
        self.case_list.currentRowChanged.connect(self._on_case_selected)
        # The case's result belongs to the viewer: on the screening tab the status bar is the run's.
        self.tabs.currentChanged.connect(lambda _index: self.result_label.setVisible(
            self.tabs.currentWidget() is self.viewer_pane and bool(self.result_label.text())))
        self.screening.sig_start_requested.connect(self.start_screening)
        self.screening.sig_cancel_requested.connect(self.cancel_screening)
        self.screening.sig_open_case.connect(self._open_from_screening)
        self.screening.sig_export_csv_requested.connect(self._copy_screening_csv)
        self.screening.sig_export_pdfs_requested.connect(self._export_screening_pdfs)
        self.screening.sig_open_results_requested.connect(self._open_screening_results)
        if self.service.status is not None:
            self._on_models_ready(self.service.status)

    def _restore_state(self) -> None:
        text = self.settings.window_state
        if ":" in text:
            geometry, state = text.split(":", 1)
            try:
                self.restoreGeometry(QByteArray.fromHex(geometry.encode("ascii")))
                self.restoreState(QByteArray.fromHex(state.encode("ascii")))
            except (ValueError, UnicodeError):
                LOGGER.info("ignoring a damaged window layout in the settings")

    # ------------------------------------------------------------------------------------- notices
    def _on_notice(self, notice: Notice) -> None:
        colour = {"error": "#b02a37", "warning": "#8a5a00"}.get(notice.level, "")
        self.status_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.status_label.setText(notice.message)
        self.status_label.setToolTip(notice.message)
        if notice.action_needed and self.show_dialogs and not self._closing:
            icon = QMessageBox.Icon.Critical if notice.level == "error" else QMessageBox.Icon.Warning
            box = QMessageBox(icon, "asdesk", notice.message, QMessageBox.StandardButton.Ok, self)
            if notice.detail:
                box.setDetailedText(notice.detail)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.finished.connect(lambda _r, b=box: self._dialogs.remove(b) if b in self._dialogs else None)
            self._dialogs.append(box)
            box.open()

    # -------------------------------------------------------------------------------------- models
    def _on_models_ready(self, status: ModelsStatus) -> None:
        if status.error:
            self.device_label.setText("Models unavailable")
            self.notifier.error(f"The model runtime could not start: {status.error}. Images can be viewed but "
                                "not analysed.", action_needed=True)
            return
        ids = [pack.card.id for pack in status.packs]
        self._device_text = f"Models on {status.device} · {len(ids)} pack(s)"
        self.device_label.setText(self._device_text)
        self.model_box.clear()
        self.model_box.addItem("Automatic", "")
        self.model_box.setItemData(0, "Chosen by the image's modality and body part", Qt.ItemDataRole.ToolTipRole)
        for pack in status.packs:
            self.model_box.addItem(f"{pack.card.id} {pack.card.version}", pack.card.id)
        index = self.model_box.findData(self.settings.default_model)
        self.model_box.setCurrentIndex(max(0, index))
        self.model_box.setEnabled(True)
        self.screening.set_models(ids, self.settings.default_model)
        for error in status.errors:
            self.notifier.warning(f"Model pack not used: {error}")
        if not ids:
            self.notifier.error("No model pack is installed: images can be viewed but not analysed. Install "
                                "packs into the models folder shown in Help → About.", action_needed=True)
        elif not self.service.busy:  # a queued analysis says what it does itself ("Loading model …")
            self.notifier.info(f"{len(ids)} model pack(s) found; models run on {status.device}.")
        if self.case is not None:
            self._select_card_for(self.case)
        self._background_requested = False  # (re)discovered packs: load them when idle
        self._load_rest_when_idle()

    def _on_model_load(self, event: ModelLoadEvent) -> None:
        """Say which model is loading: in the status bar when an analysis waits for it, else beside the device."""
        if event.background:
            self.device_label.setText(self._device_text if event.finished
                                      else f"Loading {event.pack_id} in the background…")
            return
        if event.finished:
            return
        self.notifier.info(f"Loading model {event.pack_id} {event.version}…")
        if self.case is not None and self.case.job_id is not None:
            self.results_panel.set_busy(f"Loading model {event.pack_id}…")

    def _on_model_chosen(self, _index: int) -> None:
        model_id = str(self.model_box.currentData() or "")
        if model_id == self.settings.default_model:
            return
        self.settings.default_model = model_id
        if self.case is not None:
            self._select_card_for(self.case)
            if self.case.outcome is not None and (model_id and self.case.outcome.card.id != model_id):
                self.analyse_current()

    def _select_card_for(self, case: Case) -> None:
        """Find the card that will analyse ``case`` and show its pipeline in the preprocessing panel."""
        if not self.service.ready or not case.records:
            return
        from asdesk.core import ModelNotFoundError
        from asdesk.tasks import SeveralPacksAcceptError, pack_for

        try:
            pack = pack_for(case.records[0].metadata, self.service.packs, self.settings.default_model or None)
        except SeveralPacksAcceptError as error:  # e.g. knee OA and knee bone density: the user chooses
            self.card = None
            self.results_panel.clear("Several models were made for this image: choose one in the model box ("
                                     + ", ".join(error.pack_ids) + ")")
            self.notifier.warning(str(error))
            return
        except ModelNotFoundError as error:
            self.card = None
            self.results_panel.clear("No model was made for this image")
            self.notifier.warning(str(error))
            return
        if self.card is not pack.card:
            self.card = pack.card
            self.preprocessing_panel.set_card_steps(pack.card.preprocessing,
                                                    f"{pack.card.id} {pack.card.version}")
            if case.outcome is None:
                self.results_panel.set_card(pack.card)
                if self.settings.operating_point:
                    self.results_panel.set_operating_point(self.settings.operating_point)

    # ---------------------------------------------------------------------------------------- open
    def open_paths(self, paths: Sequence[str | Path]) -> None:
        """Open files and folders (command line, dialogs, drops, recent files).

        A folder is opened as one series unless it holds many separate images, in which case screening is
        offered. Reading happens on the thread pool.
        """
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                self._opening += 1
                run_in_pool(scan_folder, path, on_done=self._after_open(self._on_folder_scanned),
                            on_failed=self._after_open(self._on_read_failed), context=self)
            else:
                self._read(str(path))

    def _read(self, path: str) -> None:
        self.notifier.info(f"Reading {Path(path).name}…")
        self.settings.add_recent(path)
        self._fill_recent_menu()
        self._opening += 1
        run_in_pool(read_case, path, on_done=self._after_open(self._on_case_read),
                    on_failed=self._after_open(self._on_read_failed), context=self)

    def _after_open(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """``callback`` for a read or scan job, counting the jobs still running (see _load_rest_when_idle)."""
        def done(value: Any) -> None:  # noqa: ANN401
            self._opening -= 1
            callback(value)
            self._load_rest_when_idle()

        return done

    def _load_rest_when_idle(self) -> None:
        """Once the models are discovered and no file is being read, load the other packs in the background.

        The files opened at launch are read first and their analyses queued, so the pack they need is the
        first loaded (by their own analysis); the rest follows, default model first.
        """
        if self.service.ready and self._opening == 0 and not self._background_requested and not self._closing:
            self._background_requested = True
            self.service.load_in_background()

    def _on_folder_scanned(self, scan: FolderScan) -> None:
        if not scan.offers_screening:
            self.settings.last_dicom_folder = str(scan.folder)
            self._read(str(scan.folder))
            return
        choice = self.folder_choice or self._ask_folder_choice(scan)
        if choice == "screen":
            self.screen_folder(scan.folder)
        elif choice == "series":
            self._read(str(scan.folder))

    def _ask_folder_choice(self, scan: FolderScan) -> str:
        box = QMessageBox(QMessageBox.Icon.Question, "Open folder",
                          f"{scan.folder.name} holds {scan.n_files + scan.n_nested} files"
                          + (f" ({scan.n_raster} PNG/JPEG/TIFF images)" if scan.n_raster else "")
                          + (" in several folders" if scan.n_nested else "")
                          + ".\n\nScreen the folder (analyse every image into a table), or open it as one "
                          "series?", QMessageBox.StandardButton.Cancel, self)
        screen = box.addButton("Screen folder", QMessageBox.ButtonRole.AcceptRole)
        series = box.addButton("Open as one series", QMessageBox.ButtonRole.ActionRole)
        box.setDefaultButton(screen)
        box.exec()
        clicked = box.clickedButton()
        return "screen" if clicked is screen else "series" if clicked is series else ""

    def _on_read_failed(self, failure: JobFailure) -> None:
        self.notifier.error(f"Cannot open: {failure.message}", action_needed=True, detail=failure.detail)

    def _on_case_read(self, case: Case) -> None:
        if self._closing:
            return
        for error in case.read_errors:
            self.notifier.warning(f"Skipped in {case.name}: {error}")
        self.cases.append(case)
        self.case_list.add_case(case.name, f"{case.name}\n{case.source}",
                                case.records[0].metadata if case.records else None)
        self.case_list.blockSignals(True)
        self.case_list.setCurrentRow(len(self.cases) - 1)
        self.case_list.blockSignals(False)
        self.show_case(case)
        self.notifier.info(f"Opened {case.name}: {len(case.records)} image(s)"
                           + (f", {len(case.read_errors)} unreadable file(s)" if case.read_errors else "") + ".")
        self.analyse_current()

    def _on_case_selected(self, row: int) -> None:
        if 0 <= row < len(self.cases):
            self.show_case(self.cases[row])

    def show_case(self, case: Case) -> None:
        """Show an opened case: image, metadata, its model's pipeline and its result if any."""
        self.case = case
        self.tabs.setCurrentWidget(self.viewer_pane)
        self.viewer.set_records(case.records)
        self.metadata_panel.set_record(case.records[0] if case.records else None)
        self.setWindowTitle(f"asdesk — {case.name} — research use; not a medical device")
        self.card = None
        self._pipeline_state = None
        self.results_panel.clear("Not analysed yet")
        self.reader_panel.clear_case()
        self.result_label.setText("")
        self.result_label.setVisible(False)
        self._select_card_for(case)
        if case.outcome is not None:
            self._show_outcome(case.outcome)
        elif case.job_id is not None:
            self._show_busy()
        self._request_preview()
        self.sig_case_shown.emit(case)

    def open_files_dialog(self) -> None:
        """File → Open file(s)…"""
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Open image files", self.settings.last_open_folder or str(Path.home()),
            ";;".join(OPEN_FILE_FILTERS), OPEN_FILE_FILTERS[0])
        if paths:
            self.settings.last_open_folder = str(Path(paths[0]).parent)
            self.open_paths(paths)

    def open_folder_dialog(self) -> None:
        """File → Open DICOM folder…"""
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder",
                                                  self.settings.last_dicom_folder or str(Path.home()))
        if folder:
            self.settings.last_dicom_folder = folder
            self.open_paths([folder])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_paths([p]))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        """Accept dropped local files and folders."""
        if event.mimeData().hasUrls() and any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        """Open dropped files and folders."""
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    # ------------------------------------------------------------------------------------ analysis
    def analyse_current(self, force: bool = False) -> int | None:
        """Analyse the case shown (F5) with the selected model, operating point and preprocessing.

        Parameters
        ----------
        force : bool
            Override the gates' refusals ("Analyse anyway"): results are marked as outside validated use.

        Returns
        -------
        int or None
            The job id, or ``None`` when no case is open.
        """
        case = self.case
        if case is None or not case.records:
            self.notifier.info("Open an image or a series first (Ctrl+O, Ctrl+Shift+O).")
            return None
        if case.job_id is not None and self.service.is_pending(case.job_id):
            self.service.cancel(case.job_id)
        state = self._pipeline_state
        preprocessing = state.steps if state is not None and state.modified else None
        case.job_id = self.service.analyze(case.records, case.source, model_id=self.settings.default_model,
                                           operating_point=self.settings.operating_point,
                                           preprocessing=preprocessing, read_errors=case.read_errors,
                                           force=force)
        self._show_busy()
        return case.job_id

    def analyse_anyway(self) -> int | None:
        """Analyse the case shown despite its refusal; the result is marked as outside validated use."""
        if self.show_dialogs:
            answer = QMessageBox.question(
                self, "Analyse outside validated use?",
                "The model's gates refused this image: it is outside what the model was validated for. A finding "
                "given anyway is marked as outside validated use in the window, the PDF report and the CSV.\n\n"
                "Analyse anyway?")
            if answer != QMessageBox.StandardButton.Yes:
                return None
        return self.analyse_current(force=True)

    def _show_busy(self) -> None:
        message = ("Waiting for the models to load…" if not self.service.ready else "Analysing…")
        self.results_panel.set_busy(message)
        self.notifier.info(message if self.service.ready else "Loading models… the analysis starts when they "
                           "are ready.")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)

    def cancel_current(self) -> None:
        """Cancel the analysis of the case shown (Esc), or the screening run when the screening tab is shown."""
        if self.tabs.currentWidget() is self.screening and self._screen_job is not None:
            self.cancel_screening()
            return
        if self.case is not None and self.case.job_id is not None:
            self.service.cancel(self.case.job_id)
            self.notifier.info("Cancelling…")

    def _case_for_job(self, job_id: int) -> Case | None:
        return next((case for case in self.cases if case.job_id == job_id), None)

    def _on_job_started(self, job_id: int) -> None:
        if self.case is not None and self.case.job_id == job_id:
            self.results_panel.set_busy("Analysing…")
            self.notifier.info(f"Analysing {self.case.name}…")

    def _on_progress(self, event: ProgressEvent) -> None:
        if event.job_id in (self._screen_job, self._export_pdfs_job):
            if event.job_id == self._screen_job:
                self.screening.on_progress(event)
            self._show_progress(event, "Screening" if event.job_id == self._screen_job else "Writing reports")
            return
        if self.case is not None and self.case.job_id == event.job_id:
            self._show_progress(event, event.label or "Analysing")

    def _show_progress(self, event: ProgressEvent, label: str) -> None:
        if event.finished:
            return
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        if event.total:
            self.progress_bar.setRange(0, int(event.total))
            self.progress_bar.setValue(int(min(event.done, event.total)))
            self.progress_bar.setFormat(f"%v / %m · {format_duration(event.remaining_s)} left")
        else:
            self.progress_bar.setRange(0, 0)
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"{label}: {event.done}/{event.total or '?'}")

    def _idle(self) -> None:
        if self.service.busy:
            return
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)

    def _on_analysis_done(self, outcome: AnalysisOutcome) -> None:
        case = self._case_for_job(outcome.job_id)
        self._idle()
        if case is None:
            return
        case.job_id = None
        first_result = case.outcome is None
        case.outcome = outcome
        row = self.cases.index(case)
        first = outcome.series.study_prediction if outcome.series is not None else outcome.results[0].prediction
        refused = outcome.series.refused if outcome.series is not None else outcome.results[0].refused
        summary = ("refused: outside validated use" if refused
                   else f"{first.finding} {format_probability(first.probability)}")
        item = self.case_list.item(row)
        item.setText(f"{case.name}\n{summary}")  # two lines, each shortened in the middle when too long
        item.setToolTip(f"{case.name}\n{case.source}\n{outcome_summary(outcome)}")
        if case is self.case:
            if first_result and outcome.series is not None and len(outcome.results) > 1:
                # Open on the slice with the most evidence (the one the PDF report shows); a re-analysis
                # leaves the reader where they are.
                probabilities = [-1.0 if result.refused else result.prediction.probability
                                 for result in outcome.results]
                self.viewer.set_slice(probabilities.index(max(probabilities)))
            self._show_outcome(outcome)
        timing = f" in {format_elapsed(outcome.elapsed_s)} on {outcome.device}" if outcome.device else ""
        if refused:
            self.notifier.warning(f"{case.name} was refused by {outcome.card.id}: it is outside what the model was "
                                  "validated for (see the Results panel).")
        else:
            relation = probability_versus_threshold(first.probability, first.threshold, first.positive)
            self.notifier.info(f"Analysed {case.name}: {first.finding} ({relation}){timing}.")

    def _name_overlay(self, map_name: str) -> None:
        """Name the overlay toggle, its tip and the viewer's colour bar after the pack's map."""
        label = "Oedema map" if map_name == "oedema map" else "Grad-CAM"
        self.overlay_action.setText(f"{label} &overlay")
        self.overlay_action.setToolTip(f"Show or hide the {map_name} (G)")
        self.viewer.set_map_name(map_name)

    def _show_outcome(self, outcome: AnalysisOutcome) -> None:
        self.card = outcome.card
        if canonical_steps(self.preprocessing_panel.card_steps()) != canonical_steps(outcome.card.preprocessing):
            self.preprocessing_panel.set_card_steps(outcome.card.preprocessing,
                                                    f"{outcome.card.id} {outcome.card.version}")
        if outcome.preprocessing_modified:
            self.notifier.warning("This result used modified preprocessing: it is outside the model's "
                                  "validation.")
        judged = redecide(outcome, self.settings.operating_point or outcome.card.default_operating_point)
        self.viewer.set_heatmaps([r.heatmap for r in judged.results])
        self._name_overlay(outcome.card.map_name)
        self.viewer.set_crop_boxes([r.crop_box for r in judged.results])
        self.results_panel.set_results(judged.results, judged.series, judged.card, outcome.preprocessing_modified)
        self.results_panel.set_current_slice(self.viewer.current_index)
        self.reader_panel.set_result(judged.report_result, outcome.source)
        name = Path(outcome.source).name or outcome.source
        self.result_label.setText(f"{name}: {outcome_summary(judged)}")
        self.result_label.setToolTip(f"Result of the case shown: {self.result_label.text()}")
        self.result_label.setVisible(self.tabs.currentWidget() is self.viewer_pane)
        self._request_preview()
        self.sig_analysis_shown.emit(outcome)

    def _on_failed(self, failure: JobFailure) -> None:
        if failure.job_id in (self._screen_job, self._export_pdfs_job):
            return  # reported by _on_screen_done
        case = self._case_for_job(failure.job_id)
        if case is not None:
            case.job_id = None
        self._idle()
        if failure.cancelled:
            self.notifier.info("Analysis cancelled.")
            if case is self.case and case is not None:
                if case.outcome is not None:
                    self._show_outcome(case.outcome)
                else:
                    self.results_panel.clear("Analysis cancelled (F5 to analyse)")
            return
        if failure.refused:  # no installed model was made for this image: a refusal, not an error
            if case is self.case and case is not None:
                self.results_panel.show_refusal(failure.message)
                item = self.case_list.item(self.cases.index(case))
                item.setText(f"{case.name}\nrefused: no model for it")
                item.setToolTip(f"{case.name}\n{case.source}\nnot analysed: {failure.message}")
            self.notifier.warning(f"{case.name if case else 'The image'} was not analysed: {failure.message}")
            return
        if case is self.case and case is not None:
            self.results_panel.clear("Analysis failed")
        self.notifier.error(f"Analysis of {case.name if case else 'the image'} failed: {failure.message}",
                            action_needed=True, detail=failure.detail)

    # ---------------------------------------------------------------------------- viewer / panels
    def _on_slice_changed(self, index: int) -> None:
        records = self.viewer.records
        if 0 <= index < len(records):
            self.metadata_panel.set_record(records[index])
        self.results_panel.set_current_slice(index)
        self._request_preview()

    def _on_overlay_toggled(self, visible: bool) -> None:
        self.viewer.set_overlay_visible(visible)
        self.settings.overlay_visible = bool(visible)

    def _on_opacity(self, value: int) -> None:
        self.viewer.set_overlay_opacity(value / 100.0)
        self.settings.overlay_opacity = value / 100.0

    def set_operating_point(self, name: str) -> None:
        """Use operating point ``name`` (empty: the card's default) for results shown and new analyses."""
        self.settings.operating_point = name
        for action in self.operating_point_group.actions():
            action.setChecked(action.data() == name)
        if name:
            self.results_panel.set_operating_point(name)
        if self.case is not None and self.case.outcome is not None:
            self._show_outcome(self.case.outcome)

    def _on_pipeline_changed(self, state: PipelineState) -> None:
        self._pipeline_state = state
        outcome = self.case.outcome if self.case is not None else None
        if outcome is not None and canonical_steps(state.steps) != canonical_steps(outcome.preprocessing):
            self.notifier.warning("Preprocessing changed: the result shown was computed with other parameters. "
                                  "Press F5 to analyse again.")
        self._request_preview()

    def _request_preview(self) -> None:
        record = self.viewer.current_record
        state = self._pipeline_state
        if record is None or state is None:
            return
        self._preview_generation += 1
        generation = self._preview_generation
        steps = list(state.steps)
        index = self.viewer.current_index
        run_in_pool(preview_stages, steps, record,
                    on_done=lambda stages: self._on_preview(generation, index, steps, stages),
                    on_failed=lambda failure: self.notifier.warning(f"Preview failed: {failure.message}"),
                    context=self)

    def _on_preview(self, generation: int, index: int, steps: list[dict[str, Any]],
                    stages: list[tuple[str, np.ndarray]]) -> None:
        if generation != self._preview_generation:
            return
        outcome = self.case.outcome if self.case is not None else None
        exact = (outcome is not None and index < len(outcome.results)
                 and canonical_steps(steps) == canonical_steps(outcome.preprocessing))
        if exact:
            stages = [*stages[:-1], (stages[-1][0], outcome.results[index].model_input)]  # type: ignore[union-attr]
            caption = "Exactly what the model received for this image."
        else:
            caption = "Preview of the current pipeline (not yet analysed)."
        note = ""
        if self._pipeline_state is not None and self._pipeline_state.modified:
            note = "⚠ Modified preprocessing: outside the model's validation."
        height, width = stages[-1][1].shape[:2]
        self.model_input_view.set_stages(stages, f"{caption} {width}×{height} px.", note)
        self.sig_preview_updated.emit()

    # -------------------------------------------------------------------------------------- export
    def export_report_dialog(self) -> None:
        """File → Export report (PDF)…"""
        if self.case is None or self.case.outcome is None:
            self.notifier.info("Analyse a case before exporting its report.")
            return
        default = Path(self.settings.last_export_folder or Path.home()) / f"{Path(self.case.name).stem}-report.pdf"
        path, _ = QFileDialog.getSaveFileName(self, "Export report (PDF)", str(default), "PDF (*.pdf)")
        if path:
            self.export_report(path)

    def export_report(self, path: str) -> int:
        """Write the PDF report of the case shown (on the thread pool); :attr:`sig_file_written` when done."""
        if self.case is None or self.case.outcome is None:
            raise ValueError("no analysed case to report; analyse a case first")
        self.settings.last_export_folder = str(Path(path).parent)
        operating_point = self.settings.operating_point or self.case.outcome.card.default_operating_point
        self.notifier.info(f"Writing {Path(path).name}…")
        return run_in_pool(write_report, path, self.case.outcome, operating_point, self.reader_panel.decision(),
                           on_done=self._on_written, on_failed=self._on_write_failed, context=self)

    def export_dicom_dialog(self) -> None:
        """File → Export DICOM… (a folder for the Secondary Captures and the Structured Report)."""
        if self.case is None or self.case.outcome is None:
            self.notifier.info("Analyse a case before exporting its DICOM results.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export DICOM results into a folder",
                                                  self.settings.last_export_folder or str(Path.home()))
        if folder:
            self.export_dicom(folder)

    def export_dicom(self, folder: str) -> int:
        """Write the case's DICOM Secondary Captures and Structured Report into ``folder`` (on the thread pool)."""
        if self.case is None or self.case.outcome is None:
            raise ValueError("no analysed case to export; analyse a case first")
        self.settings.last_export_folder = str(folder)
        operating_point = self.settings.operating_point or self.case.outcome.card.default_operating_point
        self.notifier.info(f"Writing DICOM results into {Path(folder).name}…")
        return run_in_pool(write_dicom, str(folder), self.case.outcome, operating_point, self.reader_panel.decision(),
                           on_done=self._on_written, on_failed=self._on_write_failed, context=self)

    def export_csv_dialog(self) -> None:
        """File → Export results (CSV)…"""
        if self.tabs.currentWidget() is self.screening:
            self.screening._on_export_csv()
            return
        if self.case is None or self.case.outcome is None:
            self.notifier.info("Analyse a case (or screen a folder) before exporting results.")
            return
        default = Path(self.settings.last_export_folder or Path.home()) / f"{Path(self.case.name).stem}-results.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export results (CSV)", str(default), "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> int:
        """Write the case's per-image results in the screening CSV format (on the thread pool)."""
        if self.case is None or self.case.outcome is None:
            raise ValueError("no analysed case to export; analyse a case first")
        self.settings.last_export_folder = str(Path(path).parent)
        operating_point = self.settings.operating_point or self.case.outcome.card.default_operating_point
        return run_in_pool(write_results_csv, path, self.case.outcome, operating_point, on_done=self._on_written,
                           on_failed=self._on_write_failed, context=self)

    def _on_written(self, path: str) -> None:
        self.notifier.info(f"Wrote {path}.")
        self.sig_file_written.emit(str(path))

    def _on_write_failed(self, failure: JobFailure) -> None:
        self.notifier.error(f"Export failed: {failure.message}", action_needed=True, detail=failure.detail)

    # ------------------------------------------------------------------------------------ screening
    def screen_folder_dialog(self) -> None:
        """File → Screen folder…"""
        folder = QFileDialog.getExistingDirectory(self, "Screen folder",
                                                  self.settings.last_screen_folder or str(Path.home()))
        if folder:
            self.screen_folder(folder)

    def screen_folder(self, folder: str | Path, start: bool = False) -> None:
        """Show the screening view for ``folder`` (and start at once with ``start``)."""
        self.settings.last_screen_folder = str(folder)
        self.tabs.setCurrentWidget(self.screening)
        self.screening.set_folder(folder)
        self.screening.start_button.setFocus()
        if start:
            parameters = self.screening.parameters()
            if parameters is not None:
                self.start_screening(parameters)
        else:
            self.notifier.info("Choose the model and press Start screening (rows already screened are kept).")

    def start_screening(self, parameters: ScreeningParameters) -> int | None:
        """Start (or resume) screening with :func:`asdesk.tasks.screen_folder` on the model worker."""
        if self._screen_job is not None:
            self.notifier.info("A screening run is already in progress.")
            return None
        self.settings.last_screen_folder = str(parameters.folder)
        self.screening.set_running(True)
        self._screen_job = self.service.screen(parameters.folder, parameters.csv_path, parameters.model_id,
                                               parameters.operating_point, parameters.reports_dir)
        self.notifier.info(f"Screening {parameters.folder.name}… rows are saved to {parameters.csv_path}"
                           + ("" if self.service.ready else " (starts when the models are loaded)"))
        return self._screen_job

    def cancel_screening(self) -> None:
        """Stop the screening run after the current batch (finished rows stay in the CSV)."""
        if self._screen_job is not None:
            self.service.cancel(self._screen_job)
            self.notifier.info("Cancelling screening after the current batch…")

    def _on_screen_done(self, outcome: ScreenOutcome) -> None:
        if outcome.job_id == self._export_pdfs_job:
            self._export_pdfs_job = None
            self._idle()
            if outcome.summary is not None and not outcome.cancelled:
                self.notifier.info(f"Wrote {len(outcome.summary.reports)} PDF report(s).")
            else:
                self.notifier.warning(f"PDF export stopped: {outcome.message}")
            return
        if outcome.job_id != self._screen_job:
            return
        self._screen_job = None
        self._idle()
        # Finished (not cancelled, not failed): every file has its row, error rows included (resume skips them).
        self.screening.on_finished(outcome.message, complete=outcome.summary is not None and not outcome.cancelled)
        if outcome.summary is None and not outcome.cancelled:
            self.notifier.error(f"Screening failed: {outcome.message}", action_needed=True)
        else:
            self.notifier.info(outcome.message)

    def _open_from_screening(self, path: str) -> None:
        for case in self.cases:
            if case.source == path:
                self.case_list.setCurrentRow(self.cases.index(case))
                self.show_case(case)
                return
        self.open_paths([path])

    def _open_screening_results(self, path: str) -> None:
        """Open a screening CSV in the system's program for CSV files."""
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        if not QDesktopServices.openUrl(QUrl.fromLocalFile(path)):
            self.notifier.info(f"The results are in {path}.")

    def _copy_screening_csv(self, source: str, target: str) -> None:
        run_in_pool(copy_file, source, target, on_done=self._on_written, on_failed=self._on_write_failed,
                    context=self)

    def _export_screening_pdfs(self, parameters: ScreeningParameters) -> None:
        if self._export_pdfs_job is not None or self._screen_job is not None:
            self.notifier.info("Wait for the screening run to finish first.")
            return
        exports = user_data_dir() / "exports"
        exports.mkdir(parents=True, exist_ok=True)
        scratch = exports / f"pdf-export-{os.getpid()}-{id(parameters)}.csv"
        self._export_pdfs_job = self.service.screen(parameters.folder, scratch, parameters.model_id,
                                                    parameters.operating_point, parameters.reports_dir)
        self.notifier.info(f"Writing a PDF report per case into {parameters.reports_dir}…")

    # ---------------------------------------------------------------------------------------- help
    def show_about(self) -> AboutDialog:
        """Help → About (non-modal)."""
        status = self.service.status
        dialog = AboutDialog([p.card for p in self.service.packs], status.device if status else "",
                             status.errors if status else (), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _show_log_folder(self) -> None:
        from asdesk.core.paths import user_log_dir

        self.notifier.info(f"The log is {user_log_dir() / 'asdesk.log'}")

    # --------------------------------------------------------------------------------------- close
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        """Cancel running work, stop the worker (with a timeout) and save the settings."""
        self._closing = True
        self.reader_panel.flush()  # a note typed just before closing
        geometry = bytes(self.saveGeometry().toHex().data()).decode("ascii")
        state = bytes(self.saveState().toHex().data()).decode("ascii")
        self.settings.window_state = f"{geometry}:{state}"
        try:
            self.settings.save()
        except OSError as error:
            LOGGER.warning("could not save the settings: %s", error)
        self.service.shutdown(5000)
        QTimer.singleShot(0, lambda: None)
        event.accept()
