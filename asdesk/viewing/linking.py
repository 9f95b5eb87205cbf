"""Linked slices: the slice of another series of the same study nearest a slice's position.

Two series of one study (e.g. STIR and T1 of the SI joints) rarely have the same number of slices, the same
order or the same first slice, so linking by index is wrong. The position of a slice is its
ImagePositionPatient projected on the plane normal (row cosines x column cosines, PS3.3 C.7.6.2.1.1); the
linked slice is the one of the other series whose position along the *same* normal is nearest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asdesk.core.records import ImageMetadata, ImageRecord

MAX_PLANE_ANGLE_DEG = 15.0
"""Series whose planes differ by more than this (e.g. axial against coronal) are not linked by position."""


@dataclass(frozen=True)
class SliceLink:
    """Where a slice of one series lies in another.

    Attributes
    ----------
    index : int
        0-based index of the nearest slice in the other series.
    distance_mm : float
        Distance between the two slices along the normal, in mm (>= 0).
    """

    index: int
    distance_mm: float


def plane_normal(metadata: ImageMetadata) -> np.ndarray | None:
    """Unit normal of an image's plane (row cosines x column cosines), or ``None`` without orientation.

    Parameters
    ----------
    metadata : ImageMetadata

    Returns
    -------
    numpy.ndarray or None
        float64 (3,) in patient coordinates (LPS).
    """
    if metadata.image_orientation is None:
        return None
    cosines = np.asarray(metadata.image_orientation, dtype=np.float64)
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def positions_along(records: Sequence[ImageRecord], normal: np.ndarray) -> np.ndarray:
    """Positions of slices along ``normal``: ImagePositionPatient · normal, in mm.

    Parameters
    ----------
    records : sequence of ImageRecord
    normal : numpy.ndarray
        Unit vector (3,) in patient coordinates.

    Returns
    -------
    numpy.ndarray
        float64 (n,), NaN where a slice has no ImagePositionPatient.
    """
    out = np.full(len(records), np.nan)
    for index, record in enumerate(records):
        position = record.metadata.image_position
        if position is not None:
            out[index] = float(np.dot(np.asarray(position, dtype=np.float64), normal))
    return out


def linked_slice(source: ImageRecord, targets: Sequence[ImageRecord],
                 max_plane_angle_deg: float = MAX_PLANE_ANGLE_DEG) -> SliceLink | None:
    """The slice of ``targets`` nearest ``source`` along the plane normal.

    Parameters
    ----------
    source : ImageRecord
        The slice shown in one viewport.
    targets : sequence of ImageRecord
        The slices of the other series, in any order.
    max_plane_angle_deg : float
        Planes further apart than this are not linked.

    Returns
    -------
    SliceLink or None
        ``None`` when a position or orientation is missing, or the planes are not parallel within
        ``max_plane_angle_deg``: positions along different normals do not correspond. (Never a guess by
        index.)
    """
    if not targets or source.metadata.image_position is None:
        return None
    normal = plane_normal(source.metadata)
    target_normal = next((n for n in (plane_normal(r.metadata) for r in targets) if n is not None), None)
    if normal is None or target_normal is None:
        return None
    if abs(float(np.dot(normal, target_normal))) < np.cos(np.radians(max_plane_angle_deg)):
        return None
    here = float(np.dot(np.asarray(source.metadata.image_position, dtype=np.float64), normal))
    distances = np.abs(positions_along(targets, normal) - here)
    if np.all(np.isnan(distances)):
        return None
    index = int(np.nanargmin(distances))
    return SliceLink(index, float(distances[index]))
