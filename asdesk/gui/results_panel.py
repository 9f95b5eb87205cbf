"""The results panel: finding, probability against the card's operating points, model identity, the
card's measured performance and intended use, and for a series the per-slice probabilities and the
study-level result.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from asdesk.core import AnalysisResult, SeriesResult
from asdesk.core.formatting import format_probability, probability_versus_threshold
from asdesk.core.performance import chance_warning, held_out_evidence
from asdesk.gui.card_html import model_card_html

POSITIVE_COLOUR = "#c0392b"
NEGATIVE_COLOUR = "#1e8449"
REFUSED_COLOUR = "#7a5c00"
OPERATING_POINT_TITLES = {
    "high_sensitivity": "high sensitivity",
    "balanced": "balanced",
    "high_specificity": "high specificity",
}
_OPERATING_POINT_SHORT = {"high_sensitivity": "Sens", "balanced": "Bal", "high_specificity": "Spec"}
PLOT_HEIGHT = 170
"""Height in pixels of the per-slice probability plot (fixed: its axes stay whole however the text wraps)."""


class ProbabilityBar(QWidget):
    """A horizontal bar from 0 to 1 filled to the probability, with the operating points marked.

    The marker of the operating point in use is drawn thicker; the fill is red at or above its threshold and
    green below. The operating points' names ("Sens", "Bal", "Spec") are written under their markers, kept
    inside the widget at either end, and moved a row lower when they would overlap; the widget asks for the
    height those rows need (:meth:`label_layout`), so no name is clipped.
    """

    MARGIN = 8.0
    BAR_TOP = 4.0
    BAR_HEIGHT = 16.0
    ROW_HEIGHT = 13.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.probability: float | None = None
        self.thresholds: dict[str, float] = {}
        self.active = ""
        self._rows = 1
        self.setMinimumHeight(self._height_for_rows(1))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, probability: float | None, thresholds: Mapping[str, float], active: str) -> None:
        """Set the probability (or ``None``), the operating points ``{name: threshold}`` and the active one."""
        self.probability = None if probability is None else float(probability)
        self.thresholds = {name: float(value) for name, value in thresholds.items()}
        self.active = active
        tips = [f"{OPERATING_POINT_TITLES.get(n, n)}: threshold {format_probability(t)}"
                for n, t in self.thresholds.items()]
        self.setToolTip("\n".join(tips))
        self._update_rows()
        self.update()

    def _font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        return font

    def _bar_rect(self) -> QRectF:
        return QRectF(self.MARGIN, self.BAR_TOP, max(1.0, self.width() - 2 * self.MARGIN), self.BAR_HEIGHT)

    def _height_for_rows(self, rows: int) -> int:
        metrics = QFontMetricsF(self._font())
        return int(self.BAR_TOP + self.BAR_HEIGHT + 3 + self.ROW_HEIGHT * max(1, rows) + metrics.height() + 4)

    def label_layout(self) -> tuple[list[tuple[str, QRectF]], QRectF]:
        """Where the operating points' names and the 0-1 scale are drawn at the current width.

        Returns
        -------
        labels : list of (str, QRectF)
            Each operating point's name and its text rectangle, inside ``[0, width]``.
        scale : QRectF
            The row of the "0" and "1" scale labels, under the last row of names.
        """
        bar = self._bar_rect()
        metrics = QFontMetricsF(self._font())
        text_height = metrics.height()
        row_ends: list[float] = []  # right edge of the last label placed in each row
        placed: list[tuple[str, QRectF]] = []
        for name, value in sorted(self.thresholds.items(), key=lambda item: item[1]):
            x = bar.left() + bar.width() * min(max(value, 0.0), 1.0)
            label = _OPERATING_POINT_SHORT.get(name, name[:4])
            width = metrics.horizontalAdvance(label) + 4
            left = min(max(x - width / 2, 0.0), max(0.0, self.width() - width))  # kept inside the widget
            # Close thresholds would print their names over each other: the next one goes a row lower.
            row = next((r for r, end in enumerate(row_ends) if left >= end), len(row_ends))
            if row == len(row_ends):
                row_ends.append(0.0)
            row_ends[row] = left + width
            placed.append((name, QRectF(left, bar.bottom() + 3 + self.ROW_HEIGHT * row, width, text_height)))
        scale_top = bar.bottom() + 3 + self.ROW_HEIGHT * max(1, len(row_ends))
        return placed, QRectF(bar.left(), scale_top, bar.width(), text_height)

    def _update_rows(self) -> None:
        labels, _scale = self.label_layout()
        rows = 1 + max((int(round((rect.top() - self._bar_rect().bottom() - 3) / self.ROW_HEIGHT))
                        for _name, rect in labels), default=0)
        height = self._height_for_rows(rows)
        if rows != self._rows or self.minimumHeight() != height:
            self._rows = rows
            self.setMinimumHeight(height)
            self.updateGeometry()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Wide as the layout allows; as high as the rows of names need."""
        return QSize(240, self._height_for_rows(self._rows))

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        """Names may need another row at a new width."""
        super().resizeEvent(event)
        self._update_rows()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        """Draw the bar."""
        del event
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        bar = self._bar_rect()
        painter.setPen(QPen(QColor("#666666"), 1))
        painter.setBrush(QColor("#e9ecef"))
        painter.drawRoundedRect(bar, 3, 3)
        if self.probability is not None:
            threshold = self.thresholds.get(self.active)
            positive = threshold is not None and self.probability >= threshold
            fill = QRectF(bar.left(), bar.top(), bar.width() * min(max(self.probability, 0.0), 1.0), bar.height())
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(POSITIVE_COLOUR if positive else NEGATIVE_COLOUR))
            painter.drawRoundedRect(fill, 3, 3)
        painter.setFont(self._font())
        labels, scale = self.label_layout()
        for name, rect in labels:
            x = bar.left() + bar.width() * min(max(self.thresholds[name], 0.0), 1.0)
            painter.setPen(QPen(QColor("#000000"), 3 if name == self.active else 1))
            painter.drawLine(int(x), int(bar.top() - 3), int(x), int(bar.bottom() + 3))
            painter.setPen(QColor("#000000"))
            painter.drawText(rect, Qt.AlignmentFlag.AlignHCenter, _OPERATING_POINT_SHORT.get(name, name[:4]))
        painter.setPen(QColor("#444444"))
        painter.drawText(scale, Qt.AlignmentFlag.AlignLeft, "0 %")
        painter.drawText(scale, Qt.AlignmentFlag.AlignRight, "100 %")
        painter.end()


class ResultsPanel(QWidget):
    """Shows an analysis result.

    For one image the finding is the headline. For a series the study-level result is the headline and the
    result of the slice shown follows as a smaller line (with the probability bar of that slice), so going
    back to slice 1 never puts a slice's finding above the study's. A new case opens with the panel scrolled
    to the top, on the finding (:meth:`clear`).

    Signals
    -------
    sig_slice_requested(int)
        A point of the per-slice plot was clicked: show that slice (0-based).
    sig_operating_point_changed(str)
        The reader chose another operating point.
    sig_override_requested()
        The reader asked for a finding on an image the model's gates refused (marked outside validated use).
    """

    sig_slice_requested = Signal(int)
    sig_operating_point_changed = Signal(str)
    sig_override_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._results: list[AnalysisResult] = []
        self._series: SeriesResult | None = None
        self._card: Any = None
        self._index = 0

        self.finding_label = QLabel("No result yet")
        font = self.finding_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.finding_label.setFont(font)
        self.finding_label.setWordWrap(True)
        self.finding_label.setTextFormat(Qt.TextFormat.PlainText)
        self.probability_label = QLabel("")
        self.probability_label.setWordWrap(True)
        self.probability_label.setTextFormat(Qt.TextFormat.RichText)
        # For a series: the slice shown, below the study result and smaller than it.
        self.slice_label = QLabel("")
        self.slice_label.setWordWrap(True)
        self.slice_label.setTextFormat(Qt.TextFormat.RichText)
        self.slice_label.setVisible(False)
        self.bar = ProbabilityBar()
        self.operating_point_box = QComboBox()
        self.operating_point_box.setToolTip("Decision threshold chosen on validation data (model card)")
        self.operating_point_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.operating_point_box.setMinimumContentsLength(12)
        self.operating_point_box.activated.connect(self._on_operating_point)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; border: 2px solid "
                                         "#e0a800; border-radius: 4px; padding: 4px; font-weight: bold; }")
        self.warning_label.setVisible(False)
        # The model's own evidence: shown with every finding of a model not shown to beat chance.
        self.chance_label = QLabel("")
        self.chance_label.setWordWrap(True)
        self.chance_label.setStyleSheet("QLabel { background: #f8d7da; color: #58151c; border: 2px solid "
                                        "#b02a37; border-radius: 4px; padding: 4px; font-weight: bold; }")
        self.chance_label.setVisible(False)
        # Refused images (outside what the model was validated for): the reason, and a visible override.
        self.refusal_label = QLabel("")
        self.refusal_label.setWordWrap(True)
        self.refusal_label.setTextFormat(Qt.TextFormat.RichText)
        self.refusal_label.setStyleSheet("QLabel { background: #fff3cd; color: #4d3a00; border: 2px solid "
                                         "#b58900; border-radius: 4px; padding: 4px; }")
        self.refusal_label.setVisible(False)
        self.override_button = QPushButton("Analyse anyway (result outside validated use)")
        self.override_button.setToolTip("Give a finding despite the refusal; the result is marked as outside the "
                                        "model's validated use in the window, the reports and the CSV")
        self.override_button.clicked.connect(self.sig_override_requested.emit)
        self.override_button.setVisible(False)
        # The held-out numbers beside the finding, with the protocol they come from.
        self.evidence_label = QLabel("")
        self.evidence_label.setWordWrap(True)
        self.evidence_label.setTextFormat(Qt.TextFormat.RichText)
        self.evidence_label.setStyleSheet("color: #333333;")

        self.study_label = QLabel("")
        self.study_label.setWordWrap(True)
        self.study_label.setTextFormat(Qt.TextFormat.RichText)
        self.plot = pg.PlotWidget(background="w")
        # A fixed height: a finding that wraps to more lines never squeezes the plot's axes away.
        self.plot.setFixedHeight(PLOT_HEIGHT)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "slice")
        self.plot.setLabel("left", "probability")
        self.plot.setYRange(0.0, 1.0, padding=0.05)
        self.plot.getPlotItem().getAxis("left").setTicks([[(0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")]])
        self.plot.showGrid(x=False, y=True, alpha=0.3)
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#555555", width=1))
        self.points = pg.ScatterPlotItem(size=10, hoverable=True, hoverSize=14, tip=None)
        self.points.sigClicked.connect(self._on_point_clicked)
        self.plot.addItem(self.points)
        self.threshold_line = pg.InfiniteLine(angle=0, movable=False,
                                              pen=pg.mkPen("#000000", style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.threshold_line)
        self.slice_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#1f77b4", width=2))
        self.plot.addItem(self.slice_line)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_clicked)
        self.series_box = QGroupBox("Slices")
        series_layout = QVBoxLayout(self.series_box)
        series_layout.addWidget(self.plot)
        series_layout.addWidget(self.study_label)
        self.series_box.setVisible(False)

        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.performance_label = QLabel("")
        self.performance_label.setWordWrap(True)
        self.performance_label.setTextFormat(Qt.TextFormat.RichText)
        self.intended_use_label = QLabel("")
        self.intended_use_label.setWordWrap(True)
        self.intended_use_label.setStyleSheet("color: #6c2b00;")

        finding_box = QGroupBox("Finding")
        finding_layout = QVBoxLayout(finding_box)
        finding_layout.addWidget(self.finding_label)
        finding_layout.addWidget(self.probability_label)
        finding_layout.addWidget(self.slice_label)
        finding_layout.addWidget(self.bar)
        self.point_row = QWidget()
        point_row = QVBoxLayout(self.point_row)
        point_row.setContentsMargins(0, 0, 0, 0)
        point_row.setSpacing(2)
        point_row.addWidget(QLabel("Operating point"))
        point_row.addWidget(self.operating_point_box)
        self.point_row.setVisible(False)
        finding_layout.addWidget(self.point_row)
        finding_layout.addWidget(self.refusal_label)
        finding_layout.addWidget(self.override_button)
        finding_layout.addWidget(self.evidence_label)
        finding_layout.addWidget(self.warning_label)
        finding_layout.addWidget(self.chance_label)
        self.model_box = model_box = QGroupBox("Model")
        model_box.setVisible(False)
        model_layout = QVBoxLayout(model_box)
        model_layout.addWidget(self.model_label)
        model_layout.addWidget(QLabel("<b>Measured performance</b>"))
        model_layout.addWidget(self.performance_label)
        model_layout.addWidget(QLabel("<b>Intended use</b>"))
        model_layout.addWidget(self.intended_use_label)

        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.addWidget(finding_box)  # the finding (for a series: the study result) leads
        content_layout.addWidget(self.series_box)
        content_layout.addWidget(model_box)
        content_layout.addStretch(1)
        self._sections_layout = content_layout  # add_section: more sections under the finding
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll_area)

    def add_section(self, widget: QWidget) -> None:
        """Show ``widget`` (e.g. the reader's decision) under the finding, above the model's details."""
        self._sections_layout.insertWidget(self._sections_layout.indexOf(self.model_box), widget)

    # ------------------------------------------------------------------------------------------ results
    def clear(self, message: str = "No result yet") -> None:
        """Show no result (``message`` in place of the finding), scrolled to the top."""
        self._results = []
        self._series = None
        self.finding_label.setText(message)
        self.finding_label.setStyleSheet("")
        self.probability_label.setText("")
        self.slice_label.setText("")
        self.slice_label.setVisible(False)
        self.bar.set_values(None, {}, "")
        self.series_box.setVisible(False)
        self.warning_label.setVisible(False)
        self.refusal_label.setVisible(False)
        self.override_button.setVisible(False)
        self.evidence_label.setText("")
        self.scroll_to_top()

    def scroll_to_top(self) -> None:
        """Scroll the panel to its top, where the finding is."""
        self.scroll_area.verticalScrollBar().setValue(self.scroll_area.verticalScrollBar().minimum())

    def show_refusal(self, reason: str) -> None:
        """Show that no installed model was made for the image (no finding, the reasons, no override: choose a
        model in the toolbar to analyse it outside validated use)."""
        self.clear("Not analysed: no installed model was made for this image")
        self.finding_label.setStyleSheet(f"color: {REFUSED_COLOUR};")
        self.refusal_label.setText("⚠ " + html.escape(reason))
        self.refusal_label.setVisible(True)

    def set_busy(self, message: str) -> None:
        """Show that an analysis is running."""
        self.finding_label.setText(message)
        self.finding_label.setStyleSheet("color: #555555;")
        self.probability_label.setText("")
        self.slice_label.setVisible(False)
        self.bar.set_values(None, self.bar.thresholds, self.bar.active)

    def set_card(self, card: Any) -> None:  # noqa: ANN401 - asdesk.inference.ModelCard
        """Show a model card's identity, performance and intended use, and its operating points.

        Parameters
        ----------
        card : asdesk.inference.card.ModelCard
            The model used (or about to be used).
        """
        self._card = card
        self.model_box.setVisible(True)
        self.point_row.setVisible(True)
        raw = getattr(card, "raw", {}) or {}
        sha = str(card.sha256)
        self.model_label.setText(
            f"<b>{html.escape(card.id)}</b> version {html.escape(str(card.version))}<br>"
            f"{html.escape(str(card.architecture))}, input {card.input_shape[1]}×{card.input_shape[0]}<br>"
            f"SHA-256 <span title='{sha}'>{sha[:16]}…</span>"
            + (f"<br>trained {html.escape(str(raw.get('date', '')))}" if raw.get("date") else ""))
        self.model_label.setToolTip(f"SHA-256 of model.keras: {sha}")
        warning = chance_warning(raw)
        self.chance_label.setText(f"⚠ {warning}" if warning else "")
        self.chance_label.setVisible(bool(warning))
        self.intended_use_label.setText(html.escape(str(card.intended_use)))
        current = self.operating_point_box.currentData()
        self.operating_point_box.blockSignals(True)
        self.operating_point_box.clear()
        thresholds = self._thresholds()
        for name in card.operating_points:
            evidence = held_out_evidence(raw, name)
            extra = []
            if evidence.sensitivity is not None:
                extra.append(f"sens {evidence.sensitivity.value:.2f}")
            if evidence.specificity is not None:
                extra.append(f"spec {evidence.specificity.value:.2f}")
            details = f" (held-out {', '.join(extra)})" if extra else ""
            text = f"{OPERATING_POINT_TITLES.get(name, name)} ≥ {format_probability(thresholds[name])}{details}"
            self.operating_point_box.addItem(text, name)
            self.operating_point_box.setItemData(self.operating_point_box.count() - 1, text,
                                                 Qt.ItemDataRole.ToolTipRole)
        wanted = current if current in card.operating_points else card.default_operating_point
        self.operating_point_box.setCurrentIndex(max(0, self.operating_point_box.findData(wanted)))
        self.operating_point_box.blockSignals(False)
        self._show_card_table()

    def _show_card_table(self) -> None:
        raw = getattr(self._card, "raw", {}) or {}
        self.performance_label.setText(model_card_html(raw, self._thresholds(), self.operating_point()))

    def set_operating_point(self, name: str) -> None:
        """Select operating point ``name`` (if the card has it) and update the finding."""
        index = self.operating_point_box.findData(name)
        if index >= 0:
            self.operating_point_box.setCurrentIndex(index)
            self._refresh()

    def operating_point(self) -> str:
        """The operating point selected (empty before a card is set)."""
        return str(self.operating_point_box.currentData() or "")

    def set_results(self, results: Sequence[AnalysisResult], series: SeriesResult | None, card: Any,  # noqa: ANN401
                    preprocessing_modified: bool = False) -> None:
        """Show the results of one image or one series.

        Parameters
        ----------
        results : sequence of AnalysisResult
            One per image or slice, in series order.
        series : SeriesResult or None
            The study-level result of a series.
        card : asdesk.inference.card.ModelCard
            The model's card.
        preprocessing_modified : bool
            The analysis used a pipeline that departs from the card's: say so next to the finding.
        """
        self._results = list(results)
        self._series = series
        self.set_card(card)
        if self._results:
            used = self._results[0].prediction.operating_point
            if used in card.operating_points:
                self.operating_point_box.setCurrentIndex(self.operating_point_box.findData(used))
                self._show_card_table()
        self.warning_label.setText("⚠ Analysed with modified preprocessing: this result is outside the "
                                   "model's validation." if preprocessing_modified else "")
        self.warning_label.setVisible(preprocessing_modified)
        multi = len(self._results) > 1
        self.series_box.setVisible(multi)
        self.slice_label.setVisible(multi)
        if multi:
            x = np.arange(1, len(self._results) + 1, dtype=float)
            y = np.array(self.probabilities(), dtype=float)
            self.curve.setData(x, y, connect="finite")
            self.plot.setXRange(0.5, len(self._results) + 0.5, padding=0)
        self._index = min(self._index, len(self._results) - 1) if self._results else 0
        self._refresh()

    def set_current_slice(self, index: int) -> None:
        """Follow the viewer: show slice ``index``'s result and mark it on the plot."""
        self._index = int(index)
        self._refresh()

    def probabilities(self) -> list[float]:
        """Per-slice probabilities shown (empty without a result; NaN for a refused slice)."""
        return [float("nan") if r.refused else float(r.prediction.probability) for r in self._results]

    # -------------------------------------------------------------------------------------- internals
    def _thresholds(self) -> dict[str, float]:
        """The card's thresholds on the scale of the probabilities shown (calibrated when the card is)."""
        if self._card is None:
            return {}
        from asdesk.tasks import calibrate

        return {name: calibrate(self._card, float(point.threshold))
                for name, point in self._card.operating_points.items()}

    def _refresh(self) -> None:
        """Show the result of the current slice as :mod:`asdesk.tasks` judged it (no decision is made here)."""
        if not self._results or self._card is None:
            return
        index = min(max(self._index, 0), len(self._results) - 1)
        result = self._results[index]
        prediction = result.prediction
        chosen = self.operating_point()
        if chosen and chosen != prediction.operating_point and chosen in self._card.operating_points:
            from asdesk.tasks import judge  # the panel's own choice, judged where every decision is made

            raw = prediction.raw_probability if prediction.raw_probability is not None else prediction.probability
            prediction = judge(self._card, raw, chosen)
        name = prediction.operating_point
        thresholds = self._thresholds()
        series = len(self._results) > 1
        raw = getattr(self._card, "raw", {}) or {}
        kind = "Calibrated probability" if prediction.calibrated else "Probability"
        point = f"({OPERATING_POINT_TITLES.get(name, name)} operating point)"
        if result.refused:
            slice_text = "not analysed: outside what this model was validated for"
            self.refusal_label.setText("⚠ " + html.escape(result.gate.text(result.model.pack_id)))
            self.refusal_label.setVisible(True)
            self.override_button.setVisible(True)
            self.bar.set_values(None, thresholds, name)
            self.evidence_label.setText("")
            colour = REFUSED_COLOUR
            detail = ""
        else:
            colour = POSITIVE_COLOUR if prediction.positive else NEGATIVE_COLOUR
            slice_text = prediction.finding
            relation = html.escape(probability_versus_threshold(prediction.probability, prediction.threshold,
                                                                prediction.positive))
            detail = f"{kind.lower() if series else kind} <b>{relation}</b> {point}"
            overridden = result.gate.overridden
            self.refusal_label.setText("⚠ Result outside validated use (refusal overridden by the reader): "
                                       + html.escape("; ".join(result.gate.reasons)) if overridden else "")
            self.refusal_label.setVisible(overridden)
            self.override_button.setVisible(False)
            self.bar.set_values(prediction.probability, thresholds, name)
            lines = held_out_evidence(raw, name).lines()
            self.evidence_label.setText("<br>".join(f"<small>{html.escape(line)}</small>" for line in lines))
        if series:
            self._show_study()
            where = f"Slice {index + 1} of {len(self._results)}"
            self.slice_label.setText(f"{where}: <span style='color:{colour}'><b>{html.escape(slice_text)}</b></span>"
                                     + (f"<br>{detail}" if detail else ""))
            self._refresh_series(thresholds.get(name, prediction.threshold), index)
        else:
            self.finding_label.setText(slice_text)
            self.finding_label.setStyleSheet(f"color: {colour};")
            self.probability_label.setText(detail)

    def _show_study(self) -> None:
        """The headline of a series: the study-level result."""
        series = self._series
        if series is not None and series.refused:
            self.finding_label.setText("Study: not analysed")
            self.finding_label.setStyleSheet(f"color: {REFUSED_COLOUR};")
            self.probability_label.setText(
                f"{series.n_refused} of {len(series.slices)} slices are outside what the model was validated for, "
                "so the series is too.")
        elif series is not None:
            study = series.study_prediction
            self.finding_label.setText(f"Study: {study.finding}")
            self.finding_label.setStyleSheet(f"color: {POSITIVE_COLOUR if study.positive else NEGATIVE_COLOUR};")
            relation = html.escape(probability_versus_threshold(series.study_probability, study.threshold,
                                                                study.positive))
            overridden = any(item.gate.overridden for item in series.slices)
            self.probability_label.setText(f"Study score <b>{relation}</b>"
                                           + (" (refused slices overridden by the reader)" if overridden else ""))
        else:
            self.finding_label.setText("Series: no study-level result")
            self.finding_label.setStyleSheet("")
            self.probability_label.setText("This model's card states no study rule; see each slice below.")

    def _refresh_series(self, threshold: float, index: int) -> None:
        probabilities = np.array(self.probabilities())
        brushes = [pg.mkBrush(POSITIVE_COLOUR if r.prediction.positive else NEGATIVE_COLOUR) for r in self._results]
        sizes = [14 if i == index else 9 for i in range(len(probabilities))]
        spots = [{"pos": (i + 1, p), "data": i, "brush": b, "size": s, "pen": pg.mkPen("k", width=1)}
                 for i, (p, b, s) in enumerate(zip(probabilities, brushes, sizes, strict=True)) if np.isfinite(p)]
        self.points.setData(spots)
        self.threshold_line.setValue(threshold)
        self.slice_line.setValue(index + 1)
        series = self._series
        notes = ["Click a point to show that slice."]
        if series is not None and not series.refused:
            notes.insert(0, f"Study rule: {html.escape(series.study_rule)}.")
        if series is not None and series.n_refused:
            notes.append(f"{series.n_refused} slice(s) refused (not plotted).")
        if series is not None and series.errors:
            notes.append(f"{len(series.errors)} file(s) unreadable.")
        self.study_label.setText("<small>" + " ".join(notes) + "</small>")

    def _on_point_clicked(self, _item: object, points: Sequence[Any]) -> None:
        if len(points):
            self.sig_slice_requested.emit(int(points[0].data()))

    def _on_plot_clicked(self, event: Any) -> None:  # noqa: ANN401
        if event.isAccepted() or not self._results:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        index = int(round(point.x())) - 1
        if 0 <= index < len(self._results):
            self.sig_slice_requested.emit(index)

    def _on_operating_point(self, _index: int) -> None:
        self._show_card_table()
        self._refresh()
        self.sig_operating_point_changed.emit(self.operating_point())
