"""Fit Platt scaling, measure the expected calibration error and draw before/after reliability diagrams.

The calibrated probability is :func:`asdesk.inference.calibration.calibrate` (the runtime uses the same
function): ``sigmoid(slope * logit(p) + intercept)`` (Platt 1999, on the logit as in Guo et al., ICML 2017).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from asdesk.inference.calibration import calibrate, logit

ECE_BINS = 15


def fit_platt(labels: ArrayLike, probabilities: ArrayLike) -> tuple[float, float]:
    """Maximum-likelihood Platt scaling on the logit (scikit-learn ``LogisticRegression``, no penalty).

    Parameters
    ----------
    labels : array_like
        int (N,) in {0, 1}; both classes present.
    probabilities : array_like
        float (N,) raw model probabilities.

    Returns
    -------
    slope, intercept : float
        ``slope > 0``.

    Raises
    ------
    ValueError
        One class only, or the fitted slope is not positive (the model's ranking is reversed on these data:
        calibration would flip decisions, so none is fitted).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels).astype(int).ravel()
    if len(set(y.tolist())) < 2:
        raise ValueError("Platt scaling needs both classes")
    z = logit(probabilities).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000).fit(z, y)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not slope > 0:
        raise ValueError(f"Platt slope {slope:.4g} is not positive: the model ranks these data the wrong way")
    return slope, intercept


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on [0, 1] (Naeini et al., AAAI 2015;
    Guo et al., ICML 2017): ``sum_b |B_b| / N * |mean(y in B_b) - mean(p in B_b)|``.

    Parameters
    ----------
    labels : array_like
        int (N,) in {0, 1}.
    probabilities : array_like
        float (N,) in [0, 1].
    n_bins : int

    Returns
    -------
    float
        In [0, 1]; 0 is perfectly calibrated.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels and probabilities must be equally long and non-empty: {y.shape}, {p.shape}")
    mean_p, fraction, count = reliability_bins(y, p, n_bins)
    return float(np.sum(count / y.size * np.abs(fraction - mean_p)))


def reliability_bins(labels: ArrayLike, probabilities: ArrayLike,
                     n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty equal-width bins on [0, 1] of a reliability diagram (the bins of the ECE).

    Returns
    -------
    mean_predicted, fraction_positive, count : numpy.ndarray
        float64, float64 and int, one entry per non-empty bin, in bin order.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    used = [b for b in range(n_bins) if np.any(bins == b)]
    return (np.array([p[bins == b].mean() for b in used]), np.array([y[bins == b].mean() for b in used]),
            np.array([int(np.sum(bins == b)) for b in used]))


def nested_platt(labels: ArrayLike, probabilities: ArrayLike, groups: ArrayLike) -> np.ndarray:
    """Each patient's probabilities calibrated by a Platt fit on the other patients only.

    Returns
    -------
    numpy.ndarray
        float64 (N,) calibrated probabilities.
    """
    y = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    out = np.zeros(len(p))
    for patient in np.unique(g):
        mine = g == patient
        slope, intercept = fit_platt(y[~mine], p[~mine])
        out[mine] = calibrate(p[mine], slope, intercept)
    return out


def plot_reliability(path: str | Path, labels: ArrayLike, before: ArrayLike, after: ArrayLike, title: str,
                     n_bins: int = ECE_BINS) -> Path:
    """Reliability diagram (equal-width bins) before and after calibration, with each curve's ECE.

    Parameters
    ----------
    path : str or Path
        ``.png`` to write (150 dpi).
    labels : array_like
        int (N,).
    before, after : array_like
        float (N,) raw and calibrated probabilities of the same images.
    title : str
        Name the pack and the data the curves are measured on.

    Returns
    -------
    Path
    """
    from asdesk.training.plots import _new_figure, _save

    y = np.asarray(labels, dtype=np.float64)
    figure = _new_figure(6.0, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for probs, name, colour in ((before, "raw", "tab:red"), (after, "Platt-calibrated", "tab:blue")):
        p = np.asarray(probs, dtype=np.float64)
        xs, ys, _count = reliability_bins(y, p, n_bins)
        ece = expected_calibration_error(y, p, n_bins)
        top.plot(xs, ys, marker="o", color=colour, linewidth=2, label=f"{name}: ECE {ece:.3f}")
        bottom.hist(p, bins=edges, color=colour, alpha=0.45, label=name)
    top.set_xlim(-0.01, 1.01)
    top.set_ylim(-0.01, 1.01)
    top.grid(True, alpha=0.3)
    top.set_ylabel("observed fraction of positives")
    top.set_title(title, fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel(f"predicted probability ({n_bins} equal-width bins)")
    bottom.set_ylabel("images")
    bottom.legend(fontsize=7)
    return _save(figure, path)


def calibration_block(slope: float, intercept: float, fitted_on: str, ece_before: float, ece_after: float,
                      ece_measured_on: str, plot: str = "evaluation/reliability.png") -> dict[str, Any]:
    """The card's ``calibration`` block (numbers rounded for the card)."""
    return {"method": "platt", "slope": round(float(slope), 6), "intercept": round(float(intercept), 6),
            "formula": "1 / (1 + exp(-(slope * logit(p) + intercept))), p clipped to [1e-7, 1 - 1e-7]",
            "fitted_on": fitted_on, "ece_bins": ECE_BINS, "ece_before": round(float(ece_before), 4),
            "ece_after": round(float(ece_after), 4), "ece_measured_on": ece_measured_on, "plot": plot,
            "reference": "Platt 1999; Guo et al., ICML 2017 (ECE, 15 equal-width bins)",
            **({"note": "calibration did not lower the measured ECE on these data"} if ece_after >= ece_before
               else {})}
