"""``asdesk train``: train a model pack on a labelled folder or on the SIJ STIR set, evaluate it on
patients it never saw, and write ``model.keras`` + ``card.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import asdesk
from asdesk.core import NullProgress, ProgressSink
from asdesk.inference.calibration import calibrate
from asdesk.preprocess import build_pipeline
from asdesk.training.datasets import (
    DatasetError,
    Sample,
    load_folder_dataset,
    load_sij_stir_dataset,
    prepare_images,
)
from asdesk.training.model import GRADCAM_LAYERS, build_classifier
from asdesk.training.presets import preprocessing_spec
from asdesk.training.splits import group_holdout, group_kfold, leave_one_patient_out, repeated_group_kfold
from asdesk.training.trainer import FeatureCache, TrainConfig, fit, forward, median_epochs

LOGGER = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Preprocessed images with labels and patient ids (failed reads removed)."""

    samples: list[Sample]
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    errors: list[str]


def load_dataset(args: argparse.Namespace, data: str | Path, spec: list[dict[str, Any]],
                 progress: ProgressSink | None = None) -> Dataset:
    """Index, read and preprocess a data set for ``args.task``.

    Raises
    ------
    DatasetError
        No labelled image, or only one class.
    """
    if args.task == "sij-stir":
        samples = load_sij_stir_dataset(data, min_readers=args.min_readers)
    else:
        samples = load_folder_dataset(data, args.positive_labels, args.negative_labels,
                                      args.patient_pattern, args.patient_csv)
    images, errors = prepare_images(samples, build_pipeline(spec), progress)
    failed = {error.split(": ", 1)[0] for error in errors}
    keep = [i for i, s in enumerate(samples) if s.key not in failed]
    samples = [samples[i] for i in keep]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if len(set(labels.tolist())) < 2:
        raise DatasetError(f"{data}: need both positive and negative images, got labels {sorted(set(labels))}")
    return Dataset(samples, images[keep], labels, np.array([s.patient for s in samples]), errors)


CROSS_VALIDATION = ("lopo", "group-kfold", "repeated-kfold")


def cv_name(split: str, folds: int = 5, repeats: int = 1) -> str:
    """Words for a cross-validation protocol, e.g. ``"leave-one-patient-out"`` or ``"grouped 5-fold"``."""
    if split == "lopo":
        return "leave-one-patient-out"
    if split == "repeated-kfold":
        return (f"{repeats} x repeated stratified grouped {folds}-fold (by patient; each image's probability the "
                f"mean of its {repeats} out-of-fold probabilities)")
    return f"grouped {folds}-fold"


def _config(args: argparse.Namespace) -> TrainConfig:
    from asdesk.training.augment import Augmentation

    weights = None if args.weights in (None, "", "none") else args.weights
    return TrainConfig(architecture=args.architecture, weights=weights, head_epochs=args.epochs,
                       fine_tune_epochs=args.fine_tune_epochs, batch_size=args.batch_size,
                       fine_tune_fraction=getattr(args, "fine_tune_fraction", 0.3),
                       fine_tune_learning_rate=getattr(args, "fine_tune_learning_rate", 1e-5),
                       patience=args.patience,
                       augment_copies=args.augment_copies, seed=args.seed,
                       augmentation=Augmentation(horizontal_flip=args.horizontal_flip),
                       class_weight=getattr(args, "class_weight", None),
                       stn=bool(getattr(args, "stn", False)), stn_epochs=getattr(args, "stn_epochs", 10))


def cross_validate(dataset: Dataset, config: TrainConfig, spec: list[dict[str, Any]], split: str,
                   progress: ProgressSink | None = None, folds_per_repeat: int = 5, repeats: int = 1,
                   per_repeat: list[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, list[int], list[int], list[dict], tuple[Any, FeatureCache]]:
    """Out-of-fold probabilities by leave-one-patient-out, grouped k-fold or repeated grouped k-fold.

    ``split="repeated-kfold"`` runs :func:`asdesk.training.splits.repeated_group_kfold` (``repeats`` x
    ``folds_per_repeat``); each image's probability is then the mean of its ``repeats`` out-of-fold
    probabilities (each from a model that never saw its patient), and ``per_repeat`` (when a list is given)
    receives each repeat's float32 (N,) out-of-fold probabilities.

    The frozen-backbone features are computed once and shared by all folds; fine-tuning (if configured)
    runs per fold on a fresh model.

    Returns
    -------
    probabilities : numpy.ndarray
        float32 (N,): each image scored by the model that never saw its patient.
    head_epochs, fine_tune_epochs : list of int
        Best epochs per fold.
    folds : list of dict
        Per-fold summary (held-out patients, sizes, best epochs).
    shared : tuple
        ``(model, cache)``: the frozen-backbone classifier and its feature cache, which the final
        all-patients model reuses when there is no fine-tuning (the same features, computed once).
    """
    pipeline = build_pipeline(spec)
    shape = pipeline.input_shape
    import keras

    keras.utils.set_random_seed(config.seed)
    base = build_classifier(config.architecture, shape, config.weights, seed=config.seed, stn=config.stn)
    cache = FeatureCache(base, dataset.images, pipeline.normalise, config.augment_copies, config.augmentation,
                         config.seed, progress)
    if split == "lopo":
        splits = leave_one_patient_out(dataset.labels, dataset.groups, config.seed)
    elif split == "repeated-kfold":
        splits = repeated_group_kfold(dataset.labels, dataset.groups, folds_per_repeat, repeats, config.seed)
    else:
        splits = group_kfold(dataset.labels, dataset.groups, folds_per_repeat, config.seed)
    n_repeats = repeats if split == "repeated-kfold" else 1
    per_repeat_probabilities = np.full((n_repeats, len(dataset.labels)), np.nan, dtype=np.float32)
    head_epochs, tune_epochs, folds = [], [], []
    for fold in splits:
        model = None
        if config.fine_tune_epochs > 0 or config.stn:
            keras.utils.set_random_seed(config.seed)
            model = build_classifier(config.architecture, shape, config.weights, seed=config.seed, stn=config.stn)
        else:
            model = base
        result = fit(dataset.images, dataset.labels, fold.train, fold.validation, config, pipeline.normalise,
                     shape, cache=cache, model=model)
        repeat = int(fold.name[1:].split("f")[0]) if split == "repeated-kfold" else 0
        per_repeat_probabilities[repeat, fold.test] = forward(result.model, dataset.images[fold.test],
                                                              pipeline.normalise)
        head_epochs.append(result.head_epochs_run)
        tune_epochs.append(result.fine_tune_epochs_run)
        folds.append({"test": fold.name, "n_train": int(len(fold.train)), "n_validation": int(len(fold.validation)),
                      "n_test": int(len(fold.test)), "head_epochs": result.head_epochs_run,
                      "fine_tune_epochs": result.fine_tune_epochs_run,
                      **({"stn_epochs": result.stn_epochs_run} if config.stn else {})})
        LOGGER.info("fold %s: %d test images, best head epoch %d", fold.name, len(fold.test),
                    result.head_epochs_run)
    if per_repeat is not None:
        per_repeat.extend(per_repeat_probabilities)
    probabilities = per_repeat_probabilities.mean(axis=0).astype(np.float32)
    return probabilities, head_epochs, tune_epochs, folds, (base, cache)


def nested_decisions(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image decisions where each patient's thresholds were chosen on the other patients only.

    With cross-validated (out-of-fold) probabilities, choosing thresholds on all of them and measuring at
    those thresholds would reuse the test patient; here each patient is judged at operating points chosen
    from the remaining patients' out-of-fold predictions.

    Returns
    -------
    dict
        Operating-point name → bool (N,) positive decisions.
    """
    from asdesk.training.metrics import choose_operating_points

    decisions: dict[str, np.ndarray] = {}
    for patient in np.unique(groups):
        mine, others = groups == patient, groups != patient
        points = choose_operating_points(labels[others], probabilities[others])
        for name, point in points.items():
            decisions.setdefault(name, np.zeros(len(labels), dtype=bool))
            decisions[name][mine] = probabilities[mine] >= point["threshold"]
    return decisions


def main_train(args: argparse.Namespace, progress: ProgressSink | None = None) -> int:
    """Run ``asdesk train`` (see ``asdesk train --help``). Returns the exit code."""
    if args.task == "sij-oedema":
        from asdesk.training.oedema import train_oedema_pack

        return train_oedema_pack(args)
    from asdesk.inference.runtime import configure_device
    from asdesk.training.evaluate import performance_block, write_evaluation_files
    from asdesk.training.metrics import choose_operating_points

    device = configure_device()
    LOGGER.info("training on %s", device)
    sink = progress or NullProgress()
    config = _config(args)
    enhancement = args.preprocessing or ("clahe" if args.task == "sij-stir" else "none")
    spec = preprocessing_spec(args.task, enhancement, args.input_size, args.architecture)
    dataset = load_dataset(args, args.data, spec, sink)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from asdesk.training.compare import comparison_architectures

    architectures = comparison_architectures(args.compare)
    comparison = None
    if architectures:
        from asdesk.training.compare import run_comparison, weights_by_architecture, write_comparison

        comparison = run_comparison(args, dataset, architectures, sink)
        paths = write_comparison(out, comparison)
        print(f"comparison written to {paths[0]} and {paths[1]}; building the pack with {comparison['winner']}")
        args.weights = weights_by_architecture(args.weights, architectures)[comparison["winner"]] or "none"
        args.architecture = comparison["winner"]
        config = _config(args)
        spec = preprocessing_spec(args.task, enhancement, args.input_size, args.architecture)
    pipeline = build_pipeline(spec)
    shape = pipeline.input_shape
    split = args.split or ("lopo" if args.task == "sij-stir" else "holdout")
    protocol: dict[str, Any] = {"split": split, "seed": config.seed}
    if split in CROSS_VALIDATION:
        per_repeat: list[np.ndarray] = []
        oof, head_epochs, tune_epochs, folds, (base, cache) = cross_validate(
            dataset, config, spec, split, sink, folds_per_repeat=args.folds, repeats=args.repeats,
            per_repeat=per_repeat)
        points = choose_operating_points(dataset.labels, oof)
        reuse = ({"cache": cache, "model": base} if not (config.fine_tune_epochs or config.stn)
                 else {"cache": cache} if config.stn and not config.fine_tune_epochs else {})
        stn_epochs = median_epochs([f["stn_epochs"] for f in folds]) if config.stn else 0
        final = fit(dataset.images, dataset.labels, np.arange(len(dataset.labels)), None, config,
                    pipeline.normalise, shape, head_epochs=median_epochs(head_epochs),
                    fine_tune_epochs=median_epochs(tune_epochs) if config.fine_tune_epochs else 0,
                    stn_epochs=stn_epochs, **reuse)
        decisions = nested_decisions(dataset.labels, oof, dataset.groups)
        performance = performance_block(
            dataset.labels, oof, dataset.groups, points, decisions=decisions,
            dataset_name=args.dataset_name or str(args.data),
            protocol=(f"{cv_name(split, args.folds, args.repeats)} cross-validation "
                      "on patients the fold's model never saw; AUC from out-of-fold probabilities; "
                      "threshold metrics with each patient's operating points chosen on the other patients' "
                      "out-of-fold predictions"),
            study_k=args.study_top_k if args.task == "sij-stir" else None)
        if split == "repeated-kfold":
            from asdesk.training.metrics import binary_metrics

            protocol["per_repeat_auc"] = [round(float(binary_metrics(dataset.labels, r, 0.5)["auc"]), 4)
                                          for r in per_repeat]
        protocol.update({"folds": folds, "final_model": "all patients, epochs = median of the folds' best "
                         f"(head {median_epochs(head_epochs)}, fine-tune "
                         f"{median_epochs(tune_epochs) if config.fine_tune_epochs else 0}"
                         + (f", Spatial Transformer {stn_epochs}" if config.stn else "") + ")"})
        evaluated = (dataset.labels, oof, dataset.groups, [s.key for s in dataset.samples])
        model = final.model
        oof_or_validation: tuple[np.ndarray, np.ndarray] = (np.arange(len(dataset.labels)), oof)
        train_indices: np.ndarray | None = None
    else:
        train, validation = group_holdout(dataset.labels, dataset.groups, 0.15, config.seed)
        result = fit(dataset.images, dataset.labels, train, validation, config, pipeline.normalise, shape,
                     progress=sink, verbose=2)
        model = result.model
        val_probabilities = forward(model, dataset.images[validation], pipeline.normalise)
        points = choose_operating_points(dataset.labels[validation], val_probabilities)
        oof_or_validation = (validation, val_probabilities)
        train_indices = train
        protocol.update({"n_train_images": int(len(train)), "n_validation_images": int(len(validation)),
                         "n_train_patients": int(len(np.unique(dataset.groups[train]))),
                         "n_validation_patients": int(len(np.unique(dataset.groups[validation]))),
                         "head_epochs": result.head_epochs_run,
                         "fine_tune_epochs": result.fine_tune_epochs_run,
                         "validation_auc": _auc(dataset.labels[validation], val_probabilities)})
        performance = {"note": "no held-out test data given (--test-data); see validation_auc in training"}
        evaluated = None
        if args.test_data:
            test = load_dataset(args, args.test_data, spec, sink)
            test_probabilities = forward(model, test.images, pipeline.normalise)
            performance = performance_block(test.labels, test_probabilities, test.groups, points,
                                            dataset_name=args.test_dataset_name or str(args.test_data),
                                            protocol="held-out test set: patients not in the training data")
            evaluated = (test.labels, test_probabilities, test.groups, [s.key for s in test.samples])
    card = build_card(args, spec, shape, points, performance, protocol, dataset, enhancement)
    card.update(fit_gate_and_calibration(out, model, dataset, pipeline, train_indices, oof_or_validation,
                                         evaluated, sink))
    if args.task == "sij-stir":
        card.update({"mr_planes": ["CORONAL"], "mr_sequences": ["STIR"]})
    if "study_level" in performance and split in CROSS_VALIDATION:
        from asdesk.training.packfit import nested_study_level

        performance["study_level"] = nested_study_level(dataset.labels, oof, dataset.groups, args.study_top_k)
    if comparison is not None:
        card["comparison"] = comparison
    elif args.compare:
        card["comparison"] = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.compare]
    from asdesk.inference.pack import write_pack

    pack = write_pack(out, model, card)
    export_for_lean_runtime(out, args.test_data or args.data, sink)
    summary = {"architecture": args.architecture, "preprocessing": enhancement,
               "performance": performance, "protocol": protocol}
    report_dir = out / "evaluation"
    report_dir.mkdir(exist_ok=True)
    (report_dir / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if evaluated is not None:
        write_evaluation_files(report_dir, card["id"], *evaluated, points)
    LOGGER.info("wrote model pack %s", pack.path)
    print(f"model pack written to {pack.path}")
    metrics = performance.get("metrics", {})
    if "auc" in metrics:
        auc = metrics["auc"]
        print(f"AUC {auc['value']} (95% CI {auc['ci95'][0]}-{auc['ci95'][1]}) on {performance.get('dataset')}")
    return 0


def export_for_lean_runtime(out: Path, data: Any, progress: ProgressSink) -> None:  # noqa: ANN401
    """Write ``model.onnx`` beside the new ``model.keras`` (:func:`asdesk.training.export.export_pack`), with
    parity measured on the pack's evaluation images ``data``; a pack that cannot be exported keeps only the
    TensorFlow engine (logged as a warning)."""
    from asdesk.training.export import ExportError, export_pack

    try:
        block = export_pack(out, data=data, progress=progress)
    except ExportError as error:
        LOGGER.warning("model pack %s: not exported to ONNX: %s", out, error)
        print(f"model.onnx not written: {error}")
        return
    parity = block["parity"]
    print(f"model.onnx written (parity on {parity.get('n_images', 0)} images: max |dp| "
          f"{parity.get('max_abs_probability')}, decisions changed {parity.get('decisions_changed')})")


def fit_gate_and_calibration(out: Path, model: Any, dataset: Dataset, pipeline: Any,  # noqa: ANN401
                              train: np.ndarray | None, held: tuple[np.ndarray, np.ndarray],
                              evaluated: tuple | None, progress: ProgressSink) -> dict[str, Any]:
    """The card's ``content_gate`` (and ``content_gate.npz`` in ``out``), ``calibration`` and
    ``training_patients`` blocks for a newly trained pack.

    Holdout: the gate is fitted on the training patients' pooled features and its threshold chosen on the
    validation patients'; Platt scaling is fitted on the validation patients and its ECE measured on the test
    set when there is one. Cross-validation: the gate's threshold is nested (each patient against a gate
    fitted on the others), Platt scaling is fitted on the out-of-fold predictions and its ECE measured with
    each patient calibrated by a fit on the other patients.

    Parameters
    ----------
    train : numpy.ndarray or None
        int64 indices of the holdout training images; ``None`` for cross-validation.
    held : tuple
        ``(indices, probabilities)``: the validation images and their probabilities (holdout), or all
        images and their out-of-fold probabilities (cross-validation).
    evaluated : tuple, optional
        ``(labels, probabilities, groups, keys)`` of the test set (holdout with ``--test-data``).
    """
    from asdesk.training.calibration import (
        calibration_block,
        expected_calibration_error,
        fit_platt,
        nested_platt,
        plot_reliability,
    )
    from asdesk.training.gatefit import (
        extract_features,
        fit_gate,
        label_folders,
        nested_gate,
        training_patients_block,
        write_gate,
    )

    blocks: dict[str, Any] = {"training_patients": training_patients_block(np.unique(dataset.groups).tolist())}
    features, _ = extract_features(model, dataset.images, pipeline.normalise, progress=progress)
    indices, probabilities = held
    labels, groups = dataset.labels, dataset.groups
    # Strata for the gate's threshold: the label folder (e.g. the KL grade) when the keys are file paths, else
    # the binary label, so that no grade is refused more than the target allows on validation data.
    folders = label_folders([sample.key for sample in dataset.samples])
    strata = folders if folders is not None else np.asarray(labels)
    try:
        if train is not None:
            gate, info = fit_gate(features[train], features[indices], strata=strata[indices])
            fitted_on = f"the {len(train)} training images of the holdout split"
            chosen_on = f"the {len(indices)} validation images (other patients)"
        else:
            gate, info = nested_gate(features, groups, strata=strata)
            fitted_on = f"all {len(groups)} training images"
            chosen_on = "nested: each patient's distances to a gate fitted on the other patients"
        blocks["content_gate"] = write_gate(out, gate, info, fitted_on, chosen_on)
    except ValueError as error:
        LOGGER.warning("no content gate fitted: %s", error)
    y, p = labels[indices], probabilities
    try:
        slope, intercept = (round(v, 6) for v in fit_platt(y, p))
    except ValueError as error:
        LOGGER.warning("no calibration fitted: %s", error)
        return blocks
    plot = out / "evaluation" / "reliability.png"
    if train is not None and evaluated is not None:
        test_labels, test_probabilities = evaluated[0], evaluated[1]
        after = calibrate(test_probabilities, slope, intercept)
        before_ece, after_ece = (expected_calibration_error(test_labels, q) for q in (test_probabilities, after))
        plot_reliability(plot, test_labels, test_probabilities, after, "reliability on the held-out test set")
        blocks["calibration"] = calibration_block(slope, intercept, f"the {len(y)} validation images",
                                                  before_ece, after_ece, "the held-out test set (--test-data)")
    elif train is None:
        try:
            nested = nested_platt(y, p, groups[indices])
        except ValueError as error:
            LOGGER.warning("no calibration fitted: nested Platt fit failed (%s)", error)
            return blocks
        before_ece, after_ece = expected_calibration_error(y, p), expected_calibration_error(y, nested)
        plot_reliability(plot, y, p, nested, "out-of-fold; calibrated per patient by a fit on the others")
        blocks["calibration"] = calibration_block(
            slope, intercept, f"the out-of-fold predictions of all {len(y)} images", before_ece, after_ece,
            "nested: each patient calibrated by a Platt fit on the other patients' out-of-fold predictions")
    else:
        LOGGER.warning("no calibration written: without --test-data its ECE cannot be measured on other patients")
    return blocks


def _auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    from asdesk.training.metrics import binary_metrics

    value = binary_metrics(labels, probabilities, 0.5)["auc"]
    return None if value is None or np.isnan(value) else round(float(value), 4)


def build_card(args: argparse.Namespace, spec: list[dict[str, Any]], shape: tuple[int, int, int],
               points: dict[str, dict], performance: dict, protocol: dict, dataset: Dataset,
               enhancement: str) -> dict[str, Any]:
    """Assemble ``card.json`` (the SHA-256 is filled in by ``write_pack``)."""
    is_sij = args.task == "sij-stir"
    card: dict[str, Any] = {
        "schema_version": 1,
        "id": args.pack_id,
        "version": args.pack_version,
        "name": args.pack_name or args.pack_id,
        "task": args.task_text or ("active sacroiliitis: bone-marrow oedema on a coronal STIR slice of the "
                                   "sacroiliac joints" if is_sij else "binary classification"),
        "labels": {"positive": args.positive_name or ("Active inflammation (bone-marrow oedema)" if is_sij
                                                      else "positive"),
                   "negative": args.negative_name or ("No active inflammation" if is_sij else "negative")},
        "modalities": args.modalities.split(",") if args.modalities else (["MR"] if is_sij else ["", "CR", "DX"]),
        "body_parts": args.body_parts.split(",") if args.body_parts else ([] if not is_sij else
                                                                          ["SIJ", "PELVIS", "SPINE", "LSPINE", ""]),
        "architecture": args.architecture,
        "backbone_weights": str(Path(args.weights).name) if args.weights not in (None, "", "none") else "none",
        "input": {"height": shape[0], "width": shape[1], "channels": shape[2]},
        "preprocessing": spec,
        "gradcam_layer": GRADCAM_LAYERS[args.architecture],
        "operating_points": {**{name: {k: (round(float(v), 6) if k == "threshold" else
                                           (None if v is None else round(float(v), 4)))
                                       for k, v in point.items()} for name, point in points.items()},
                             "default": "balanced",
                             "chosen_on": ("out-of-fold predictions of all training patients" if
                                           protocol["split"] in CROSS_VALIDATION else
                                           "the validation patients (15% of the training folder)")},
        "performance": performance,
        "training": {
            "protocol": protocol,
            "optimizer": "Adam", "learning_rate": 1e-4,
            "fine_tune_learning_rate": getattr(args, "fine_tune_learning_rate", 1e-5),
            "fine_tune_fraction": getattr(args, "fine_tune_fraction", 0.3),
            "batch_size": args.batch_size, "max_epochs": args.epochs, "fine_tune_max_epochs": args.fine_tune_epochs,
            "early_stopping": f"validation loss, patience {args.patience}", "dropout": 0.5, "augmentation":
                "rotation ±10°, shift ±10%, zoom ±10%, brightness/contrast ±10%"
                + (", horizontal flip" if args.horizontal_flip else ", no flip"),
            "enhancement": enhancement,
            "class_weight": ("balanced: each class's loss weighted by N / (2 N_class) of the training images"
                             if getattr(args, "class_weight", "none") == "balanced" else "none"),
            **({"spatial_transformer": {
                "reference": "Jaderberg et al., Spatial Transformer Networks, NeurIPS 2015",
                "layers": "stn_* (localisation network), stn_theta (affine, initialised to the identity), "
                          "stn_output (bilinear sampler: the warped model input)",
                "training": f"after the head, backbone frozen, up to {args.stn_epochs} epochs"}}
               if getattr(args, "stn", False) else {}),
        },
        "training_data": {
            "name": args.dataset_name or str(args.data),
            "provenance": args.provenance or "",
            "licence": args.licence or "",
            "n_images": int(len(dataset.labels)),
            "n_positive": int(dataset.labels.sum()),
            "n_patients": int(len(np.unique(dataset.groups))),
        },
        "intended_use": asdesk.INTENDED_USE,
        "sha256": "0" * 64,
        "asdesk_version": asdesk.__version__,
        "date": dt.date.today().isoformat(),
    }
    if is_sij and args.study_top_k:
        threshold = points["balanced"]["threshold"]
        card["study_rule"] = {
            "kind": "top_k_mean", "k": args.study_top_k, "threshold": round(float(threshold), 6),
            "description": (f"a study is positive when the mean of its {args.study_top_k} highest slice "
                            f"probabilities is at least the balanced slice threshold ({threshold:.3f})"),
        }
    return card
