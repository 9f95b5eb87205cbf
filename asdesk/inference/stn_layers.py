"""The grid generator and bilinear sampler of a Spatial Transformer, as one Keras 3 layer.

Jaderberg M., Simonyan K., Zisserman A., Kavukcuoglu K., "Spatial Transformer Networks", NeurIPS 2015:
a localisation network predicts an affine transform ``theta``; the *grid generator* maps every output pixel's
normalised coordinates ``(x_t, y_t, 1)`` through ``theta`` to source coordinates ``(x_s, y_s)`` (eq. 1), and
the *sampler* reads the input there by bilinear interpolation (eq. 5), which is differentiable in both the
image and ``theta``.

The layer is written only with ``keras.ops`` (matmul, floor, take, where), so it lives inside a model's one
flat functional graph (Grad-CAM keeps working), is saved in ``model.keras`` (registered as
``asdesk>AffineSampler``) and converts to ONNX through tf2onnx (MatMul, Floor, Gather). It lives in
:mod:`asdesk.inference` because loading a pack's ``model.keras`` needs the class;
:mod:`asdesk.training.stn` builds the localisation network around it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from asdesk.inference.stn_warp import IDENTITY_THETA, source_grid

__all__ = ["IDENTITY_THETA", "AffineSampler", "source_grid"]

@keras.saving.register_keras_serializable(package="asdesk")
class AffineSampler(keras.layers.Layer):
    """Warp an image by an affine transform: affine grid generator + bilinear sampler.

    Call with ``[image, theta]``:

    - ``image``: float32 (B, H, W, C), channels last, with static H, W and C;
    - ``theta``: float32 (B, 6), the transform ``[[a11, a12, tx], [a21, a22, ty]]`` row-major, mapping output
      coordinates to input coordinates, both normalised to [-1, 1] (so ``tx = 2 d / (W - 1)`` samples ``d``
      pixels to the right: the content moves ``d`` pixels to the left).

    Returns float32 (B, H, W, C): ``out[b, i, j] = bilinear(image[b], (x_s, y_s))`` with zeros outside the
    input. The identity ``theta`` returns the input (to float rounding).

    Raises
    ------
    ValueError
        When built on an image whose height, width or channels are not known.
    """

    def build(self, input_shape: Any) -> None:  # noqa: ANN401
        image_shape = input_shape[0]
        if any(dim is None for dim in image_shape[1:]):
            raise ValueError(f"AffineSampler needs a static image size (H, W, C), got {tuple(image_shape)}; "
                             "build the model with a fixed input_shape")
        self.height, self.width, self.channels = (int(d) for d in image_shape[1:])
        self.built = True

    def call(self, inputs: Any) -> Any:  # noqa: ANN401
        image, theta = inputs
        height, width, channels = self.height, self.width, self.channels
        pixels = height * width
        theta = ops.reshape(ops.cast(theta, "float32"), (-1, 2, 3))
        grid = ops.convert_to_tensor(source_grid(height, width))
        source = ops.matmul(theta, grid)  # (B, 2, H*W) normalised source coordinates
        x = (source[:, 0, :] + 1.0) * (0.5 * (width - 1))
        y = (source[:, 1, :] + 1.0) * (0.5 * (height - 1))
        x0 = ops.floor(x)
        y0 = ops.floor(y)
        x1, y1 = x0 + 1.0, y0 + 1.0
        weight_x1, weight_y1 = x - x0, y - y0
        weight_x0, weight_y0 = 1.0 - weight_x1, 1.0 - weight_y1
        flat = ops.reshape(image, (-1, channels))  # (B*H*W, C)
        batch = ops.shape(image)[0]
        offset = ops.expand_dims(ops.cast(ops.arange(batch), "int32") * pixels, 1)  # (B, 1)

        def corner(xc: Any, yc: Any, weight: Any) -> Any:  # noqa: ANN401
            inside = ops.cast((xc >= 0.0) & (xc <= width - 1.0) & (yc >= 0.0) & (yc <= height - 1.0), "float32")
            xi = ops.cast(ops.clip(xc, 0.0, width - 1.0), "int32")
            yi = ops.cast(ops.clip(yc, 0.0, height - 1.0), "int32")
            index = ops.reshape(offset + yi * width + xi, (-1,))
            values = ops.reshape(ops.take(flat, index, axis=0), (-1, pixels, channels))
            return values * ops.expand_dims(weight * inside, -1)

        out = (corner(x0, y0, weight_x0 * weight_y0) + corner(x1, y0, weight_x1 * weight_y0)
               + corner(x0, y1, weight_x0 * weight_y1) + corner(x1, y1, weight_x1 * weight_y1))
        return ops.reshape(out, (-1, height, width, channels))

    def compute_output_shape(self, input_shape: Any) -> Any:  # noqa: ANN401
        return tuple(input_shape[0])
