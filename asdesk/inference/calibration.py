"""Platt scaling of a model's probabilities: the function shared by training (fitting) and the runtime.

Platt, J. (1999) "Probabilistic outputs for support vector machines and comparisons to regularized
likelihood methods"; applied here to the logit of the network's sigmoid output (as in Guo et al.,
"On calibration of modern neural networks", ICML 2017, where it generalises temperature scaling).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

EPSILON = 1e-7
"""Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before the logit."""


def logit(p: ArrayLike) -> NDArray[np.float64]:
    """Log-odds ``log(p / (1 - p))`` of probabilities clipped to ``[1e-7, 1 - 1e-7]``.

    Parameters
    ----------
    p : array_like
        Probabilities, any shape.

    Returns
    -------
    numpy.ndarray
        float64, the same shape.
    """
    q = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(q) - np.log1p(-q)


def calibrate(p: ArrayLike, slope: float, intercept: float) -> NDArray[np.float64]:
    """Platt-scaled probability ``1 / (1 + exp(-(slope * logit(p) + intercept)))``.

    Monotone increasing for ``slope > 0``, so the ROC curve, the AUC and every decision at a threshold
    mapped through the same function are unchanged.

    Parameters
    ----------
    p : array_like
        Raw probabilities of the positive class, any shape, in [0, 1].
    slope : float
        Must be > 0.
    intercept : float

    Returns
    -------
    numpy.ndarray
        float64 calibrated probabilities in (0, 1), the shape of ``p``.

    Raises
    ------
    ValueError
        ``slope`` is not a finite positive number or ``intercept`` is not finite.
    """
    if not (np.isfinite(slope) and slope > 0):
        raise ValueError(f"Platt slope must be finite and > 0 (monotone), got {slope}")
    if not np.isfinite(intercept):
        raise ValueError(f"Platt intercept must be finite, got {intercept}")
    z = float(slope) * logit(p) + float(intercept)
    return 0.5 * (1.0 + np.tanh(0.5 * z))
