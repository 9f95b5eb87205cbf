"""The NumPy Spatial Transformer sampler (the viewer's model-input view and the CAM carried back to the
unwarped image) against the sampler's definition, written out pixel by pixel (Jaderberg et al., NeurIPS 2015,
eq. 5, zeros outside the image). Needs no TensorFlow; ``test_stn.py`` compares it with the Keras layer."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from asdesk.inference.stn_warp import IDENTITY_THETA, inverse_theta, warp_numpy


def _definition(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """V_i = sum_nm U_nm max(0, 1 - |x_i - m|) max(0, 1 - |y_i - n|) over the pixels inside the image."""
    height, width = image.shape[:2]
    matrix = np.asarray(theta, np.float64).reshape(2, 3)
    out = np.zeros(image.shape, np.float64)
    for row in range(height):
        for column in range(width):
            xt = -1.0 + 2.0 * column / (width - 1) if width > 1 else -1.0
            yt = -1.0 + 2.0 * row / (height - 1) if height > 1 else -1.0
            xs, ys = matrix @ (xt, yt, 1.0)
            x, y = (xs + 1.0) * 0.5 * (width - 1), (ys + 1.0) * 0.5 * (height - 1)
            for n in (math.floor(y), math.floor(y) + 1):
                for m in (math.floor(x), math.floor(x) + 1):
                    if 0 <= n < height and 0 <= m < width:
                        out[row, column] += image[n, m] * max(0.0, 1 - abs(x - m)) * max(0.0, 1 - abs(y - n))
    return out


thetas = arrays(np.float32, 6, elements=st.floats(-2.5, 2.5, width=32))
images = st.tuples(st.integers(2, 12), st.integers(2, 12), st.sampled_from([0, 1, 3])).flatmap(
    lambda shape: arrays(np.float32, shape[:2] + ((shape[2],) if shape[2] else ()),
                         elements=st.floats(-4, 4, width=32)))


@settings(max_examples=150, deadline=None)
@given(image=images, theta=thetas)
def test_the_sampler_is_bilinear_sampling_with_zeros_outside(image, theta):
    warped = warp_numpy(image, theta)
    assert warped.shape == image.shape and warped.dtype == np.float32 and warped.flags.c_contiguous
    np.testing.assert_allclose(warped, _definition(image, theta), atol=2e-5)


def test_the_identity_returns_the_radiograph_and_a_shift_moves_a_spot():
    image = np.random.default_rng(3).uniform(0, 1, (224, 224)).astype(np.float32)
    # float32 grid coordinates land within ~1e-5 pixel of the centres: the values move by at most that much
    np.testing.assert_allclose(warp_numpy(image, IDENTITY_THETA), image, atol=5e-5)
    spot = np.zeros((9, 9), np.float32)
    spot[4, 4] = 1.0
    shift = 2.0 * 2 / (9 - 1)  # two pixels to the right, in normalised coordinates
    moved = warp_numpy(spot, [1, 0, shift, 0, 1, 0])
    assert np.unravel_index(np.argmax(moved), moved.shape) == (4, 2)
    assert moved.sum() == np.float32(1.0)


def test_warping_back_by_the_inverse_restores_the_inside():
    theta = np.array([0.997, 0.001, -0.002, 0.0, 0.997, 0.001], np.float32)  # what the knee pack's STN learned
    rows, columns = np.mgrid[0:64, 0:64].astype(np.float32)
    image = 0.5 + 0.5 * np.sin(rows / 5.0) * np.cos(columns / 7.0)  # smooth, as an anatomy or a CAM is
    back = warp_numpy(warp_numpy(image, theta), inverse_theta(theta))
    assert np.abs(back - image)[2:-2, 2:-2].max() < 0.01  # two bilinear resamplings blur a little, move nothing
