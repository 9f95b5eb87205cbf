"""Refit the content gate and the calibration of an existing pack (the model file is never changed).

Two protocols, matching how the shipped packs were trained (their cards' ``training.protocol``):

* ``holdout`` (knee-xray-oa): the training folder is split again exactly as ``asdesk train`` split it
  (:func:`asdesk.training.splits.group_holdout`, 15% of patients, the card's seed); the gate is fitted on the
  training patients and its threshold chosen on the validation patients; Platt scaling is fitted on the
  validation patients and its ECE measured on ``--test-data`` (patients in neither).
* ``lopo`` (sij-mri-stir-inflammation): the gate's threshold comes from each patient's distances to a gate
  fitted on the other patients; Platt scaling is fitted on the out-of-fold predictions
  (``evaluation/predictions.csv``) and its ECE measured with each patient calibrated by a fit on the others;
  the study-level result is recomputed with each patient's threshold chosen on the other patients.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from asdesk.core import NullProgress, ProgressSink
from asdesk.inference.calibration import calibrate

LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m asdesk.training.gatefit``."""
    parser.add_argument("pack", help="model pack folder (model.keras + card.json); card.json is updated")
    parser.add_argument("data", help="the training data of the pack: labelled folder, or the SIJ NIfTI root")
    parser.add_argument("--task", choices=("folder", "sij-stir"), default="folder")
    parser.add_argument("--test-data", help="holdout: labelled folder of test patients for the ECE")
    parser.add_argument("--positive-labels")
    parser.add_argument("--negative-labels")
    parser.add_argument("--patient-pattern")
    parser.add_argument("--patient-csv")
    parser.add_argument("--n-components", type=int, help="PPCA k (default: chosen by validation likelihood)")
    parser.add_argument("--method", choices=("ppca", "knn", "auto"), default="ppca",
                        help="gate method: PPCA Mahalanobis, k-NN cosine (Sun et al. 2022), or auto: the one whose "
                             "worst per-grade acceptance of held-out training patients is highest (holdout packs)")
    parser.add_argument("--cache", help="folder for cached features (.npz), reused when the model is the same")
    parser.add_argument("--salt", help="hex salt of training_patients (default: keep the card's, else random)")


def _features(pack: Any, samples: list, name: str, cache: str | None,  # noqa: ANN401
              progress: ProgressSink) -> tuple[np.ndarray, np.ndarray, list]:
    """Features and probabilities of ``samples`` through the card's pipeline (failed reads dropped)."""
    from asdesk.inference.runtime import load_model
    from asdesk.training.datasets import prepare_images
    from asdesk.training.gatefit import extract_features

    keys = np.array([s.key for s in samples])
    path = Path(cache) / f"{pack.card.id}-{pack.card.sha256[:12]}-{name}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if np.array_equal(data["keys"], keys):
                LOGGER.info("features of %s from %s", name, path)
                kept = set(data["kept"].tolist())
                return data["features"], data["probabilities"], [s for s in samples if s.key in kept]
    pipeline = pack.card.pipeline()
    images, errors = prepare_images(samples, pipeline, progress)
    failed = {error.split(": ", 1)[0] for error in errors}
    kept = [s for s in samples if s.key not in failed]
    mask = np.array([s.key not in failed for s in samples], bool)
    features, probabilities = extract_features(load_model(pack.model_path), images[mask], pipeline.normalise,
                                               progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, keys=keys, kept=np.array([s.key for s in kept]), features=features,
                 probabilities=probabilities)
    return features, probabilities, kept


def read_predictions(path: str | Path) -> dict[str, tuple[str, int, float]]:
    """``evaluation/predictions.csv`` as key -> (patient, label, probability)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return {row["key"]: (row["patient"], int(row["label"]), float(row["probability"]))
                for row in csv.DictReader(handle)}


def nested_study_level(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, k: int) -> dict[str, Any]:
    """Study-level result with each study's threshold chosen on the other patients' slice predictions.

    For each patient, the balanced (Youden) slice threshold is chosen with
    :func:`asdesk.training.metrics.choose_operating_points` on the other patients' out-of-fold slice
    probabilities; the patient's study score (mean of its ``k`` highest slice probabilities) is compared with it.

    Returns
    -------
    dict
        The card's ``performance.study_level`` block.
    """
    from asdesk.training.metrics import choose_operating_points, study_level

    scores = study_level(probabilities, groups, k=k)
    rows = []
    for patient, score in sorted(scores.items()):
        others = groups != patient
        threshold = choose_operating_points(labels[others], probabilities[others])["balanced"]["threshold"]
        rows.append({"patient": str(patient), "study_probability": round(float(score), 4),
                     "threshold": round(float(threshold), 4), "positive": bool(score >= threshold),
                     "reference_positive": bool(labels[groups == patient].max())})
    positives = [r for r in rows if r["reference_positive"]]
    negatives = [r for r in rows if not r["reference_positive"]]
    note = ("nested: each study's threshold is the balanced slice threshold chosen on the other patients' "
            "out-of-fold slice predictions (replaces a measurement at the threshold chosen on all 8 studies)")
    if not negatives:
        note += "; specificity cannot be measured: every study has inflamed slices"
    return {"rule": f"mean of the {k} highest slice probabilities >= the balanced slice threshold",
            "protocol": "leave-one-patient-out, threshold nested", "n_studies": len(rows),
            "n_reference_positive": len(positives),
            "sensitivity": round(sum(r["positive"] for r in positives) / len(positives), 4) if positives else None,
            "specificity": (round(sum(not r["positive"] for r in negatives) / len(negatives), 4)
                            if negatives else None),
            "note": note, "studies": rows}


def run(args: argparse.Namespace, progress: ProgressSink | None = None) -> int:
    """Refit the gate and calibration of ``args.pack`` and write them into its card."""
    from asdesk.inference import load_pack

    pack = load_pack(args.pack)
    sink = progress or NullProgress()
    protocol = pack.card.raw.get("training", {}).get("protocol", {})
    if args.task == "sij-stir" or protocol.get("split") == "lopo":
        if getattr(args, "method", "ppca") != "ppca":
            raise ValueError(f"--method {args.method}: only the holdout refit compares or fits other gate methods; "
                             "a leave-one-patient-out pack's gate is the nested PPCA one")
        blocks = _fit_lopo(pack, args, sink)
    else:
        blocks = _fit_holdout(pack, args, sink)
    from asdesk.training.gatefit import update_card

    path = update_card(pack.path, **blocks)
    print(f"updated {path}")
    return 0


def _salt(pack: Any, args: argparse.Namespace) -> str | None:  # noqa: ANN401
    return args.salt or pack.card.raw.get("training_patients", {}).get("salt")


def _fit_holdout(pack: Any, args: argparse.Namespace, sink: ProgressSink) -> dict[str, Any]:  # noqa: ANN401
    from asdesk.training.calibration import (
        calibration_block,
        expected_calibration_error,
        fit_platt,
        plot_reliability,
    )
    from asdesk.training.datasets import load_folder_dataset
    from asdesk.training.gatefit import fit_gate, label_folders, training_patients_block, write_gate
    from asdesk.training.splits import group_holdout

    protocol = pack.card.raw.get("training", {}).get("protocol", {})
    samples = load_folder_dataset(args.data, args.positive_labels, args.negative_labels, args.patient_pattern,
                                  args.patient_csv)
    features, probabilities, samples = _features(pack, samples, "train", args.cache, sink)
    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient for s in samples])
    train, validation = group_holdout(labels, groups, 0.15, int(protocol.get("seed", 0)))
    counts = {"n_train_images": len(train), "n_validation_images": len(validation),
              "n_train_patients": len(np.unique(groups[train])),
              "n_validation_patients": len(np.unique(groups[validation]))}
    for key, value in counts.items():
        if key in protocol and int(protocol[key]) != value:
            raise ValueError(f"split does not reproduce the card's: {key} {value} != {protocol[key]}")
    print("split reproduced:", counts)
    grades = label_folders([s.key for s in samples])  # the label folder: the KL grade
    method, selection = args.method, None
    if method == "auto":
        from asdesk.training.gatefit import compare_gate_methods

        table = compare_gate_methods(features[train], grades[train], groups[train], features[validation],
                                     grades[validation], seed=int(protocol.get("seed", 0)))
        best = max(table, key=lambda name: (table[name]["worst"], name.startswith("ppca")))
        method = "knn" if best.startswith("knn") else "ppca"
        selection = {"candidates": table, "chosen": best,
                     "rule": "the method whose lowest per-grade acceptance of held-out training patients (5 folds "
                             "of the training split's patients; each fold's gate fitted on the others, threshold "
                             "chosen on the validation images) is highest; the test set takes no part"}
        print(f"gate methods, per-grade acceptance of held-out training patients: {table}; chosen {best}")
    if method == "knn":
        from asdesk.training.gatefit import fit_knn_gate

        gate, info = fit_knn_gate(features[train], features[validation], strata=grades[validation])
    else:
        gate, info = fit_gate(features[train], features[validation], args.n_components, strata=grades[validation])
    gate_block = write_gate(pack.path, gate, info,
                            fitted_on=f"the {counts['n_train_images']} training images "
                                      f"({counts['n_train_patients']} patients) of the card's holdout split",
                            threshold_chosen_on=f"the {counts['n_validation_images']} validation images "
                                                f"({counts['n_validation_patients']} other patients): at least "
                                                "95% of the validation images of every grade (label folder) pass")
    if selection is not None:
        gate_block["method_selection"] = selection
    print(f"gate: {gate.method}, size {gate.n_components}, threshold {gate.threshold:.4f}, validation acceptance "
          f"{info['validation_acceptance']}; log-likelihoods {info.get('n_components_log_likelihood')}")
    slope, intercept = (round(v, 6) for v in fit_platt(labels[validation], probabilities[validation]))
    blocks: dict[str, Any] = {"content_gate": gate_block}
    if args.test_data:
        test = load_folder_dataset(args.test_data, args.positive_labels, args.negative_labels,
                                   args.patient_pattern, args.patient_csv)
        test_features, test_probabilities, test = _features(pack, test, "test", args.cache, sink)
        test_labels = np.array([s.label for s in test])
        stored = pack.path / "evaluation" / "predictions.csv"
        if stored.is_file():
            previous = read_predictions(stored)
            names = {Path(k).name: v for k, v in previous.items()}
            diffs = [abs(names[Path(s.key).name][2] - float(p)) for s, p in zip(test, test_probabilities, strict=True)
                     if Path(s.key).name in names]
            print(f"test predictions vs {stored}: {len(diffs)} matched, max |difference| {max(diffs):.2e}")
        calibrated = calibrate(test_probabilities, slope, intercept)
        before = expected_calibration_error(test_labels, test_probabilities)
        after = expected_calibration_error(test_labels, calibrated)
        test_accept = float(np.mean(gate.accepts(test_features)))
        print(f"test: {len(test_labels)} images, gate acceptance {test_accept:.4f}, ECE {before:.4f} -> {after:.4f}")
        plot_reliability(pack.path / "evaluation" / "reliability.png", test_labels, test_probabilities, calibrated,
                         title=f"{pack.card.id}: reliability on the held-out test set ({len(test_labels)} images)")
        blocks["content_gate"]["test_acceptance"] = round(test_accept, 4)
        test_grades = label_folders([s.key for s in test])
        accepted = gate.accepts(test_features)
        blocks["content_gate"]["test_acceptance_per_grade"] = {
            str(grade): round(float(np.mean(accepted[test_grades == grade])), 4) for grade in np.unique(test_grades)}
        blocks["content_gate"]["test_acceptance_measured_on"] = str(pack.card.performance.get("dataset", ""))
        blocks["calibration"] = calibration_block(
            slope, intercept, fitted_on=f"the {counts['n_validation_images']} validation images "
                                        f"({counts['n_validation_patients']} patients) of the holdout split",
            ece_before=before, ece_after=after,
            ece_measured_on=f"the held-out test set: {pack.card.performance.get('dataset', args.test_data)}")
    print(f"Platt slope {slope}, intercept {intercept}")
    blocks["training_patients"] = training_patients_block(np.unique(groups).tolist(), _salt(pack, args))
    return blocks


def _fit_lopo(pack: Any, args: argparse.Namespace, sink: ProgressSink) -> dict[str, Any]:  # noqa: ANN401
    from asdesk.training.calibration import (
        calibration_block,
        expected_calibration_error,
        fit_platt,
        nested_platt,
        plot_reliability,
    )
    from asdesk.training.datasets import load_sij_stir_dataset
    from asdesk.training.gatefit import nested_gate, training_patients_block, write_gate

    samples = load_sij_stir_dataset(args.data, include_unlabelled=True)
    features, _, samples = _features(pack, samples, "all", args.cache, sink)
    groups = np.array([s.patient for s in samples])
    labelled = np.array([s.label >= 0 for s in samples])
    strata = np.array([("unlabelled" if s.label < 0 else str(s.label)) for s in samples])
    gate, info = nested_gate(features, groups, n_components=args.n_components, strata=strata)
    patients = sorted(set(groups.tolist()))
    gate_block = write_gate(pack.path, gate, info,
                            fitted_on=f"all {len(groups)} slices of the {len(patients)} STIR volumes "
                                      f"({', '.join(patients)}; {int((~labelled).sum())} slices of "
                                      f"{len(set(groups[~labelled].tolist()))} patients without masks)",
                            threshold_chosen_on=("nested: each patient's distances to a gate fitted on the other "
                                                 "patients; threshold passes the target fraction of those "
                                                 "held-out distances in every stratum (inflamed, not inflamed, "
                                                 "unlabelled slices; the features come from the shipped model, "
                                                 "which was trained on the 8 labelled patients)"))
    gate_block["per_patient_acceptance"] = info["per_patient_acceptance"]
    print(f"gate: k={gate.n_components}, threshold {gate.threshold:.4f}, nested acceptance "
          f"{info['validation_acceptance']}; per patient {info['per_patient_acceptance']}; "
          f"log-likelihoods {info.get('n_components_log_likelihood')}")
    oof = read_predictions(pack.path / "evaluation" / "predictions.csv")
    keys = sorted(oof)
    g = np.array([oof[k][0] for k in keys])
    y = np.array([oof[k][1] for k in keys])
    p = np.array([oof[k][2] for k in keys])
    slope, intercept = (round(v, 6) for v in fit_platt(y, p))
    nested = nested_platt(y, p, g)
    before, after = expected_calibration_error(y, p), expected_calibration_error(y, nested)
    print(f"Platt slope {slope}, intercept {intercept}; ECE {before:.4f} -> {after:.4f} (nested) on {len(y)} slices")
    plot_reliability(pack.path / "evaluation" / "reliability.png", y, p, nested,
                     title=f"{pack.card.id}: out-of-fold slices (nested Platt fit)")
    calib = calibration_block(slope, intercept,
                              fitted_on=f"the out-of-fold predictions of all {len(y)} labelled slices "
                                        f"({len(set(g.tolist()))} patients; evaluation/predictions.csv)",
                              ece_before=before, ece_after=after,
                              ece_measured_on=("nested: each patient's out-of-fold slices calibrated by a Platt "
                                               "fit on the other 7 patients' out-of-fold slices"))
    performance = dict(pack.card.raw["performance"])
    k = pack.card.study_rule.k if pack.card.study_rule else 3
    performance["study_level"] = nested_study_level(y, p, g, k)
    study = performance["study_level"]
    print(f"study level nested: sensitivity {study['sensitivity']} specificity {study['specificity']} "
          f"({study['n_reference_positive']}/{study['n_studies']} positive)")
    return {"content_gate": gate_block, "calibration": calib, "performance": performance,
            "training_patients": training_patients_block(sorted(set(g.tolist())), _salt(pack, args)),
            "mr_planes": ["CORONAL"], "mr_sequences": ["STIR"]}
