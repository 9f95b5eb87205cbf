"""Training-time augmentation, as in the references: rotation ±10°, shift ±10%, zoom ±10%,
brightness/contrast ±10%, horizontal flip only where labels allow (never for per-side SIJ labels).

Works on model-input images (float32 (h, w) in [0, 1]), before the backbone normalisation, so the
normalisation stays the pipeline's own (:class:`asdesk.preprocess.Normalise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Random affine and intensity jitter.

    Parameters
    ----------
    rotation_deg : float
        Maximum absolute rotation in degrees.
    shift : float
        Maximum shift as a fraction of the image size.
    zoom : float
        Maximum relative zoom in or out.
    brightness, contrast : float
        Maximum relative change (additive brightness on [0, 1], multiplicative contrast about the mean).
    horizontal_flip : bool
        Flip left-right with probability 0.5.
    """

    rotation_deg: float = 10.0
    shift: float = 0.10
    zoom: float = 0.10
    brightness: float = 0.10
    contrast: float = 0.10
    horizontal_flip: bool = False

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of a float32 (h, w) image in [0, 1]."""
        height, width = image.shape
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        scale = 1.0 + rng.uniform(-self.zoom, self.zoom)
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
        matrix[0, 2] += rng.uniform(-self.shift, self.shift) * width
        matrix[1, 2] += rng.uniform(-self.shift, self.shift) * height
        out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        mean = float(out.mean())
        out = (out - mean) * (1.0 + rng.uniform(-self.contrast, self.contrast)) + mean
        out = out + rng.uniform(-self.brightness, self.brightness)
        if self.horizontal_flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.clip(out, 0.0, 1.0).astype(np.float32)
