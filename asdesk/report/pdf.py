"""The PDF analysis report, rendered headless with Qt's ``QTextDocument`` (HTML subset) and ``QPdfWriter``.

Only ``PySide6.QtGui``/``QtCore`` are used: an offscreen ``QGuiApplication`` is enough (no widgets, no
display). Page 1 is what a referrer reads in ten seconds: the header clinics expect
(:func:`asdesk.core.study_header.study_header`), the AI finding with its key numbers, the reader's conclusion
apart from it (:class:`asdesk.core.reader_decision.ReaderDecision`), the image with its Grad-CAM overlay and the
intended-use statement, once. Detail pages follow: the numbers behind the finding, the full patient and study
table, the per-slice table, the model and its measured performance with 95% confidence intervals as its card
states them. Every page names the model pack id, version and SHA-256 (IHE AI Results).

The layout is computed in the PDF's own device units (300 dpi): lengths are given in mm and converted,
fonts in points, so the result does not depend on the screen's DPI.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QMarginsF, QRectF, QSizeF, Qt, QUrl
from PySide6.QtGui import (
    QColor,
    QFont,
    QGuiApplication,
    QImage,
    QPageLayout,
    QPageSize,
    QPainter,
    QPdfWriter,
    QPen,
    QTextDocument,
)

import asdesk
from asdesk.core import AnalysisResult, AsdeskError, SeriesResult
from asdesk.core.formatting import format_probability, join_present
from asdesk.core.performance import chance_warning, held_out_evidence
from asdesk.core.reader_decision import AiFindingRef, ReaderDecision, format_timestamp
from asdesk.core.study_header import ABSENT, study_header
from asdesk.report import ReportWriteError
from asdesk.report.images import array_to_qimage, blend_overlay, display_to_gray_uint8, fit_qimage

__all__ = ["ensure_gui_application", "write_pdf_report"]

RESOLUTION_DPI = 300
"""Resolution of the PDF device; layout lengths are converted from mm at this resolution."""
_MARGIN_LEFT_MM = _MARGIN_RIGHT_MM = 16.0
_MARGIN_TOP_MM = 14.0
_MARGIN_BOTTOM_MM = 20.0  # room for the footer
_IMAGE_MAX_SIDE_PX = 1400  # larger images are scaled down (smoothly) before embedding
_IMAGE_MAX_HEIGHT_MM = 95.0
_PAGE_ONE_IMAGE_MM = 72.0  # page 1 must hold the header, the finding, the reader's conclusion and the images

_application: QGuiApplication | None = None  # keeps the application we create alive

_METRIC_NAMES = {
    "auc": "AUC (ROC)", "roc_auc": "AUC (ROC)", "auroc": "AUC (ROC)", "pr_auc": "AUC (precision-recall)",
    "auprc": "AUC (precision-recall)", "average_precision": "Average precision", "sensitivity": "Sensitivity",
    "recall": "Sensitivity (recall)", "tpr": "Sensitivity", "specificity": "Specificity",
    "tnr": "Specificity", "ppv": "Positive predictive value", "precision": "Precision (PPV)",
    "npv": "Negative predictive value", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
    "f1": "F1 score", "brier": "Brier score", "kappa": "Cohen's kappa", "mcc": "Matthews correlation",
}
_INFO_KEYS = ("dataset", "data", "test_set", "split", "evaluation", "method", "validation", "level", "unit",
              "n_patients", "n_studies", "n_images", "n_slices", "n_positive", "n_negative", "prevalence",
              "operating_point", "threshold", "ci_method", "date", "notes", "note", "protocol", "rule")
_PERFORMANCE_SKIP = {"detail", "bootstrap", "studies", "resamples_used", "confusion_matrix", "patients",
                     "predictions"}


def ensure_gui_application() -> QGuiApplication:
    """Return the running ``QGuiApplication``, creating a headless one if there is none.

    On Linux without ``DISPLAY`` or ``WAYLAND_DISPLAY`` (and no ``QT_QPA_PLATFORM`` chosen),
    ``QT_QPA_PLATFORM=offscreen`` is set in ``os.environ`` before the application is created. On Windows
    and macOS the native platform plugin works without a visible window and is kept.

    Returns
    -------
    QGuiApplication

    Notes
    -----
    Creating the application must happen on the main thread; the GUI has one already, and the CLI calls
    this from its main thread.

    Raises
    ------
    asdesk.core.AsdeskError
        If a plain ``QCoreApplication`` (not a GUI one) is already running: fonts and PDF output need a
        ``QGuiApplication``; create that instead.
    """
    global _application
    instance = QCoreApplication.instance()
    if isinstance(instance, QGuiApplication):
        return instance
    if instance is not None:
        raise AsdeskError(
            "a QCoreApplication is running; PDF reports need a QGuiApplication (create "
            "QGuiApplication or QApplication instead of QCoreApplication)")
    if (sys.platform.startswith(("linux", "freebsd", "openbsd")) and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("QT_QPA_PLATFORM")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    _application = QGuiApplication([sys.argv[0] if sys.argv and sys.argv[0] else "asdesk"])
    return _application


# ----------------------------------------------------------------------------------------------- formatting
def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _percent(probability: float) -> str:
    """0.6234 → ``"62.3 %"``: :func:`asdesk.core.formatting.format_probability`, as in the window and CLI."""
    return format_probability(probability)


def _point_name(operating_point: str) -> str:
    return operating_point.replace("_", " ") if operating_point else "not stated"


def _timestamp(moment: datetime) -> str:
    """``2025-03-01 14:05:09 (UTC+01:00)``."""
    offset = moment.strftime("%z")
    zone = f" (UTC{offset[:3]}:{offset[3:5]})" if offset else ""
    return f"{moment:%Y-%m-%d %H:%M:%S}{zone}"


def _number(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return _esc(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return _esc(value)


def _accepted_values(values: Any) -> str:  # noqa: ANN401 - a card's JSON list
    """A card's accepted modalities or body parts: ``["", "CR", "DX"]`` → ``"CR, DX; files without the attribute"``.

    An empty entry in a card's list accepts images that lack the attribute (e.g. PNG); it is said in words rather
    than left as a stray comma.
    """
    if not isinstance(values, Sequence) or isinstance(values, str):
        return _text(values) if values else ABSENT
    named = [str(value).strip() for value in values if str(value).strip()]
    text = ", ".join(named)
    if any(not str(value).strip() for value in values):
        text += ("; " if text else "") + "files without the attribute"
    return text or ABSENT


def _metric_label(name: str) -> str:
    key = str(name).strip()
    return _METRIC_NAMES.get(key.lower(), key.replace("_", " ").capitalize())


def _text(value: Any, limit: int = 400) -> str:
    """A JSON value (string, number, list, object) as short readable text."""
    if isinstance(value, Mapping):
        if "name" in value:
            details = "; ".join(f"{key.replace('_', ' ')}: {_text(item, limit)}"
                                for key, item in value.items() if key != "name")
            text = f"{value['name']} ({details})" if details else str(value["name"])
        else:
            text = "; ".join(f"{key.replace('_', ' ')}: {_text(item, limit)}" for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        text = join_present(_text(item, limit) for item in value)  # ["KNEE", ""]: "KNEE", not "KNEE, "
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------- performance tables
def _ci(spec: Mapping[str, Any]) -> tuple[Any, Any] | None:
    for key in ("ci95", "ci_95", "ci", "confidence_interval", "ci95_percent"):
        interval = spec.get(key)
        if isinstance(interval, Mapping):
            low = interval.get("low", interval.get("lower"))
            high = interval.get("high", interval.get("upper"))
            return (low, high)
        if isinstance(interval, Sequence) and not isinstance(interval, str) and len(interval) == 2:
            return (interval[0], interval[1])
    for low_key, high_key in (("ci95_low", "ci95_high"), ("ci_low", "ci_high"), ("lower", "upper"),
                              ("low", "high")):
        if low_key in spec or high_key in spec:
            return (spec.get(low_key), spec.get(high_key))
    return None


def _metric_row(name: str, spec: Any) -> tuple[str, str, str, str] | None:
    """(label, value, ci, extra) for one metric entry, or None if it is not a metric."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return (_metric_label(name), _number(spec), "", "")
    if not isinstance(spec, Mapping):
        return None
    value = next((spec[key] for key in ("value", "estimate", "point", "mean") if key in spec), None)
    interval = _ci(spec)
    if value is None and interval is None:
        return None
    ci_text = ""
    if interval is not None and (interval[0] is not None or interval[1] is not None):
        ci_text = f"{_number(interval[0])} – {_number(interval[1])}"
    extra = [f"{_esc(key.replace('_', ' '))}: {_number(item)}" for key, item in spec.items()
             if key not in {"value", "estimate", "point", "mean", "name", "metric", "ci95", "ci_95", "ci",
                            "confidence_interval", "ci95_low", "ci95_high", "ci_low", "ci_high", "lower",
                            "upper", "low", "high"} and isinstance(item, (int, float, str))]
    return (_metric_label(str(spec.get("name", name))), _number(value), ci_text, ", ".join(extra))


def _metric_rows(metrics: Any) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    if isinstance(metrics, Mapping):
        items: Iterable[tuple[str, Any]] = metrics.items()
    elif isinstance(metrics, Sequence) and not isinstance(metrics, str):
        items = [(str(item.get("name", item.get("metric", "?"))), item) for item in metrics
                 if isinstance(item, Mapping)]
    else:
        return rows
    for name, spec in items:
        row = _metric_row(name, spec)
        if row is not None:
            rows.append(row)
    return rows


_Section = tuple[str, list[tuple[str, str]], list[tuple[str, str, str, str]]]


def _info_label(key: str) -> str:
    if key.startswith("n_"):
        return "Number of " + key[2:].replace("_", " ")
    return key.replace("_", " ").capitalize()


def _is_info(key: str, value: Any) -> bool:
    return (key in _INFO_KEYS or key.startswith("n_") or isinstance(value, str)
            or (isinstance(value, Sequence) and not isinstance(value, str)
                and all(isinstance(item, str) for item in value)))


def _section(title: str, block: Mapping[str, Any]) -> tuple[_Section, list[tuple[str, Mapping[str, Any]]]]:
    """One performance section and the sub-blocks (nested mappings) it holds."""
    info: list[tuple[str, str]] = []
    rows: list[tuple[str, str, str, str]] = []
    children: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in block.items():
        if key in _PERFORMANCE_SKIP or key == "metrics":
            continue
        if _is_info(key, value):
            if value not in (None, "", []):
                info.append((_info_label(key), _esc(_text(value))))
            continue
        row = _metric_row(key, value) if value is not None else (_metric_label(key), "n/a", "", "")
        if row is not None:
            if "metrics" not in block:
                rows.append(row)
        elif isinstance(value, Mapping):
            children.append((key, value))
    if "metrics" in block:
        rows = _metric_rows(block["metrics"])
    return (title, info, rows), children


def _performance_sections(performance: Any, used_point: str = "") -> list[_Section]:
    """Split a card's ``performance`` block into (title, info lines, metric rows) sections.

    Understands the block written by ``asdesk evaluate`` (``dataset``, ``protocol``, ``n_patients``,
    ``metrics: {name: {"value", "ci95": [low, high]}}``, ``detail.at_operating_points``, ``study_level``)
    and is lenient with other shapes: metrics as a list of ``{"name", "value", "ci95"}``, metrics at the top
    level, bounds as ``ci95_low``/``ci95_high``, nested levels such as ``{"slice": {...}, "study": {...}}``.
    Patient-level lists (``studies``) and bootstrap bookkeeping are not printed.
    """
    if not isinstance(performance, Mapping) or not performance:
        return []
    sections: list[_Section] = []
    top, children = _section("", performance)
    if top[1] or top[2]:
        sections.append(top)
    for key, child in children:
        section, _ = _section(key.replace("_", " ").capitalize(), child)
        if section[1] or section[2]:
            sections.append(section)
    detail = performance.get("detail")
    points = detail.get("at_operating_points") if isinstance(detail, Mapping) else None
    if (used_point and isinstance(points, Mapping) and isinstance(points.get(used_point), Mapping)
            and used_point != performance.get("operating_point")):
        point = points[used_point]
        rows = [row for key, value in point.items() if key not in ("threshold", "confusion_matrix")
                for row in [_metric_row(key, value)] if row is not None]
        info = [("Threshold", _esc(_text(point["threshold"])))] if "threshold" in point else []
        sections.append((f"At the operating point used in this report ({_point_name(used_point)})", info,
                         rows))
    return sections


# ------------------------------------------------------------------------------------------------ the HTML
class _Builder:
    """Builds the report HTML; lengths are given in mm and converted to the HTML's pixel unit.

    ``QTextDocument`` treats HTML/CSS pixel lengths (image sizes, cell padding, margins) as pixels at the
    *screen's* logical DPI and scales them to the paint device; ``html_pixels_per_mm`` is measured for the
    actual device (see :func:`_html_pixels_per_device_pixel`), so the printed sizes are exact.
    """

    def __init__(self, html_pixels_per_mm: float, body_width_mm: float) -> None:
        self.html_pixels_per_mm = html_pixels_per_mm
        self.body_width_mm = body_width_mm
        self.parts: list[str] = []

    def px(self, millimetres: float) -> int:
        return max(1, round(millimetres * self.html_pixels_per_mm))

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str, new_page: bool = False) -> None:
        style = ' style="page-break-before: always;"' if new_page else ""
        self.add(f"<h2{style}>{_esc(text)}</h2>")

    def key_values(self, pairs: Sequence[tuple[str, str]], wide: Iterable[str] = (),
                   mono: Iterable[str] = ()) -> None:
        """A label/value grid, two pairs per row; labels in ``wide`` get a row of their own.

        Values are HTML (already escaped); labels are plain text.
        """
        wide, mono = set(wide), set(mono)
        self.add(f'<table width="100%" cellspacing="0" cellpadding="{self.px(0.5)}">')
        row: list[str] = []

        def flush() -> None:
            if row:
                row.extend(['<td></td><td></td>'] * (2 - len(row)))
                self.add("<tr>" + "".join(row) + "</tr>")
                row.clear()

        for label, value in pairs:
            value_html = value or "–"
            if label in mono:
                value_html = f'<span class="mono">{value_html}</span>'
            cell = f'<td width="19%" class="label">{_esc(label)}</td>'
            if label in wide:
                flush()
                self.add(f'<tr>{cell}<td colspan="3" class="value">{value_html}</td></tr>')
            else:
                row.append(f'{cell}<td width="31%" class="value">{value_html}</td>')
                if len(row) == 2:
                    flush()
        flush()
        self.add("</table>")

    def grid(self, header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int],
             highlight: int | None = None, align_right: Iterable[int] = ()) -> None:
        """A ruled table; cells are HTML already escaped; ``widths`` in percent."""
        align_right = set(align_right)
        pad = self.px(0.6)
        self.add(f'<table class="grid" width="100%" cellspacing="0" cellpadding="{pad}" '
                 f'border="{self.px(0.15)}">')
        self.add("<thead><tr>" + "".join(
            f'<th width="{width}%" align="{"right" if index in align_right else "left"}">{_esc(text)}</th>'
            for index, (text, width) in enumerate(zip(header, widths, strict=True))) + "</tr></thead>")
        for row_index, row in enumerate(rows):
            style = ' class="hl"' if row_index == highlight else ""
            self.add(f"<tr{style}>" + "".join(
                f'<td align="{"right" if index in align_right else "left"}">{cell}</td>'
                for index, cell in enumerate(row)) + "</tr>")
        self.add("</table>")

    def html(self) -> str:
        return "\n".join(self.parts)


def _style(builder: _Builder) -> str:
    px = builder.px
    return f"""
body {{ font-size: 9.5pt; color: #1a1a1a; }}
h1 {{ font-size: 17pt; font-weight: 600; color: #10304f; margin-top: 0; margin-bottom: {px(0.8)}px; }}
h2 {{ font-size: 11pt; font-weight: 600; color: #10304f;
      margin-top: {px(3.5)}px; margin-bottom: {px(1.0)}px; }}
h3 {{ font-size: 9.5pt; font-weight: 600; color: #10304f;
      margin-top: {px(2.5)}px; margin-bottom: {px(0.5)}px; }}
p {{ margin-top: 0; margin-bottom: {px(1.0)}px; }}
.sub {{ font-size: 8.5pt; color: #555555; }}
.ruo {{ color: #9a1b1b; font-weight: 600; }}
.refused {{ color: #7a5c00; font-weight: 600; }}
.label {{ color: #555555; font-size: 8.5pt; }}
.value {{ font-size: 9.5pt; }}
.mono {{ font-family: "DejaVu Sans Mono", "Consolas", "Courier New", monospace; font-size: 8pt; }}
.caption {{ font-size: 8pt; color: #444444; }}
.small {{ font-size: 8pt; color: #444444; }}
table.grid {{ border-collapse: collapse; border-color: #9aa7b4; border-style: solid; font-size: 8.5pt; }}
table.grid th {{ background-color: #e6ecf2; font-weight: 600; }}
tr.hl td {{ background-color: #fff3cd; font-weight: 600; }}
.finding-pos {{ font-size: 14pt; font-weight: 700; color: #9a1b1b; }}
.finding-neg {{ font-size: 14pt; font-weight: 700; color: #1d5e2a; }}
.resultbox {{ background-color: #f1f5f9; }}
.readerbox {{ background-color: #fbfbf4; }}
.pending {{ font-size: 11pt; font-weight: 600; color: #6b6b6b; }}
.reader-agree {{ font-size: 12pt; font-weight: 700; color: #10304f; }}
.reader-disagree {{ font-size: 12pt; font-weight: 700; color: #7a3e00; }}
.reader-own {{ font-size: 12pt; font-weight: 700; color: #10304f; }}
.disclaimer {{ color: #9a1b1b; font-weight: 600; font-size: 8.5pt; margin-top: {px(2)}px; }}
table.header td {{ font-size: 9pt; }}
"""


def _finding_html(finding: str, positive: bool) -> str:
    return f'<span class="{"finding-pos" if positive else "finding-neg"}">{_esc(finding)}</span>'


def _image_cells(builder: _Builder, analysis: AnalysisResult, document: QTextDocument,
                 keep: list[QImage], max_height_mm: float = _IMAGE_MAX_HEIGHT_MM) -> str:
    """Two table cells: the image and its Grad-CAM overlay, registered as document resources."""
    display = np.asarray(analysis.record.display)
    gray = display_to_gray_uint8(display)
    height, width = gray.shape
    column_mm = (builder.body_width_mm - 6.0) / 2.0
    scale = min(column_mm / width, max_height_mm / height)
    shown_w, shown_h = builder.px(width * scale), builder.px(height * scale)

    def register(name: str, array: np.ndarray) -> str:
        image = fit_qimage(array_to_qimage(array), _IMAGE_MAX_SIDE_PX)
        keep.append(image)
        url = f"asdesk-report://{name}.png"
        document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(url), image)
        return f'<img src="{url}" width="{shown_w}" height="{shown_h}">'

    image_html = register("image", gray)
    if analysis.overlay is not None:
        overlay_html = register("overlay", blend_overlay(display, analysis.overlay))
        overlay_caption = ("Oedema map: the model's probability of bone-marrow oedema at each pixel (warm = likely)"
                           if analysis.model.map_name == "oedema map" else
                           "Grad-CAM overlay: warm colours mark the regions that most raised the score")
    else:
        overlay_html = f'<p class="small"><i>{_esc(analysis.model.map_name)} not available for this result.</i></p>'
        overlay_caption = ""
    return (f'<td width="50%" align="center" valign="top">{image_html}'
            f'<p class="caption" align="center">Image as displayed (default window)</p></td>'
            f'<td width="50%" align="center" valign="top">{overlay_html}'
            f'<p class="caption" align="center">{overlay_caption}</p></td>')


def _patient_pairs(analysis: AnalysisResult, series: bool) -> list[tuple[str, str]]:
    """The detail page's patient and study table: the header fields, then the series and the source."""
    meta = analysis.record.metadata
    source = Path(meta.source)
    source_text = f"{source.parent.name}/ ({source.name} shown)" if series else source.name
    if meta.frame_index is not None:
        source_text += f", frame {meta.frame_index + 1}"
    pairs = [(field.label, _esc(field.value)) for field in study_header(meta)]
    return pairs + [
        ("Series", _esc(meta.series_description or ABSENT)),
        ("Source file", _esc(source_text)),
        ("Image size", f"{analysis.record.shape[1]} × {analysis.record.shape[0]} px"
         + _spacing_text(meta.pixel_spacing_mm)),
    ]


def _spacing_text(spacing: tuple[float, float] | None) -> str:
    if not spacing:
        return ""
    rows, columns = spacing
    if math.isclose(rows, columns, rel_tol=1e-3):
        return f", {columns:.3g} mm/px"
    return f", {columns:.3g} × {rows:.3g} mm/px"


def _slice_label(analysis: AnalysisResult) -> str:
    meta = analysis.record.metadata
    parts = []
    if meta.instance_number is not None:
        parts.append(f"instance {meta.instance_number}")
    if meta.slice_position_mm is not None:
        parts.append(f"position {meta.slice_position_mm:.1f} mm")
    return ", ".join(parts) or Path(meta.source).name


def _header_html(b: _Builder, meta: Any) -> None:  # noqa: ANN401 - ImageMetadata
    """The report header clinics expect: patient, accession, study, institution, referrer (absent: —)."""
    fields = study_header(meta)
    b.add(f'<table class="header" width="100%" cellspacing="0" cellpadding="{b.px(0.6)}">')
    for start in range(0, len(fields), 2):
        cells = []
        for field in fields[start:start + 2]:
            style = "" if field.present else ' style="color: #8a8a8a;"'
            cells.append(f'<td width="20%" class="label">{_esc(field.label)}</td>'
                         f'<td width="30%" class="value"{style}><b>{_esc(field.value)}</b></td>')
        cells.extend(["<td></td><td></td>"] * (2 - len(cells)))
        b.add("<tr>" + "".join(cells) + "</tr>")
    b.add("</table>")
    if meta.format and meta.format != "DICOM":
        b.add(f'<p class="small">{_esc(meta.format)} image: the file holds no patient or study data.</p>')


def _estimate_text(estimate: Any) -> str:  # noqa: ANN401 - Estimate or None
    if estimate is None:
        return "not measured"
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} (95% CI {estimate.low:.3f}–{estimate.high:.3f})"


def _key_numbers(rows: Sequence[tuple[str, str]], b: _Builder) -> str:
    cells = "".join(f'<tr><td width="36%" class="label">{_esc(label)}</td><td class="value">{value}</td></tr>'
                    for label, value in rows)
    return f'<table width="100%" cellspacing="0" cellpadding="{b.px(0.4)}">{cells}</table>'


def _reader_box(b: _Builder, decision: ReaderDecision | None, ai_now: AiFindingRef, positive_label: str,
                negative_label: str) -> None:
    """The reader's conclusion, kept apart from the AI finding, with the reader's name and the time."""
    parts = ['<p><span class="label">Reader\'s conclusion</span><br>']
    if decision is None or not decision.decided:
        parts.append('<span class="pending">Not recorded in asdesk</span></p>')
        parts.append('<p class="small">The AI finding above is decision support; the reader\'s conclusion is '
                     "recorded in the window (Results panel) or in the clinical report.</p>")
        if decision is not None and decision.note.strip():
            parts.append(f'<p class="small"><b>Reader\'s note (draft):</b> {_esc(decision.note.strip())}</p>')
    else:
        css = {"agree": "reader-agree", "disagree": "reader-disagree"}.get(decision.agreement, "reader-own")
        parts.append(f'<span class="{css}">{_esc(decision.summary(positive_label, negative_label))}</span></p>')
        parts.append(f"<p>Reader: <b>{_esc(decision.reader.strip() or 'not named')}</b> · recorded "
                     f"{_esc(format_timestamp(decision.recorded_at) or 'time not recorded')}</p>")
        if decision.note.strip():
            parts.append(f"<p><b>Note:</b> {_esc(decision.note.strip())}</p>")
        if decision.ai is not None and not decision.ai.same_finding(ai_now):
            parts.append(f'<p class="small">Recorded against an earlier AI finding: {_esc(decision.ai.text())}.</p>')
    b.add(f'<table class="readerbox" width="100%" cellspacing="0" cellpadding="{b.px(2.0)}" '
          f'border="{b.px(0.3)}" style="border-collapse: collapse; border-color: #9aa7b4; '
          'border-style: solid;"><tr><td>' + "".join(parts) + "</td></tr></table>")


def _build_html(result: AnalysisResult | SeriesResult, card: Mapping[str, Any], operating_point_note: str,
                builder: _Builder, document: QTextDocument, keep: list[QImage], now: datetime,
                decision: ReaderDecision | None = None) -> str:
    series = isinstance(result, SeriesResult)
    if series:
        if not result.slices:
            raise ValueError("the SeriesResult has no slices; nothing to report")
        top_index = int(np.argmax([-1.0 if s.refused else s.prediction.probability for s in result.slices]))
        shown = result.slices[top_index]
    else:
        top_index = -1
        shown = result
    model = shown.model
    labels = card.get("labels") if isinstance(card.get("labels"), Mapping) else {}
    positive_label = str(labels.get("positive", model.positive_label))
    negative_label = str(labels.get("negative", model.negative_label))
    px = builder.px
    b = builder
    meta = shown.record.metadata
    b.add(f"<html><head><style>{_style(builder)}</style></head><body>")
    # ================================================================ page 1: what a referrer reads
    b.add("<h1>asdesk analysis report</h1>")
    b.add(f'<p class="sub">Generated {_timestamp(now)} by asdesk {_esc(asdesk.__version__)} · model '
          f"{_esc(model.pack_id)} {_esc(model.version)} (SHA-256 {_esc(model.sha256[:12])})</p>")
    _header_html(b, meta)

    # --- the AI finding and its key numbers
    prediction = shown.prediction
    box: list[str] = []
    refused = result.refused if series else shown.refused
    evidence = held_out_evidence(card, prediction.operating_point)
    if refused:
        gate_text = shown.gate.text(model.pack_id)
        if series:
            first_refused = next(item for item in result.slices if item.refused)
            gate_text = (f"{result.n_refused} of {len(result.slices)} slices are "
                         + first_refused.gate.text(model.pack_id) + " (e.g. slice "
                         + _slice_label(first_refused) + ")")
        box.append('<p><span class="label">AI finding (decision support) · Not analysed</span><br>'
                   f'<span class="refused">{_esc(gate_text[:1].upper() + gate_text[1:])}</span></p>')
        box.append('<p class="small">No finding is given for an image outside what the model was made for. '
                   "A result can be forced (asdesk analyze --force, or “Analyse anyway” in the window); it is then "
                   "marked as outside validated use.</p>")
    elif series:
        study = result.study_prediction
        relation = "≥" if study.positive else "&lt;"
        source = ("the card's study rule" if study.operating_point == "study"
                  else f"operating point {_point_name(study.operating_point)}")
        box.append(f'<p><span class="label">AI study-level finding (decision support)</span><br>'
                   f'{_finding_html(study.finding, study.positive)}</p>')
        rows = [("Study score", f"<b>{_percent(result.study_probability)}</b> {relation} threshold "
                                f"{_percent(study.threshold)} ({_esc(source)})"),
                ("Highest slice", f"{_percent(prediction.probability)} ({_esc(_slice_label(shown))}): "
                                  f"{_esc(prediction.finding)}"),
                ("Slices analysed", f"{len(result.slices)}, at the {_esc(_point_name(prediction.operating_point))} "
                                    f"slice threshold {_percent(prediction.threshold)}")]
        rows += [("Held-out sensitivity", _esc(_estimate_text(evidence.sensitivity))),
                 ("Held-out specificity", _esc(_estimate_text(evidence.specificity)))]
        box.append(_key_numbers(rows, b))
        box.append(f'<p class="small">Study-level finding by the rule: {_esc(result.study_rule or "not stated")}.</p>')
    else:
        relation = "≥" if prediction.positive else "&lt;"
        kind = "Calibrated probability" if prediction.calibrated else "Probability"
        box.append(f'<p><span class="label">AI finding (decision support)</span><br>'
                   f'{_finding_html(prediction.finding, prediction.positive)}</p>')
        rows = [(kind, f"<b>{_percent(prediction.probability)}</b> {relation} threshold "
                       f"{_percent(prediction.threshold)} (positive when probability ≥ threshold)"),
                ("Operating point", f"<b>{_esc(_point_name(prediction.operating_point))}</b>"),
                ("Held-out sensitivity", _esc(_estimate_text(evidence.sensitivity))),
                ("Held-out specificity", _esc(_estimate_text(evidence.specificity)))]
        box.append(_key_numbers(rows, b))
    if not refused:
        overridden = [item for item in (result.slices if series else (shown,)) if item.gate.overridden]
        if overridden:
            box.append('<p class="refused"><b>Outside validated use:</b> the reader overrode the refusal of '
                       f"{len(overridden)} image(s): {_esc('; '.join(overridden[0].gate.reasons))}.</p>")
        if series and result.n_refused:
            box.append(f'<p class="small">{result.n_refused} slice(s) were refused (outside what the model was '
                       "validated for) and left out of the study result.</p>")
    b.add(f'<table class="resultbox" width="100%" cellspacing="0" cellpadding="{px(2.0)}" '
          f'border="{px(0.3)}" style="border-collapse: collapse; border-color: #9aa7b4; '
          'border-style: solid;"><tr><td>'
          + "".join(box) + "</td></tr></table>")

    warning = chance_warning(card)
    if warning:
        b.add(f'<p class="ruo"><b>Warning:</b> {_esc(warning)}</p>')

    # --- the reader's conclusion, apart from the AI finding
    b.add(f'<p style="margin-top: {px(1.5)}px;"></p>')
    _reader_box(b, decision, AiFindingRef.from_result(result), positive_label, negative_label)

    # --- image and map
    b.add(f'<table width="100%" cellspacing="0" cellpadding="{px(1)}" style="margin-top: {px(2)}px;"><tr>'
          + _image_cells(builder, dataclasses.replace(shown, overlay=None) if refused else shown, document, keep,
                         _PAGE_ONE_IMAGE_MM)
          + "</tr></table>")
    shown_text = _esc(Path(meta.source).name)
    if series:
        shown_text = (f"Shown: the slice with the highest probability, {shown_text} "
                      f"({_esc(_slice_label(shown))})")
    if refused:
        b.add(f'<p class="caption">{shown_text}: refused; no heat map is shown for an image outside what the '
              "model was validated for.</p>")
    else:
        b.add(f'<p class="caption">{shown_text}: probability {_percent(prediction.probability)}'
              f" ({_esc(prediction.finding)}). "
              + ("The oedema map is the model's per-pixel probability of bone-marrow oedema (a segmentation "
                 "trained on readers' outlines); " if model.map_name == "oedema map" else
                 "The heat map (Grad-CAM) shows where the model's evidence lies; it is not a segmentation of "
                 "disease. ")
              + "Details on the next page.</p>")
    # --- the disclaimer, once
    b.add(f'<p class="disclaimer">{_esc(asdesk.INTENDED_USE)}</p>')

    # ================================================================ detail pages
    b.heading("Details of the AI result", new_page=True)
    details: list[str] = []
    if not refused:
        if prediction.calibrated:
            details.append('<p class="small">Probabilities are calibrated (Platt scaling on validation '
                           "patients).</p>")
        lines = evidence.lines()
        if lines:
            details.append('<p class="small"><b>Numbers behind this finding</b> (patients the model never saw):<br>'
                           + "<br>".join(_esc(line) for line in lines) + "</p>")
    if operating_point_note:
        details.append(f'<p class="small">Operating point: {_esc(operating_point_note)}</p>')
    if model.task:
        details.append(f'<p class="small">Question answered by the model: {_esc(model.task)}.</p>')
    if not refused and model.map_name == "oedema map":
        details.append('<p class="small">The oedema map is the output of a U-Net trained on the outlines of '
                       "bone-marrow oedema drawn by four readers (2-of-4 consensus); it is shown as the model's "
                       "probability, and its agreement with readers' outlines on patients it never saw is in the "
                       "model card (pointing game and Dice beside the readers' own agreement).</p>")
    elif not refused:
        details.append('<p class="small">Grad-CAM (Selvaraju et al., 2017) shows where the network\'s evidence for '
                       "its score lies, drawn with a strength that follows the probability (a weak finding gives a "
                       "faint map); it is not a segmentation of disease and can highlight irrelevant structures.</p>")
    b.add("".join(details) or '<p class="small">No further detail.</p>')

    # --- patient and study
    b.heading("Patient and study")
    b.key_values(_patient_pairs(shown, series) + [("Study UID", _esc(meta.study_uid or ABSENT)),
                                                  ("Series UID", _esc(meta.series_uid or ABSENT))],
                 wide=("Study UID", "Series UID"), mono=("Study UID", "Series UID"))

    # --- intended use (the card's own statement; the disclaimer itself is on page 1)
    card_use = str(card.get("intended_use", "")).strip()
    if card_use:
        b.heading("Intended use")
        b.add(f"<p><b>Model card:</b> {_esc(card_use)}</p>")

    # --- per-slice table
    if series:
        b.heading("Per-slice probabilities")
        rows = []
        for index, item in enumerate(result.slices):
            item_meta = item.record.metadata
            rows.append([
                str(index + 1),
                _esc(item_meta.instance_number if item_meta.instance_number is not None else "–"),
                (f"{item_meta.slice_position_mm:.1f}" if item_meta.slice_position_mm is not None else "–"),
                _esc(Path(item_meta.source).name + (f" [frame {item_meta.frame_index + 1}]"
                                                    if item_meta.frame_index is not None else "")),
                "–" if item.refused else _percent(item.prediction.probability),
                "refused (outside validated use)" if item.refused else _esc(item.prediction.finding),
            ])
        b.grid(["#", "Instance", "Position (mm)", "File", "Probability", "Finding"], rows,
               widths=[6, 11, 15, 34, 14, 20], highlight=top_index, align_right=(0, 1, 2, 4))
        b.add(f'<p class="caption">Highlighted: the slice shown above. Slice findings use the threshold '
              f"{_percent(prediction.threshold)} ({_esc(_point_name(prediction.operating_point))}).</p>")
        if result.errors:
            b.add('<p class="small"><b>Not analysed:</b><br>'
                  + "<br>".join(_esc(error) for error in result.errors) + "</p>")

    # --- model
    b.heading("Model", new_page=series)
    sha = model.sha256 or str(card.get("sha256", ""))
    pairs = [("Model pack", _esc(model.pack_id)), ("Version", _esc(model.version)),
             ("Architecture", _esc(card.get("architecture", "–"))),
             ("Card date", _esc(card.get("date", "–"))),
             ("Modalities", _esc(_accepted_values(card.get("modalities")))),
             ("Body parts", _esc(_accepted_values(card.get("body_parts")))),
             ("SHA-256 (short)", _esc(sha[:12])),
             ("Heat map", _esc(f"{model.map_name} (layer {card.get('gradcam_layer', '–')})")),
             ("Task", _esc(model.task or card.get("task", "–"))), ("SHA-256 (full)", _esc(sha))]
    b.key_values(pairs, wide=("Task", "SHA-256 (full)"), mono=("SHA-256 (short)", "SHA-256 (full)"))
    points = card.get("operating_points")
    if isinstance(points, Mapping):
        rows = []
        for name, point in points.items():
            if not isinstance(point, Mapping) or "threshold" not in point:
                continue
            used = " (used)" if name == prediction.operating_point else ""
            rows.append([_esc(_point_name(name)) + used, _number(point.get("threshold")),
                         _number(point.get("sensitivity")) if point.get("sensitivity") is not None else "–",
                         _number(point.get("specificity")) if point.get("specificity") is not None else "–"])
        if rows:
            chosen_on = str(points.get("chosen_on", "")) or "the card does not say"
            b.add(f'<p class="small" style="margin-top: {px(2)}px;">Operating points: thresholds on the model\'s '
                  f"raw output and what they gave on the data they were chosen on ({_esc(chosen_on)}); the "
                  "held-out values are under Measured performance:</p>")
            b.grid(["Operating point", "Threshold", "Sensitivity", "Specificity"], rows,
                   widths=[40, 20, 20, 20], align_right=(1, 2, 3))

    # --- measured performance
    b.heading("Measured performance")
    sections = _performance_sections(card.get("performance"), prediction.operating_point)
    if not sections:
        b.add('<p class="small"><i>The model card states no measured performance.</i></p>')
    for title, info, rows in sections:
        if title:
            b.add(f"<h3>{_esc(title)}</h3>")
        if info:
            b.key_values(info, wide=[label for label, _ in info])
        if rows and any(row[3] for row in rows):
            b.grid(["Metric", "Value", "95% CI", "Details"], [list(row) for row in rows],
                   widths=[30, 14, 22, 34], align_right=(1, 2))
        elif rows:
            b.grid(["Metric", "Value", "95% confidence interval"], [list(row[:3]) for row in rows],
                   widths=[44, 20, 36], align_right=(1, 2))
    if sections:
        b.add('<p class="caption">As measured on held-out patients and stated in the model card; '
              "performance on other scanners, protocols or populations may differ.</p>")
    training = card.get("training_data")
    if training:
        b.heading("Training data")
        if isinstance(training, Mapping):
            info = [(str(key).replace("_", " ").capitalize(), _esc(_text(value)))
                    for key, value in training.items()]
            b.key_values(info, wide=[label for label, _ in info])
        else:
            b.add(f'<p class="small">{_esc(_text(training, 1200))}</p>')

    b.add("</body></html>")
    return b.html()


# --------------------------------------------------------------------------------------------- the writer
def _prepare_target(path: Path) -> Path:
    if path.is_dir():
        raise ReportWriteError(path, "is a folder; give a file name ending in .pdf")
    if not path.parent.is_dir():
        raise ReportWriteError(path, f"the folder {path.parent} does not exist; create it or choose "
                                     "another location")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb"):
            pass
    except OSError as error:
        raise ReportWriteError(path, f"cannot write in {path.parent} ({error.strerror or error}); "
                                     "choose a folder you can write to") from error
    return temporary


def write_pdf_report(path: str | Path, result: AnalysisResult | SeriesResult, card: Mapping[str, Any],
                     operating_point_note: str = "", reader_decision: ReaderDecision | None = None) -> Path:
    """Write the analysis report of one image or one series as an A4 PDF.

    **Page 1** is what a referrer reads in ten seconds: the header (patient, ID, sex, birth date, accession number,
    study date and description, institution, referring physician, modality; an absent attribute shows "—"), the
    AI finding (or the refusal) with its key numbers (calibrated probability against the threshold, the operating
    point, the held-out sensitivity and specificity with their 95% CIs; for a series the study score, the rule's
    threshold and the highest slice), the reader's conclusion in a box of its own (with the reader's name and the
    time, or "not recorded"), the image beside its Grad-CAM overlay, and the intended-use disclaimer, once.
    **Detail pages** follow: the numbers behind the finding and their protocol, the operating-point note, the
    question the model answers, the full patient and study table with UIDs and the source file, the card's
    intended use, for a :class:`SeriesResult` the per-slice probabilities, then the model (id, version, SHA-256,
    operating points), its measured performance (metrics with 95% CI and the data they were measured on, from
    ``card["performance"]``) and the training data. Every page has a footer naming asdesk, the model and its hash;
    pages after the first repeat that the report is for research use.

    The file is written to a temporary file in the same folder and then renamed, so an existing report
    is never left half-written.

    Parameters
    ----------
    path : str or Path
        Destination ``.pdf`` file; its folder must exist.
    result : AnalysisResult or SeriesResult
        ``record.display``: float (H, W) or (H, W, 3) in [0, 1]; ``overlay``: uint8 (H, W, 4) RGBA or
        ``None``. For a series the image shown is the slice with the highest probability.
    card : mapping
        The model card as its raw JSON dict (``card.json``). Missing keys are tolerated.
    operating_point_note : str
        Optional sentence on the detail page (e.g. why this operating point was chosen).
    reader_decision : ReaderDecision, optional
        The reader's conclusion (:mod:`asdesk.core.reader_decision`), shown on page 1 apart from the AI finding;
        ``None``: "not recorded".

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    asdesk.report.ReportWriteError
        (an ``OSError`` and ``AsdeskError``) if the folder does not exist or is not writable, ``path`` is a
        folder, or the PDF cannot be produced or replaced (e.g. open in a viewer on Windows).
    ValueError
        If a SeriesResult has no slices or an overlay does not match its image's size.
    """
    path = Path(path)
    ensure_gui_application()
    temporary = _prepare_target(path)
    try:
        _render(temporary, result, card, operating_point_note, reader_decision)
        os.replace(temporary, path)
    except OSError as error:
        raise ReportWriteError(path, f"cannot write the PDF ({error.strerror or error}); if the file is "
                                     "open in a PDF viewer, close it and try again") from error
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def _html_pixels_per_device_pixel(device: QPdfWriter) -> float:
    """Measure how many device pixels one HTML pixel becomes when a QTextDocument lays out on ``device``."""
    probe = QTextDocument()
    probe.documentLayout().setPaintDevice(device)
    probe.setDocumentMargin(0)
    image = QImage(4, 4, QImage.Format.Format_Grayscale8)
    image.fill(0)
    probe.addResource(QTextDocument.ResourceType.ImageResource, QUrl("asdesk-probe://image"), image)
    probe.setHtml('<img src="asdesk-probe://image" width="1000" height="10">')
    width = probe.documentLayout().documentSize().width()
    return width / 1000.0 if width > 0 else 1.0


def _render(target: Path, result: AnalysisResult | SeriesResult, card: Mapping[str, Any],
            operating_point_note: str, decision: ReaderDecision | None = None) -> None:
    writer = QPdfWriter(str(target))
    writer.setResolution(RESOLUTION_DPI)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(0, 0, 0, 0), QPageLayout.Unit.Millimeter)
    writer.setTitle("asdesk analysis report")
    writer.setCreator(f"asdesk {asdesk.__version__}")
    dpi = float(writer.resolution())

    def px(millimetres: float) -> float:
        return millimetres / 25.4 * dpi

    page_width, page_height = float(writer.width()), float(writer.height())
    left, top = px(_MARGIN_LEFT_MM), px(_MARGIN_TOP_MM)
    body_width = page_width - left - px(_MARGIN_RIGHT_MM)
    body_height = page_height - top - px(_MARGIN_BOTTOM_MM)

    document = QTextDocument()
    document.documentLayout().setPaintDevice(writer)  # points → device pixels at 300 dpi
    font = QFont()
    font.setFamilies(["DejaVu Sans", "Segoe UI", "Helvetica Neue", "Arial", "Sans Serif"])
    font.setStyleHint(QFont.StyleHint.SansSerif)
    font.setPointSizeF(9.5)
    # No "fi"/"fl" ligatures, so that text copied or extracted from the PDF is what was written.
    font.setFeature(QFont.Tag("liga"), 0)
    document.setDefaultFont(font)
    document.setDocumentMargin(0)
    keep: list[QImage] = []  # the images stay referenced until the PDF is written
    now = datetime.now().astimezone()
    ratio = _html_pixels_per_device_pixel(writer)
    builder = _Builder(dpi / 25.4 / ratio, body_width / dpi * 25.4)
    document.setHtml(_build_html(result, card, operating_point_note, builder, document, keep, now, decision))
    document.setPageSize(QSizeF(body_width, body_height))
    page_count = document.pageCount()

    shown = result.slices[0] if isinstance(result, SeriesResult) else result
    model = shown.model
    footer_left = (f"asdesk {asdesk.__version__} · model {model.pack_id} v{model.version} · "
                   f"SHA-256 {model.sha256[:12]}")
    # Page 1 states the intended use once in its body; later pages repeat it in the footer.
    footer_later = footer_left + " · research use only; not a medical device"
    footer_font = QFont(font)
    footer_font.setPointSizeF(7.5)

    painter = QPainter()
    if not painter.begin(writer):
        raise OSError("Qt could not start writing the PDF; check that the folder is writable and the disk "
                      "is not full")
    try:
        for page in range(page_count):
            if page:
                writer.newPage()
            painter.save()
            painter.translate(left, top - page * body_height)
            document.drawContents(painter, QRectF(0, page * body_height, body_width, body_height))
            painter.restore()
            rule_y = page_height - px(_MARGIN_BOTTOM_MM) + px(5)
            painter.setPen(QPen(QColor("#9aa7b4"), px(0.2)))
            painter.drawLine(int(left), int(rule_y), int(left + body_width), int(rule_y))
            painter.setPen(QColor("#555555"))
            painter.setFont(footer_font)
            text_rect = QRectF(left, rule_y + px(1), body_width, px(6))
            painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop),
                             footer_later if page else footer_left)
            painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop),
                             f"page {page + 1} of {page_count}")
    finally:
        painter.end()
