"""Read PNG, JPEG, TIFF and BMP images (8- or 16-bit, grayscale or colour) into :class:`ImageRecord`.

A raster radiograph is already windowed by whoever exported it, so ``display`` is the stored value over
the largest value of its type (255 or 65535), never a min-max stretch. Decoding goes through OpenCV
(``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``: keeps 16-bit data, expands palettes, drops alpha, applies the EXIF
orientation); bytes are read by numpy so that non-ASCII Windows paths work.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from asdesk.core.errors import NotAnImageError, ReadError, TruncatedFileError
from asdesk.core.records import ImageMetadata, ImageRecord
from asdesk.io.detect import raster_format

_TAIL_BYTES = 1 << 16


def _check_complete(path: Path, content: np.ndarray, fmt: str) -> None:
    """PNG must end with an IEND chunk and JPEG with an EOI marker; otherwise the copy was cut short."""
    tail = content[-_TAIL_BYTES:].tobytes()
    if fmt == "PNG" and b"IEND" not in tail:
        raise TruncatedFileError(path, "the PNG file has no IEND chunk: it ends early; copy it again")
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise TruncatedFileError(
            path, "the JPEG file has no end-of-image marker: it ends early; copy it again"
        )


def _display(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Stored value / largest value of the stored type; float images are shown as they are if in [0, 1]."""
    if np.issubdtype(dtype, np.integer):
        top = float(np.iinfo(dtype).max)
        return np.clip(pixels / top, 0.0, 1.0).astype(np.float32)
    low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if low >= 0.0 and high <= 1.0:
        return np.nan_to_num(pixels).astype(np.float32)
    if high == low:
        return np.zeros(pixels.shape, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def read_raster(path: str | Path) -> ImageRecord:
    """Read a PNG, JPEG, TIFF or BMP file.

    Parameters
    ----------
    path : str or Path
        The image file; its format is found from its signature, not its extension.

    Returns
    -------
    ImageRecord
        ``pixels`` float32 (H, W) for grayscale or (H, W, 3) in RGB order, holding the stored values
        (0-255 or 0-65535); an image whose three channels are identical (a grayscale image saved as RGB,
        a gray palette, gray + alpha) comes back as (H, W). Alpha is dropped and palettes are expanded.
        ``display`` is float32 in [0, 1]: stored value / 255 or / 65535 (floating-point TIFFs already in
        [0, 1] are kept, others scaled by their range). Metadata: ``format`` (``"PNG"``, ``"JPEG"``,
        ``"TIFF"``, ``"BMP"``), ``photometric_interpretation`` (``"MONOCHROME2"`` or ``"RGB"``),
        ``bits_stored`` (8, 16 or 32). Multi-page TIFFs give their first page.

    Raises
    ------
    NotAnImageError
        Empty file, no supported signature, or a file OpenCV cannot decode.
    TruncatedFileError
        A PNG without IEND or a JPEG without an end-of-image marker.
    """
    path = Path(path)
    try:
        content = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ReadError(path, f"the file cannot be opened ({error.strerror or error})") from error
    if content.size == 0:
        raise NotAnImageError(path, "the file is empty (0 bytes); copy it again from its source")
    fmt = raster_format(content[:16].tobytes())
    if not fmt:
        raise NotAnImageError(
            path, "not a PNG, JPEG, TIFF or BMP image (unknown file signature); open a DICOM or image file"
        )
    _check_complete(path, content, fmt)
    try:
        image = cv2.imdecode(content, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise NotAnImageError(path, f"the {fmt} data cannot be decoded; the file is damaged or uses an "
                                    "unsupported variant: re-export it as 8- or 16-bit PNG")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = image[:, :, ::-1]  # OpenCV gives BGR
        if image.shape[2] == 1 or (
            np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2])
        ):
            image = image[:, :, 0]
    dtype = image.dtype
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    metadata = ImageMetadata(
        source=path,
        format=fmt,
        photometric_interpretation="RGB" if pixels.ndim == 3 else "MONOCHROME2",
        bits_stored=int(dtype.itemsize * 8),
    )
    return ImageRecord(pixels=pixels, display=_display(pixels, dtype), metadata=metadata)
