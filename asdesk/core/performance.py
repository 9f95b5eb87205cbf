"""The headline measured performance a model card states, read the same way everywhere.

The CLI, the PDF report and the window all warn when a model was not shown to be better than chance on
held-out patients (the 95% confidence interval of its AUC reaches 0.5): they read the card's
``performance.metrics.auc`` block through this module, so the rule is stated once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHANCE_AUC = 0.5
"""ROC AUC of a classifier that ranks at random (Hanley & McNeil, Radiology 1982)."""


@dataclass(frozen=True)
class MeasuredAuc:
    """A card's measured ROC AUC with its 95% confidence interval.

    Attributes
    ----------
    value : float
        AUC in [0, 1].
    low, high : float or None
        Bounds of the 95% confidence interval (None when the card gives none).
    """

    value: float
    low: float | None
    high: float | None

    @property
    def reaches_chance(self) -> bool:
        """True when the interval's lower bound is at or below 0.5: not shown to beat chance."""
        return self.low is not None and self.low <= CHANCE_AUC

    def text(self) -> str:
        """``"0.822 (95% CI 0.788-0.853)"``, or the value alone without an interval."""
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} (95% CI {self.low:.3f}-{self.high:.3f})"


def measured_auc(card: Mapping[str, Any]) -> MeasuredAuc | None:
    """The headline AUC of a card document (``performance.metrics.auc`` or ``roc_auc``).

    Parameters
    ----------
    card : mapping
        The card as JSON data (``ModelCard.raw``).

    Returns
    -------
    MeasuredAuc or None
        None when the card states no AUC.
    """
    performance = card.get("performance")
    metrics = performance.get("metrics") if isinstance(performance, Mapping) else None
    if not isinstance(metrics, Mapping):
        return None
    auc = metrics.get("auc", metrics.get("roc_auc"))
    if isinstance(auc, int | float) and not isinstance(auc, bool):
        return MeasuredAuc(float(auc), None, None)
    if not isinstance(auc, Mapping) or not isinstance(auc.get("value"), int | float):
        return None
    bounds = auc.get("ci95")
    low = high = None
    if (isinstance(bounds, Sequence) and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)):
        low, high = float(bounds[0]), float(bounds[1])
    return MeasuredAuc(float(auc["value"]), low, high)


def chance_warning(card: Mapping[str, Any]) -> str:
    """The warning shown with every finding of a model not shown to beat chance, or ``""``.

    Parameters
    ----------
    card : mapping
        The card as JSON data.

    Returns
    -------
    str
        Plain text; empty when the card's AUC interval lies above 0.5 (or states no interval).
    """
    auc = measured_auc(card)
    if auc is None or not auc.reaches_chance:
        return ""
    return (f"The 95% CI of this model's measured AUC reaches {auc.low:.3f}: on held-out patients it was not "
            "shown to be better than chance. Do not rely on this finding.")


@dataclass(frozen=True)
class Estimate:
    """A measured proportion with its 95% confidence interval.

    Attributes
    ----------
    value : float
        In [0, 1].
    low, high : float or None
        Bounds of the 95% CI (None when the card gives none).
    """

    value: float
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        """``"0.783 (0.730-0.832)"``, or the value alone."""
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True)
class HeldOutEvidence:
    """The numbers shown beside a finding: measured on patients the model never saw, at one operating point.

    Built by :func:`held_out_evidence` from the card; rendered by the window's results panel and page 1 of
    the PDF report, so both say the same (DESIGN.md: "the numbers beside a finding are held-out ones with
    their protocol").

    Attributes
    ----------
    operating_point : str
    sensitivity, specificity : Estimate or None
        Held-out values at that operating point (None when the card has none for it).
    auc : MeasuredAuc or None
    protocol : str
        How they were measured (e.g. "leave-one-patient-out ...").
    dataset : str
        On which data.
    n_images, n_patients : int or None
    thresholds_chosen_on : str
        Where the operating points' thresholds were chosen (the card's ``operating_points.chosen_on``).
    selection : str
        The card's model-selection caveat (e.g. best of three on the same patients), or ``""``.
    chance_warning : str
        :func:`chance_warning`, or ``""``.
    calibration : str
        How the shown probability was calibrated, or ``""`` when it is the model's raw output.
    """

    operating_point: str
    sensitivity: Estimate | None
    specificity: Estimate | None
    auc: MeasuredAuc | None
    protocol: str
    dataset: str
    n_images: int | None
    n_patients: int | None
    thresholds_chosen_on: str
    selection: str
    chance_warning: str
    calibration: str

    def lines(self) -> list[str]:
        """Plain-text lines, most important first (for the CLI, the PDF and the results panel)."""
        out = []
        point = self.operating_point.replace("_", " ")
        if self.sensitivity is not None or self.specificity is not None:
            parts = []
            if self.sensitivity is not None:
                parts.append(f"sensitivity {self.sensitivity.text()}")
            if self.specificity is not None:
                parts.append(f"specificity {self.specificity.text()}")
            out.append(f"Held-out at the {point} operating point: " + ", ".join(parts))
        if self.auc is not None:
            out.append(f"Held-out AUC {self.auc.text()}")
        size = ", ".join(part for part in (f"{self.n_images} images" if self.n_images else "",
                                           f"{self.n_patients} patients" if self.n_patients else "") if part)
        if self.protocol:
            out.append(f"Protocol: {self.protocol}" + (f" ({size})" if size else ""))
        if self.dataset:
            out.append(f"Data: {self.dataset}")
        if self.thresholds_chosen_on:
            out.append(f"Thresholds chosen on: {self.thresholds_chosen_on}")
        if self.selection:
            out.append(f"Model selection: {self.selection}")
        if self.calibration:
            out.append(f"Probability: {self.calibration}")
        return out


def selection_text(selection: Any) -> str:  # noqa: ANN401
    """The card's ``selection`` as one sentence.

    Parameters
    ----------
    selection : dict, str or None
        ``{"configurations_tried": int, "note": str}`` (training writes this), a free text, or nothing.

    Returns
    -------
    str
        e.g. ``"3 configurations tried on these patients. <note>"``; ``""`` when there is nothing to say.
    """
    if not selection:
        return ""
    if not isinstance(selection, dict):
        return str(selection)
    tried = selection.get("configurations_tried")
    count = (f"{tried} configuration{'s' if tried != 1 else ''} tried on these patients."
             if isinstance(tried, int) and not isinstance(tried, bool) else "")
    return " ".join(part for part in (count, str(selection.get("note") or "").strip()) if part)


def _estimate(spec: Any) -> Estimate | None:  # noqa: ANN401
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return Estimate(float(spec))
    if not isinstance(spec, Mapping) or not isinstance(spec.get("value"), int | float):
        return None
    bounds = spec.get("ci95")
    if (isinstance(bounds, Sequence) and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)):
        return Estimate(float(spec["value"]), float(bounds[0]), float(bounds[1]))
    return Estimate(float(spec["value"]))


def held_out_evidence(card: Mapping[str, Any], operating_point: str) -> HeldOutEvidence:
    """The held-out numbers of a card at an operating point.

    Reads ``performance.detail.at_operating_points[operating_point]`` (what ``asdesk evaluate`` and the
    training command measured on patients the model never saw), never ``operating_points[...]`` (what the
    threshold gave on the data it was chosen on).

    Parameters
    ----------
    card : mapping
        The card as JSON data (``ModelCard.raw``).
    operating_point : str
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``.

    Returns
    -------
    HeldOutEvidence
    """
    performance = card.get("performance")
    performance = performance if isinstance(performance, Mapping) else {}
    detail = performance.get("detail")
    points = detail.get("at_operating_points") if isinstance(detail, Mapping) else None
    at_point = points.get(operating_point) if isinstance(points, Mapping) else None
    sensitivity = specificity = None
    if isinstance(at_point, Mapping):
        sensitivity, specificity = _estimate(at_point.get("sensitivity")), _estimate(at_point.get("specificity"))
    elif performance.get("operating_point") == operating_point and isinstance(performance.get("metrics"), Mapping):
        metrics = performance["metrics"]
        sensitivity, specificity = _estimate(metrics.get("sensitivity")), _estimate(metrics.get("specificity"))
    chosen = card.get("operating_points")
    chosen_on = str(chosen.get("chosen_on", "")) if isinstance(chosen, Mapping) else ""
    calibration = card.get("calibration")
    calibration_text = ""
    if isinstance(calibration, Mapping) and calibration.get("method"):
        calibration_text = (f"calibrated ({calibration.get('method')} scaling fitted on "
                            f"{calibration.get('fitted_on', 'validation data')})")

    def count(key: str) -> int | None:
        value = performance.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return HeldOutEvidence(
        operating_point=operating_point, sensitivity=sensitivity, specificity=specificity,
        auc=measured_auc(card), protocol=str(performance.get("protocol", "")),
        dataset=str(performance.get("dataset", "")), n_images=count("n_images"), n_patients=count("n_patients"),
        thresholds_chosen_on=chosen_on, selection=selection_text(card.get("selection")),
        chance_warning=chance_warning(card), calibration=calibration_text)
