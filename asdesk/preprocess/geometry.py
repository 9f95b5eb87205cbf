"""Where the model input's pixels come from in the original image.

Cropping and resizing change the geometry; :class:`Geometry` records both so a Grad-CAM map computed on the
model input can be drawn back over the original image at the right place and size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from asdesk.preprocess.kernels import resize


@dataclass(frozen=True)
class Geometry:
    """The mapping from the original image to the current array.

    Attributes
    ----------
    image_shape : tuple of int
        (H, W) of the original image, in pixels.
    crop_box : tuple of int
        (top, left, bottom, right) of the region kept from the original image (bottom/right exclusive).
    content_box : tuple of int
        (top, left, bottom, right) of the current array that holds image content (the rest is padding).
    array_shape : tuple of int
        (h, w) of the current array.
    """

    image_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    content_box: tuple[int, int, int, int]
    array_shape: tuple[int, int]

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> Geometry:
        """The geometry of an untouched (H, W) image."""
        height, width = int(shape[0]), int(shape[1])
        return cls((height, width), (0, 0, height, width), (0, 0, height, width), (height, width))

    def cropped(self, top: int, left: int, bottom: int, right: int) -> Geometry:
        """Geometry after keeping rows ``top:bottom`` and columns ``left:right`` of the current array.

        Only valid before any padding or resizing (the content box is the whole array).
        """
        y0, x0 = self.crop_box[0], self.crop_box[1]
        box = (y0 + top, x0 + left, y0 + bottom, x0 + right)
        size = (bottom - top, right - left)
        return replace(self, crop_box=box, content_box=(0, 0, size[0], size[1]), array_shape=size)

    def resized(self, content_box: tuple[int, int, int, int], array_shape: tuple[int, int]) -> Geometry:
        """Geometry after the content was resized into ``content_box`` of a new ``array_shape`` array."""
        return replace(self, content_box=content_box, array_shape=array_shape)

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Map an array on the model-input grid back onto the original image grid.

        Parameters
        ----------
        values : numpy.ndarray
            float32 (h', w') on the model-input grid (any size: it is first resized to ``array_shape``).

        Returns
        -------
        numpy.ndarray
            float32 (H, W) at ``image_shape``; zero outside the cropped region.
        """
        h, w = self.array_shape
        grid = resize(values, h, w, "linear")
        ct, cl, cb, cr = self.content_box
        content = grid[ct:cb, cl:cr]
        top, left, bottom, right = self.crop_box
        out = np.zeros(self.image_shape, dtype=np.float32)
        if content.size == 0 or bottom <= top or right <= left:
            return out
        out[top:bottom, left:right] = resize(content, bottom - top, right - left, "linear")
        return out
