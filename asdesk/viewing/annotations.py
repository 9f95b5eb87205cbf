"""The corner annotations of a viewport, as radiology viewers (Weasis, OHIF) show them.

* top left: patient name and ID;
* top right: study date and description, series number and description;
* bottom left: slice "k / n", instance number, slice position in mm;
* bottom right: window width and level, zoom, "Inverted" when the display is inverted.

Numbers are rounded for reading: window values are whole numbers (a window of 543.8 reads 544) unless the
image's values are small (a width below 10), positions have one decimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asdesk.core.records import ImageMetadata


@dataclass(frozen=True)
class ViewState:
    """What the viewport shows, beyond the image's own metadata.

    Attributes
    ----------
    index, count : int
        0-based slice index and the number of slices of the series.
    window_centre, window_width : float or None
        The display window in modality units; ``None`` before an image is shown.
    zoom : float or None
        Screen pixels per image pixel (1.0 = 100 %).
    inverted : bool
        The user inverted the grey scale (I).
    """

    index: int = 0
    count: int = 1
    window_centre: float | None = None
    window_width: float | None = None
    zoom: float | None = None
    inverted: bool = False


@dataclass(frozen=True)
class CornerText:
    """The lines of the four corners (empty lines are left out).

    Attributes
    ----------
    top_left, top_right, bottom_left, bottom_right : tuple of str
    """

    top_left: tuple[str, ...]
    top_right: tuple[str, ...]
    bottom_left: tuple[str, ...]
    bottom_right: tuple[str, ...]

    def all_lines(self) -> tuple[str, ...]:
        """Every line, corner by corner (top left, top right, bottom left, bottom right)."""
        return self.top_left + self.top_right + self.bottom_left + self.bottom_right


def _number(value: float, width: float) -> str:
    if abs(width) >= 10.0:
        return f"{int(round(value))}"
    return f"{value:.3g}"


def format_window(centre: float, width: float) -> str:
    """``"W 544  L 264"``: window width and level (centre), rounded for reading.

    Parameters
    ----------
    centre, width : float
        In the image's modality units.

    Returns
    -------
    str
        Whole numbers when ``width >= 10``, else three significant digits (e.g. ``"W 0.85  L 0.425"``).
    """
    return f"W {_number(width, width)}  L {_number(centre, width)}"


def format_date(value: str) -> str:
    """A DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD`` (ISO 8601, unambiguous in every country); other text as is."""
    text = value.strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def format_person_name(value: str) -> str:
    """A DICOM PN ``Family^Given^Middle^Prefix^Suffix`` as ``"FAMILY, Given Middle"``; plain text as is."""
    if "^" not in value:
        return value.strip()
    parts = [part.strip() for part in value.split("=")[0].split("^")]
    family = parts[0].upper()
    given = " ".join(part for part in parts[1:3] if part)
    return f"{family}, {given}" if family and given else family or given


def study_title(metadata: ImageMetadata) -> str:
    """A study's name in a study browser: ``"02-01 · 2008-02-22 · SIJ"`` (patient, date, description)."""
    parts = (format_person_name(metadata.patient_name) or metadata.patient_id,
             format_date(metadata.study_date), metadata.study_description.strip())
    return " · ".join(part for part in parts if part) or "Study"


def series_title(metadata: ImageMetadata) -> str:
    """A series' name: ``"10: CORO Stir_FIL_1"`` (series number and description, spaces collapsed)."""
    description = " ".join(metadata.series_description.split())
    number = metadata.series_number
    if number is not None and description:
        return f"{number}: {description}"
    return description or (f"Series {number}" if number is not None else "")


def corner_text(metadata: ImageMetadata, view: ViewState) -> CornerText:
    """The four corner texts of a viewport.

    Parameters
    ----------
    metadata : ImageMetadata
        The image shown.
    view : ViewState
        Slice, window, zoom and inversion of the viewport.

    Returns
    -------
    CornerText
    """
    name = format_person_name(metadata.patient_name)
    top_left = tuple(line for line in (name, f"ID {metadata.patient_id}" if metadata.patient_id else "") if line)

    study = " ".join(part for part in (metadata.modality, format_date(metadata.study_date)) if part)
    description = " ".join(metadata.series_description.split())
    series = f"Se {metadata.series_number}" if metadata.series_number is not None else ""
    series = f"{series}: {description}" if series and description else series or description
    top_right = tuple(line for line in (study, " ".join(metadata.study_description.split()), series) if line)

    bottom_left_lines = []
    slice_line = f"Slice {view.index + 1} / {view.count}" if view.count > 1 else ""
    if metadata.instance_number is not None:
        slice_line += (" · " if slice_line else "") + f"Im {metadata.instance_number}"
    if metadata.frame_index is not None:
        slice_line += (" · " if slice_line else "") + f"Frame {metadata.frame_index + 1}"
    bottom_left_lines.append(slice_line)
    if metadata.slice_position_mm is not None:
        bottom_left_lines.append(f"Pos {metadata.slice_position_mm:.1f} mm")
    elif metadata.slice_location_mm is not None:
        bottom_left_lines.append(f"Loc {metadata.slice_location_mm:.1f} mm")
    bottom_left = tuple(line for line in bottom_left_lines if line)

    bottom_right_lines = []
    if view.window_centre is not None and view.window_width is not None:
        bottom_right_lines.append(format_window(view.window_centre, view.window_width))
    if view.zoom is not None and math.isfinite(view.zoom) and view.zoom > 0:
        bottom_right_lines.append(f"Zoom {view.zoom * 100:.0f} %")
    if view.inverted:
        bottom_right_lines.append("Inverted")
    return CornerText(top_left, top_right, bottom_left, tuple(bottom_right_lines))
