"""numpy ↔ Qt image helpers for reports: grayscale conversion, Grad-CAM alpha blending, QImage and PNG.

Only numpy and ``PySide6.QtGui``/``QtCore`` are used (no widgets), so everything here runs headless.
``QImage`` objects made from numpy arrays are always deep copies (``QImage.copy()``): the returned image
owns its pixels and stays valid after the array is freed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QImage

__all__ = [
    "array_to_qimage",
    "blend_overlay",
    "display_to_gray_uint8",
    "fit_qimage",
    "png_bytes",
    "save_png",
]

# ITU-R BT.601 luma weights, for colour (RGB) display images shown as grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def display_to_gray_uint8(display: np.ndarray) -> np.ndarray:
    """Convert a display image in [0, 1] to 8-bit grayscale.

    Parameters
    ----------
    display : numpy.ndarray
        float, shape (H, W) or (H, W, 3) (RGB), values in [0, 1] as in ``ImageRecord.display``.
        Colour images are reduced to luma (ITU-R BT.601 weights). Values outside [0, 1] are clipped and
        NaN becomes 0.

    Returns
    -------
    numpy.ndarray
        uint8, shape (H, W), C-contiguous.

    Raises
    ------
    ValueError
        If ``display`` is not 2-D or (H, W, 3).
    """
    array = np.asarray(display, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array @ _LUMA
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2:
        raise ValueError(f"display image must have shape (H, W) or (H, W, 3), got {array.shape}; "
                         "pass ImageRecord.display")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))


def blend_overlay(display: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """Alpha-blend an RGBA overlay (e.g. Grad-CAM through a colour map) over a grayscale image.

    ``out = gray * (1 - alpha) + rgb * alpha`` per pixel, with ``alpha = overlay[..., 3] / 255``
    (straight, not premultiplied, alpha: the "over" operator of Porter & Duff, 1984, on an opaque base).

    Parameters
    ----------
    display : numpy.ndarray
        float in [0, 1], shape (H, W) or (H, W, 3): ``ImageRecord.display``. Shown as grayscale.
    overlay : numpy.ndarray
        uint8, shape (H, W, 4), RGBA: ``AnalysisResult.overlay``.

    Returns
    -------
    numpy.ndarray
        uint8, shape (H, W, 3), RGB, C-contiguous.

    Raises
    ------
    ValueError
        If ``overlay`` is not (H, W, 4) or its (H, W) differs from the image's.
    """
    gray = display_to_gray_uint8(display).astype(np.float32)
    rgba = np.asarray(overlay)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"overlay must be RGBA with shape (H, W, 4), got {rgba.shape}")
    if rgba.shape[:2] != gray.shape:
        raise ValueError(f"overlay is {rgba.shape[1]}x{rgba.shape[0]} pixels but the image is "
                         f"{gray.shape[1]}x{gray.shape[0]}; the overlay must be at the image's size")
    if rgba.dtype != np.uint8:
        rgba = np.clip(np.nan_to_num(rgba.astype(np.float32)), 0, 255)
    rgba = rgba.astype(np.float32)
    alpha = rgba[:, :, 3:4] / 255.0
    blended = gray[:, :, None] * (1.0 - alpha) + rgba[:, :, :3] * alpha
    return np.ascontiguousarray(np.rint(np.clip(blended, 0.0, 255.0)).astype(np.uint8))


def array_to_qimage(array: np.ndarray) -> QImage:
    """Make a ``QImage`` that owns a copy of an 8-bit numpy image.

    Parameters
    ----------
    array : numpy.ndarray
        uint8, shape (H, W) → ``QImage.Format_Grayscale8``, or (H, W, 3) RGB → ``QImage.Format_RGB888``,
        or (H, W, 4) RGBA → ``QImage.Format_RGBA8888``.

    Returns
    -------
    QImage
        A deep copy (independent of ``array``'s buffer).

    Raises
    ------
    ValueError
        For another dtype or shape.
    """
    data = np.asarray(array)
    if data.dtype != np.uint8:
        raise ValueError(f"array_to_qimage needs uint8 pixels, got {data.dtype}; convert with "
                         "display_to_gray_uint8 or blend_overlay first")
    if data.ndim == 2:
        image_format = QImage.Format.Format_Grayscale8
    elif data.ndim == 3 and data.shape[2] == 3:
        image_format = QImage.Format.Format_RGB888
    elif data.ndim == 3 and data.shape[2] == 4:
        image_format = QImage.Format.Format_RGBA8888
    else:
        raise ValueError(f"array_to_qimage needs shape (H, W), (H, W, 3) or (H, W, 4), got {data.shape}")
    data = np.ascontiguousarray(data)
    height, width = data.shape[:2]
    # The QImage only borrows ``data``'s buffer; .copy() detaches it before ``data`` can be freed.
    borrowed = QImage(data.data, width, height, data.strides[0], image_format)
    return borrowed.copy()


def fit_qimage(image: QImage, max_side: int) -> QImage:
    """Scale an image down (never up) so that its longer side is at most ``max_side`` pixels.

    Parameters
    ----------
    image : QImage
    max_side : int
        Largest allowed width or height, in pixels (> 0).

    Returns
    -------
    QImage
        ``image`` itself when it already fits, else a smoothly (bilinear, filtered) scaled copy with the
        same aspect ratio.
    """
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if max(image.width(), image.height()) <= max_side:
        return image
    return image.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an 8-bit image as PNG.

    Parameters
    ----------
    array : numpy.ndarray
        uint8, shape (H, W), (H, W, 3) RGB or (H, W, 4) RGBA (see :func:`array_to_qimage`).

    Returns
    -------
    bytes
        The PNG file's content.
    """
    payload = QByteArray()
    buffer = QBuffer(payload)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not array_to_qimage(array).save(buffer, "PNG"):
        raise ValueError("Qt could not encode the image as PNG")
    buffer.close()
    return bytes(payload.data())


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an 8-bit image to a PNG file.

    Parameters
    ----------
    array : numpy.ndarray
        uint8, shape (H, W), (H, W, 3) RGB or (H, W, 4) RGBA.
    path : str or Path
        Destination; its folder must exist.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        If the file cannot be written.
    """
    path = Path(path)
    path.write_bytes(png_bytes(array))
    return path
