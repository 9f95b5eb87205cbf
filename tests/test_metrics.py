"""Tests of asdesk.training.metrics and asdesk.training.plots: numbers against hand counts and sklearn."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from asdesk.core.errors import AsdeskError
from asdesk.training.metrics import (
    BOOTSTRAP_METRICS,
    RATE_METRICS,
    MetricsInputError,
    _bootstrap_distributions,
    binary_metrics,
    bootstrap_ci,
    calibration,
    choose_operating_points,
    evaluate_predictions,
    study_level,
)
from asdesk.training.plots import plot_calibration, plot_confusion, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A small explicit example. At threshold 0.5:
#   positives 0.9, 0.8 called positive (tp = 2); 0.4, 0.3 missed (fn = 2)
#   negatives 0.7, 0.6 called positive (fp = 2); 0.35, 0.2, 0.1, 0.05 not (tn = 4)
SMALL_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
SMALL_PROB = np.array([0.9, 0.8, 0.4, 0.3, 0.7, 0.2, 0.1, 0.6, 0.05, 0.35])


def _scored(n_patients: int, images_per_patient: int, separation: float, seed: int,
            image_noise: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-labelled data: every image of a patient has the patient's label."""
    rng = np.random.default_rng(seed)
    patient_label = rng.integers(0, 2, n_patients)
    patient_score = rng.normal(separation * patient_label, 1.0)
    groups = np.repeat(np.arange(n_patients), images_per_patient)
    logits = patient_score[groups] + rng.normal(0.0, image_noise, groups.size)
    return patient_label[groups], 1.0 / (1.0 + np.exp(-logits)), groups


# ----------------------------------------------------------------------------------------------------
# binary_metrics
# ----------------------------------------------------------------------------------------------------
def test_binary_metrics_matches_hand_counted_confusion_matrix():
    m = binary_metrics(SMALL_TRUE, SMALL_PROB, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 2, 4, 2, 10)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["sensitivity"] == pytest.approx(2 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["npv"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert m["prevalence"] == pytest.approx(4 / 10)
    # AUC by hand: of 4 x 6 = 24 (positive, negative) pairs, the positive scores higher in
    # 0.9: 6, 0.8: 6, 0.4: 4 (> 0.35, 0.2, 0.1, 0.05), 0.3: 3 (> 0.2, 0.1, 0.05) -> 19 / 24
    assert m["auc"] == pytest.approx(19 / 24)
    assert all(isinstance(value, float) for value in m.values())


def test_binary_metrics_threshold_is_inclusive_and_agrees_with_sklearn():
    m = binary_metrics(SMALL_TRUE, SMALL_PROB, 0.4)  # 0.4 itself is called positive
    assert (m["tp"], m["fn"]) == (3, 1)
    predicted = (SMALL_PROB >= 0.4).astype(int)
    assert m["sensitivity"] == pytest.approx(recall_score(SMALL_TRUE, predicted))
    assert m["precision"] == pytest.approx(precision_score(SMALL_TRUE, predicted))
    assert m["f1"] == pytest.approx(f1_score(SMALL_TRUE, predicted))
    assert m["specificity"] == pytest.approx(recall_score(SMALL_TRUE, predicted, pos_label=0))


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, 300)
    y_prob = np.round(np.clip(rng.normal(0.4 + 0.2 * y_true, 0.2), 0, 1), 1)  # many ties
    assert binary_metrics(y_true, y_prob, 0.5)["auc"] == roc_auc_score(y_true, y_prob)


@pytest.mark.filterwarnings("error")
def test_undefined_rates_are_nan_without_warnings():
    # Nothing reaches the threshold: precision has no denominator.
    m = binary_metrics(SMALL_TRUE, SMALL_PROB, 1.0)
    assert math.isnan(m["precision"])
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0 and m["f1"] == 0.0
    assert m["npv"] == pytest.approx(6 / 10)


@pytest.mark.filterwarnings("error")
def test_single_class_input_is_handled_without_exceptions_or_warnings():
    y_true = np.zeros(40, dtype=int)
    y_prob = np.linspace(0.0, 1.0, 40)
    groups = np.repeat(np.arange(20), 2)
    m = binary_metrics(y_true, y_prob, 0.5)
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"]) and math.isnan(m["npv"]) is False
    assert m["precision"] == 0.0 and m["specificity"] == pytest.approx(20 / 40)
    all_low = binary_metrics(y_true, np.zeros(40), 0.5)  # nothing called positive: no PPV either
    assert math.isnan(all_low["precision"]) and math.isnan(all_low["f1"]) and all_low["npv"] == 1.0

    ci = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=200)
    assert all(math.isnan(bound) for bound in ci["auc"])
    assert ci.resamples_used["auc"] == 0 and ci.resamples_used["sensitivity"] == 0
    assert ci.resamples_used["specificity"] == 200

    block = evaluate_predictions(y_true, y_prob, groups, {"balanced": {"threshold": 0.5}}, n_resamples=200)
    assert block["auc"] == {"value": None, "ci95": [None, None]}
    assert block["at_operating_points"]["balanced"]["sensitivity"]["value"] is None
    assert block["n_positive"] == 0
    json.dumps(block, allow_nan=False)

    curve = calibration(y_true, y_prob, n_bins=5)
    assert curve["fraction_positive"] == [0.0] * len(curve["fraction_positive"])


@pytest.mark.parametrize(
    ("y_true", "y_prob"),
    [([0, 1, 2], [0.1, 0.2, 0.3]),            # label 2
     ([0, 1, 1], [0.1, 1.2, 0.3]),            # probability > 1
     ([0, 1, 1], [0.1, np.nan, 0.3]),         # NaN
     ([0, 1], [0.1, 0.2, 0.3]),               # lengths differ
     ([], [])],                               # empty
)
def test_bad_inputs_raise_a_value_error_that_says_why(y_true, y_prob):
    with pytest.raises(MetricsInputError) as caught:
        binary_metrics(y_true, y_prob, 0.5)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AsdeskError)
    assert str(caught.value)


def test_threshold_and_groups_are_checked():
    with pytest.raises(MetricsInputError, match="threshold"):
        binary_metrics(SMALL_TRUE, SMALL_PROB, 1.5)
    with pytest.raises(MetricsInputError, match="groups"):
        bootstrap_ci(SMALL_TRUE, SMALL_PROB, np.arange(3), 0.5, n_resamples=10)


# ----------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many tied scores across classes
def test_every_resample_equals_binary_metrics_on_the_pooled_images_of_the_drawn_patients(decimals):
    y_true, y_prob, groups = _scored(n_patients=12, images_per_patient=3, separation=1.0, seed=5)
    if decimals is not None:
        y_prob = np.round(y_prob, decimals)
    groups = groups[::-1].copy()  # patient order must not matter
    patient_index = np.unique(groups, return_inverse=True)[1]
    thresholds = [0.3, 0.6]
    samples = _bootstrap_distributions(y_true, y_prob, patient_index, 12, thresholds, 25, seed=7,
                                       return_patient_counts=True)
    counts = samples["patient_counts"]
    assert counts.shape == (25, 12) and np.all(counts.sum(axis=1) == 12)
    for row in range(25):
        copies = counts[row][patient_index]  # how often each image occurs in this resample
        pooled = np.repeat(np.arange(y_true.size), copies)
        for index, threshold in enumerate(thresholds):
            expected = binary_metrics(y_true[pooled], y_prob[pooled], threshold)
            for name in (*RATE_METRICS, "prevalence"):
                np.testing.assert_allclose(samples["at"][index][name][row], expected[name], rtol=1e-12)
        np.testing.assert_allclose(samples["auc"][row], expected["auc"], rtol=1e-12)


def test_perfectly_separated_data_give_auc_one_and_ci_one_one():
    groups = np.repeat(np.arange(30), 3)
    y_true = (groups % 2).astype(int)
    y_prob = np.where(y_true == 1, 0.8, 0.2) + np.linspace(-0.1, 0.1, groups.size)
    assert binary_metrics(y_true, y_prob, 0.5)["auc"] == 1.0
    ci = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=300)
    assert ci["auc"] == (1.0, 1.0)
    assert ci["sensitivity"] == (1.0, 1.0) and ci["specificity"] == (1.0, 1.0)
    assert set(ci) == set(BOOTSTRAP_METRICS)


def test_random_labels_give_an_auc_ci_that_contains_one_half():
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(300), 3)
    y_true = np.repeat(rng.integers(0, 2, 300), 3)
    y_prob = rng.random(groups.size)
    ci = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=500)
    low, high = ci["auc"]
    assert low < 0.5 < high
    assert high - low < 0.2  # and it is a real interval, not (0, 1)


def test_resampling_patients_gives_a_wider_ci_than_resampling_images_when_images_are_clustered():
    # 20 patients with 20 near-identical images each: the effective sample is 20, not 400.
    y_true, y_prob, groups = _scored(n_patients=20, images_per_patient=20, separation=1.5, seed=2,
                                     image_noise=0.05)
    by_patient = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=500, seed=1)
    by_image = bootstrap_ci(y_true, y_prob, np.arange(y_true.size), 0.5, n_resamples=500, seed=1)
    for name in ("auc", "sensitivity", "specificity", "accuracy"):
        patient_width = by_patient[name][1] - by_patient[name][0]
        image_width = by_image[name][1] - by_image[name][0]
        assert patient_width > 2.0 * image_width, (name, patient_width, image_width)


def test_undefined_resamples_are_skipped_and_counted():
    # One positive patient among 6: about (5/6)**6 = 33% of resamples draw no positive at all.
    groups = np.repeat(np.arange(6), 2)
    y_true = (groups == 0).astype(int)
    y_prob = np.linspace(0.05, 0.95, 12)[::-1]
    ci = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=600, seed=4)
    patient_index = np.unique(groups, return_inverse=True)[1]
    counts = _bootstrap_distributions(y_true, y_prob, patient_index, 6, [0.5], 600, seed=4,
                                      return_patient_counts=True)["patient_counts"]
    expected_used = int(np.sum(counts[:, 0] > 0))
    assert 300 < expected_used < 500
    assert ci.resamples_used["auc"] == expected_used
    assert ci.resamples_used["sensitivity"] == expected_used
    assert ci.resamples_used["specificity"] == 600
    assert ci.n_resamples == 600 and ci.unit == "patient" and ci.confidence == 0.95
    assert all(math.isfinite(bound) for bound in ci["auc"])


def test_bootstrap_is_reproducible_for_a_seed():
    y_true, y_prob, groups = _scored(n_patients=40, images_per_patient=2, separation=1.0, seed=8)
    first = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=200, seed=3)
    assert first == bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=200, seed=3)
    assert first != bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=200, seed=4)


def test_2000_resamples_of_1000_images_from_500_patients_take_under_5_seconds():
    y_true, y_prob, groups = _scored(n_patients=500, images_per_patient=2, separation=1.0, seed=9)
    start = time.perf_counter()
    ci = bootstrap_ci(y_true, y_prob, groups, 0.5, n_resamples=2000)
    elapsed = time.perf_counter() - start
    assert ci.resamples_used["auc"] == 2000
    assert elapsed < 5.0, f"bootstrap took {elapsed:.1f} s"


# ----------------------------------------------------------------------------------------------------
# operating points
# ----------------------------------------------------------------------------------------------------
def _brute_force(y_true: np.ndarray, y_prob: np.ndarray) -> dict[float, dict[str, float]]:
    candidates = np.unique(np.concatenate([y_prob, [1.0]]))
    return {float(t): binary_metrics(y_true, y_prob, float(t)) for t in candidates}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_operating_points_meet_their_definitions_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 150)
    y_prob = np.round(np.clip(rng.normal(0.35 + 0.3 * y_true, 0.2), 0, 1), 2)  # ties and exact 0/1
    points = choose_operating_points(y_true, y_prob)
    table = _brute_force(y_true, y_prob)
    assert list(points) == ["high_sensitivity", "balanced", "high_specificity"]

    for point in points.values():
        measured = binary_metrics(y_true, y_prob, point["threshold"])
        assert 0.0 <= point["threshold"] <= 1.0
        assert point["sensitivity"] == measured["sensitivity"]
        assert point["specificity"] == measured["specificity"]

    high_sens = points["high_sensitivity"]["threshold"]
    assert points["high_sensitivity"]["sensitivity"] >= 0.90
    assert all(m["sensitivity"] < 0.90 for t, m in table.items() if t > high_sens)

    high_spec = points["high_specificity"]["threshold"]
    assert points["high_specificity"]["specificity"] >= 0.90
    assert all(m["specificity"] < 0.90 for t, m in table.items() if t < high_spec)

    best_j = max(m["sensitivity"] + m["specificity"] - 1 for m in table.values())
    balanced = points["balanced"]
    assert balanced["sensitivity"] + balanced["specificity"] - 1 == pytest.approx(best_j, abs=1e-12)
    assert high_sens <= balanced["threshold"] <= high_spec or best_j == pytest.approx(0.0)


def test_operating_points_honour_custom_minimums_and_need_both_classes():
    rng = np.random.default_rng(6)
    y_true = rng.integers(0, 2, 200)
    y_prob = np.clip(rng.normal(0.4 + 0.2 * y_true, 0.2), 0, 1)
    points = choose_operating_points(y_true, y_prob, min_sensitivity=0.8, min_specificity=0.95)
    assert points["high_sensitivity"]["sensitivity"] >= 0.8
    assert points["high_specificity"]["specificity"] >= 0.95
    with pytest.raises(MetricsInputError, match="positive and negative"):
        choose_operating_points(np.ones(10, dtype=int), np.linspace(0, 1, 10))


# ----------------------------------------------------------------------------------------------------
# evaluate_predictions
# ----------------------------------------------------------------------------------------------------
def test_evaluate_predictions_builds_a_rounded_json_block():
    y_val, p_val, _ = _scored(n_patients=60, images_per_patient=3, separation=1.5, seed=20)
    y_test, p_test, g_test = _scored(n_patients=50, images_per_patient=3, separation=1.5, seed=21)
    card_points = {**choose_operating_points(y_val, p_val), "default": "balanced"}
    block = evaluate_predictions(y_test, p_test, g_test, card_points, n_resamples=300, seed=2)
    json.dumps(block, allow_nan=False)

    assert (block["n_images"], block["n_patients"], block["n_positive"]) == (150, 50, int(y_test.sum()))
    assert block["bootstrap"]["resamples"] == 300 and block["bootstrap"]["unit"] == "patient"
    assert block["bootstrap"]["confidence"] == 0.95
    assert block["auc"]["value"] == round(roc_auc_score(y_test, p_test), 4)
    low, high = block["auc"]["ci95"]
    assert low <= block["auc"]["value"] <= high
    assert set(block["at_operating_points"]) == {"high_sensitivity", "balanced", "high_specificity"}

    ci = bootstrap_ci(y_test, p_test, g_test, card_points["balanced"]["threshold"], n_resamples=300, seed=2)
    for name, point in block["at_operating_points"].items():
        threshold = card_points[name]["threshold"]
        assert point["threshold"] == threshold
        expected = binary_metrics(y_test, p_test, threshold)
        assert point["confusion_matrix"] == [[int(expected["tn"]), int(expected["fp"])],
                                             [int(expected["fn"]), int(expected["tp"])]]
        for metric in RATE_METRICS:
            assert point[metric]["value"] == round(expected[metric], 4)
            for bound in point[metric]["ci95"]:
                assert isinstance(bound, float) and bound == round(bound, 4)
            if name == "balanced":  # same seed, same patient draws as bootstrap_ci
                assert point[metric]["ci95"] == [round(bound, 4) for bound in ci[metric]]


# ----------------------------------------------------------------------------------------------------
# calibration and study level
# ----------------------------------------------------------------------------------------------------
def test_calibration_uses_quantile_bins_and_the_brier_score():
    rng = np.random.default_rng(12)
    y_prob = rng.random(500)
    y_true = (rng.random(500) < y_prob).astype(int)  # calibrated by construction
    curve = calibration(y_true, y_prob, n_bins=5)
    fraction, mean_predicted = calibration_curve(y_true, y_prob, n_bins=5, strategy="quantile")
    assert curve["strategy"] == "quantile" and curve["n"] == 500
    np.testing.assert_allclose(curve["fraction_positive"], fraction)
    np.testing.assert_allclose(curve["mean_predicted"], mean_predicted)
    assert curve["brier"] == pytest.approx(brier_score_loss(y_true, y_prob))
    assert np.max(np.abs(np.subtract(curve["fraction_positive"], curve["mean_predicted"]))) < 0.12


def test_study_level_is_the_mean_of_the_k_highest_slices():
    y_prob = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.6, 0.8]
    groups = ["a", "a", "a", "a", "a", "b", "b", "c"]
    scores = study_level(y_prob, groups, k=3)
    assert scores == pytest.approx({"a": (0.9 + 0.7 + 0.5) / 3, "b": (0.3 + 0.6) / 2, "c": 0.8})
    assert all(type(key) is str for key in scores)
    assert study_level(y_prob, groups, k=1) == pytest.approx({"a": 0.9, "b": 0.6, "c": 0.8})
    assert study_level([0.2, 0.4], np.array([7, 7]), k=5) == pytest.approx({7: 0.3})
    with pytest.raises(MetricsInputError):
        study_level(y_prob, groups, k=0)


# ----------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------
def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"


def test_plots_write_non_empty_pngs(tmp_path):
    y_true, y_prob, _ = _scored(n_patients=80, images_per_patient=2, separation=1.5, seed=30)
    points = choose_operating_points(y_true, y_prob)
    title = "test-pack v0.1 - validation patients"
    written = [
        plot_roc(tmp_path / "roc.png", y_true, y_prob, title, operating_points=points),
        plot_calibration(tmp_path / "calibration.png", y_true, y_prob, title),
        plot_confusion(tmp_path / "sub" / "confusion.png", [[40, 7], [5, 108]],
                       labels=("no sacroiliitis", "sacroiliitis"), title=title),
    ]
    assert [path.name for path in written] == ["roc.png", "calibration.png", "confusion.png"]
    for path in written:
        _assert_png(path)


def test_plots_refuse_what_they_cannot_draw(tmp_path):
    with pytest.raises(MetricsInputError, match="positive and negative"):
        plot_roc(tmp_path / "roc.png", np.zeros(5, dtype=int), np.linspace(0, 1, 5), "x")
    with pytest.raises(MetricsInputError, match="2 x 2"):
        plot_confusion(tmp_path / "c.png", [[1, 2, 3]])
    with pytest.raises(MetricsInputError, match="PNG"):
        plot_confusion(tmp_path / "c.pdf", [[1, 2], [3, 4]])
    assert not any(tmp_path.iterdir())
