"""Evaluation figures for model packs and training reports: ROC, reliability diagram, confusion matrix.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no global backend
switch, no window), saved as 150 dpi PNG. matplotlib is imported inside the functions, so importing
:mod:`asdesk.training` does not pay for it. Titles are passed in by the caller and should name the model
pack id and the data split, e.g. ``"mri-sij-resnet50 v1.2 - test patients"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve

from asdesk.training.metrics import (
    MetricsInputError,
    _check_arrays,
    _has_both_classes,
    binary_metrics,
    calibration,
    operating_thresholds,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: Resolution of every saved figure, dots per inch.
DPI = 150

_POINT_STYLES = {"high_sensitivity": ("v", "tab:green"), "balanced": ("o", "tab:orange"),
                 "high_specificity": ("^", "tab:red")}


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas (thread-safe; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise MetricsInputError(f"{target}: figures are written as PNG; give a path ending in .png")
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=DPI, format="png")
    return target


def plot_roc(path: str | Path, y_true: ArrayLike, y_prob: ArrayLike, title: str,
             operating_points: Mapping[str, Any] | None = None) -> Path:
    """Draw the ROC curve, its AUC and the operating points, and save it as PNG.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.png``; parent folders are created.
    y_true : array_like of int, shape (N,)
        Labels in {0, 1}; both classes must be present.
    y_prob : array_like of float, shape (N,)
        Predicted probability of the positive class, in [0, 1].
    title : str
        Figure title; name the model pack id and the data split.
    operating_points : mapping, optional
        ``{name: {"threshold": t, ...}}`` or ``{name: t}`` (see
        :func:`~asdesk.training.metrics.operating_thresholds`). Each is marked at the sensitivity and
        1 - specificity it gives on *these* data, with its threshold in the legend.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    MetricsInputError
        If only one class is present (no ROC curve exists), on malformed arrays or a path that does not
        end in ``.png``.

    References
    ----------
    .. [1] T. Fawcett, "An introduction to ROC analysis", *Pattern Recognition Letters* 27(8):861-874,
       2006.
    """
    labels, probs = _check_arrays(y_true, y_prob)
    if not _has_both_classes(labels):
        raise MetricsInputError(
            f"a ROC curve needs positive and negative images; got {int(labels.sum())} positive of "
            f"{labels.size}")
    thresholds = operating_thresholds(operating_points or {})
    fpr, tpr, _ = roc_curve(labels, probs)
    area = roc_auc_score(labels, probs)

    figure = _new_figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="Chance (AUC = 0.5)")
    axes.plot(fpr, tpr, color="tab:blue", linewidth=2,
              label=f"ROC, AUC = {area:.3f}\n(n = {labels.size} images, {int(labels.sum())} positive)")
    for name, threshold in thresholds.items():
        measured = binary_metrics(labels, probs, threshold)
        marker, color = _POINT_STYLES.get(name, ("s", "tab:purple"))
        axes.plot(1.0 - measured["specificity"], measured["sensitivity"], marker=marker, color=color,
                  markersize=9, markeredgecolor="black", linestyle="none",
                  label=(f"{name.replace('_', ' ')}: t = {threshold:.3f} "
                         f"(sens {measured['sensitivity']:.2f}, spec {measured['specificity']:.2f})"))
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.grid(True, alpha=0.3)
    axes.set_xlabel("1 - specificity (false-positive rate)")
    axes.set_ylabel("Sensitivity (true-positive rate)")
    axes.set_title(title, fontsize=11)
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_calibration(path: str | Path, y_true: ArrayLike, y_prob: ArrayLike, title: str,
                     n_bins: int = 10) -> Path:
    """Draw a reliability diagram with the ideal diagonal and a histogram of the probabilities.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.png``; parent folders are created.
    y_true : array_like of int, shape (N,)
        Labels in {0, 1}.
    y_prob : array_like of float, shape (N,)
        Predicted probability of the positive class, in [0, 1].
    title : str
        Figure title; name the model pack id and the data split.
    n_bins : int, default 10
        Bins of :func:`~asdesk.training.metrics.calibration` (equal-count bins where possible).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    MetricsInputError
        On malformed arrays, ``n_bins < 2`` or a path that does not end in ``.png``.

    References
    ----------
    .. [1] A. Niculescu-Mizil and R. Caruana, "Predicting good probabilities with supervised
       learning", *ICML* 2005.
    """
    labels, probs = _check_arrays(y_true, y_prob)
    curve = calibration(labels, probs, n_bins=n_bins)

    figure = _new_figure(6.0, 7.0)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="Perfectly calibrated")
    top.plot(curve["mean_predicted"], curve["fraction_positive"], marker="o", color="tab:blue",
             linewidth=2, label=f"Model ({curve['strategy']} bins), Brier = {curve['brier']:.3f}")
    top.set_xlim(-0.01, 1.01)
    top.set_ylim(-0.01, 1.01)
    top.grid(True, alpha=0.3)
    top.set_ylabel("Observed fraction of positives")
    top.set_title(title, fontsize=11)
    top.legend(loc="upper left", fontsize=8)

    edges = np.linspace(0.0, 1.0, 21)
    bottom.hist([probs[labels == 0], probs[labels == 1]], bins=edges, stacked=True,
                color=["tab:gray", "tab:red"], label=["negative", "positive"])
    bottom.set_xlabel("Predicted probability of the positive class")
    bottom.set_ylabel("Images")
    bottom.legend(loc="best", fontsize=8)
    bottom.grid(True, alpha=0.3)
    return _save(figure, path)


def plot_confusion(path: str | Path, matrix: ArrayLike,
                   labels: Sequence[str] = ("negative", "positive"),
                   title: str = "Confusion matrix") -> Path:
    """Draw a 2 x 2 confusion matrix with the count (and row percentage) in every cell.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.png``; parent folders are created.
    matrix : array_like of int, shape (2, 2)
        ``[[tn, fp], [fn, tp]]``: rows are the reference class, columns the predicted class (the
        layout of :func:`sklearn.metrics.confusion_matrix` and of the ``confusion_matrix`` entries of
        :func:`~asdesk.training.metrics.evaluate_predictions`).
    labels : sequence of str, default ("negative", "positive")
        Names of class 0 and class 1 (e.g. the card's negative and positive labels).
    title : str, default "Confusion matrix"
        Figure title; name the model pack id, the split and the operating point.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    MetricsInputError
        If ``matrix`` is not 2 x 2 with non-negative whole counts, ``labels`` does not hold two names,
        or the path does not end in ``.png``.
    """
    counts = np.asarray(matrix)
    if (counts.shape != (2, 2) or not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0)
            or np.any(counts != np.round(counts))):
        raise MetricsInputError(
            f"matrix must be 2 x 2 non-negative counts [[tn, fp], [fn, tp]], got {counts.tolist()!r}")
    if len(labels) != 2:
        raise MetricsInputError(f"labels must name the two classes (negative, positive), got {labels!r}")
    counts = counts.astype(np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_totals, out=np.zeros((2, 2)), where=row_totals > 0)

    figure = _new_figure(5.5, 5.0)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(2):
        for column in range(2):
            percent = f"\n{100 * share[row, column]:.1f}% of row" if row_totals[row, 0] else ""
            axes.text(column, row, f"{counts[row, column]}{percent}", ha="center", va="center",
                      fontsize=13, color="white" if share[row, column] > 0.5 else "black")
    names = [str(label) for label in labels]
    axes.set_xticks([0, 1], labels=names)
    axes.set_yticks([0, 1], labels=names)
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("Reference class")
    axes.set_title(title, fontsize=11)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colorbar.set_label("Fraction of the reference class")
    return _save(figure, path)
