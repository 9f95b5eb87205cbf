"""``asdesk train ... --compare ResNet50,DenseNet121,MobileNetV2,VGG16``: the same task, protocol and budget for
each backbone, and one table.

Every backbone gets the training command's protocol unchanged (split, folds and repeats, input size,
preprocessing, augmentation, class weights, epochs, seed); only the architecture, its normalisation and its
weights change. Per backbone the table gives: AUC with its patient-bootstrap 95% CI; accuracy, sensitivity
and specificity at the balanced operating point with 95% CIs (cross-validation: thresholds nested, each
patient's chosen on the other patients' out-of-fold predictions; holdout: chosen on the validation patients,
measured on ``--test-data``); parameters; CPU latency per image (median of single-image ``tf.function`` calls
on this machine); wall-clock training time of the whole protocol (on a shared CPU: an upper bound).

The comparison mirrors the AS transfer-learning reference (ResNet50 / DenseNet121 / MobileNetV2) and the knee
osteoporosis reference (ResNet-50); backbones without pretrained weights here (``weights=None``) are marked.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from asdesk.core import NullProgress, ProgressSink
from asdesk.training.model import GRADCAM_LAYERS

LOGGER = logging.getLogger(__name__)


def comparison_architectures(values: Sequence[str] | None) -> list[str] | None:
    """The architectures of a ``--compare ARCH,ARCH`` value, or ``None`` when it names results files.

    Parameters
    ----------
    values : sequence of str
        ``args.compare`` (``nargs="*"``): e.g. ``["ResNet50,DenseNet121"]`` or ``["a/results.json"]``.

    Returns
    -------
    list of str or None
        Architecture names in the given order (duplicates dropped), or ``None`` if ``values`` is empty or
        holds anything that is not an architecture name.
    """
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    if not names or any(name not in GRADCAM_LAYERS for name in names):
        return None
    return list(dict.fromkeys(names))


def weights_by_architecture(text: str | None, architectures: Sequence[str]) -> dict[str, str | None]:
    """Per-architecture backbone weights from ``--weights``.

    Parameters
    ----------
    text : str or None
        ``"ARCH=FILE,ARCH=FILE"`` (backbones not named get random weights), or one value for all backbones:
        ``"imagenet"`` (downloads, connected machines only), ``"none"``, or a file (only valid with a single
        architecture, since a weights file fits one architecture).
    architectures : sequence of str

    Returns
    -------
    dict
        Architecture -> weights (``"imagenet"``, a path, or ``None``).

    Raises
    ------
    ValueError
        An unknown architecture in an ``ARCH=FILE`` entry, or one file given for several architectures.
    """
    if text in (None, "", "none"):
        return {arch: None for arch in architectures}
    if "=" in text:
        table: dict[str, str | None] = {arch: None for arch in architectures}
        for entry in text.split(","):
            arch, _, path = entry.partition("=")
            if arch.strip() not in GRADCAM_LAYERS:
                raise ValueError(f"--weights: unknown architecture {arch!r} in {entry!r}; use one of "
                                 f"{sorted(GRADCAM_LAYERS)}")
            table[arch.strip()] = path.strip() or None
        return table
    if text == "imagenet":
        return {arch: "imagenet" for arch in architectures}
    if len(architectures) > 1:
        raise ValueError(f"--weights {text}: one weights file cannot fit {len(architectures)} architectures; "
                         "give ARCH=FILE,ARCH=FILE")
    return {architectures[0]: text}


def cpu_latency_ms(model: Any, input_shape: tuple[int, int, int], repeats: int = 20) -> float:  # noqa: ANN401
    """Median CPU time of one single-image ``model(x, training=False)`` call inside a ``tf.function``.

    Parameters
    ----------
    model : keras.Model
    input_shape : tuple of int
        (h, w, 3).
    repeats : int
        Timed calls after two warm-up calls.

    Returns
    -------
    float
        Milliseconds per image (wall clock, batch 1; on a shared CPU an upper bound).
    """
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False))
    image = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, *input_shape)).astype(np.float32))
    for _ in range(2):
        call(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(call(image))
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 1)


def _metric(performance: dict[str, Any], name: str) -> dict[str, Any] | None:
    return performance.get("metrics", {}).get(name)


def run_comparison(args: argparse.Namespace, dataset: Any, architectures: Sequence[str],  # noqa: ANN401
                   progress: ProgressSink | None = None) -> dict[str, Any]:
    """Train and measure each architecture under ``args``' protocol.

    Parameters
    ----------
    args : argparse.Namespace
        ``asdesk train`` arguments (split, folds, repeats, input size, preprocessing, epochs, ...).
    dataset : asdesk.training.train.Dataset
        The loaded training data (model-input images before the backbone normalisation, shared by all).
    architectures : sequence of str

    Returns
    -------
    dict
        ``{"protocol", "budget", "rows": [...], "winner", "chosen_by"}``; each row has ``architecture``,
        ``weights``, ``pretrained``, ``auc`` / ``accuracy`` / ``sensitivity`` / ``specificity`` (``value``,
        ``ci95``), ``confusion_matrix`` ([[TN, FP], [FN, TP]] at the balanced point), ``parameters``,
        ``latency_ms``, ``training_seconds``, ``selection_auc`` (out-of-fold or validation AUC),
        ``per_repeat_auc`` (repeated k-fold).
    """
    from asdesk.preprocess import build_pipeline
    from asdesk.training.evaluate import performance_block
    from asdesk.training.metrics import binary_metrics, choose_operating_points
    from asdesk.training.presets import preprocessing_spec
    from asdesk.training.train import CROSS_VALIDATION, _config, cross_validate, cv_name, load_dataset, nested_decisions
    from asdesk.training.trainer import fit, forward

    sink = progress or NullProgress()
    weights = weights_by_architecture(args.weights, architectures)
    enhancement = args.preprocessing or ("clahe" if args.task == "sij-stir" else "none")
    split = args.split or ("lopo" if args.task == "sij-stir" else "holdout")
    test = None
    rows = []
    for arch in architectures:
        LOGGER.info("comparison: %s (weights %s)", arch, weights[arch])
        print(f"comparison: {arch} (weights: {weights[arch] or 'none, random initialisation'})", flush=True)
        config = replace(_config(args), architecture=arch, weights=weights[arch])
        spec = preprocessing_spec(args.task, enhancement, args.input_size, arch)
        pipeline = build_pipeline(spec)
        shape = pipeline.input_shape
        start = time.perf_counter()
        row: dict[str, Any] = {"architecture": arch,
                               "weights": Path(weights[arch]).name if weights[arch] not in (None, "imagenet")
                               else (weights[arch] or "none"),
                               "pretrained": weights[arch] is not None}
        if split in CROSS_VALIDATION:
            per_repeat: list[np.ndarray] = []
            oof, _, _, _, (model, _) = cross_validate(dataset, config, spec, split, sink, args.folds, args.repeats,
                                                      per_repeat)
            row["training_seconds"] = round(time.perf_counter() - start, 1)
            points = choose_operating_points(dataset.labels, oof)
            performance = performance_block(
                dataset.labels, oof, dataset.groups, points,
                decisions=nested_decisions(dataset.labels, oof, dataset.groups),
                dataset_name=args.dataset_name or str(args.data),
                protocol=f"{cv_name(split, args.folds, args.repeats)} cross-validation, thresholds nested")
            row["selection_auc"] = round(float(binary_metrics(dataset.labels, oof, 0.5)["auc"]), 4)
            row["per_repeat_auc"] = [round(float(binary_metrics(dataset.labels, r, 0.5)["auc"]), 4)
                                     for r in per_repeat]
        else:
            from asdesk.training.splits import group_holdout

            train, validation = group_holdout(dataset.labels, dataset.groups, 0.15, config.seed)
            result = fit(dataset.images, dataset.labels, train, validation, config, pipeline.normalise, shape,
                         progress=sink)
            model = result.model
            row["training_seconds"] = round(time.perf_counter() - start, 1)
            val_p = forward(model, dataset.images[validation], pipeline.normalise)
            points = choose_operating_points(dataset.labels[validation], val_p)
            row["selection_auc"] = round(float(binary_metrics(dataset.labels[validation], val_p, 0.5)["auc"]), 4)
            if not args.test_data:
                raise ValueError("a holdout comparison needs --test-data (patients none of the models saw)")
            if test is None:
                test = load_dataset(args, args.test_data, spec, sink)
            test_p = forward(model, test.images, pipeline.normalise)
            performance = performance_block(test.labels, test_p, test.groups, points,
                                            dataset_name=args.test_dataset_name or str(args.test_data),
                                            protocol="held-out test set; threshold chosen on validation patients")
        for name in ("auc", "accuracy", "sensitivity", "specificity"):
            row[name] = _metric(performance, name)
        balanced = performance.get("detail", {}).get("at_operating_points", {}).get("balanced", {})
        row["confusion_matrix"] = balanced.get("confusion_matrix")
        row["parameters"] = int(model.count_params())
        row["latency_ms"] = cpu_latency_ms(model, shape)
        row["epochs"] = {"head_max": config.head_epochs, "fine_tune_max": config.fine_tune_epochs,
                         **({"stn_max": config.stn_epochs} if config.stn else {})}
        rows.append(row)
        print(f"  {arch}: AUC {row['auc']['value']} {row['auc']['ci95']}, selection AUC {row['selection_auc']}, "
              f"{row['training_seconds']} s", flush=True)
        del model
        import keras

        keras.backend.clear_session()
    winner = max(rows, key=lambda r: r["selection_auc"])["architecture"]
    return {
        "task": args.task_text or args.pack_id,
        "data": args.dataset_name or str(args.data),
        "n_images": int(len(dataset.labels)), "n_patients": int(len(np.unique(dataset.groups))),
        "n_positive": int(dataset.labels.sum()),
        "protocol": (f"{cv_name(split, args.folds, args.repeats)} cross-validation; AUC from the out-of-fold "
                     "probabilities (mean over repeats) with a patient-bootstrap 95% CI; accuracy, sensitivity, "
                     "specificity at the balanced (Youden) point, thresholds nested (each patient's chosen on the "
                     "other patients)" if split in CROSS_VALIDATION else
                     "holdout: 15% of the training patients validate (early stopping, threshold); metrics on "
                     f"--test-data ({args.test_dataset_name or args.test_data}), patients none of the models saw"),
        "budget": {"input_size": args.input_size, "preprocessing": enhancement,
                   "head_epochs_max": args.epochs, "fine_tune_epochs_max": args.fine_tune_epochs,
                   "augment_copies": args.augment_copies, "horizontal_flip": bool(args.horizontal_flip),
                   "class_weight": args.class_weight, "patience": args.patience,
                   "spatial_transformer": bool(getattr(args, "stn", False)), "seed": args.seed,
                   "training": ("frozen backbone, head (Dropout 0.5 -> Dense) trained on cached pooled features "
                                f"of each image and {args.augment_copies} augmented copies"
                                + (f", then up to {args.fine_tune_epochs} fine-tuning epochs" if args.fine_tune_epochs
                                   else "")
                                + (f", then up to {args.stn_epochs} Spatial Transformer epochs"
                                   if getattr(args, "stn", False) else ""))},
        "rows": rows,
        "winner": winner,
        "chosen_by": "highest " + ("out-of-fold AUC" if split in CROSS_VALIDATION else "validation-patient AUC"),
        "machine": "CPU, 2 cores shared with other jobs (latency and time are upper bounds)",
    }


def _ci(metric: dict[str, Any] | None, digits: int = 3) -> str:
    if not metric or metric.get("value") is None:
        return "n/a"
    low, high = metric.get("ci95") or (None, None)
    value = f"{metric['value']:.{digits}f}"
    return value if low is None else f"{value} ({low:.{digits}f}-{high:.{digits}f})"


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown section (a table plus its protocol and budget)."""
    lines = [f"**{result['task']}** on {result['data']} ({result['n_images']} images, {result['n_patients']} "
             f"patients, {result['n_positive']} positive). Protocol: {result['protocol']}. Budget: "
             f"{result['budget']['training']}; input {result['budget']['input_size']} px, preprocessing "
             f"{result['budget']['preprocessing']}, class weights {result['budget']['class_weight']}, "
             f"horizontal flip {'yes' if result['budget']['horizontal_flip'] else 'no'}, seed "
             f"{result['budget']['seed']}. {result['machine']}.", "",
             "| backbone | weights | AUC (95% CI) | accuracy | sensitivity | specificity | confusion [[TN, FP], "
             "[FN, TP]] | parameters | CPU ms/image | training time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        weights = row["weights"] if row["pretrained"] else "**none: weights=None, random initialisation**"
        lines.append(f"| {row['architecture']}{' (chosen)' if row['architecture'] == result['winner'] else ''} | "
                     f"{weights} | {_ci(row['auc'])} | {_ci(row['accuracy'])} | {_ci(row['sensitivity'])} | "
                     f"{_ci(row['specificity'])} | {row['confusion_matrix']} | {row['parameters']:,} | "
                     f"{row['latency_ms']} | {row['training_seconds'] / 60:.1f} min |")
    lines.append("")
    lines.append(f"Chosen: {result['winner']} ({result['chosen_by']}: "
                 + ", ".join(f"{r['architecture']} {r['selection_auc']}" for r in result["rows"]) + ").")
    repeats = [r for r in result["rows"] if r.get("per_repeat_auc")]
    if repeats:
        lines.append("Per-repeat out-of-fold AUC: " + "; ".join(
            f"{r['architecture']} {min(r['per_repeat_auc']):.3f}-{max(r['per_repeat_auc']):.3f}" for r in repeats)
            + ".")
    return "\n".join(lines) + "\n"


def write_comparison(out: str | Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``out``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "comparison.json", out / "comparison.md"
    json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    md_path.write_text(markdown_table(result), encoding="utf-8")
    return md_path, json_path
