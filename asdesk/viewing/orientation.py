"""Orientation markers: which patient direction lies at each edge of an image (R/L, A/P, H/F).

DICOM patient coordinates (PS3.3 C.7.6.2.1.1) are LPS: +x towards the patient's left, +y posterior, +z head.
ImageOrientationPatient (0020,0037) gives the direction cosines of the row (the direction of increasing
column index, i.e. towards the right edge of the displayed image) and of the column (towards the bottom edge).
The right edge is labelled with the row direction, the bottom edge with the column direction, the left and top
edges with their opposites. Letters follow D. Clunie's rule, as Weasis applies it: the axis with the largest
cosine first, then further axes in decreasing order. A further letter is given only when the direction is
tilted towards that axis by more than a threshold angle, so that a few degrees of tilt or rounding noise do
not clutter the label, while an oblique coronal SI-joint slice (tilted ~38 degrees) reads "FP" / "HA".

Radiographs have no ImageOrientationPatient; their PatientOrientation (0020,0020) names the row and column
directions directly (PS3.3 C.7.6.1.1.1), e.g. ``L\\F``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asdesk.core.records import ImageMetadata

OBLIQUE_THRESHOLD_DEG = 10.0
"""A second axis is named when the direction leans more than this many degrees towards it."""

OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "H": "F", "F": "H"}
"""The opposite of each patient direction letter."""

_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))  # (negative, positive) direction of x, y, z in LPS


@dataclass(frozen=True)
class EdgeLabels:
    """The patient direction at each edge of the displayed image.

    Attributes
    ----------
    left, right, top, bottom : str
        Letters from R/L, A/P, H/F, most important first (e.g. ``"FP"``).
    source : str
        ``"ImageOrientationPatient"`` or ``"PatientOrientation"``.
    """

    left: str
    right: str
    top: str
    bottom: str
    source: str


def direction_label(vector: Sequence[float], oblique_threshold_deg: float = OBLIQUE_THRESHOLD_DEG,
                    max_letters: int = 2) -> str:
    """Name a direction in the patient (LPS) frame with letters from R/L, A/P, H/F.

    Parameters
    ----------
    vector : sequence of 3 float
        A direction in patient coordinates (x: right→left, y: anterior→posterior, z: feet→head); need not be
        of unit length.
    oblique_threshold_deg : float
        After the dominant axis, each other axis is named (in decreasing order of its cosine) when the
        direction leans towards it by more than this angle (cosine magnitude > sin(angle)).
    max_letters : int
        At most this many letters (1 to 3).

    Returns
    -------
    str
        E.g. ``"L"`` for (1, 0, 0), ``"FP"`` for (0, 0.62, -0.78).

    Raises
    ------
    ValueError
        If ``vector`` does not hold three finite numbers, or has zero length.
    """
    values = np.asarray(vector, dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise ValueError(f"a direction needs three finite numbers, got {vector!r}")
    length = float(np.linalg.norm(values))
    if length < 1e-9:
        raise ValueError("a direction of zero length has no orientation; check ImageOrientationPatient")
    unit = values / length
    order = sorted(range(3), key=lambda axis: -abs(unit[axis]))
    threshold = math.sin(math.radians(oblique_threshold_deg))
    letters = []
    for rank, axis in enumerate(order[: max(1, min(3, max_letters))]):
        if rank > 0 and abs(unit[axis]) <= threshold:
            break
        letters.append(_AXIS_LETTERS[axis][1 if unit[axis] > 0 else 0])
    return "".join(letters)


def _opposite(label: str) -> str | None:
    if not label or any(letter not in OPPOSITE for letter in label):
        return None
    return "".join(OPPOSITE[letter] for letter in label)


def edge_labels_from_cosines(orientation: Sequence[float],
                             oblique_threshold_deg: float = OBLIQUE_THRESHOLD_DEG) -> EdgeLabels:
    """Edge labels from ImageOrientationPatient (0020,0037).

    Parameters
    ----------
    orientation : sequence of 6 float
        Row direction cosines (x, y, z), then column direction cosines, in LPS (PS3.3 C.7.6.2.1.1).
    oblique_threshold_deg : float
        See :func:`direction_label`.

    Returns
    -------
    EdgeLabels
        Right = the row direction, bottom = the column direction, left and top their opposites.

    Raises
    ------
    ValueError
        If ``orientation`` does not hold six finite numbers or a direction has zero length.
    """
    values = [float(v) for v in orientation]
    if len(values) != 6:
        raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(values)}")
    right = direction_label(values[:3], oblique_threshold_deg)
    bottom = direction_label(values[3:], oblique_threshold_deg)
    return EdgeLabels(left=_opposite(right) or "", right=right, top=_opposite(bottom) or "", bottom=bottom,
                      source="ImageOrientationPatient")


def edge_labels_from_patient_orientation(values: Sequence[str]) -> EdgeLabels | None:
    """Edge labels from PatientOrientation (0020,0020), the radiograph's statement of its directions.

    Parameters
    ----------
    values : sequence of 2 str
        Direction of the row (towards the right edge) and of the column (towards the bottom edge), each one
        or more letters from R/L, A/P, H/F (PS3.3 C.7.6.1.1.1), e.g. ``("L", "F")``.

    Returns
    -------
    EdgeLabels or None
        ``None`` when there are not two values or a value uses other letters (e.g. the quadruped terms of
        PS3.3 C.7.6.1.1.1), which this viewer does not label.
    """
    if len(values) != 2:
        return None
    right, bottom = (str(value).strip().upper() for value in values)
    left, top = _opposite(right), _opposite(bottom)
    if left is None or top is None:
        return None
    return EdgeLabels(left=left, right=right, top=top, bottom=bottom, source="PatientOrientation")


def edge_labels(metadata: ImageMetadata, oblique_threshold_deg: float = OBLIQUE_THRESHOLD_DEG) -> EdgeLabels | None:
    """The orientation markers of an image: from ImageOrientationPatient, else PatientOrientation, else none.

    Parameters
    ----------
    metadata : ImageMetadata
        The image's metadata (``image_orientation``, ``patient_orientation``).
    oblique_threshold_deg : float
        See :func:`direction_label`.

    Returns
    -------
    EdgeLabels or None
        ``None`` when the image states neither (a PNG, a secondary capture): the viewer shows no markers
        rather than guess.
    """
    if metadata.image_orientation is not None:
        try:
            return edge_labels_from_cosines(metadata.image_orientation, oblique_threshold_deg)
        except ValueError:
            pass
    if metadata.patient_orientation is not None:
        return edge_labels_from_patient_orientation(metadata.patient_orientation)
    return None
