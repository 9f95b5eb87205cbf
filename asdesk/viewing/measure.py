"""Linear measurements and regions of interest on an image, in mm where the pixel spacing is known.

Coordinates are the viewer's image coordinates: x = column, y = row, in pixels, with pixel (row r, column c)
covering ``[c, c + 1) x [r, r + 1)`` (so its centre is at ``(c + 0.5, r + 0.5)``).

Physical size comes from :attr:`ImageMetadata.pixel_spacing_mm` (row spacing, column spacing):

* PixelSpacing (0028,0030): distances in the patient (PS3.3 C.7.6.2.1.1);
* ImagerPixelSpacing (0018,1164) of a projection radiograph: distances at the detector, which are larger
  than in the patient by the geometric magnification (PS3.3 C.8.11.4.1.1); such lengths are labelled
  "at detector";
* neither: lengths and areas are given in pixels, labelled "px (no pixel spacing)".

ROI statistics are over the image's pixel values after the modality LUT (:attr:`ImageRecord.pixels`, what
the viewer's readout shows: e.g. HU on CT, scanner units on MR), over the pixels whose centres lie inside the
shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from asdesk.core.records import ImageMetadata

ShapeKind = Literal["ellipse", "rectangle"]


@dataclass(frozen=True)
class PixelScale:
    """The physical size of one pixel.

    Attributes
    ----------
    row_mm, column_mm : float or None
        Spacing between rows (vertical) and columns (horizontal) in mm; ``None`` when unknown.
    at_detector : bool
        The spacing is ImagerPixelSpacing: distances at the detector, not in the patient.
    """

    row_mm: float | None
    column_mm: float | None
    at_detector: bool = False

    @property
    def calibrated(self) -> bool:
        """Whether lengths can be given in mm."""
        return self.row_mm is not None and self.column_mm is not None

    @property
    def note(self) -> str:
        """What a length's unit needs said: ``"at detector"``, ``"no pixel spacing"`` or ``""``."""
        if not self.calibrated:
            return "no pixel spacing"
        return "at detector" if self.at_detector else ""


def pixel_scale(metadata: ImageMetadata) -> PixelScale:
    """The pixel size of an image, from its metadata.

    Parameters
    ----------
    metadata : ImageMetadata

    Returns
    -------
    PixelScale
    """
    spacing = metadata.pixel_spacing_mm
    if spacing is None:
        return PixelScale(None, None)
    return PixelScale(float(spacing[0]), float(spacing[1]), metadata.pixel_spacing_source == "ImagerPixelSpacing")


def _unit_text(value: float, unit: str, note: str, digits: int = 1) -> str:
    text = f"{value:.{digits}f} {unit}"
    return f"{text} ({note})" if note else text


@dataclass(frozen=True)
class LineMeasurement:
    """A measured distance.

    Attributes
    ----------
    length : float
        In ``unit``.
    unit : str
        ``"mm"`` or ``"px"``.
    length_px : float
        The Euclidean length in pixels (whatever the spacing).
    note : str
        ``"at detector"`` (ImagerPixelSpacing), ``"no pixel spacing"`` (in pixels) or ``""``.
    """

    length: float
    unit: str
    length_px: float
    note: str = ""

    def text(self) -> str:
        """The label shown beside the line, e.g. ``"23.4 mm"``, ``"23.4 mm (at detector)"``,
        ``"41.0 px (no pixel spacing)"``."""
        return _unit_text(self.length, self.unit, self.note)


def measure_line(start: Sequence[float], end: Sequence[float], metadata: ImageMetadata) -> LineMeasurement:
    """The length of the segment from ``start`` to ``end``.

    Parameters
    ----------
    start, end : sequence of 2 float
        (x, y) = (column, row) in image pixels.
    metadata : ImageMetadata
        For the pixel spacing (row spacing scales y, column spacing scales x).

    Returns
    -------
    LineMeasurement
        In mm when the spacing is known (``"at detector"`` for ImagerPixelSpacing), else in pixels.

    Raises
    ------
    ValueError
        If a point is not two finite numbers.
    """
    (x0, y0), (x1, y1) = _point(start), _point(end)
    dx, dy = x1 - x0, y1 - y0
    length_px = math.hypot(dx, dy)
    scale = pixel_scale(metadata)
    if not scale.calibrated:
        return LineMeasurement(length_px, "px", length_px, scale.note)
    length_mm = math.hypot(dx * scale.column_mm, dy * scale.row_mm)  # type: ignore[operator]
    return LineMeasurement(length_mm, "mm", length_px, scale.note)


def _point(value: Sequence[float]) -> tuple[float, float]:
    numbers = tuple(float(v) for v in value)
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"a point is (x, y) in image pixels, got {value!r}")
    return numbers  # type: ignore[return-value]


def shape_mask(image_shape: tuple[int, int], kind: ShapeKind, origin: Sequence[float], size: Sequence[float],
               angle_deg: float = 0.0) -> np.ndarray:
    """The pixels whose centres lie inside an ellipse or a rectangle.

    Parameters
    ----------
    image_shape : (int, int)
        (H, W) of the image.
    kind : {"ellipse", "rectangle"}
        The ellipse is the one inscribed in the rectangle.
    origin : sequence of 2 float
        (x, y) of the shape's corner, in image pixels (before rotation, the top-left corner).
    size : sequence of 2 float
        (width, height) in image pixels, >= 0.
    angle_deg : float
        Rotation of the shape about ``origin``, counter-clockwise in (x, y) coordinates, in degrees.

    Returns
    -------
    numpy.ndarray
        bool (H, W).

    Raises
    ------
    ValueError
        If ``kind`` is unknown or a size is negative or not finite.
    """
    if kind not in ("ellipse", "rectangle"):
        raise ValueError(f"unknown ROI shape {kind!r}; use 'ellipse' or 'rectangle'")
    (x0, y0), (width, height) = _point(origin), _point(size)
    if width < 0 or height < 0:
        raise ValueError(f"an ROI's size must not be negative, got {width} x {height}")
    rows, columns = int(image_shape[0]), int(image_shape[1])
    ys, xs = np.mgrid[0:rows, 0:columns].astype(np.float64)
    dx, dy = xs + 0.5 - x0, ys + 0.5 - y0
    theta = math.radians(angle_deg)
    u = dx * math.cos(theta) + dy * math.sin(theta)  # coordinates along the shape's own axes
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    if width == 0 or height == 0:
        return np.zeros((rows, columns), dtype=bool)
    if kind == "rectangle":
        return (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return ((u / width - 0.5) ** 2 + (v / height - 0.5) ** 2) <= 0.25


@dataclass(frozen=True)
class RoiStatistics:
    """Statistics of the pixel values inside a region.

    Attributes
    ----------
    mean, sd : float
        Mean and sample standard deviation (``ddof=1``) of the values, in the image's modality units; NaN
        when fewer than one (mean) or two (SD) pixels are inside.
    minimum, maximum : float
        NaN when no pixel is inside.
    n_pixels : int
        Pixels whose centres lie inside the shape.
    area : float
        The shape's geometric area (pi/4 w h for an ellipse, w h for a rectangle), in ``area_unit``.
    area_unit : str
        ``"mm²"`` or ``"px²"``.
    note : str
        ``"at detector"``, ``"no pixel spacing"`` or ``""``.
    value_unit : str
        ``"HU"`` for CT, else ``""`` (MR signal and radiograph values have no physical unit).
    """

    mean: float
    sd: float
    minimum: float
    maximum: float
    n_pixels: int
    area: float
    area_unit: str
    note: str = ""
    value_unit: str = ""

    def text(self) -> str:
        """Two lines: ``"mean 184.2 SD 12.3"`` and ``"area 153.4 mm² (160 px)"``."""
        unit = f" {self.value_unit}" if self.value_unit else ""
        if self.n_pixels == 0:
            first = "no pixel inside"
        else:
            sd = "–" if math.isnan(self.sd) else f"{self.sd:.1f}"
            first = f"mean {self.mean:.1f}{unit}  SD {sd}"
        area = _unit_text(self.area, self.area_unit, self.note)
        return f"{first}\narea {area}, {self.n_pixels} px"


def measure_roi(pixels: np.ndarray, kind: ShapeKind, origin: Sequence[float], size: Sequence[float],
                metadata: ImageMetadata, angle_deg: float = 0.0) -> RoiStatistics:
    """Mean, SD, range and area of an ellipse or rectangle on an image.

    Parameters
    ----------
    pixels : numpy.ndarray
        (H, W) modality values (:attr:`ImageRecord.pixels`); (H, W, 3) colour images are measured on the mean
        of their three channels.
    kind, origin, size, angle_deg
        The shape, as for :func:`shape_mask`.
    metadata : ImageMetadata
        For the pixel spacing and the modality.

    Returns
    -------
    RoiStatistics

    Raises
    ------
    ValueError
        As :func:`shape_mask`, or if ``pixels`` is not 2-D or (H, W, 3).
    """
    values = np.asarray(pixels, dtype=np.float64)
    if values.ndim == 3 and values.shape[2] == 3:
        values = values.mean(axis=2)
    if values.ndim != 2:
        raise ValueError(f"ROI statistics need an (H, W) or (H, W, 3) image, got shape {pixels.shape}")
    mask = shape_mask(values.shape, kind, origin, size, angle_deg)
    inside = values[mask]
    count = int(inside.size)
    mean = float(inside.mean()) if count else math.nan
    sd = float(inside.std(ddof=1)) if count > 1 else math.nan
    low = float(inside.min()) if count else math.nan
    high = float(inside.max()) if count else math.nan
    width, height = _point(size)
    area_px = (math.pi / 4.0 if kind == "ellipse" else 1.0) * width * height
    scale = pixel_scale(metadata)
    if scale.calibrated:
        area, unit = area_px * scale.row_mm * scale.column_mm, "mm²"  # type: ignore[operator]
    else:
        area, unit = area_px, "px²"
    value_unit = "HU" if metadata.modality.upper() == "CT" else ""
    return RoiStatistics(mean, sd, low, high, count, area, unit, scale.note, value_unit)
