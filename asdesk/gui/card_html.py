"""A model card's measured performance as a reader reads it: a short table, not the card's JSON.

Used by the results panel and Help → About. Pure functions from the card's JSON (``ModelCard.raw``) to
Qt rich text (the HTML subset ``QLabel`` and ``QTextBrowser`` render); no widget is created here.

What is shown: the task, the data the numbers were measured on (images, patients, positives), the protocol,
the held-out metrics with their 95 % confidence intervals, the operating points with their thresholds and
the held-out sensitivity and specificity at each, and the study-level measurement when the card has one.
Values the card leaves empty (``null``) are left out, never printed as "None".
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from asdesk.core.formatting import format_probability, join_present

__all__ = ["METRIC_NAMES", "metric_text", "model_card_html"]

METRIC_NAMES: dict[str, str] = {
    "auc": "AUC",
    "roc_auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "ppv": "Precision (PPV)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced accuracy",
}
"""Display names of the metrics, in the order they are listed."""

_OPERATING_POINT_TITLES = {"high_sensitivity": "High sensitivity", "balanced": "Balanced",
                           "high_specificity": "High specificity"}
_POINT_KEYS = ("value", "estimate", "point")
_INTERVAL_KEYS = ("ci95", "ci_95", "ci", "interval")
_TABLE = "<table cellspacing='0' cellpadding='2' style='margin-top:2px; margin-bottom:4px'>"


def _number(value: Any) -> float | None:  # noqa: ANN401
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _estimate(spec: Any) -> tuple[float, float | None, float | None] | None:  # noqa: ANN401
    """(value, low, high) of a metric entry (a number, or a mapping with a value and a 95 % CI)."""
    direct = _number(spec)
    if direct is not None:
        return direct, None, None
    if not isinstance(spec, Mapping):
        return None
    value = next((_number(spec[key]) for key in _POINT_KEYS if key in spec), None)
    if value is None:
        return None
    interval = next((spec[key] for key in _INTERVAL_KEYS if key in spec), None)
    if isinstance(interval, Sequence) and not isinstance(interval, str) and len(interval) == 2:
        low, high = _number(interval[0]), _number(interval[1])
        if low is not None and high is not None:
            return value, low, high
    return value, None, None


def metric_text(spec: Any) -> tuple[str, str] | None:  # noqa: ANN401
    """A metric entry as (value, 95 % CI) text, e.g. ``("0.821", "0.787–0.853")``.

    Parameters
    ----------
    spec : number or mapping
        ``0.82`` or ``{"value": 0.82, "ci95": [0.79, 0.85]}``.

    Returns
    -------
    tuple of str or None
        ``None`` when the entry holds no number (``null``, text, nested blocks): such entries are not shown.
        Values have 3 decimals, as the card states them (never rounded up into a claim beyond that).
    """
    estimate = _estimate(spec)
    if estimate is None:
        return None
    value, low, high = estimate
    interval = f"{low:.3f}–{high:.3f}" if low is not None and high is not None else ""
    return f"{value:.3f}", interval


def _metric_rows(block: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, value, CI) for the metrics of a block: the known ones in :data:`METRIC_NAMES` order, then others."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    known = [key for key in METRIC_NAMES if key in block]
    others = [key for key in block if key not in METRIC_NAMES]
    for key in known + others:
        text = metric_text(block[key])
        title = METRIC_NAMES.get(key, str(key).replace("_", " ").capitalize())
        if text is None or title in seen or str(key).startswith("n_") or key == "threshold":
            continue
        seen.add(title)
        rows.append((title, *text))
    return rows


def _rows_html(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td valign='top' style='padding-right:8px'><b>{html.escape(name)}</b></td>"
                    f"<td>{value}</td></tr>" for name, value in rows if value)
    return f"{_TABLE}{cells}</table>" if cells else ""


def _grid_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th align='left' style='padding-right:8px'>{html.escape(text)}</th>" for text in header)
    body = "".join("<tr>" + "".join(f"<td style='padding-right:8px'>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"{_TABLE}<tr>{head}</tr>{body}</table>"


def _size_text(block: Mapping[str, Any], unit: str = "images") -> str:
    counts = ((block.get("n_images"), unit), (block.get("n_studies"), "studies"),
              (block.get("n_patients"), "patients"), (block.get("n_positive"), "positive"),
              (block.get("n_reference_positive"), "reference-positive"))
    return join_present(f"{int(count)} {name}" for count, name in counts if _number(count) is not None)


def _with_ci(text: tuple[str, str] | None) -> str:
    if text is None:
        return ""
    value, interval = text
    return f"{value} ({interval})" if interval else value


def model_card_html(raw: Mapping[str, Any], thresholds: Mapping[str, float] | None = None,
                    active: str = "") -> str:
    """The card's task, data, protocol, held-out metrics and operating points as compact tables.

    Parameters
    ----------
    raw : mapping
        The card as JSON data (``ModelCard.raw``).
    thresholds : mapping of str to float, optional
        The operating points' thresholds as the window shows them (calibrated when the card is); default:
        the card's own (raw-output) thresholds.
    active : str
        The operating point in use (marked in the table).

    Returns
    -------
    str
        Qt rich text. Entries the card leaves empty are left out.
    """
    performance = raw.get("performance")
    performance = performance if isinstance(performance, Mapping) else {}
    parts: list[str] = []
    facts = [
        ("Task", html.escape(str(raw.get("task") or ""))),
        ("Data", html.escape(join_present([str(performance.get("dataset") or ""), _size_text(performance)],
                                          "; "))),
        ("Protocol", html.escape(str(performance.get("protocol") or ""))),
    ]
    parts.append(_rows_html(facts))

    metrics = performance.get("metrics")
    metric_block = metrics if isinstance(metrics, Mapping) else performance
    rows = _metric_rows(metric_block)
    if rows:
        point = str(performance.get("operating_point") or "")
        where = f" at the {point.replace('_', ' ')} operating point" if point else ""
        bootstrap = (performance.get("detail") or {}).get("bootstrap") if isinstance(
            performance.get("detail"), Mapping) else None
        how = ""
        if isinstance(bootstrap, Mapping) and _number(bootstrap.get("resamples")) is not None:
            how = (f"; 95% CI: bootstrap, {int(bootstrap['resamples'])} resamples by "
                   f"{html.escape(str(bootstrap.get('unit') or 'patient'))}")
        parts.append(f"<b>Held-out metrics</b>{html.escape(where)}{how}")
        parts.append(_grid_html(["Metric", "Value", "95% CI"],
                                [(html.escape(name), value, interval or "–") for name, value, interval in rows]))

    points = raw.get("operating_points")
    detail = performance.get("detail")
    at_points = detail.get("at_operating_points") if isinstance(detail, Mapping) else None
    at_points = at_points if isinstance(at_points, Mapping) else {}
    if isinstance(points, Mapping):
        table = []
        for name, point in points.items():
            if not isinstance(point, Mapping) or _number(point.get("threshold")) is None:
                continue
            shown = (thresholds or {}).get(name, float(point["threshold"]))
            held = at_points.get(name) if isinstance(at_points.get(name), Mapping) else {}
            title = _OPERATING_POINT_TITLES.get(name, str(name).replace("_", " "))
            if name == active:
                title = f"<b>{html.escape(title)}</b> (in use)"
            else:
                title = html.escape(title)
            table.append((title, format_probability(shown), _with_ci(metric_text(held.get("sensitivity"))) or "–",
                          _with_ci(metric_text(held.get("specificity"))) or "–"))
        if table:
            parts.append("<b>Operating points</b> (held-out sensitivity and specificity, 95% CI)")
            parts.append(_grid_html(["Operating point", "Threshold", "Sensitivity", "Specificity"], table))

    study = performance.get("study_level")
    if isinstance(study, Mapping):
        rows = _metric_rows(study)
        facts = [("Rule", html.escape(str(study.get("rule") or ""))),
                 ("Protocol", html.escape(join_present([str(study.get("protocol") or ""), _size_text(study)],
                                                       "; ")))]
        facts += [(name, f"{value} ({interval})" if interval else value) for name, value, interval in rows]
        facts.append(("Note", html.escape(str(study.get("note") or ""))))
        parts.append("<b>Study level</b>")
        parts.append(_rows_html(facts))
    return "".join(parts) or "<i>The card states no measured performance.</i>"
