"""The DICOM grayscale pipeline: stored values → modality LUT → VOI LUT or window → MONOCHROME1 inversion.

DICOM PS3.3 C.11 defines the order: the Modality LUT module (C.11.1: Modality LUT Sequence or Rescale
Slope/Intercept) turns stored values into modality units (e.g. HU); the VOI LUT module (C.11.2: VOI LUT
Sequence or Window Center/Width with VOI LUT Function) chooses the displayed range; the Presentation LUT
shape given by MONOCHROME1 (C.7.6.3.1.2) inverts the result. The inversion must come *after* VOI: a window
is defined on modality values, not on what is shown. PS3.4 Annex N.2.1.1 draws the same chain.

The functions take a dataset whose frame-specific attributes have already been flattened to the top level
(see :func:`asdesk.io.dicom_meta.frame_dataset`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

logger = logging.getLogger(__name__)

_HUGE = 1e300


def modality_values(stored: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Apply the Modality LUT or Rescale Slope/Intercept (PS3.3 C.11.1) to stored values.

    Parameters
    ----------
    stored : numpy.ndarray
        Stored values of one frame as decoded, shape (H, W) or (H, W, 3), any integer or float dtype.
    dataset : pydicom.dataset.Dataset
        The (frame-flattened) dataset holding the Modality LUT module.

    Returns
    -------
    numpy.ndarray
        float32 of the same shape, in modality units (e.g. HU for CT). Colour images (more than one sample
        per pixel) have no modality transform and are returned as float32 stored values.
    """
    if stored.ndim == 3 or int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        return stored.astype(np.float32)
    return np.asarray(apply_modality_lut(stored, dataset), dtype=np.float32)


def _has_voi_lut(dataset: Dataset) -> bool:
    sequence = dataset.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _has_window(dataset: Dataset) -> bool:
    return dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` → 0 and ``high`` → 1 (either may be larger), clipped; a flat range gives zeros."""
    if not np.isfinite(low) or not np.isfinite(high) or high == low:
        return np.zeros(values.shape, dtype=np.float32)
    scaled = (values.astype(np.float64) - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float32)
    return _rescale(values, float(finite.min()), float(finite.max()))


def _apply_voi_lut_sequence(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """VOI LUT Sequence (PS3.3 C.11.2.1.1), scaled by the LUT's own output range."""
    integers = np.rint(values).astype(np.int64)
    mapped = apply_voi(integers, dataset, index=0).astype(np.float64)
    descriptor = dataset.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 2**16
    first_mapped = int(descriptor[1])
    table = apply_voi(np.arange(first_mapped, first_mapped + entries, dtype=np.int64), dataset, index=0)
    return _rescale(mapped, float(table.min()), float(table.max()))


def _apply_window(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Window Center/Width with the VOI LUT Function (PS3.3 C.11.2.1.2-3), scaled to [0, 1].

    pydicom maps the window to the range of the modality output (from Bits Stored, Pixel Representation
    and the rescale); that range is found by windowing -inf and +inf with the same function.
    """
    with np.errstate(over="ignore"):
        windowed = apply_windowing(values.astype(np.float64), dataset, index=0)
        ends = apply_windowing(np.array([-_HUGE, _HUGE]), dataset, index=0)
    return _rescale(windowed, float(ends[0]), float(ends[1]))


def display_values(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Turn modality values into the image a reader sees by default, in [0, 1].

    Order (PS3.3 C.11, PS3.4 N.2.1.1): VOI LUT Sequence if present (``prefer_lut=True`` semantics), else
    the first Window Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID), else the
    minimum-maximum of the frame's values; then ``1 - x`` for MONOCHROME1. Colour images are scaled by the
    largest value their Bits Stored can hold.

    Parameters
    ----------
    values : numpy.ndarray
        Modality values (output of :func:`modality_values`), float32 (H, W) or (H, W, 3).
    dataset : pydicom.dataset.Dataset
        The (frame-flattened) dataset holding the VOI LUT module and Photometric Interpretation.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], same shape as ``values``.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if values.ndim == 3:
        bits = int(dataset.get("BitsStored", 8) or 8)
        return _rescale(values, 0.0, float(2**bits - 1))

    display: np.ndarray | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _has_voi_lut(dataset):
                display = _apply_voi_lut_sequence(values, dataset)
            elif _has_window(dataset) and photometric in ("MONOCHROME1", "MONOCHROME2"):
                display = _apply_window(values, dataset)
    except (ValueError, TypeError, IndexError, AttributeError, NotImplementedError) as error:
        # A malformed VOI module (e.g. a window width below 1) must not hide the image: show its range.
        logger.warning("VOI LUT/window not usable (%s); showing the value range instead", error)
        display = None
    if display is None:
        display = _min_max(values)
    if photometric == "MONOCHROME1":
        display = (1.0 - display).astype(np.float32)
    return display
