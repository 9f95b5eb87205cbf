"""The inference engine: one model pack, its preprocessing, classification, Grad-CAM and overlays.

``model.predict`` costs ~1.3 s for one image against ~0.18 s for a ``tf.function`` call of
``model(x, training=False)`` (DESIGN.md), and is not thread-safe: the engine never uses it. One engine is
owned by one worker thread; it holds no global state besides its loaded model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from asdesk.core import AnalysisResult, CancelToken, CardError, ImageRecord, Prediction
from asdesk.inference.card import StudyRule
from asdesk.inference.gradcam import GradCam, upsample_and_normalise
from asdesk.inference.overlay import overlay_rgba
from asdesk.inference.pack import ModelPack
from asdesk.inference.runtime import configure_device, input_fits, load_model, model_input_shape

LOGGER = logging.getLogger(__name__)

STUDY_OPERATING_POINT = "study"


def _milliseconds(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _decision(probability: float, name: str, threshold: float, positive_label: str,
              negative_label: str) -> Prediction:
    value = float(probability)
    if not math.isfinite(value):
        raise ValueError(f"the model produced a non-finite probability ({value}); the model file may be "
                         "damaged: reinstall the pack")
    positive = value >= threshold
    return Prediction(probability=value, threshold=float(threshold), operating_point=name, positive=positive,
                      finding=positive_label if positive else negative_label)


def study_result(results: Sequence[AnalysisResult] | Sequence[float], rule: StudyRule,
                 positive_label: str | None = None,
                 negative_label: str | None = None) -> tuple[float, Prediction]:
    """The study-level score and finding from slice results (the card's ``study_rule``).

    ``top_k_mean``: the study score is the mean of the ``k`` highest slice probabilities (all slices when
    there are fewer than ``k``); the study is positive when the score is at or above ``rule.threshold``.

    Parameters
    ----------
    results : sequence of AnalysisResult or of float
        The slices of one study, or their positive-class probabilities in [0, 1].
    rule : StudyRule
        From ``card.study_rule``.
    positive_label, negative_label : str, optional
        Finding names; default those of the results' :class:`~asdesk.core.ModelInfo` (or
        ``"positive"``/``"negative"`` for plain probabilities).

    Returns
    -------
    study_probability : float
        The study score, in [0, 1].
    prediction : Prediction
        With ``threshold=rule.threshold`` and ``operating_point="study"``.

    Raises
    ------
    ValueError
        No slices, or a rule kind other than ``"top_k_mean"``.
    """
    if len(results) == 0:
        raise ValueError("a study result needs at least one analysed slice")
    if rule.kind != "top_k_mean" or rule.k < 1:
        raise ValueError(f"unsupported study rule {rule.kind!r} (k={rule.k}); "
                         "asdesk knows 'top_k_mean' with k >= 1")
    first = results[0]
    if isinstance(first, AnalysisResult):
        values = [r.prediction.probability for r in results]  # type: ignore[union-attr]
        positive_label = positive_label or first.model.positive_label
        negative_label = negative_label or first.model.negative_label
    else:
        values = [float(v) for v in results]  # type: ignore[arg-type]
    top = sorted(values, reverse=True)[:rule.k]
    score = float(np.mean(np.asarray(top, dtype=np.float64)))
    prediction = _decision(score, STUDY_OPERATING_POINT, rule.threshold, positive_label or "positive",
                           negative_label or "negative")
    return score, prediction


class InferenceEngine:
    """Classify images with one model pack, with Grad-CAM heat maps and overlays.

    The model is loaded on first use (or by :meth:`load`): the pack's SHA-256 is checked, the device is
    configured and logged, and the classification ``tf.function`` is built. Use an engine from one thread
    (the model-owner worker); creating it is cheap and does not import TensorFlow.

    Parameters
    ----------
    pack : ModelPack
        The model pack.
    batch_size : int
        Images per forward pass, >= 1.
    verify_hash : bool
        Check ``model.keras`` against the card's SHA-256 before loading it (recommended; costs a read of
        the file).

    Attributes
    ----------
    pack : ModelPack
    card : ModelCard
    pipeline : asdesk.preprocess.Pipeline
        The card's preprocessing, the one training used.
    info : ModelInfo
        Pack id, version and hash, copied into every result.
    device : str
        Where the model runs (``"CPU (2 threads)"``, ``"GPU:0 (...)"``); empty until loaded.
    batch_size : int
    """

    def __init__(self, pack: ModelPack, batch_size: int = 16, verify_hash: bool = True) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.pack = pack
        self.card = pack.card
        self.pipeline = self.card.pipeline()
        self.info = pack.model_info()  # with the origin (bundled / user-installed)
        self.batch_size = int(batch_size)
        self.verify_hash = verify_hash
        self.device = ""
        self._model: Any = None
        self._classify: Any = None
        self._gradcam: GradCam | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    @property
    def model(self) -> Any:  # noqa: ANN401
        """The loaded ``keras.Model`` (loads it on first access)."""
        self.load()
        return self._model

    def load(self) -> InferenceEngine:
        """Load the model now (idempotent).

        Returns
        -------
        InferenceEngine
            ``self``.

        Raises
        ------
        ModelHashMismatchError
            ``model.keras`` differs from the card's SHA-256 (``verify_hash``).
        CardError
            The model cannot be loaded, or its input shape differs from the card's.
        """
        with self._lock:
            if self._model is not None:
                return self
            start = time.perf_counter()
            if self.verify_hash:
                self.pack.verify_hash()
            self.device = configure_device()
            model = load_model(self.pack.model_path)
            shape = model_input_shape(model)
            if not input_fits(model, self.card.input_shape):
                raise CardError(f"model pack {self.card.id!r}: the card says input {self.card.input_shape} "
                                f"but model.keras expects {shape}; the pack is inconsistent: reinstall it")
            import tensorflow as tf

            def classify(images: Any) -> Any:  # noqa: ANN401
                return model(images, training=False)

            self._classify = tf.function(classify, reduce_retracing=True)
            self._model = model
            LOGGER.info("loaded model pack %s version %s (sha256 %s) on %s in %.0f ms", self.card.id,
                        self.card.version, self.card.sha256[:12], self.device, _milliseconds(start))
            return self

    def gradcam(self) -> GradCam:
        """The pack's :class:`GradCam` on ``card.gradcam_layer`` (built once).

        Raises
        ------
        ValueError
            The layer is missing or inside a nested sub-model.
        """
        with self._lock:
            if self._gradcam is None:
                self._gradcam = GradCam(self.model, self.card.gradcam_layer)
            return self._gradcam

    def _check_batch(self, tensors: np.ndarray) -> np.ndarray:
        batch = np.asarray(tensors, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != tuple(self.card.input_shape):
            expected = ", ".join(map(str, self.card.input_shape))
            raise ValueError(f"model {self.card.id!r} takes a batch (N, {expected}) of preprocessed tensors; "
                             f"got shape {batch.shape}. Use engine.pipeline(record).tensor for each image")
        return batch

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        output = self._classify(tf.convert_to_tensor(batch, dtype=tf.float32))
        return np.asarray(output, dtype=np.float32).reshape(-1)

    def probabilities(self, tensors: np.ndarray) -> np.ndarray:
        """Positive-class probabilities of preprocessed images.

        Parameters
        ----------
        tensors : numpy.ndarray
            float32 (N, h, w, 3): :attr:`ModelInput.tensor` of each image, stacked, at the card's input
            size.

        Returns
        -------
        numpy.ndarray
            float32 (N,) in [0, 1], computed in chunks of ``batch_size`` by ``model(x, training=False)``
            inside a ``tf.function``.

        Raises
        ------
        ValueError
            Wrong shape.
        """
        batch = self._check_batch(tensors)
        if batch.shape[0] == 0:
            return np.zeros((0,), dtype=np.float32)
        self.load()
        parts = [self._forward(batch[start:start + self.batch_size])
                 for start in range(0, batch.shape[0], self.batch_size)]
        return np.concatenate(parts).astype(np.float32)

    def decide(self, probability: float, operating_point: str | None = None) -> Prediction:
        """Turn a probability into a finding at one of the card's operating points.

        Parameters
        ----------
        probability : float
            Positive-class probability, in [0, 1].
        operating_point : str, optional
            ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's.

        Returns
        -------
        Prediction
            Positive when ``probability >= threshold``.

        Raises
        ------
        CardError
            The card does not define that operating point.
        ValueError
            The probability is NaN or infinite.
        """
        name, threshold = self.card.threshold(operating_point)
        return _decision(probability, name, threshold, self.card.positive_label, self.card.negative_label)

    def analyze(self, records: Sequence[ImageRecord], operating_point: str | None = None,
                gradcam: bool = True, cancel: CancelToken | None = None) -> list[AnalysisResult]:
        """Preprocess, classify and (optionally) explain images.

        All images go through the card's pipeline, then through the model in batches of ``batch_size``;
        with ``gradcam`` each batch is one forward + backward pass that gives both the probabilities and the
        Grad-CAM maps (:class:`GradCam`). Each map is drawn back onto its image's grid
        (:meth:`asdesk.preprocess.Geometry.to_image`) and turned into an RGBA overlay
        (:func:`overlay_rgba`).

        Parameters
        ----------
        records : sequence of ImageRecord
            Images as read by :mod:`asdesk.io`.
        operating_point : str, optional
            See :meth:`decide`.
        gradcam : bool
            Compute heat maps and overlays.
        cancel : CancelToken, optional
            Checked before each image's preprocessing and before each batch.

        Returns
        -------
        list of AnalysisResult
            One per record, in order. ``model_input`` is :attr:`ModelInput.image` (float32 (h, w) in [0, 1]);
            ``heatmap`` float32 ``record.shape`` in [0, 1] and ``overlay`` uint8 (H, W, 4), or ``None``
            without Grad-CAM. ``timings_ms`` per image: ``preprocess`` (the pipeline), ``classify`` (this
            image's share of the batched model pass; with Grad-CAM that pass includes the backward pass) and
            ``gradcam`` (map upsampling, mapping back to the image and the overlay; 0 without Grad-CAM).

        Raises
        ------
        CancelledError
            ``cancel`` was set.
        CardError
            Unknown operating point, or a pack that cannot be loaded.
        ModelHashMismatchError
            The model file differs from its card.
        PreprocessError
            An image the pipeline cannot process.
        ValueError
            ``gradcam`` is requested and the card's Grad-CAM layer is missing or inside a nested sub-model.
        """
        name, threshold = self.card.threshold(operating_point)
        records = list(records)
        if not records:
            return []
        self.load()
        inputs = []
        preprocess_ms = []
        for record in records:
            if cancel is not None:
                cancel.raise_if_cancelled()
            start = time.perf_counter()
            inputs.append(self.pipeline(record))
            preprocess_ms.append(_milliseconds(start))
        count = len(inputs)
        probabilities = np.zeros(count, dtype=np.float32)
        classify_ms = np.zeros(count, dtype=np.float64)
        cams: list[np.ndarray | None] = [None] * count
        explainer = self.gradcam() if gradcam else None
        for first in range(0, count, self.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = slice(first, min(first + self.batch_size, count))
            batch = self._check_batch(np.stack([item.tensor for item in inputs[chunk]]))
            start = time.perf_counter()
            if explainer is not None:
                values, raw_maps = explainer.raw(batch)
                cams[chunk] = list(raw_maps)
            else:
                values = self._forward(batch)
            probabilities[chunk] = values
            classify_ms[chunk] = _milliseconds(start) / batch.shape[0]
        results = []
        for index, (record, model_input) in enumerate(zip(records, inputs, strict=True)):
            start = time.perf_counter()
            heatmap = overlay = None
            raw_map = cams[index]
            if raw_map is not None:
                on_input = upsample_and_normalise(raw_map[None], model_input.image.shape[:2])[0]
                heatmap = np.clip(model_input.geometry.to_image(on_input), 0.0, 1.0).astype(np.float32)
                overlay = overlay_rgba(heatmap)
            gradcam_ms = _milliseconds(start) if raw_map is not None else 0.0
            prediction = _decision(float(probabilities[index]), name, threshold, self.card.positive_label,
                                   self.card.negative_label)
            results.append(AnalysisResult(
                record=record, model_input=model_input.image, prediction=prediction, model=self.info,
                heatmap=heatmap, overlay=overlay,
                timings_ms={"preprocess": preprocess_ms[index], "classify": float(classify_ms[index]),
                            "gradcam": gradcam_ms}))
        LOGGER.debug("pack %s analysed %d image(s), Grad-CAM %s", self.card.id, count, bool(gradcam))
        return results

    def study_result(self, results: Sequence[AnalysisResult] | Sequence[float],
                     rule: StudyRule | None = None) -> tuple[float, Prediction]:
        """The study-level result with the card's rule (see :func:`study_result`).

        Raises
        ------
        CardError
            ``rule`` is not given and the card has no ``study_rule``.
        ValueError
            No slices.
        """
        rule = rule or self.card.study_rule
        if rule is None:
            raise CardError(f"model pack {self.card.id!r} defines no study_rule; it gives per-image results "
                            "only")
        return study_result(results, rule, self.card.positive_label, self.card.negative_label)
