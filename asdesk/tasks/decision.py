"""Every decision asdesk shows is made here: probability -> finding, slices -> study, calibration, heat map.

DESIGN.md, "A finding is earned": decisions are made in one place (``tasks``); the window, the CLI, screening,
the PDF and the self-test display them. The model's raw output is judged at the card's thresholds (which were
chosen on raw outputs); the probability *shown* is the calibrated one (Platt scaling, Platt 1999), and the
threshold shown is the same threshold mapped through the same monotone calibration, so the finding is the same
whichever is compared.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from asdesk.core import AnalysisResult, Prediction, SeriesResult, series_refused

if TYPE_CHECKING:
    from asdesk.inference import ModelCard, StudyRule

__all__ = [
    "STUDY_OPERATING_POINT",
    "calibrate",
    "judge",
    "redecide",
    "scaled_heatmap",
    "study_decision",
    "study_result",
]

STUDY_OPERATING_POINT = "study"


def calibrate(card: ModelCard, probability: float) -> float:
    """The probability shown for a raw model output: the card's calibration applied, if it has one.

    Platt scaling (Platt 1999; :func:`asdesk.inference.calibration.calibrate`) with the card's slope and
    intercept, which the card parser has checked (slope > 0, so the map is strictly increasing: AUC and every
    decision at a threshold mapped the same way are unchanged).

    Parameters
    ----------
    card : ModelCard
    probability : float
        Raw positive-class probability, or a threshold on that scale, in [0, 1].

    Returns
    -------
    float
        In (0, 1); ``probability`` itself when the card has no calibration.
    """
    if card.calibration is None:
        return float(probability)
    from asdesk.inference.calibration import calibrate as platt

    return float(platt(probability, *card.calibration))


def judge(card: ModelCard, raw_probability: float, operating_point: str | None = None) -> Prediction:
    """The finding for one image at one of the card's operating points.

    Parameters
    ----------
    card : ModelCard
    raw_probability : float
        The model's output in [0, 1].
    operating_point : str, optional
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's.

    Returns
    -------
    Prediction
        ``positive`` when ``raw_probability >= threshold`` (the card's threshold, chosen on raw outputs);
        ``probability`` and ``threshold`` are the calibrated values shown to the user (equal to the raw ones
        when the card has no calibration); ``raw_probability`` keeps the model's output.

    Raises
    ------
    CardError
        The card does not define that operating point.
    ValueError
        The probability is NaN or infinite.
    """
    value = float(raw_probability)
    if not math.isfinite(value):
        raise ValueError(f"the model produced a non-finite probability ({value}); the model file may be "
                         "damaged: reinstall the pack")
    name, threshold = card.threshold(operating_point)
    positive = value >= threshold
    return Prediction(
        probability=calibrate(card, value), threshold=calibrate(card, threshold),
        operating_point=name, positive=positive,
        finding=card.positive_label if positive else card.negative_label,
        raw_probability=value, calibrated=card.calibration is not None)


def study_result(values: Sequence[float], rule: StudyRule, positive_label: str = "positive",
                 negative_label: str = "negative") -> tuple[float, Prediction]:
    """The study-level score and finding from slice outputs (the card's ``study_rule``).

    ``top_k_mean``: the study score is the mean of the ``k`` highest raw slice probabilities (all slices when
    there are fewer than ``k``); the study is positive when the score is at or above ``rule.threshold``. The
    score is not a calibrated probability and is shown as a score.

    Parameters
    ----------
    values : sequence of float
        Raw slice probabilities in [0, 1].
    rule : StudyRule
    positive_label, negative_label : str

    Returns
    -------
    study_score : float
    prediction : Prediction
        ``operating_point="study"``, ``calibrated=False``.

    Raises
    ------
    ValueError
        No slices, or a rule kind other than ``"top_k_mean"``.
    """
    if len(values) == 0:
        raise ValueError("a study result needs at least one analysed slice")
    if rule.kind != "top_k_mean" or rule.k < 1:
        raise ValueError(f"unsupported study rule {rule.kind!r} (k={rule.k}); asdesk knows 'top_k_mean' with k >= 1")
    top = sorted((float(v) for v in values), reverse=True)[:rule.k]
    score = float(np.mean(np.asarray(top, dtype=np.float64)))
    if not math.isfinite(score):
        raise ValueError(f"non-finite study score {score}")
    positive = score >= rule.threshold
    return score, Prediction(score, float(rule.threshold), STUDY_OPERATING_POINT, positive,
                             positive_label if positive else negative_label, raw_probability=score)


def study_decision(slices: Sequence[AnalysisResult], card: ModelCard) -> tuple[float, Prediction, str]:
    """The study-level result of a series, by the rule its model card states.

    Refused slices (outside the model's validated use, not overridden) take no part; when more than half of
    the slices are refused the series is refused (:attr:`SeriesResult.refused`: no study finding is shown; the
    score is computed from all slices for the record only), so a study result is never made of a small,
    convenient subset of a series.

    Parameters
    ----------
    slices : sequence of AnalysisResult
        Per-slice results.
    card : ModelCard
        With a ``study_rule`` of kind ``top_k_mean``: the mean of the ``k`` highest raw slice probabilities,
        judged at the rule's threshold. Without one: the highest slice, judged at the card's default slice
        threshold; the returned rule text says so.

    Returns
    -------
    study_score : float
    prediction : Prediction
    rule_text : str
        The rule in words, for reports.

    Raises
    ------
    ValueError
        If ``slices`` is empty.
    """
    if not slices:
        raise ValueError("a study needs at least one analysed slice")
    refused = sum(1 for r in slices if r.refused)
    whole_series_refused = series_refused(refused, len(slices))
    # Most slices refused: the series is outside the model's validated use; the score is kept for audit only.
    usable = list(slices) if whole_series_refused else [r for r in slices if not r.refused]
    raw = [r.prediction.raw_probability if r.prediction.raw_probability is not None else r.prediction.probability
           for r in usable]
    note = f" ({refused} refused slice(s) left out)" if refused and not whole_series_refused else ""
    if whole_series_refused:
        note = (f" ({refused} of {len(slices)} slices were refused: the series is outside what the model was "
                "validated for and no study finding is shown)")
    rule = card.study_rule
    if rule is not None:
        score, prediction = study_result(raw, rule, card.positive_label, card.negative_label)
        text = rule.description or f"mean of the {rule.k} highest slice probabilities >= {rule.threshold:.3f}"
        if len(usable) < rule.k:
            text += f" (only {len(usable)} slice(s) were analysed: the mean of all of them was used)"
        if any(r.prediction.raw_probability is not None
               and abs(r.prediction.raw_probability - r.prediction.probability) > 1e-9 for r in usable):
            # The slice probabilities shown are calibrated; the rule (and so the study score and its threshold)
            # is defined on the model's uncalibrated outputs: say so beside the numbers, or they look inconsistent.
            text += ("; the study score and its threshold are on the model's uncalibrated slice outputs (the "
                     "slice probabilities shown are calibrated)")
        return score, prediction, text + note
    index = int(np.argmax(raw))
    prediction = judge(card, raw[index], None)
    text = (f"the model card states no study rule: the study result shown is the most probable slice, judged at "
            f"the card's default slice threshold ({prediction.operating_point}); this rule was not validated at "
            "study level")
    return prediction.probability, prediction, text + note


def scaled_heatmap(heatmap: np.ndarray | None, prediction: Prediction, refused: bool,
                   scale: bool = True) -> np.ndarray | None:
    """The heat map as shown: its shape from Grad-CAM, its strength from the finding.

    A map normalised to its own maximum looks equally hot at probability 0.02 and 0.98. Scaling it by the
    (calibrated) probability keeps the location while a weak finding gives a faint map; refused images show
    no map.

    Parameters
    ----------
    heatmap : numpy.ndarray or None
        float32 (H, W) in [0, 1] (:func:`asdesk.inference.gradcam.map_on_image`).
    prediction : Prediction
    refused : bool
    scale : bool
        Multiply by the probability (Grad-CAM, normalised to its maximum). ``False`` for an oedema map,
        whose values are already per-pixel probabilities: it is shown as it is.

    Returns
    -------
    numpy.ndarray or None
        float32 (H, W) in [0, prediction.probability] (or [0, 1] unscaled); ``None`` when refused or without
        a map.
    """
    if heatmap is None or refused:
        return None
    if not scale:
        return np.asarray(heatmap, dtype=np.float32)
    return (np.asarray(heatmap, dtype=np.float32) * np.float32(prediction.probability)).astype(np.float32)


def redecide(results: Sequence[AnalysisResult], series: SeriesResult | None, card: ModelCard,
             operating_point: str) -> tuple[tuple[AnalysisResult, ...], SeriesResult | None]:
    """The same results judged at another of the card's operating points (no new model run).

    Slice findings follow :func:`judge`; a series' study-level result follows the card's study rule and does
    not change. Gate verdicts, heat maps and overlays stay as they are.

    Parameters
    ----------
    results : sequence of AnalysisResult
    series : SeriesResult or None
    card : ModelCard
    operating_point : str
        An operating point the card defines (others leave the results unchanged).

    Returns
    -------
    results : tuple of AnalysisResult
    series : SeriesResult or None
    """
    if operating_point not in card.operating_points:
        return tuple(results), series

    def again(result: AnalysisResult) -> AnalysisResult:
        raw = result.prediction.raw_probability
        raw = result.prediction.probability if raw is None else raw
        return dataclasses.replace(result, prediction=judge(card, raw, operating_point))

    judged = tuple(again(r) for r in results)
    if series is None:
        return judged, None
    return judged, dataclasses.replace(series, slices=judged)
