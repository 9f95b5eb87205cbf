"""The Spatial Transformer's affine grid and bilinear sampler in NumPy (no TensorFlow).

The same arithmetic as :class:`asdesk.inference.stn_layers.AffineSampler` (Jaderberg et al., NeurIPS 2015,
eq. 1 and 5), for displays such as the viewer's model-input view, on the lean runtime too.
"""

from __future__ import annotations

import functools

import numpy as np

#: theta of the identity transform, flattened row-major (a11 a12 tx a21 a22 ty).
IDENTITY_THETA = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float32)


@functools.lru_cache(maxsize=8)
def source_grid(height: int, width: int) -> np.ndarray:
    """Homogeneous normalised coordinates of every output pixel (the grid generator's target grid).

    Parameters
    ----------
    height, width : int
        Output size in pixels.

    Returns
    -------
    numpy.ndarray
        float32 (3, height * width): rows ``x_t``, ``y_t`` in [-1, 1] (pixel centres of the first and last
        column/row at -1 and +1) and ones; row-major pixel order.
    """
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, height, dtype=np.float32),
                         np.linspace(-1.0, 1.0, width, dtype=np.float32), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(height * width, np.float32)]).astype(np.float32)
    grid.setflags(write=False)  # cached (one per size): shared by every call
    return grid


def warp_numpy(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The sampler in NumPy, for displays (the viewer's model-input view of a pack with a Spatial Transformer).

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W) or (H, W, C).
    theta : numpy.ndarray
        (6,) or (2, 3) affine transform as :class:`AffineSampler` takes it.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``image``: the same warp :class:`AffineSampler` computes.
    """
    array = np.asarray(image, dtype=np.float32)
    squeeze = array.ndim == 2
    if squeeze:
        array = array[:, :, None]
    height, width, channels = array.shape
    matrix = np.asarray(theta, dtype=np.float32).reshape(2, 3)
    source = matrix @ source_grid(height, width)
    x = (source[0] + 1.0) * (0.5 * (width - 1))
    y = (source[1] + 1.0) * (0.5 * (height - 1))
    x0, y0 = np.floor(x), np.floor(y)
    out = np.zeros((height * width, channels), np.float32)
    for xc, yc, weight in ((x0, y0, (x0 + 1 - x) * (y0 + 1 - y)), (x0 + 1, y0, (x - x0) * (y0 + 1 - y)),
                           (x0, y0 + 1, (x0 + 1 - x) * (y - y0)), (x0 + 1, y0 + 1, (x - x0) * (y - y0))):
        inside = (xc >= 0) & (xc <= width - 1) & (yc >= 0) & (yc <= height - 1)
        xi = np.clip(xc, 0, width - 1).astype(np.int64)
        yi = np.clip(yc, 0, height - 1).astype(np.int64)
        out += array[yi, xi] * (weight * inside)[:, None]
    out = out.reshape(height, width, channels)
    return out[:, :, 0] if squeeze else out


def inverse_theta(theta: np.ndarray) -> np.ndarray:
    """The inverse of an affine transform in :class:`AffineSampler`'s convention.

    Parameters
    ----------
    theta : numpy.ndarray
        (6,) or (2, 3).

    Returns
    -------
    numpy.ndarray
        float32 (6,): warping by ``theta`` and then by the result returns the original (where both stay
        inside the image).

    Raises
    ------
    ValueError
        The transform is singular (its 2 x 2 part has determinant 0).
    """
    matrix = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    linear, shift = matrix[:, :2], matrix[:, 2]
    if abs(np.linalg.det(linear)) < 1e-8:
        raise ValueError(f"the Spatial Transformer's transform {matrix.tolist()} is singular: it cannot be inverted")
    inverse = np.linalg.inv(linear)
    return np.concatenate([inverse, (-inverse @ shift)[:, None]], axis=1).astype(np.float32).ravel()
