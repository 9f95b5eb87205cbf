"""Fit a pack's content gate (:class:`asdesk.inference.content_gate.ContentGate`) and write it into the pack.

The gate is a PPCA Mahalanobis distance in the model's pooled-feature space (Tipping & Bishop 1999; Lee et
al., NeurIPS 2018) fitted on the training patients' images; its threshold is the distance that a target
fraction (95%) of images of patients *not* used to fit it stay under.

``python -m asdesk.training.gatefit PACK_DIR DATA ...`` refits a shipped pack (see ``--help``); ``asdesk
train`` calls :func:`fit_gate` for every new pack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import secrets
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from asdesk.core import NullProgress, ProgressSink
from asdesk.inference.content_gate import KNN_METHOD, METHOD, ContentGate, KnnGate, feature_model
from asdesk.preprocess.pipeline import Normalise

LOGGER = logging.getLogger(__name__)
FEATURE_LAYER = "head_pool"
TARGET_ACCEPTANCE = 0.95
COMPONENT_CANDIDATES = (4, 8, 16, 32, 64, 128, 256, 512)
GATE_FILE = "content_gate.npz"
REFERENCE = "Lee et al., NeurIPS 2018; Tipping & Bishop 1999"
KNN_REFERENCE = "Sun, Ming, Zhu & Li, Out-of-distribution detection with deep nearest neighbors, ICML 2022"
KNN_NEIGHBOURS = 50


def extract_features(model: Any, images: np.ndarray, normalise: Normalise,  # noqa: ANN401
                     layer: str = FEATURE_LAYER, batch_size: int = 32,
                     progress: ProgressSink | None = None) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pooled features and probabilities of model-input images, as the runtime computes them.

    Parameters
    ----------
    model : keras.Model
        The pack's classifier.
    images : numpy.ndarray
        float32 (N, h, w) in [0, 1]: ``pipeline(record).image`` of each image.
    normalise : Normalise
        The pipeline's normalisation (``pipeline(record).tensor == normalise(image)``).
    layer : str
        Feature layer name.
    batch_size : int

    Returns
    -------
    features : numpy.ndarray
        float32 (N, D).
    probabilities : numpy.ndarray
        float32 (N,): the model's output.
    """
    import tensorflow as tf

    both = feature_model(model, layer)
    call = tf.function(lambda x: both(x, training=False), reduce_retracing=True)
    sink = progress or NullProgress()
    features, probabilities = [], []
    sink.start(len(images), "features")
    try:
        for start in range(0, len(images), batch_size):
            batch = np.stack([normalise(image) for image in images[start:start + batch_size]])
            pooled, output = call(tf.constant(batch, dtype=tf.float32))
            features.append(np.asarray(pooled, dtype=np.float32))
            probabilities.append(np.asarray(output, dtype=np.float32).reshape(len(batch)))
            sink.advance(len(batch))
    finally:
        sink.finish()
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return np.concatenate(features), np.concatenate(probabilities)


def fit_ppca(features: ArrayLike, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Maximum-likelihood probabilistic PCA (Tipping & Bishop 1999) through scikit-learn's ``PCA``.

    Parameters
    ----------
    features : array_like
        float (N, D) training features, N >= 2.
    n_components : int
        k, 1 <= k < min(N, D).

    Returns
    -------
    mean : numpy.ndarray
        float64 (D,).
    components : numpy.ndarray
        float64 (k, D).
    explained_variance : numpy.ndarray
        float64 (k,).
    noise_variance : float
        Mean variance of the discarded directions (``PCA.noise_variance_``), floored at 1e-12 times the
        largest variance.

    Raises
    ------
    ValueError
        ``n_components`` out of range.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64)
    if not 1 <= n_components < min(x.shape):
        raise ValueError(f"n_components must be in [1, {min(x.shape) - 1}] for features {x.shape}, "
                         f"got {n_components}")
    pca = PCA(n_components=n_components, svd_solver="full").fit(x)
    variance = np.asarray(pca.explained_variance_, dtype=np.float64)
    floor = 1e-12 * float(variance.max())
    return (pca.mean_.astype(np.float64), pca.components_.astype(np.float64), np.maximum(variance, floor),
            max(float(pca.noise_variance_), floor))


def ppca_log_likelihood(train: ArrayLike, held_out: ArrayLike, n_components: int) -> float:
    """Mean log-likelihood per image of ``held_out`` under the PPCA model fitted on ``train`` (nats).

    Used to choose k on validation images (no out-of-distribution image is involved). A k at which the
    residual variance is zero (features of lower rank than k, e.g. many channels that never fire) has no
    proper likelihood: ``-inf``, so it is never chosen.
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, svd_solver="full").fit(np.asarray(train, dtype=np.float64))
    try:
        return float(pca.score(np.asarray(held_out, dtype=np.float64)))
    except np.linalg.LinAlgError:
        return float("-inf")


def acceptance_threshold(distances: ArrayLike, target: float = TARGET_ACCEPTANCE) -> float:
    """The smallest observed distance that at least ``target`` of ``distances`` are at or under.

    Parameters
    ----------
    distances : array_like
        (M,) distances of in-distribution images not used to fit the gate.
    target : float
        In (0, 1].

    Returns
    -------
    float
        Threshold ``t`` with ``mean(distances <= t) >= target``.
    """
    d = np.sort(np.asarray(distances, dtype=np.float64).ravel())
    if d.size == 0:
        raise ValueError("need at least one validation distance to choose a threshold")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    index = int(np.ceil(target * d.size)) - 1
    return float(d[min(max(index, 0), d.size - 1)])


def label_folders(keys: Sequence[str]) -> NDArray[np.str_] | None:
    """The label folder (e.g. the KL grade) of each image, from keys that are file paths; ``None`` when they are
    not (SIJ slices are keyed ``<patient>#<slice>``), so callers stratify by the label instead."""
    folders = [Path(str(key)).parent.name for key in keys]
    return np.array(folders) if folders and all(folders) else None


def stratified_threshold(distances: ArrayLike, strata: ArrayLike | None,
                         target: float = TARGET_ACCEPTANCE) -> tuple[float, dict[str, float]]:
    """A threshold that at least ``target`` of the validation images of *every* stratum pass.

    A density gate fitted on all training images sees little of the rarer, more severe disease (KL 4 knees are
    3% of the training folder) and refuses it more often: with one threshold for all, held-out KL 4 knees were
    refused 3 times as often as KL 0-3 ones. Taking the largest of the per-stratum thresholds (strata = the
    grade or label of each validation image) keeps the acceptance of each grade at or above ``target``.

    Parameters
    ----------
    distances : array_like
        (M,) validation distances.
    strata : array_like or None
        (M,) a grade or label per image; ``None``: one stratum.
    target : float

    Returns
    -------
    threshold : float
    per_stratum : dict
        Stratum -> its own threshold.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    if strata is None:
        return acceptance_threshold(d, target), {}
    s = np.asarray(strata).astype(str).ravel()
    if s.shape != d.shape:
        raise ValueError(f"strata {s.shape} and distances {d.shape} differ in length")
    per = {str(value): acceptance_threshold(d[s == value], target) for value in sorted(set(s.tolist()))}
    return max(per.values()), per


def _stratified_threshold_info(distances: np.ndarray, strata: ArrayLike | None, target: float,
                               info: dict[str, Any]) -> float:
    """:func:`stratified_threshold`, recording each stratum's threshold and acceptance in ``info``."""
    threshold, per_stratum = stratified_threshold(distances, strata, target)
    if per_stratum:
        labels = np.asarray(strata).astype(str)
        info["per_stratum_threshold"] = {k: round(v, 4) for k, v in per_stratum.items()}
        info["per_stratum_acceptance"] = {k: round(float(np.mean(distances[labels == k] <= threshold)), 4)
                                          for k in per_stratum}
    return threshold


def choose_n_components(train: ArrayLike, validation: ArrayLike,
                        candidates: Sequence[int] = COMPONENT_CANDIDATES) -> tuple[int, dict[int, float]]:
    """k with the highest held-out PPCA log-likelihood of the validation features.

    Returns
    -------
    k : int
    scores : dict
        k -> mean validation log-likelihood (nats per image).
    """
    x = np.asarray(train, dtype=np.float64)
    usable = [k for k in candidates if 1 <= k < min(x.shape)]
    if not usable:
        raise ValueError(f"no candidate k fits features {x.shape}")
    scores = {k: ppca_log_likelihood(x, validation, k) for k in usable}
    return max(scores, key=scores.__getitem__), scores


def gate_from_features(train: ArrayLike, n_components: int, threshold: float = 0.0,
                       feature_layer: str = FEATURE_LAYER) -> ContentGate:
    """Fit the PPCA arrays on ``train`` features (N, D) and wrap them with ``threshold``."""
    mean, components, variance, noise = fit_ppca(train, n_components)
    return ContentGate(METHOD, feature_layer, float(threshold), mean, components, variance, noise)


def fit_gate(train: ArrayLike, validation: ArrayLike, n_components: int | None = None,
             target: float = TARGET_ACCEPTANCE, feature_layer: str = FEATURE_LAYER,
             strata: ArrayLike | None = None) -> tuple[ContentGate, dict[str, Any]]:
    """Fit on training features and choose the threshold on validation features (other patients).

    Parameters
    ----------
    train, validation : array_like
        float (N, D) and (M, D) pooled features; no patient in both.
    n_components : int, optional
        k; chosen by :func:`choose_n_components` on ``validation`` when ``None``.
    target : float
        Fraction of validation images that must pass.
    strata : array_like, optional
        (M,) grade or label of each validation image: the threshold passes ``target`` of every stratum
        (:func:`stratified_threshold`).

    Returns
    -------
    gate : ContentGate
    info : dict
        ``n_components``, ``validation_acceptance`` (measured), ``target_acceptance`` and, when k was chosen,
        ``n_components_log_likelihood``; with strata, ``per_stratum_threshold`` and
        ``per_stratum_acceptance``.
    """
    info: dict[str, Any] = {}
    if n_components is None:
        n_components, scores = choose_n_components(train, validation)
        info["n_components_log_likelihood"] = {str(k): round(v, 2) for k, v in scores.items()}
    gate = gate_from_features(train, n_components, 0.0, feature_layer)
    distances = gate.distance(validation)
    threshold = _stratified_threshold_info(distances, strata, target, info)
    gate = ContentGate(METHOD, feature_layer, threshold, gate.mean, gate.components, gate.explained_variance,
                       gate.noise_variance)
    info.update({"n_components": int(n_components), "target_acceptance": float(target),
                 "validation_acceptance": round(float(np.mean(distances <= threshold)), 4),
                 "n_validation_images": int(len(distances))})
    return gate, info


def nested_gate(features: ArrayLike, groups: ArrayLike, fit_mask: ArrayLike | None = None,
                n_components: int | None = None, target: float = TARGET_ACCEPTANCE,
                feature_layer: str = FEATURE_LAYER, strata: ArrayLike | None = None
                ) -> tuple[ContentGate, dict[str, Any]]:
    """Leave-one-patient-out gate: threshold from each patient's distances to a gate fitted on the others.

    For each patient p, a gate is fitted on the other patients' images and p's distances are recorded;
    the threshold is the one that ``target`` of those held-out distances pass, and the shipped gate is fitted
    on all images (the same k).

    Parameters
    ----------
    features : array_like
        float (N, D).
    groups : array_like
        (N,) patient ids.
    fit_mask : array_like, optional
        bool (N,): images allowed in the fits (default all).
    n_components : int, optional
        k; when ``None`` chosen by the mean held-out PPCA log-likelihood over the folds.
    strata : array_like, optional
        (N,) label of each image (e.g. inflamed / not / unlabelled): the threshold passes ``target`` of the
        held-out images of every stratum (:func:`stratified_threshold`).

    Returns
    -------
    gate : ContentGate
    info : dict
        As :func:`fit_gate`, plus ``per_patient_acceptance``.
    """
    x = np.asarray(features, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    usable = np.ones(len(g), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    patients = sorted(set(g.tolist()))
    info: dict[str, Any] = {}
    if n_components is None:
        candidates = [k for k in COMPONENT_CANDIDATES if k < min(int(usable.sum()) - max(
            int(np.sum(g == p)) for p in patients), x.shape[1])]
        scores = {k: float(np.mean([ppca_log_likelihood(x[usable & (g != p)], x[g == p], k) for p in patients]))
                  for k in candidates}
        n_components = max(scores, key=scores.__getitem__)
        info["n_components_log_likelihood"] = {str(k): (round(v, 2) if np.isfinite(v) else None)
                                               for k, v in scores.items()}
    held = np.zeros(len(g))
    for patient in patients:
        gate = gate_from_features(x[usable & (g != patient)], n_components, 0.0, feature_layer)
        held[g == patient] = gate.distance(x[g == patient])
    threshold = _stratified_threshold_info(held, strata, target, info)
    final = gate_from_features(x[usable], n_components, threshold, feature_layer)
    info.update({"n_components": int(n_components), "target_acceptance": float(target),
                 "validation_acceptance": round(float(np.mean(held <= threshold)), 4),
                 "n_validation_images": int(len(held)),
                 "per_patient_acceptance": {p: round(float(np.mean(held[g == p] <= threshold)), 4)
                                            for p in patients}})
    return final, info


def hash_patient(salt: str, patient: str) -> str:
    """``sha256(salt + patient_id)`` as hex (UTF-8)."""
    return hashlib.sha256((salt + str(patient)).encode("utf-8")).hexdigest()


def training_patients_block(patients: Iterable[str], salt: str | None = None) -> dict[str, Any]:
    """The card's ``training_patients``: a random salt and the sorted salted hashes of each patient id."""
    salt = salt or secrets.token_hex(16)
    return {"salt": salt, "sha256": sorted({hash_patient(salt, p) for p in patients})}


def fit_knn_gate(train: ArrayLike, validation: ArrayLike, k: int = KNN_NEIGHBOURS,
                 target: float = TARGET_ACCEPTANCE, feature_layer: str = FEATURE_LAYER,
                 strata: ArrayLike | None = None) -> tuple[KnnGate, dict[str, Any]]:
    """A k-NN gate (:class:`~asdesk.inference.content_gate.KnnGate`) on the training features, its threshold
    chosen on validation features (other patients) as for :func:`fit_gate`.

    Returns
    -------
    gate : KnnGate
    info : dict
        ``k``, ``validation_acceptance``, ``target_acceptance``, ``n_validation_images`` and, with strata,
        ``per_stratum_threshold`` and ``per_stratum_acceptance``.
    """
    gate = KnnGate.fit(train, k, 0.0, feature_layer)
    distances = gate.distance(validation)
    info: dict[str, Any] = {}
    threshold = _stratified_threshold_info(distances, strata, target, info)
    gate = KnnGate(KNN_METHOD, feature_layer, threshold, gate.reference, gate.k)
    info.update({"k": int(k), "target_acceptance": float(target),
                 "validation_acceptance": round(float(np.mean(distances <= threshold)), 4),
                 "n_validation_images": int(len(distances))})
    return gate, info


def compare_gate_methods(train: ArrayLike, grades: ArrayLike, groups: ArrayLike, validation: ArrayLike,
                         validation_grades: ArrayLike, folds: int = 5, seed: int = 0,
                         target: float = TARGET_ACCEPTANCE) -> dict[str, dict[str, float]]:
    """How each gate method treats patients it was not fitted on, per grade, using training data only.

    The training images are split into ``folds`` groups of patients (stratified by grade); each method is
    fitted on the other folds, its threshold chosen on ``validation`` as the shipped gate's is, and the held-out
    fold's acceptance is counted per grade. The test set takes no part.

    Parameters
    ----------
    train : array_like
        float (N, D) features of the training images.
    grades, groups : array_like
        (N,) grade (label folder) and patient of each training image.
    validation, validation_grades : array_like
        (M, D) features and (M,) grades of the validation images.

    Returns
    -------
    dict
        Method name (``"ppca k=<k>"``, ``"knn k=<k>"``) -> grade -> acceptance of held-out training patients,
        plus ``"worst"`` (the lowest over grades).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    x, g, p = np.asarray(train), np.asarray(grades).astype(str), np.asarray(groups).astype(str)
    v, vg = np.asarray(validation), np.asarray(validation_grades).astype(str)
    largest = min(x.shape[1], len(x) * (folds - 1) // folds) - 1  # PPCA needs k < D and k < images
    fitters: dict[str, Any] = {f"ppca k={k}": (lambda a, k=k: fit_gate(a, v, k, target, strata=vg)[0])
                               for k in sorted({min(256, largest), min(512, largest)})}
    neighbours = min(KNN_NEIGHBOURS, len(x) * (folds - 1) // folds)
    fitters[f"knn k={neighbours}"] = lambda a: fit_knn_gate(a, v, neighbours, target, strata=vg)[0]
    passed: dict[str, dict[str, list[bool]]] = {name: {} for name in fitters}
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fitting, held in splitter.split(x, g, p):
        for name, fit in fitters.items():
            gate = fit(x[fitting])
            accepted = gate.accepts(x[held])
            for grade in np.unique(g[held]):
                passed[name].setdefault(str(grade), []).extend(accepted[g[held] == grade].tolist())
    table: dict[str, dict[str, float]] = {}
    for name, per_grade in passed.items():
        rates = {grade: round(float(np.mean(values)), 4) for grade, values in sorted(per_grade.items())}
        table[name] = {**rates, "worst": min(rates.values())}
    return table


def write_gate(pack_dir: str | Path, gate: ContentGate | KnnGate, info: dict[str, Any], fitted_on: str,
               threshold_chosen_on: str) -> dict[str, Any]:
    """Save ``content_gate.npz`` into the pack and return the card's ``content_gate`` block.

    The caller stores the block in ``card.json`` (the model file and its hash are untouched).
    """
    from asdesk.inference.pack import sha256_file

    path = Path(pack_dir) / GATE_FILE
    gate.save(path)
    size = ({"k": gate.k, "n_reference_images": gate.n_components} if isinstance(gate, KnnGate)
            else {"n_components": gate.n_components})
    block = {"file": GATE_FILE, "sha256": sha256_file(path), "method": gate.method,
             "feature_layer": gate.feature_layer, "threshold": round(gate.threshold, 6),
             **size, "fitted_on": fitted_on, "threshold_chosen_on": threshold_chosen_on,
             "validation_acceptance": info["validation_acceptance"],
             "target_acceptance": info["target_acceptance"],
             "reference": KNN_REFERENCE if isinstance(gate, KnnGate) else REFERENCE}
    for key in ("per_stratum_threshold", "per_stratum_acceptance"):
        if key in info:
            block[key] = info[key]
    if "n_components_log_likelihood" in info:
        block["n_components_chosen_by"] = ("highest mean PPCA log-likelihood of the held-out images "
                                           "(nats per image), among " + ", ".join(info["n_components_log_likelihood"]))
        block["n_components_log_likelihood"] = info["n_components_log_likelihood"]
    # the threshold is rounded in the card; the gate file holds no threshold, so the card's value is the one used
    return block


def update_card(pack_dir: str | Path, **blocks: Any) -> Path:  # noqa: ANN401
    """Set top-level ``blocks`` in ``<pack_dir>/card.json`` (keeping the other fields and their order)."""
    path = Path(pack_dir) / "card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    card.update(blocks)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m asdesk.training.gatefit``: refit the shipped packs' gates and calibration (see --help)."""
    from asdesk.training import packfit

    parser = argparse.ArgumentParser(prog="python -m asdesk.training.gatefit", description=__doc__.split("\n")[0])
    packfit.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return packfit.run(args)


if __name__ == "__main__":
    sys.exit(main())
