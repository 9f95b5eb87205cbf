"""Sanity limits and checks shared by the readers: nothing broken is scored, no decoder failure escapes.

Two jobs:

* **Isolation**: :func:`must_propagate` tells which exceptions a reader lets through (interrupts, exits,
  generator shutdown and asdesk's own cancellation); every other failure of a decoder, ``BaseException``
  included (a Rust decoder's ``pyo3_runtime.PanicException`` derives from ``BaseException``), becomes a
  :class:`~asdesk.core.errors.ReadError` naming the file.
* **Sanity before scoring**: size limits checked from the header *before* decoding (a decompression bomb
  never allocates), and checks of the decoded values (non-finite, flat) so that a blank or garbage image is
  refused instead of getting a constant probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asdesk.core.errors import CancelledError, ReadError

#: Largest image accepted, in pixels per frame (about 7,000 x 7,000; a large detector is 4,300 x 3,500).
MAX_FRAME_PIXELS = 50_000_000
#: Largest number of frames a file may claim (a long cine or a thin-slice enhanced CT stays far below).
MAX_FRAMES = 5_000
#: Smallest grey-level spread of the displayed image, in [0, 1] units (below: a blank image).
MIN_DISPLAY_RANGE = 1.0 / 1024.0

_PROPAGATE: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError)


def must_propagate(error: BaseException) -> bool:
    """Tell whether a reader must let an exception through instead of turning it into a file's error.

    Parameters
    ----------
    error : BaseException
        What a decoder or parser raised.

    Returns
    -------
    bool
        ``True`` for ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and
        :class:`~asdesk.core.errors.CancelledError`; ``False`` for everything else, including native
        decoder panics (``pyo3_runtime.PanicException``) and ``MemoryError``.
    """
    return isinstance(error, _PROPAGATE)


def describe(error: BaseException, limit: int = 300) -> str:
    """An exception as ``"Type: message"`` on one line, shortened to ``limit`` characters.

    Parameters
    ----------
    error : BaseException
        Any exception.
    limit : int
        Longest text returned.

    Returns
    -------
    str
    """
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_pixel_count(path: Path, width: int, height: int, what: str) -> None:
    """Refuse an image whose header announces an implausible size, before anything is decoded.

    Parameters
    ----------
    path : Path
        The file (named in the error).
    width, height : int
        Size from the header, in pixels.
    what : str
        Where the size comes from, e.g. ``"the PNG header"``.

    Raises
    ------
    ReadError
        A side below 1, or more than :data:`MAX_FRAME_PIXELS` pixels.
    """
    if width < 1 or height < 1:
        raise ReadError(path, f"{what} gives a size of {width} x {height} pixels: the file is damaged")
    if width * height > MAX_FRAME_PIXELS:
        raise ReadError(
            path,
            f"{what} announces {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{MAX_FRAME_PIXELS:,} pixels per image: the file is damaged or not a radiograph/MR slice; "
            "it was not decoded",
        )


def check_values(path: Path, pixels: np.ndarray, display: np.ndarray, source: str) -> None:
    """Refuse decoded images that are not fit to score: non-finite values or a flat (blank) image.

    Parameters
    ----------
    path : Path
        The file (named in the error).
    pixels : numpy.ndarray
        Modality values (or stored values), float, (H, W) or (H, W, 3).
    display : numpy.ndarray
        Displayed values in [0, 1], same shape.
    source : str
        What produced ``pixels`` (e.g. ``"the modality LUT (Rescale Slope 0, Intercept 0)"``), for the
        message.

    Raises
    ------
    ReadError
        Any non-finite value (NaN or infinity), every pixel equal, or a displayed grey-level spread below
        :data:`MIN_DISPLAY_RANGE`.
    """
    if pixels.size == 0:
        raise ReadError(path, "the image has no pixels: the file is damaged")
    finite = np.isfinite(pixels)
    if not finite.all():
        bad = int(pixels.size - np.count_nonzero(finite))
        raise ReadError(
            path,
            f"{source} gives {bad:,} non-finite value(s) (NaN or infinity): the header is damaged; "
            "the image was not analysed",
        )
    low, high = float(pixels.min()), float(pixels.max())
    if low == high:
        raise ReadError(
            path,
            f"every pixel has the same value ({low:g}) after {source}: a blank image (or a damaged "
            "header), not analysed",
        )
    if not np.isfinite(display).all():
        raise ReadError(path, "the displayed image has non-finite values: the header is damaged")
    spread = float(display.max()) - float(display.min())
    if spread < MIN_DISPLAY_RANGE:
        raise ReadError(
            path,
            f"the displayed image is blank (grey levels span {spread:.2g} of the range; the window or "
            "bit depth in the header does not fit the pixel values): not analysed",
        )
