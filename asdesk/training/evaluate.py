"""``asdesk evaluate`` and the performance block that training writes into a card.

Every number comes from patients the model never saw, with 95% bootstrap confidence intervals that resample
patients (DESIGN.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from asdesk.core import NullProgress, ProgressSink

LOGGER = logging.getLogger(__name__)
SUMMARY_METRICS = ("sensitivity", "specificity", "accuracy", "precision", "f1")


def _op_thresholds(points: dict[str, dict]) -> dict[str, float]:
    return {name: float(point["threshold"]) for name, point in points.items() if isinstance(point, dict)}


def performance_block(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, points: dict[str, dict],
                      dataset_name: str, protocol: str, decisions: dict[str, np.ndarray] | None = None,
                      study_k: int | None = None, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Measure a model's predictions for the card.

    Parameters
    ----------
    labels : numpy.ndarray
        (N,) int {0, 1}.
    probabilities : numpy.ndarray
        (N,) float: predicted probability of the positive class, from a model that never saw the patient.
    groups : numpy.ndarray
        (N,) patient ids (bootstrap unit).
    points : dict
        Operating points ``{name: {"threshold": t, ...}}``.
    dataset_name, protocol : str
        What the numbers were measured on, and how.
    decisions : dict, optional
        Per-image boolean decisions per operating point (nested cross-validation); when given, threshold
        metrics are computed from them instead of ``probabilities >= threshold``.
    study_k : int, optional
        Adds a study-level block: per patient, the mean of the ``study_k`` highest probabilities against the
        balanced threshold.

    Returns
    -------
    dict
        ``{"dataset", "protocol", "metrics": {auc, sensitivity, ... at the balanced point: {"value",
        "ci95"}}, "detail": {...}, "study_level": {...}}``.
    """
    from asdesk.training.metrics import evaluate_predictions, study_level

    thresholds = _op_thresholds(points)
    detail = evaluate_predictions(labels, probabilities, groups, thresholds, n_resamples=n_resamples, seed=seed)
    if decisions is not None:
        for name, decided in decisions.items():
            block = evaluate_predictions(labels, decided.astype(np.float64), groups, {name: 0.5},
                                         n_resamples=n_resamples, seed=seed)["at_operating_points"][name]
            block["threshold"] = "chosen per patient on the other patients (nested)"
            detail["at_operating_points"][name] = block
    balanced = detail["at_operating_points"].get("balanced", {})
    metrics = {"auc": detail["auc"]}
    for name in SUMMARY_METRICS:
        if name in balanced:
            metrics[name] = balanced[name]
    block: dict[str, Any] = {"dataset": dataset_name, "protocol": protocol, "operating_point": "balanced",
                             "n_images": detail.get("n_images"), "n_patients": detail.get("n_patients"),
                             "n_positive": detail.get("n_positive"), "metrics": metrics, "detail": detail}
    if study_k:
        scores = study_level(probabilities, groups, k=study_k)
        truth = {g: int(labels[groups == g].max()) for g in scores}
        threshold = thresholds.get("balanced", 0.5)
        rows = [{"patient": str(g), "study_probability": round(float(s), 4), "positive": bool(s >= threshold),
                 "reference_positive": bool(truth[g])} for g, s in sorted(scores.items())]
        positives = [r for r in rows if r["reference_positive"]]
        negatives = [r for r in rows if not r["reference_positive"]]
        block["study_level"] = {
            "rule": f"mean of the {study_k} highest slice probabilities >= balanced threshold {threshold:.3f}",
            "n_studies": len(rows),
            "n_reference_positive": len(positives),
            "sensitivity": round(sum(r["positive"] for r in positives) / len(positives), 4) if positives else None,
            "specificity": (round(sum(not r["positive"] for r in negatives) / len(negatives), 4)
                            if negatives else None),
            "note": ("specificity cannot be measured: every study has inflamed slices" if not negatives else ""),
            "studies": rows,
        }
    return block


def write_evaluation_files(out: Path, model_id: str, labels: np.ndarray, probabilities: np.ndarray,
                           groups: np.ndarray, keys: list[str], points: dict[str, dict]) -> None:
    """Write ``predictions.csv`` and the ROC, calibration and confusion-matrix PNGs into ``out``."""
    from asdesk.training.metrics import binary_metrics, calibration
    from asdesk.training.plots import plot_calibration, plot_confusion, plot_roc

    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "patient", "label", "probability"])
        for key, patient, label, probability in zip(keys, groups, labels, probabilities, strict=True):
            writer.writerow([key, patient, int(label), f"{float(probability):.6f}"])
    thresholds = _op_thresholds(points)
    plot_roc(out / "roc.png", labels, probabilities, title=f"{model_id}: ROC", operating_points=thresholds)
    plot_calibration(out / "calibration.png", labels, probabilities, title=f"{model_id}: calibration")
    counts = binary_metrics(labels, probabilities, thresholds.get("balanced", 0.5))
    matrix = [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
    plot_confusion(out / "confusion.png", matrix, labels=("negative", "positive"),
                   title=f"{model_id}: confusion at the balanced point")
    (out / "calibration.json").write_text(json.dumps(calibration(labels, probabilities), indent=2,
                                                     default=float), encoding="utf-8")


def check_no_training_patients(card: dict[str, Any] | Any, pack_id: str, samples: list) -> None:  # noqa: ANN401
    """Refuse to write "held-out" metrics measured on patients that trained or validated the model.

    Each sample's patient id is hashed with the card's ``training_patients.salt`` (``sha256(salt + id)``) and
    looked up in ``training_patients.sha256``.

    Parameters
    ----------
    card : mapping
        The card document.
    pack_id : str
    samples : list of Sample
        The evaluation data.

    Raises
    ------
    DatasetError
        Some patients are training patients (the message names how many patients and files and lists the
        first files), or the card has no ``training_patients`` to check against.
    """
    from asdesk.training.datasets import DatasetError
    from asdesk.training.gatefit import hash_patient

    block = card.get("training_patients")
    if not block:
        raise DatasetError(f"model {pack_id} has no training_patients in its card, so asdesk cannot check that "
                           "the evaluation patients are new; --write-card needs them (refit with "
                           "python -m asdesk.training.gatefit)")
    salt, known = str(block["salt"]), {str(h).lower() for h in block["sha256"]}
    overlap = [s for s in samples if hash_patient(salt, s.patient) in known]
    if overlap:
        patients = sorted({s.patient for s in overlap})
        files = [s.key for s in overlap]
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        raise DatasetError(f"{len(patients)} of the {len({s.patient for s in samples})} patients in this data "
                           f"({len(files)} files) trained or validated model {pack_id}: {shown}; --write-card "
                           "writes held-out metrics only from patients the model never saw")


def main_evaluate(args: argparse.Namespace, progress: ProgressSink | None = None) -> int:
    """Run ``asdesk evaluate``: score a model pack on a labelled folder it never saw.

    Writes ``metrics.json``, ``predictions.csv`` and plots into ``--out``; with ``--write-card`` the
    measured block replaces the card's ``performance`` (the model file and its hash are untouched), after
    :func:`check_no_training_patients` has refused data that holds any patient who trained or validated
    the model.
    """
    from asdesk.inference import InferenceEngine, find_pack
    from asdesk.training.datasets import load_folder_dataset, prepare_images
    from asdesk.training.trainer import forward

    sink = progress or NullProgress()
    pack = find_pack(args.model)
    engine = InferenceEngine(pack)
    engine.load()
    samples = load_folder_dataset(args.data, args.positive_labels, args.negative_labels,
                                  args.patient_pattern, args.patient_csv)
    if args.write_card:
        check_no_training_patients(pack.card.raw, pack.card.id, samples)
    images, errors = prepare_images(samples, engine.pipeline, sink)
    failed = {error.split(": ", 1)[0] for error in errors}
    keep = [i for i, s in enumerate(samples) if s.key not in failed]
    labels = np.array([samples[i].label for i in keep])
    groups = np.array([samples[i].patient for i in keep])
    probabilities = forward(engine.model, images[keep], engine.pipeline.normalise, progress=sink)
    points = {name: {"threshold": point.threshold} for name, point in pack.card.operating_points.items()}
    block = performance_block(labels, probabilities, groups, points,
                              dataset_name=args.dataset_name or str(args.data),
                              protocol="held-out evaluation with asdesk evaluate")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(block, indent=2), encoding="utf-8")
    write_evaluation_files(out, pack.card.id, labels, probabilities, groups, [samples[i].key for i in keep], points)
    for error in errors:
        LOGGER.warning("not evaluated: %s", error)
    auc = block["metrics"]["auc"]
    print(f"{pack.card.id} {pack.card.version} on {len(labels)} images / {block['n_patients']} patients: "
          f"AUC {auc['value']} (95% CI {auc['ci95'][0]}-{auc['ci95'][1]})")
    for name, value in block["metrics"].items():
        if name != "auc":
            print(f"  {name} at balanced threshold: {value['value']} (95% CI {value['ci95'][0]}-{value['ci95'][1]})")
    if args.write_card:
        card_path = pack.path / "card.json"
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["performance"] = block
        card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
        print(f"updated {card_path}")
    return 0
