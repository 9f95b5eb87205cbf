"""The screening view: analyse every image of a folder with one model, row by row, resumable.

Screening runs :func:`asdesk.tasks.screen_folder` (the function behind ``asdesk screen``) on the model
worker thread. Every finished image is appended to the screening CSV and flushed to disk by the task
before it is shown here, so rows are never lost: starting again on the same folder and CSV resumes where
the last run stopped, and "Export CSV…" copies that file, byte for byte what ``asdesk screen`` writes.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from asdesk.core import AnalysisResult, CancelToken
from asdesk.core.formatting import format_probability
from asdesk.core.paths import user_data_dir
from asdesk.gui.jobs import ProgressEvent

ROW_FLUSH_MS = 150
"""Rows arriving from the worker are added to the table in groups, at most this many ms late."""

DISCOVERY_LABEL = "Looking for images"
"""How the progress reports of a run's folder walk begin (:func:`asdesk.io.discover.discover_all`)."""

AUTOMATIC_MODEL = ""
"""Model-chooser value meaning "the pack whose card covers the image's modality and body part"."""


def default_csv_path(folder: str | Path) -> Path:
    """Where the screening CSV of ``folder`` goes unless the reader chooses a file.

    One file per folder (``<user data>/screening/<name>-<hash>.csv``), so screening the same folder again
    resumes the previous run.
    """
    absolute = os.path.abspath(os.fspath(folder))
    digest = hashlib.sha1(absolute.encode("utf-8")).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(absolute).name) or "folder"
    return user_data_dir() / "screening" / f"{name}-{digest}.csv"


def format_duration(seconds: float | None) -> str:
    """``"2 min 05 s"``, ``"45 s"`` or ``"—"`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


@dataclass(frozen=True)
class ScreeningRow:
    """One row of the screening table.

    Attributes
    ----------
    file : str
        The image file (absolute path).
    frame : str
        0-based frame of a multi-frame file, or empty.
    patient : str
        Patient id (never the name).
    probability : float or None
        Probability of the positive finding; ``None`` on error.
    finding : str
        The card's label for the result, or empty on error.
    status : str
        ``"done"`` or the error message.
    """

    file: str
    frame: str
    patient: str
    probability: float | None
    finding: str
    status: str

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> ScreeningRow:
        """From a :class:`asdesk.report.ScreeningCsv` row dict."""
        text = row.get("probability", "")
        try:
            probability: float | None = float(text) if text else None
        except ValueError:
            probability = None
        error = row.get("error", "")
        return cls(row.get("file", ""), row.get("frame", ""), row.get("patient_id", ""), probability,
                   row.get("finding", ""), error or "done")

    @classmethod
    def from_any(cls, item: Any) -> ScreeningRow:  # noqa: ANN401
        """From what :func:`asdesk.tasks.screen_folder` passes to ``on_row``.

        Accepts a CSV-style dict, an :class:`~asdesk.core.AnalysisResult`, an
        :class:`asdesk.tasks.screening.ScreeningError` (``path``, ``frame``, ``message``), or an object
        with ``file``/``path``, ``probability``, ``finding`` and ``error`` attributes.
        """
        if isinstance(item, ScreeningRow):
            return item
        if isinstance(item, dict):
            return cls.from_csv({key: "" if value is None else str(value) for key, value in item.items()})
        if isinstance(item, AnalysisResult):
            meta = item.record.metadata
            frame = "" if meta.frame_index is None else str(meta.frame_index)
            if item.refused:
                return cls(os.path.abspath(meta.source), frame, meta.patient_id, None, "refused",
                           item.gate.text(item.model.pack_id))
            finding = item.prediction.finding + (" [outside validated use]" if item.gate.overridden else "")
            return cls(os.path.abspath(meta.source), frame, meta.patient_id, float(item.prediction.probability),
                       finding, "done")
        result = getattr(item, "result", None)
        if isinstance(result, AnalysisResult):
            return cls.from_any(result)
        path = getattr(item, "file", None) or getattr(item, "path", "")
        probability = getattr(item, "probability", None)
        error = getattr(item, "error", "") or getattr(item, "message", "") or ""
        frame = getattr(item, "frame", None)
        return cls(str(path), "" if frame in (None, "") else str(frame), str(getattr(item, "patient_id", "") or ""),
                   None if probability in (None, "") else float(probability),
                   str(getattr(item, "finding", "") or ""), str(error) or "done")


class ScreeningTableModel(QAbstractTableModel):
    """The rows of a screening run, appended as they arrive."""

    COLUMNS = ("File", "Patient", "Probability", "Finding", "Status")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[ScreeningRow] = []
        self._keys: dict[tuple[str, str], int] = {}

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        """Number of rows."""
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        """Number of columns."""
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt API
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: ANN401
        """Column titles."""
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: ANN401
        """Cell text, sort keys (``UserRole``), colours and tooltips."""
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.UserRole):
            if column == 0:
                name = Path(row.file).name
                return name + (f" [frame {int(row.frame) + 1}]" if row.frame else "") \
                    if role == Qt.ItemDataRole.DisplayRole else row.file + "#" + row.frame
            if column == 1:
                return row.patient
            if column == 2:
                if role == Qt.ItemDataRole.UserRole:
                    return -1.0 if row.probability is None else row.probability
                return "" if row.probability is None else format_probability(row.probability)
            if column == 3:
                return row.finding
            return row.status
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.file if column == 0 else row.status if column == 4 else None
        if role == Qt.ItemDataRole.ForegroundRole and column == 4 and row.status != "done":
            return QColor("#b02a37")
        return None

    def add_row(self, row: ScreeningRow) -> None:
        """Append a row (a row for the same file and frame replaces the old one)."""
        self.add_rows([row])

    def add_rows(self, rows: list[ScreeningRow]) -> None:
        """Append rows in one model update (rows for a file and frame already shown replace the old ones)."""
        new: list[ScreeningRow] = []
        for row in rows:
            key = (row.file, row.frame)
            if key in self._keys:
                position = self._keys[key]
                self.rows[position] = row
                self.dataChanged.emit(self.index(position, 0), self.index(position, len(self.COLUMNS) - 1))
            elif not any((r.file, r.frame) == key for r in new):
                new.append(row)
        if not new:
            return
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        for offset, row in enumerate(new):
            self.rows.append(row)
            self._keys[(row.file, row.frame)] = first + offset
        self.endInsertRows()

    def clear(self) -> None:
        """Remove every row."""
        self.beginResetModel()
        self.rows = []
        self._keys = {}
        self.endResetModel()

    def counts(self) -> tuple[int, int]:
        """(rows done, rows with an error)."""
        errors = sum(1 for row in self.rows if row.status != "done")
        return len(self.rows) - errors, errors


@dataclass(frozen=True)
class ScreeningParameters:
    """What the reader chose for a screening run.

    Attributes
    ----------
    folder : Path
        The folder screened (walked recursively).
    csv_path : Path
        The screening CSV (appended to; resumed from).
    model_id : str
        Pack id, or empty for automatic choice by modality and body part.
    operating_point : str
        Operating point name, or empty for each card's default.
    reports_dir : Path or None
        Where a PDF report per case is written, or ``None``.
    """

    folder: Path
    csv_path: Path
    model_id: str
    operating_point: str
    reports_dir: Path | None


class ScreeningView(QWidget):
    """Controls, progress and the sortable results table of a screening run.

    Signals
    -------
    sig_start_requested(ScreeningParameters)
        The reader pressed Start/Resume.
    sig_cancel_requested()
        The reader pressed Cancel.
    sig_open_case(str)
        A row was activated: open that file in the viewer.
    sig_export_pdfs_requested(ScreeningParameters)
        "Export PDFs…": write a report per case into ``reports_dir``.
    sig_open_results_requested(str)
        "Open results": open the finished run's CSV (path) in the system's program for it.

    Notes
    -----
    The start button says what it will do: "Start screening" for a folder without rows yet, "Resume
    screening (N left)" when an earlier run stopped with rows to go, and "Screen again" (beside "Open
    results") when every file already has its row; screening again keeps the earlier CSV under a dated
    name and starts a new one.
    """

    sig_start_requested = Signal(object)
    sig_cancel_requested = Signal()
    sig_open_case = Signal(str)
    sig_export_pdfs_requested = Signal(object)
    sig_export_csv_requested = Signal(str, str)
    sig_open_results_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._running = False
        self._remaining: int | None = None  # rows still to screen for the folder and CSV chosen (None: unknown)
        self._count_generation = 0
        # The count of the current folder (a list, so the "destroyed" handler needs no reference to the view).
        self._count_cancel = [CancelToken()]
        counts = self._count_cancel
        self.destroyed.connect(lambda *_args: counts[0].cancel())
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder of images or DICOM series to screen")
        self.folder_edit.textChanged.connect(self._on_folder_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        self.model_box = QComboBox()
        self.model_box.addItem("Automatic (by modality and body part)", AUTOMATIC_MODEL)
        self.operating_point_box = QComboBox()
        for name, title in (("", "model default"), ("high_sensitivity", "high sensitivity"),
                            ("balanced", "balanced"), ("high_specificity", "high specificity")):
            self.operating_point_box.addItem(title, name)
        self.csv_edit = QLineEdit()
        self.csv_edit.setPlaceholderText("Screening CSV (default: one per folder in the asdesk data folder)")
        csv_button = QPushButton("Choose…")
        csv_button.clicked.connect(self._choose_csv)
        self.reports_check = QCheckBox("PDF report per case into")
        self.reports_edit = QLineEdit()
        reports_button = QPushButton("Choose…")
        reports_button.clicked.connect(self._choose_reports)

        self.start_button = QPushButton("Start screening")
        self.start_button.setMinimumWidth(150)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self._on_start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.sig_cancel_requested.emit)
        self.open_results_button = QPushButton("Open results")
        self.open_results_button.setToolTip("Open the screening CSV in the program your system uses for CSV files")
        self.open_results_button.clicked.connect(self._on_open_results)
        self.open_results_button.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")
        self.progress_label = QLabel("")
        self.summary_label = QLabel("")

        self.table_model = ScreeningTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.table_model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # file order until clicked
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 130), (2, 90), (3, 170), (4, 220)):
            # Fixed widths: ResizeToContents would measure every row on every insert (stalls on big folders).
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        self._pending_rows: list[ScreeningRow] = []
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(ROW_FLUSH_MS)
        self._flush_timer.timeout.connect(self.flush_rows)
        self.table.clicked.connect(self._on_row_clicked)
        self.table.activated.connect(self._on_row_clicked)

        self.export_csv_button = QPushButton("Export CSV…")
        self.export_csv_button.clicked.connect(self._on_export_csv)
        self.export_pdfs_button = QPushButton("Export PDFs…")
        self.export_pdfs_button.setToolTip("Write a PDF report for every case of this folder")
        self.export_pdfs_button.clicked.connect(self._on_export_pdfs)

        grid = QGridLayout()
        grid.addWidget(QLabel("Folder"), 0, 0)
        grid.addWidget(self.folder_edit, 0, 1)
        grid.addWidget(browse, 0, 2)
        grid.addWidget(QLabel("Model"), 1, 0)
        models = QHBoxLayout()
        models.addWidget(self.model_box, 2)
        models.addWidget(QLabel("Operating point"))
        models.addWidget(self.operating_point_box, 1)
        grid.addLayout(models, 1, 1)
        grid.addWidget(QLabel("CSV"), 2, 0)
        grid.addWidget(self.csv_edit, 2, 1)
        grid.addWidget(csv_button, 2, 2)
        grid.addWidget(self.reports_check, 3, 0)
        grid.addWidget(self.reports_edit, 3, 1)
        grid.addWidget(reports_button, 3, 2)
        run = QHBoxLayout()
        run.addWidget(self.start_button)
        run.addWidget(self.open_results_button)
        run.addWidget(self.cancel_button)
        run.addWidget(self.progress, 1)
        run.addWidget(self.progress_label)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary_label, 1)
        bottom.addWidget(self.export_csv_button)
        bottom.addWidget(self.export_pdfs_button)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(run)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

    # --------------------------------------------------------------------------------------- choices
    def set_models(self, pack_ids: list[str], default: str = "") -> None:
        """Fill the model chooser (keeps "Automatic" first)."""
        current = self.model_box.currentData() or default
        self.model_box.clear()
        self.model_box.addItem("Automatic (by modality and body part)", AUTOMATIC_MODEL)
        for pack_id in pack_ids:
            self.model_box.addItem(pack_id, pack_id)
        index = self.model_box.findData(current)
        self.model_box.setCurrentIndex(max(0, index))

    def set_folder(self, folder: str | Path) -> None:
        """Choose the folder to screen (loads the rows of an earlier run of it, if any)."""
        self.folder_edit.setText(str(folder))

    def parameters(self) -> ScreeningParameters | None:
        """The run as chosen, or ``None`` if no folder is set."""
        folder = self.folder_edit.text().strip()
        if not folder:
            return None
        csv_text = self.csv_edit.text().strip()
        csv_path = Path(csv_text) if csv_text else default_csv_path(folder)
        reports = Path(self.reports_edit.text().strip()) if (self.reports_check.isChecked()
                                                             and self.reports_edit.text().strip()) else None
        return ScreeningParameters(Path(folder), csv_path, str(self.model_box.currentData() or ""),
                                   str(self.operating_point_box.currentData() or ""), reports)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder to screen", self.folder_edit.text())
        if folder:
            self.set_folder(folder)

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Screening CSV", self.csv_edit.text(), "CSV (*.csv)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.csv_edit.setText(path)
            self._load_existing()

    def _choose_reports(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for PDF reports", self.reports_edit.text())
        if folder:
            self.reports_edit.setText(folder)
            self.reports_check.setChecked(True)

    def _on_folder_changed(self, _text: str) -> None:
        self._load_existing()

    def _load_existing(self) -> None:
        """Show the rows an earlier run of this folder already wrote to its CSV."""
        if self._running:
            return
        self._pending_rows = []
        self.table_model.clear()
        self._reset_progress()
        parameters = self.parameters()
        rows: list[dict[str, str]] = []
        if parameters is not None and parameters.csv_path.is_file():
            from asdesk.report import ScreeningCsv

            try:
                rows = ScreeningCsv.read_rows(parameters.csv_path)
            except (OSError, ValueError) as error:
                self.summary_label.setText(f"Cannot read {parameters.csv_path.name}: {error}")
                rows = []
        self.table_model.add_rows([ScreeningRow.from_csv(row) for row in rows])
        self._remaining = None
        if rows and parameters is not None:
            self._count_remaining(parameters)
        self._update_start_button()
        self._update_summary()

    def _count_remaining(self, parameters: ScreeningParameters) -> None:
        """Count, on the thread pool, the files of the folder that have no row yet."""
        from asdesk.gui.jobs import run_in_pool
        from asdesk.tasks.screening import remaining_rows

        self._count_cancel[0].cancel()  # an earlier count no longer applies
        self._count_cancel[0] = cancel = CancelToken()
        self._count_generation += 1
        generation = self._count_generation
        # The callbacks hold the view weakly: no reference cycle through the job's relay (a child of the view),
        # so a view closed while the folder is still being counted is freed on the GUI thread, never by a
        # garbage collection that happens to run on a pool thread.
        view = weakref.ref(self)

        def answer(remaining: int | None) -> None:
            target = view()
            if target is not None and generation == target._count_generation and not target._running:
                target.set_remaining(remaining)

        run_in_pool(remaining_rows, parameters.folder, parameters.csv_path, cancel,
                    on_done=lambda remaining: answer(int(remaining)), on_failed=lambda _failure: answer(None),
                    context=self)

    def set_remaining(self, remaining: int | None) -> None:
        """Say how many rows are still to screen for the folder and CSV chosen (``None``: unknown)."""
        self._remaining = remaining
        self._update_start_button()

    @property
    def remaining(self) -> int | None:
        """Rows still to screen (``None`` while unknown)."""
        return self._remaining

    def _update_start_button(self) -> None:
        """"Start", "Resume (N left)" or "Screen again" + "Open results", as the rows on disk say."""
        has_rows = bool(self.table_model.rows)
        complete = has_rows and self._remaining == 0
        if not has_rows:
            text, tip = "Start screening", "Analyse every image of the folder into the CSV"
        elif self._remaining is None:
            text, tip = "Resume screening", "Analyse the files of the folder that have no row in the CSV yet"
        elif complete:
            text, tip = "Screen again", ("Every file already has its row: analyse the whole folder again into a "
                                         "new CSV (the earlier CSV is kept under a dated name)")
        else:
            text = f"Resume screening ({self._remaining} left)"
            tip = "Analyse the files of the folder that have no row in the CSV yet"
        self.start_button.setText(text)
        self.start_button.setToolTip(tip)
        self.open_results_button.setVisible(complete and not self._running)

    # ------------------------------------------------------------------------------------------- run
    def _on_start(self) -> None:
        parameters = self.parameters()
        if parameters is None:
            self.summary_label.setText("Choose a folder to screen first.")
            return
        if self.table_model.rows and self._remaining == 0 and parameters.csv_path.is_file():
            kept = self._keep_earlier_csv(parameters.csv_path)
            if kept is None:
                return
            self._pending_rows = []
            self.table_model.clear()
            self._remaining = None
            self.summary_label.setText(f"Screening again; the earlier results are kept in {kept.name}.")
        self.sig_start_requested.emit(parameters)

    def _keep_earlier_csv(self, csv_path: Path) -> Path | None:
        """Rename a finished run's CSV to ``<name>-<date-time>.csv`` so a new run starts afresh beside it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = csv_path.with_name(f"{csv_path.stem}-{stamp}{csv_path.suffix}")
        counter = 1
        while target.exists():
            counter += 1
            target = csv_path.with_name(f"{csv_path.stem}-{stamp}-{counter}{csv_path.suffix}")
        try:
            csv_path.rename(target)
        except OSError as error:
            self.summary_label.setText(f"Cannot keep the earlier results ({error}); choose another CSV to screen "
                                       "again.")
            return None
        return target

    def _on_open_results(self) -> None:
        parameters = self.parameters()
        if parameters is not None and parameters.csv_path.is_file():
            self.sig_open_results_requested.emit(str(parameters.csv_path))

    def set_running(self, running: bool) -> None:
        """Enable Cancel while running; Start and the choices otherwise.

        While running, new rows are appended without re-sorting the table (a re-sort per group of rows
        would cost O(n log n) Python calls on the GUI thread); clicking a column header still sorts, and the
        table is sorted again when the run ends.
        """
        self._running = running
        self.proxy.setDynamicSortFilter(not running)
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for widget in (self.folder_edit, self.model_box, self.operating_point_box, self.csv_edit,
                       self.reports_check, self.reports_edit, self.export_pdfs_button):
            widget.setEnabled(not running)
        if running:
            self._count_generation += 1  # a count started before the run no longer applies
            self._count_cancel[0].cancel()
            self.open_results_button.setVisible(False)
            self._reset_progress()
            self.progress_label.setText("starting…")

    def _reset_progress(self) -> None:
        """No count from an earlier run: an empty bar and no "27 / 27"."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.progress_label.setText("")

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._running

    def add_row(self, item: Any) -> None:  # noqa: ANN401
        """Queue what the task reported for one image (see :meth:`ScreeningRow.from_any`).

        Rows reach the table in groups, at most :data:`ROW_FLUSH_MS` later, so that a fast run does not
        re-sort and re-draw the table for every image.
        """
        self._pending_rows.append(ScreeningRow.from_any(item))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush_rows(self) -> None:
        """Put the queued rows into the table now."""
        self._flush_timer.stop()
        rows, self._pending_rows = self._pending_rows, []
        if rows:
            self.table_model.add_rows(rows)
            self._update_summary()

    def on_progress(self, event: ProgressEvent) -> None:
        """Update the progress bar, count and time remaining.

        The run first walks the folder (:func:`asdesk.io.discover.discover_all`, label "Looking for images
        in …"): that phase shows a busy bar and the files looked at, so its count is never taken for rows.
        """
        if event.label.startswith(DISCOVERY_LABEL):
            self.progress.setFormat("")
            self.progress.setRange(0, 0)
            self.progress_label.setText(f"looking for images… {event.done} file(s)")
            return
        self.progress.setFormat("%v / %m")
        if event.total:
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(int(min(event.done, event.total)))
        else:
            self.progress.setRange(0, 0)
        if event.finished:
            self.progress_label.setText(f"{format_duration(event.elapsed_s)} elapsed")
        else:
            self.progress_label.setText(f"{event.done} / {event.total if event.total else '?'} · "
                                        f"{format_duration(event.remaining_s)} left")

    def on_finished(self, message: str, complete: bool = False) -> None:
        """The run ended: show ``message``.

        Parameters
        ----------
        message : str
            How it ended.
        complete : bool
            Every file of the folder has its row (the run was neither cancelled nor failed): offer "Screen
            again" and "Open results"; otherwise the rows still to do are counted and "Resume" offered.
        """
        self.flush_rows()
        self.set_running(False)
        self._remaining = 0 if complete else None
        parameters = self.parameters()
        if not complete and self.table_model.rows and parameters is not None:
            self._count_remaining(parameters)
        self._update_start_button()
        self._update_summary(message)

    def _update_summary(self, message: str = "") -> None:
        done, errors = self.table_model.counts()
        text = f"Table: {done} image(s) analysed, {errors} error(s)."
        self.summary_label.setText(message or text)
        self.summary_label.setToolTip(f"{message}\n{text}".strip())

    def _on_row_clicked(self, index: QModelIndex) -> None:
        source = self.proxy.mapToSource(index)
        if source.isValid():
            self.sig_open_case.emit(self.table_model.rows[source.row()].file)

    def _on_export_csv(self) -> None:
        parameters = self.parameters()
        if parameters is None or not parameters.csv_path.is_file():
            self.summary_label.setText("Nothing to export yet: screen a folder first.")
            return
        target, _ = QFileDialog.getSaveFileName(self, "Export screening results (CSV)",
                                                str(Path.home() / parameters.csv_path.name), "CSV (*.csv)")
        if target:
            self.sig_export_csv_requested.emit(str(parameters.csv_path), target)

    def _on_export_pdfs(self) -> None:
        parameters = self.parameters()
        if parameters is None:
            self.summary_label.setText("Choose a folder to screen first.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Folder for the PDF reports", str(Path.home()))
        if folder:
            self.sig_export_pdfs_requested.emit(ScreeningParameters(
                parameters.folder, parameters.csv_path, parameters.model_id, parameters.operating_point,
                Path(folder)))
