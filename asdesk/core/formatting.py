"""How numbers and lists are written for people: one format in the window, the CLI text and the PDF.

A probability is a percentage with one decimal (``"67.4 %"``) wherever a person reads it; machine outputs
(JSON, CSV) keep the raw number. A number is never rounded up into a claim: a probability below 1 is never
shown as ``"100.0 %"`` and one above 0 never as ``"0.0 %"``. Beside a decision, the probability and the
threshold are shown with the relation that decided it (``"67.4 % ≥ threshold 60.8 %"``, ``"3.2 % <
threshold 60.8 %"``), with more decimals when one decimal would print both as the same number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "DASH",
    "format_elapsed",
    "format_percent",
    "format_probability",
    "join_present",
    "probability_versus_threshold",
]

DASH = "–"
"""What an unknown value is shown as."""


def format_percent(fraction: float | None, decimals: int = 1) -> str:
    """A fraction in [0, 1] as a percentage, never rounded up into a claim.

    Parameters
    ----------
    fraction : float or None
        E.g. a probability; ``None`` or NaN gives :data:`DASH`.
    decimals : int
        Decimals of the percentage (>= 0).

    Returns
    -------
    str
        ``0.674 → "67.4 %"``; ``0.99996 → "> 99.9 %"`` (not "100.0 %"); ``0.00004 → "< 0.1 %"`` (not
        "0.0 %"); exactly 0 and 1 give ``"0.0 %"`` and ``"100.0 %"``.
    """
    if fraction is None:
        return DASH
    value = float(fraction)
    if not math.isfinite(value):
        return DASH
    step = 10.0 ** -decimals
    percent = 100.0 * value
    text = f"{percent:.{decimals}f}"
    if 0.0 < value < 1.0:
        if float(text) >= 100.0:
            return f"> {100.0 - step:.{decimals}f} %"
        if float(text) <= 0.0:
            return f"< {step:.{decimals}f} %"
    return f"{text} %"


def format_probability(probability: float | None) -> str:
    """A probability as people read it everywhere in asdesk: ``"67.4 %"`` (see :func:`format_percent`)."""
    return format_percent(probability, 1)


def probability_versus_threshold(probability: float, threshold: float, positive: bool) -> str:
    """The probability, the relation that decided the finding and the threshold.

    Parameters
    ----------
    probability, threshold : float
        On the same scale (both calibrated, or both raw), in [0, 1].
    positive : bool
        The decision (``probability >= threshold``), as made by :mod:`asdesk.tasks`; this function only
        writes it.

    Returns
    -------
    str
        ``"67.4 % ≥ threshold 60.8 %"`` for a positive, ``"3.2 % < threshold 60.8 %"`` for a negative.
        When one decimal prints both numbers alike (60.79 % vs 60.81 %), up to three decimals are used so
        the relation shown is true of the numbers shown.
    """
    decimals = 1
    while decimals < 3 and format_percent(probability, decimals) == format_percent(threshold, decimals):
        decimals += 1
    relation = "≥" if positive else "<"
    return f"{format_percent(probability, decimals)} {relation} threshold {format_percent(threshold, decimals)}"


def format_elapsed(seconds: float | None) -> str:
    """A short duration: ``"18 ms"`` below one second, ``"1.4 s"`` up to a minute, then ``"2 min 05 s"``.

    Parameters
    ----------
    seconds : float or None
        Wall time; ``None`` or NaN gives :data:`DASH`.

    Returns
    -------
    str
        Never ``"0.0 s"``: durations under 1 ms are ``"< 1 ms"``.
    """
    if seconds is None or not math.isfinite(float(seconds)):
        return DASH
    value = max(0.0, float(seconds))
    if value < 0.0005:
        return "< 1 ms"
    if value < 0.9995:
        return f"{value * 1000.0:.0f} ms"
    if value < 59.95:
        return f"{value:.1f} s"
    whole = int(round(value))
    return f"{whole // 60} min {whole % 60:02d} s"


def join_present(parts: Iterable[object], separator: str = ", ") -> str:
    """Join the parts that are not empty (no stray separators from empty or missing entries).

    Parameters
    ----------
    parts : iterable
        Strings or other values; ``None``, ``""`` and whitespace-only strings are left out.
    separator : str

    Returns
    -------
    str
        ``["KNEE", ""] → "KNEE"``; ``["", "CR", "DX"] → "CR, DX"``.
    """
    texts = ("" if part is None else str(part).strip() for part in parts)
    return separator.join(text for text in texts if text)
