"""Keras layers that let one network read the two sacroiliac joints as separate, like-oriented inputs.

A coronal STIR slice of the pelvis, centred on the sacrum, holds the right joint in its left half and the left
joint in its right half (radiological convention). :class:`SideSplit` cuts the input at its vertical midline
and mirrors the second half, so that both joints face the same way, and stacks the two halves along the batch
axis: the same weights read each joint, and each joint is its own piece of evidence (its own score, trained on
its own label). :class:`SideMerge` undoes this for a map; :class:`SidePairs` gathers per-half vectors into
(N, 2, C) and :class:`SideMean` averages them. The flip is part of the graph, never an augmentation, so a
finding on the right joint is never shown, or learned, as one on the left.

Written with ``keras.ops`` only (slice, flip, concatenate, split): the model stays one flat functional graph,
is saved in ``model.keras`` (registered as ``asdesk>Side*``) and converts to ONNX through tf2onnx (Slice,
ReverseSequence/Slice, Concat, Split). It lives in :mod:`asdesk.inference`, like the Spatial Transformer's
sampler, because loading a pack's ``model.keras`` needs the classes (:func:`asdesk.inference.runtime.load_model`
registers them); :mod:`asdesk.training.oedema` builds the U-Net around them. The analysis runtime runs the
exported ONNX graph and never imports this module.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["SideMean", "SideMerge", "SidePairs", "SideSplit"]


@keras.saving.register_keras_serializable(package="asdesk")
class SideSplit(keras.layers.Layer):
    """(N, H, W, C) -> (2N, H, W/2, C): the left halves, then the mirrored right halves.

    ``W`` must be even and static.
    """

    def call(self, x: Any) -> Any:  # noqa: ANN401, D102
        half = x.shape[2] // 2
        left = x[:, :, :half, :]
        right = ops.flip(x[:, :, half:, :], axis=2)
        return ops.concatenate([left, right], axis=0)

    def compute_output_shape(self, shape: tuple) -> tuple:  # noqa: D102
        batch = None if shape[0] is None else 2 * shape[0]
        return (batch, shape[1], shape[2] // 2, shape[3])


@keras.saving.register_keras_serializable(package="asdesk")
class SideMerge(keras.layers.Layer):
    """(2N, H, W/2, C) -> (N, H, W, C): inverse of :class:`SideSplit` for a map."""

    def call(self, x: Any) -> Any:  # noqa: ANN401, D102
        left, right = ops.split(x, 2, axis=0)
        return ops.concatenate([left, ops.flip(right, axis=2)], axis=2)

    def compute_output_shape(self, shape: tuple) -> tuple:  # noqa: D102
        batch = None if shape[0] is None else shape[0] // 2
        return (batch, shape[1], 2 * shape[2], shape[3])


@keras.saving.register_keras_serializable(package="asdesk")
class SidePairs(keras.layers.Layer):
    """(2N, C) -> (N, 2, C) when ``flatten`` is False, else (N, 2 C); index 0 is the image's left half."""

    def __init__(self, flatten: bool = False, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(**kwargs)
        self.flatten = flatten

    def call(self, x: Any) -> Any:  # noqa: ANN401, D102
        left, right = ops.split(x, 2, axis=0)
        pairs = ops.stack([left, right], axis=1)
        if self.flatten:
            return ops.reshape(pairs, (-1, 2 * x.shape[-1]))
        return pairs

    def compute_output_shape(self, shape: tuple) -> tuple:  # noqa: D102
        batch = None if shape[0] is None else shape[0] // 2
        return (batch, 2 * shape[-1]) if self.flatten else (batch, 2, shape[-1])

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "flatten": self.flatten}


@keras.saving.register_keras_serializable(package="asdesk")
class SideMean(keras.layers.Layer):
    """(2N, C) -> (N, C): the mean of a slice's two halves."""

    def call(self, x: Any) -> Any:  # noqa: ANN401, D102
        left, right = ops.split(x, 2, axis=0)
        return (left + right) * 0.5

    def compute_output_shape(self, shape: tuple) -> tuple:  # noqa: D102
        batch = None if shape[0] is None else shape[0] // 2
        return (batch, *shape[1:])
