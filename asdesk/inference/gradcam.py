"""Grad-CAM heat maps for binary (sigmoid) Keras classifiers.

Selvaraju R. R., Cogswell M., Das A., Vedantam R., Parikh D., Batra D., "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", ICCV 2017 (arXiv:1610.02391).

For a class score :math:`y` and the feature maps :math:`A^k` of a convolutional layer, Grad-CAM weighs
each channel by the global average of the score's gradient,
:math:`\\alpha_k = \\frac{1}{Z} \\sum_{i,j} \\partial y / \\partial A^k_{ij}`, and keeps the positive part of
the weighted sum, :math:`L = \\mathrm{ReLU}(\\sum_k \\alpha_k A^k)`: the regions whose features raise
the score.

Which score
-----------
asdesk models have one sigmoid output, the probability of the positive finding. The score explained is
the **logit of the positive class** (the input of the final sigmoid), as the paper uses the class score
before the softmax. Its gradient differs from the probability's only by the positive factor
:math:`\\sigma'(z)`, which the per-map normalisation removes, so the map is the same, except that the
probability's gradient underflows to zero for confident predictions (:math:`p` of 0 or 1 in float32) while
the logit's does not. When the model's last layer is not a one-unit sigmoid ``Dense`` (so the logit is not
available) the probability itself is used.

The map always explains the *positive* score. For a negative finding it still shows where the model found
the evidence it weighed for the positive finding (the evidence that was not enough); it is not a map of
"evidence for normal".

Grad-CAM needs a flat functional graph: the layer must be a top-level layer of the model, not inside a
nested sub-model (DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asdesk.preprocess.kernels import resize


def _layer_names(model: Any) -> list[str]:  # noqa: ANN401
    return [layer.name for layer in getattr(model, "layers", [])]


def _nested_owner(model: Any, layer_name: str) -> str | None:  # noqa: ANN401
    """Name of the nested sub-model (at any depth) that holds ``layer_name``, or None."""
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers"):
            if layer_name in _layer_names(layer) or _nested_owner(layer, layer_name) is not None:
                return str(layer.name)
    return None


def _find_layer(model: Any, layer_name: str) -> Any:  # noqa: ANN401
    if layer_name in _layer_names(model):
        return model.get_layer(layer_name)
    owner = _nested_owner(model, layer_name)
    if owner is not None:
        raise ValueError(
            f"Grad-CAM layer {layer_name!r} is inside the nested sub-model {owner!r} of model "
            f"{model.name!r}; "
            "Grad-CAM needs the layer in the model's own graph (Keras 3 cannot connect a nested model's "
            "inner tensors to the outer inputs): rebuild the pack as a flat graph, e.g. with "
            "asdesk.training.model.build_classifier (backbone built with input_tensor=)")
    spatial = [layer.name for layer in model.layers
               if len(getattr(getattr(layer, "output", None), "shape", ())) == 4][-5:]
    raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its last layers with a spatial "
                     f"(N, h, w, C) output are {spatial}; set the card's gradcam_layer to one of them "
                     "(usually the last convolutional block, see asdesk.training.model.GRADCAM_LAYERS)")


def _sigmoid_head(model: Any) -> tuple[Any, Any] | None:  # noqa: ANN401
    """(output Dense layer, its input tensor) when the model ends in a one-unit sigmoid Dense, else None."""
    import keras

    if not model.layers:
        return None
    last = model.layers[-1]
    try:
        if not (isinstance(last, keras.layers.Dense) and last.units == 1
                and last.activation is keras.activations.sigmoid and last.output is model.outputs[0]):
            return None
        return last, last.input
    except (AttributeError, ValueError):  # layer used more than once, or not connected
        return None


class HeatMapExplainer:
    """What the engines ask of an explainer; :class:`GradCam` (TensorFlow) and the ONNX Runtime explainers of
    :mod:`asdesk.inference.onnx_engine` implement :meth:`raw_with_features`, and share :meth:`raw`,
    :meth:`__call__` and the input check (for a model input of shape :attr:`input_shape`)."""

    #: (h, w, 3) of the model input.
    input_shape: tuple[int, ...] = ()

    def raw_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities (N,), un-normalised maps (N, h', w') and pooled features (N, C), float32."""
        raise NotImplementedError

    def _check(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as float32 (N, h, w, 3); ValueError when it does not match :attr:`input_shape`."""
        images = np.asarray(batch, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != tuple(self.input_shape):
            raise ValueError(f"heat-map input must be a batch (N, h, w, 3) matching the model input "
                             f"{('N', *self.input_shape)}; got shape {images.shape}")
        return images

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the un-normalised maps at the layer's resolution.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 (N, h, w, 3), the model's normalised input.

        Returns
        -------
        probabilities : numpy.ndarray
            float32 (N,).
        maps : numpy.ndarray
            float32 (N, h', w') >= 0, at the Grad-CAM layer's resolution.
        """
        probabilities, cams, _pooled = self.raw_with_features(batch)
        return probabilities, cams

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch and compute its Grad-CAM maps in one pass.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 (N, h, w, 3): the model's input, already normalised for the backbone
            (:attr:`asdesk.preprocess.ModelInput.tensor` stacked).

        Returns
        -------
        probabilities : numpy.ndarray
            float32 (N,): the model's output, the probability of the positive class (identical to
            ``model(batch, training=False)``).
        maps : numpy.ndarray
            float32 (N, h, w) in [0, 1], at the model input size (bilinear upsampling of the layer's map),
            each divided by its maximum so the strongest evidence is 1. A map with no positive evidence
            stays all zero (never NaN).

        Raises
        ------
        ValueError
            ``batch`` is not (N, h, w, 3) at the model's input size.
        """
        images = self._check(batch)
        if images.shape[0] == 0:
            return np.zeros((0,), np.float32), np.zeros((0, *images.shape[1:3]), np.float32)
        probabilities, cams = self.raw(images)
        return probabilities, upsample_and_normalise(cams, (images.shape[1], images.shape[2]))


class GradCam(HeatMapExplainer):
    """Grad-CAM of the positive-class score of a binary Keras classifier (Selvaraju et al., ICCV 2017).

    The gradient model ``keras.Model(model.inputs, [layer.output, model.output])`` and its
    ``tf.function`` are built once, here; each call is one forward and one backward pass for the whole
    batch. Use one instance from one thread.

    Parameters
    ----------
    model : keras.Model
        A flat functional model with one image input (N, h, w, 3) and one sigmoid output (N, 1), the
        probability of the positive class.
    layer_name : str
        A top-level layer with a spatial output (N, h', w', C), normally the last convolutional block
        (the card's ``gradcam_layer``).

    Raises
    ------
    ValueError
        The layer does not exist, is inside a nested sub-model ("rebuild the pack as a flat graph"), or the
        model has not one input and one single-unit output.
    """

    def __init__(self, model: Any, layer_name: str) -> None:  # noqa: ANN401
        import keras
        import tensorflow as tf

        self.model = model
        self.layer_name = layer_name
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"Grad-CAM needs a model with one input and one output; {model.name!r} has "
                             f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
        if int(model.outputs[0].shape[-1]) != 1:
            raise ValueError(f"Grad-CAM here explains a single sigmoid output (N, 1); model {model.name!r} "
                             f"outputs {tuple(model.outputs[0].shape)}")
        layer = _find_layer(model, layer_name)
        if len(layer.output.shape) != 4:
            raise ValueError(f"Grad-CAM layer {layer_name!r} outputs shape {tuple(layer.output.shape)}; "
                             "it needs a spatial feature map (N, h, w, C): choose a convolutional layer")
        head = _sigmoid_head(model)
        outputs = [layer.output, model.outputs[0]] + ([head[1]] if head is not None else [])
        try:
            self._gradient_model = keras.Model(model.inputs[0], outputs, name=f"{model.name}_gradcam")
        except ValueError as error:
            raise ValueError(f"cannot connect layer {layer_name!r} to the inputs of model {model.name!r} "
                             f"({error}); rebuild the pack as a flat graph") from error
        self._head = head[0] if head is not None else None
        #: ``"logit"`` or ``"probability"``: the score whose gradient is used (see the module docstring).
        self.score = "logit" if head is not None else "probability"
        self.input_shape: tuple[int | None, ...] = tuple(model.inputs[0].shape[1:])
        self._function = tf.function(self._maps, reduce_retracing=True)

    def _maps(self, images: Any) -> tuple[Any, Any, Any]:  # noqa: ANN401
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = self._gradient_model(images, training=False)
            features, probabilities = outputs[0], outputs[1]
            if self._head is not None:
                pooled = tf.cast(outputs[2], tf.float32)
                kernel = tf.cast(tf.convert_to_tensor(self._head.kernel), tf.float32)
                score = tf.matmul(pooled, kernel)[:, 0]
                if self._head.use_bias:
                    score = score + tf.cast(tf.convert_to_tensor(self._head.bias), tf.float32)[0]
            else:
                score = tf.cast(probabilities, tf.float32)[:, 0]
        gradients = tf.cast(tape.gradient(score, features), tf.float32)
        maps = tf.cast(features, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # alpha_k, (N, 1, 1, C)
        cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))  # (N, h', w')
        # The head's input (the pooled features in inference mode), or the layer's spatial mean without one.
        pooled = tf.cast(outputs[2], tf.float32) if self._head is not None else tf.reduce_mean(maps, axis=(1, 2))
        return tf.cast(tf.reshape(probabilities, (-1,)), tf.float32), cam, pooled

    def raw_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, un-normalised maps and the pooled features that feed the head, in one pass.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 (N, h, w, 3), the model's normalised input.

        Returns
        -------
        probabilities : numpy.ndarray
            float32 (N,).
        maps : numpy.ndarray
            float32 (N, h', w') >= 0, at the Grad-CAM layer's resolution.
        pooled : numpy.ndarray
            float32 (N, C): the input of the one-unit sigmoid head (the GlobalAveragePooling output in
            inference mode), or the spatial mean of the layer's maps for other heads. The content gate
            (:mod:`asdesk.inference.content_gate`) measures its distance to the training images.
        """
        import tensorflow as tf

        images = self._check(batch)
        probabilities, cams, pooled = self._function(tf.convert_to_tensor(images, dtype=tf.float32))
        return (probabilities.numpy().astype(np.float32), cams.numpy().astype(np.float32),
                pooled.numpy().astype(np.float32))

    def _check(self, batch: np.ndarray) -> np.ndarray:
        images = np.asarray(batch, dtype=np.float32)
        expected = self.input_shape
        if images.ndim != 4 or any(e is not None and int(e) != s
                                   for e, s in zip(expected, images.shape[1:], strict=False)):
            raise ValueError(f"Grad-CAM input must be a batch (N, h, w, 3) matching the model input "
                             f"{('N', *expected)}; got shape {images.shape}")
        return images


def upsample_and_normalise(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize Grad-CAM maps to ``size`` and scale each to a maximum of 1.

    Parameters
    ----------
    cams : numpy.ndarray
        float (N, h', w') >= 0.
    size : tuple of int
        (h, w) in pixels.

    Returns
    -------
    numpy.ndarray
        float32 (N, h, w) in [0, 1]; bilinear interpolation (pixel centres aligned, OpenCV
        ``INTER_LINEAR``); maps whose maximum is 0 (or not finite) are all zero.
    """
    height, width = int(size[0]), int(size[1])
    out = np.zeros((cams.shape[0], height, width), dtype=np.float32)
    for index, cam in enumerate(cams):
        cam = np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        resized = resize(cam, height, width, "linear")
        resized = np.maximum(resized, 0.0)
        peak = float(resized.max()) if resized.size else 0.0
        if peak > 0.0:
            out[index] = np.clip(resized / peak, 0.0, 1.0)
    return out


def map_on_image(cam: np.ndarray, geometry: Any, normalise: bool = True) -> np.ndarray:  # noqa: ANN401
    """Draw one raw Grad-CAM map back onto its image, normalised over the region the model saw.

    The map is upsampled to the model-input grid, the padding that the resize step added is cut away (so
    neither the normalisation nor the peak can fall in it), the remaining map is divided by its maximum
    over that region, and the result is mapped through the crop and resize back onto the original image
    grid (:meth:`asdesk.preprocess.Geometry.to_image`).

    Parameters
    ----------
    cam : numpy.ndarray
        float (h', w') >= 0 at the Grad-CAM layer's resolution (:meth:`GradCam.raw`).
    geometry : asdesk.preprocess.Geometry
        The model input's geometry (``ModelInput.geometry``).
    normalise : bool
        Divide by the maximum inside the model's view (Grad-CAM). ``False`` for maps that are already
        probabilities in [0, 1] (an oedema map): they are only resampled, clipped and mapped back.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1] at ``geometry.image_shape``: 1 at the strongest evidence inside the model's
        view, 0 outside the crop; all zero when the map has no positive evidence. The caller scales it by how
        strong the finding is (:func:`asdesk.tasks.decision.scaled_heatmap`).
    """
    height, width = geometry.array_shape
    if normalise:
        grid = upsample_and_normalise(np.asarray(cam, dtype=np.float32)[None], (height, width))[0]
    else:
        values = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        grid = np.clip(resize(values, height, width, "linear") if values.shape != (height, width) else values,
                       0.0, 1.0)
    top, left, bottom, right = geometry.content_box
    inside = np.zeros_like(grid)
    inside[top:bottom, left:right] = grid[top:bottom, left:right]
    peak = float(inside.max()) if inside.size else 0.0
    if normalise and peak > 0.0:
        inside /= peak
    return np.clip(geometry.to_image(inside), 0.0, 1.0).astype(np.float32)
