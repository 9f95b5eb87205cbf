"""The inference engine: one model pack, its preprocessing, classification, Grad-CAM and overlays.

``model.predict`` costs ~1.3 s for one image against ~0.18 s for a ``tf.function`` call of
``model(x, training=False)`` (DESIGN.md), and is not thread-safe: the engine never uses it. One engine is
owned by one worker thread; it holds no global state besides its loaded model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asdesk.core import CancelToken, CardError, ImageRecord
from asdesk.inference.gradcam import GradCam, HeatMapExplainer, map_on_image
from asdesk.inference.pack import ModelPack
from asdesk.inference.runtime import configure_device, input_fits, load_model, model_input_shape

LOGGER = logging.getLogger(__name__)

def _milliseconds(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """What the model says about one image, before any decision (decisions are made in :mod:`asdesk.tasks`).

    Attributes
    ----------
    record : ImageRecord
        The image as read.
    model_input : asdesk.preprocess.ModelInput
        Exactly what the model received (tensor, image in [0, 1], geometry back to the image).
    probability : float
        The model's raw (uncalibrated) positive-class output, in [0, 1].
    distance : float or None
        Content-gate distance of the image's pooled features to the training images
        (:class:`~asdesk.inference.content_gate.ContentGate`); ``None`` when the pack has no content gate.
    heatmap : numpy.ndarray or None
        float32 (H, W) in [0, 1] at the image's size: Grad-CAM normalised over the region the model saw
        (:func:`~asdesk.inference.gradcam.map_on_image`), not yet scaled by the finding's strength; ``None``
        without Grad-CAM.
    timings_ms : dict
        ``preprocess``, ``classify`` (this image's share of the batch) and ``gradcam`` in ms.
    """

    record: ImageRecord
    model_input: Any
    probability: float
    distance: float | None
    heatmap: np.ndarray | None
    timings_ms: dict[str, float]


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
        self._gradcam: HeatMapExplainer | None = None
        self.content_gate: Any = None
        self._classify_features: Any = None
        self._features_from_gradcam = False
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
            The model cannot be loaded, or its input shape differs from the card's, or the pack is a
            segmentation pack (an oedema map), which runs in the lean runtime only (its ``model.onnx``).
        """
        with self._lock:
            if self._model is not None:
                return self
            if self.card.explanation != "grad_cam":
                raise CardError(f"model pack {self.card.id!r} outputs an {self.card.map_name} and runs in the lean "
                                "runtime only (its model.onnx in ONNX Runtime); unset ASDESK_RUNTIME=tensorflow")
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
            self._load_content_gate(model)
            LOGGER.info("loaded model pack %s version %s (sha256 %s) on %s in %.0f ms", self.card.id,
                        self.card.version, self.card.sha256[:12], self.device, _milliseconds(start))
            return self

    def _read_content_gate(self) -> str | None:
        """Set :attr:`content_gate` from the card (``content_gate.npz``, hash-checked); both runtimes use this.

        Returns
        -------
        str or None
            The layer whose features the gate reads, or ``None`` when the card has no gate (logged).

        Raises
        ------
        CardError
            The gate file is missing, altered or not a gate.
        """
        spec = self.card.content_gate
        if not spec:
            LOGGER.warning("model pack %s has no content gate: only its metadata gate checks what it is given",
                           self.card.id)
            return None
        from asdesk.inference.content_gate import load_pack_gate

        try:
            self.content_gate = load_pack_gate(self.pack.path, spec)
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise CardError(f"model pack {self.card.id!r}: its content gate {spec.get('file')} cannot be used "
                            f"({error}); the pack was altered or damaged: reinstall it") from error
        return str(spec.get("feature_layer", "head_pool"))

    def _load_content_gate(self, model: Any) -> None:  # noqa: ANN401
        """Load the card's content gate and the TensorFlow function that gives its features."""
        layer = self._read_content_gate()
        if layer is None:
            return
        import tensorflow as tf

        from asdesk.inference.content_gate import feature_model

        features_model = feature_model(model, layer)

        def classify_with_features(images: Any) -> Any:  # noqa: ANN401
            features, output = features_model(images, training=False)
            return output, features

        self._classify_features = tf.function(classify_with_features, reduce_retracing=True)
        # Grad-CAM's pass already yields the head's input: the same features when the gate reads the pooling
        # layer that feeds the head directly (dropout is the identity in inference mode).
        self._features_from_gradcam = self._pooling_feeds_head(model, layer)

    @staticmethod
    def _pooling_feeds_head(model: Any, layer: str) -> bool:  # noqa: ANN401
        try:
            pooling = model.get_layer(layer)
        except ValueError:
            return False
        names = [item.name for item in model.layers]
        if layer not in names:
            return False
        after = names[names.index(layer) + 1:]
        import keras

        return (isinstance(pooling, keras.layers.GlobalAveragePooling2D)
                and all(isinstance(model.get_layer(name), keras.layers.Dropout) for name in after[:-1])
                and len(after) >= 1 and isinstance(model.get_layer(after[-1]), keras.layers.Dense))

    def _forward_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        output, features = self._classify_features(tf.convert_to_tensor(batch, dtype=tf.float32))
        return (np.asarray(output, dtype=np.float32).reshape(-1),
                np.asarray(features, dtype=np.float32).reshape(batch.shape[0], -1))

    def gradcam(self) -> HeatMapExplainer:
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

    def with_pipeline(self, steps: Sequence[Any]) -> InferenceEngine:
        """A copy that shares the loaded model but preprocesses with ``steps`` (the preprocessing panel's).

        Results of such a copy are outside the model's validation: the caller marks them so.

        Parameters
        ----------
        steps : sequence of mapping
            Pipeline steps as in a card's ``preprocessing`` (:func:`asdesk.preprocess.build_pipeline`).

        Raises
        ------
        ValueError
            Invalid steps, or steps whose output size differs from the model's input.
        """
        import copy

        from asdesk.preprocess import build_pipeline

        pipeline = build_pipeline(steps)
        if pipeline.input_shape != tuple(self.card.input_shape):
            raise ValueError(f"the modified preprocessing gives {pipeline.input_shape} but model {self.card.id!r} "
                             f"takes {tuple(self.card.input_shape)}: keep the resize at the card's size")
        self.load()
        variant = copy.copy(self)
        variant.pipeline = pipeline
        return variant

    def content_distances(self, features: np.ndarray) -> np.ndarray | None:
        """Content-gate distances of pooled features, or ``None`` when the pack has no content gate.

        Parameters
        ----------
        features : numpy.ndarray
            float32 (N, C) pooled features (the output of the card's ``content_gate.feature_layer``).

        Returns
        -------
        numpy.ndarray or None
            float64 (N,) >= 0.
        """
        gate = self.content_gate
        if gate is None:
            return None
        return np.asarray(gate.distance(np.asarray(features, dtype=np.float32)), dtype=np.float64)

    def stn_thetas(self, batch: np.ndarray) -> np.ndarray | None:
        """The affine transforms the pack's Spatial Transformer applies to a batch, or ``None`` without one.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 (N, h, w, 3), the normalised model input.

        Returns
        -------
        numpy.ndarray or None
            float32 (N, 6): ``[[a11, a12, tx], [a21, a22, ty]]`` row-major, output-to-input in normalised
            coordinates (:class:`asdesk.inference.stn_layers.AffineSampler`, Jaderberg et al. 2015); ``None``
            when the model has no layer ``stn_theta``.
        """
        function = getattr(self, "_theta_function", None)
        if function is None:
            model = self.model
            if not any(layer.name == "stn_theta" for layer in model.layers):
                function = False
            else:
                import keras
                import tensorflow as tf

                theta_model = keras.Model(model.inputs[0], model.get_layer("stn_theta").output)
                function = tf.function(lambda x: theta_model(x, training=False), reduce_retracing=True)
            self._theta_function = function
        if function is False:
            return None
        return np.asarray(function(batch), dtype=np.float32).reshape(-1, 6)

    def infer(self, records: Sequence[ImageRecord], gradcam: bool = True,
              cancel: CancelToken | None = None) -> list[ModelOutput]:
        """Preprocess images, run the model, measure the content-gate distance and (optionally) Grad-CAM.

        No decision is made here: :func:`asdesk.tasks.analysis.analyze_batch` gates, calibrates and judges
        the outputs (DESIGN.md, "Decisions are made in one place").

        Parameters
        ----------
        records : sequence of ImageRecord
            Images as read by :mod:`asdesk.io`.
        gradcam : bool
            Compute Grad-CAM (one forward + backward pass per batch gives probabilities, maps and features).
        cancel : CancelToken, optional
            Checked before each image's preprocessing and before each batch.

        Returns
        -------
        list of ModelOutput
            One per record, in order.

        Raises
        ------
        CancelledError
            ``cancel`` was set.
        CardError, ModelHashMismatchError
            The pack cannot be loaded.
        PreprocessError
            An image the pipeline cannot process.
        ValueError
            ``gradcam`` is requested and the card's Grad-CAM layer is missing or inside a nested sub-model.
        """
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
        distances: list[float | None] = [None] * count
        classify_ms = np.zeros(count, dtype=np.float64)
        cams: list[np.ndarray | None] = [None] * count
        thetas: list[np.ndarray | None] = [None] * count
        explainer = self.gradcam() if gradcam else None
        for first in range(0, count, self.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = slice(first, min(first + self.batch_size, count))
            batch = self._check_batch(np.stack([item.tensor for item in inputs[chunk]]))
            start = time.perf_counter()
            if explainer is not None:
                values, raw_maps, pooled = explainer.raw_with_features(batch)
                cams[chunk] = list(raw_maps)
                batch_distances = self.content_distances(pooled) if self._features_from_gradcam else None
                if self.content_gate is not None and batch_distances is None:
                    _values, features = self._forward_with_features(batch)
                    batch_distances = self.content_distances(features)
            elif self.content_gate is not None:
                values, features = self._forward_with_features(batch)
                batch_distances = self.content_distances(features)
            else:
                values = self._forward(batch)
                batch_distances = None
            probabilities[chunk] = values
            batch_thetas = self.stn_thetas(batch)
            if batch_thetas is not None:
                thetas[chunk] = list(batch_thetas)
            if batch_distances is not None:
                distances[chunk] = [float(d) for d in batch_distances]
            classify_ms[chunk] = _milliseconds(start) / batch.shape[0]
        outputs = []
        for index, (record, model_input) in enumerate(zip(records, inputs, strict=True)):
            start = time.perf_counter()
            raw_map = cams[index]
            if thetas[index] is not None:  # Spatial Transformer: show what it made of the input, map back the CAM
                raw_map, model_input = warped_view(raw_map, model_input, thetas[index])
            heatmap = (map_on_image(raw_map, model_input.geometry, normalise=self.card.explanation == "grad_cam")
                       if raw_map is not None else None)
            gradcam_ms = _milliseconds(start) if raw_map is not None else 0.0
            value = float(probabilities[index])
            if not np.isfinite(value):
                raise ValueError(f"model {self.card.id!r} produced a non-finite probability ({value}) for "
                                 f"{record.metadata.source.name}; the model file may be damaged: reinstall "
                                 "the pack")
            outputs.append(ModelOutput(
                record=record, model_input=model_input, probability=value, distance=distances[index],
                heatmap=heatmap,
                timings_ms={"preprocess": preprocess_ms[index], "classify": float(classify_ms[index]),
                            "gradcam": gradcam_ms}))
        LOGGER.debug("pack %s ran on %d image(s), Grad-CAM %s", self.card.id, count, bool(gradcam))
        return outputs


def warped_view(raw_map: np.ndarray | None, model_input: Any, theta: np.ndarray  # noqa: ANN401
                ) -> tuple[np.ndarray | None, Any]:
    """The model-input image as the Spatial Transformer warped it, and the CAM carried back to the unwarped input.

    Grad-CAM's map lives on the backbone's input, i.e. the warped image; the overlay is drawn on the original
    image, so the map (upsampled to the model-input grid) is resampled by the inverse affine transform. The
    returned model input's ``image`` is the warped [0, 1] image (zeros where the transform samples outside
    the input; inside the model those pixels are zeros of the *normalised* input), which the viewer's
    model-input view and the report show; its ``tensor`` and ``geometry`` are unchanged.

    Parameters
    ----------
    raw_map : numpy.ndarray or None
        float (h', w') >= 0, the Grad-CAM layer's map of the warped input.
    model_input : asdesk.preprocess.ModelInput
    theta : numpy.ndarray
        (6,) the transform (:meth:`InferenceEngine.stn_thetas`).

    Returns
    -------
    raw_map : numpy.ndarray or None
        float32 (h, w) on the unwarped model-input grid.
    model_input : asdesk.preprocess.ModelInput
        With the warped image.
    """
    import dataclasses

    from asdesk.inference.gradcam import upsample_and_normalise
    from asdesk.inference.stn_warp import inverse_theta, warp_numpy

    image = warp_numpy(model_input.image, theta)  # float32, a new array: clipped in place
    warped_input = dataclasses.replace(model_input, image=np.clip(image, 0.0, 1.0, out=image))
    if raw_map is None:
        return None, warped_input
    height, width = model_input.image.shape[:2]
    grid = upsample_and_normalise(np.asarray(raw_map, dtype=np.float32)[None], (height, width))[0]
    back = warp_numpy(grid, inverse_theta(theta))
    return np.maximum(back, 0.0, out=back), warped_input
