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
