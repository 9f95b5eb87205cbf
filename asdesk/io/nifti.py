"""Read NIfTI volumes and masks (training data) as slices oriented the way DICOM viewers show them.

nibabel is a training-only extra, so it is imported inside the functions.

Orientation
-----------
A NIfTI volume is stored in voxel order with an affine to the RAS+ world: +x points to the patient's
**right**, +y **anterior**, +z **superior** (NIfTI-1 header, qform/sform). DICOM uses LPS+ (+x to the
patient's left, +y posterior, PS3.3 C.7.6.2.1.1). This module slices the
volume along one voxel axis (by default the third, the acquired slice direction, so oblique acquisitions
stay in their own plane) and orients each slice like a scanner's DICOM images:

* columns (left → right on screen) run towards the patient's **left** for axial and coronal planes, i.e.
  the patient's right is on the image's left (radiological convention); towards **posterior** for
  sagittal planes (anterior on the image's left);
* rows (top → bottom on screen) run towards the patient's **feet** for coronal and sagittal planes (head at
  the top); towards **posterior** for axial planes (anterior at the top).

Which in-plane axis becomes the row or the column, and whether it is flipped, is decided from the affine:
the in-plane axis closest to the target direction wins. A NIfTI made from a DICOM series with the usual
scanner orientation therefore gives back the DICOM pixel grid unchanged. Masks stored with the same affine
as their image (as in ``sij-mri-spa``) get exactly the same transform, so they stay aligned.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdesk.core.errors import NotAnImageError, ReadError, TruncatedFileError
from asdesk.core.records import ImageMetadata, ImageRecord

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}
#: Unit vectors in RAS+ world: where screen-right and screen-down should point for each plane.
_SCREEN_RIGHT = {"axial": (-1.0, 0.0, 0.0), "coronal": (-1.0, 0.0, 0.0), "sagittal": (0.0, -1.0, 0.0)}
_SCREEN_DOWN = {"axial": (0.0, -1.0, 0.0), "coronal": (0.0, 0.0, -1.0), "sagittal": (0.0, 0.0, -1.0)}
_CODES = (("L", "R"), ("P", "A"), ("I", "S"))  # RAS+ component i: (code of -i, code of +i)


@dataclass(frozen=True)
class _Layout:
    """How voxel axes map to (slice, row, column) and which of row/column are reversed."""

    slice_axis: int
    row_axis: int
    column_axis: int
    flip_rows: bool
    flip_columns: bool
    plane: str


def _directions(affine: np.ndarray) -> np.ndarray:
    """Unit RAS+ direction of each voxel axis, as columns of a 3x3 array."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    lengths = np.linalg.norm(matrix, axis=0)
    lengths[lengths == 0] = 1.0
    return matrix / lengths


def _axis_index(axis: int | str, directions: np.ndarray) -> int:
    if isinstance(axis, str):
        wanted = {"sagittal": 0, "coronal": 1, "axial": 2}.get(axis.lower())
        if wanted is None:
            raise ValueError(f"axis must be 0, 1, 2, 'axial', 'coronal' or 'sagittal', not {axis!r}")
        return int(np.argmax(np.abs(directions[wanted, :])))
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1, 2, 'axial', 'coronal' or 'sagittal', not {axis!r}")
    return int(axis)


def _layout(affine: np.ndarray, axis: int | str) -> _Layout:
    directions = _directions(affine)
    slice_axis = _axis_index(axis, directions)
    first, second = (a for a in range(3) if a != slice_axis)
    normal = np.cross(directions[:, first], directions[:, second])
    plane = _PLANES[int(np.argmax(np.abs(normal)))]
    right, down = np.array(_SCREEN_RIGHT[plane]), np.array(_SCREEN_DOWN[plane])
    if abs(directions[:, first] @ right) >= abs(directions[:, second] @ right):
        column_axis, row_axis = first, second
    else:
        column_axis, row_axis = second, first
    return _Layout(
        slice_axis=slice_axis,
        row_axis=row_axis,
        column_axis=column_axis,
        flip_rows=bool(directions[:, row_axis] @ down < 0),
        flip_columns=bool(directions[:, column_axis] @ right < 0),
        plane=plane,
    )


def _code(direction: np.ndarray) -> str:
    component = int(np.argmax(np.abs(direction)))
    return _CODES[component][1 if direction[component] > 0 else 0]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], object]:
    """(data float32 3-D, affine, voxel sizes in mm, header) with nibabel's errors mapped to ours."""
    import nibabel  # lazily: training-only extra
    from nibabel.filebasedimages import ImageFileError

    if not path.is_file():
        raise ReadError(path, "no such file; check the path")
    try:
        image = nibabel.load(path)
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except ImageFileError as error:
        raise NotAnImageError(path, f"not a NIfTI image ({error}); open a .nii or .nii.gz file") from error
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise TruncatedFileError(path, f"the NIfTI file ends early ({error}); copy it again") from error
    except OSError as error:
        raise ReadError(path, f"the NIfTI file cannot be read ({error})") from error
    except ValueError as error:
        raise ReadError(path, f"the NIfTI data cannot be read ({error}); the file may be damaged") from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise ReadError(path, f"expected a 3-D volume, got shape {data.shape}; split 4-D series first")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    return data, np.asarray(image.affine, dtype=np.float64), zooms, image.header  # type: ignore[return-value]


def _oriented(data: np.ndarray, layout: _Layout) -> np.ndarray:
    volume = np.transpose(data, (layout.slice_axis, layout.row_axis, layout.column_axis))
    if layout.flip_rows:
        volume = volume[:, ::-1, :]
    if layout.flip_columns:
        volume = volume[:, :, ::-1]
    return np.ascontiguousarray(volume, dtype=np.float32)


def read_nifti_volume(
    path: str | Path, axis: int | str = 2
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI volume as a stack of display-oriented slices.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file (image or mask). Scaling (``scl_slope``/``scl_inter``) is applied.
    axis : int or {"axial", "coronal", "sagittal"}
        The voxel axis to slice along: 0, 1 or 2 (default 2, the acquired slice direction), or a plane
        name, meaning the voxel axis closest to that plane's normal.

    Returns
    -------
    volume : numpy.ndarray
        float32, shape (S, H, W): slice, row, column. Slices keep the file's voxel order along ``axis``;
        rows and columns are oriented as described in the module docstring (coronal: head at the top,
        patient's right on the image left). ``volume[i]`` equals ``nifti_slices(path, axis)[i].pixels``.
    spacing : tuple of float
        (slice, row, column) voxel size in mm.

    Raises
    ------
    NotAnImageError
        Not a NIfTI file.
    TruncatedFileError
        A ``.nii.gz`` that ends early.
    ReadError
        Missing file, damaged data or a 4-D volume.
    ValueError
        ``axis`` is not one of the accepted values.
    """
    path = Path(path)
    data, affine, zooms, _ = _load(path)
    layout = _layout(affine, axis)
    spacing = (zooms[layout.slice_axis], zooms[layout.row_axis], zooms[layout.column_axis])
    return _oriented(data, layout), spacing


def nifti_orientation(path: str | Path, axis: int | str = 2) -> tuple[str, str, str]:
    """Anatomical direction of increasing slice index, row index and column index.

    Parameters
    ----------
    path : str or Path
        A NIfTI file.
    axis : int or str
        As in :func:`read_nifti_volume`.

    Returns
    -------
    tuple of str
        The patient direction (``"L"``, ``"R"``, ``"A"``, ``"P"``, ``"S"``, ``"I"``) each axis of
        :func:`read_nifti_volume`'s output points to, e.g. ``("P", "I", "L")`` for a coronal stack whose
        slices go backwards, rows downwards and columns to the patient's left. For oblique planes this is
        the closest direction.
    """
    import nibabel

    affine = np.asarray(nibabel.load(Path(path)).affine, dtype=np.float64)
    layout = _layout(affine, axis)
    directions = _directions(affine)
    slice_code = _code(directions[:, layout.slice_axis])
    row_code = _code(directions[:, layout.row_axis] * (-1 if layout.flip_rows else 1))
    column_code = _code(directions[:, layout.column_axis] * (-1 if layout.flip_columns else 1))
    return slice_code, row_code, column_code


def _display_range(volume: np.ndarray, header: object) -> tuple[float, float]:
    """NIfTI cal_min/cal_max when set (the file's display range), else the volume's min and max."""
    try:
        low, high = float(header["cal_min"]), float(header["cal_max"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        low, high = 0.0, 0.0
    if np.isfinite(low) and np.isfinite(high) and high > low:
        return low, high
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def nifti_slices(path: str | Path, axis: int | str = 2) -> list[ImageRecord]:
    """Read a NIfTI volume (image or mask) as 2-D :class:`ImageRecord` slices, oriented like DICOM.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file.
    axis : int or {"axial", "coronal", "sagittal"}
        As in :func:`read_nifti_volume` (default 2: the acquired slices).

    Returns
    -------
    list of ImageRecord
        One per slice, in voxel order. ``pixels`` float32 (H, W), the stored values after NIfTI scaling
        (masks keep their labels 0/1/...); ``display`` float32 in [0, 1] scaled by the header's
        cal_min/cal_max if set, else by the whole volume's min and max (the same for every slice).
        Metadata: ``format="NIfTI"``, ``pixel_spacing_mm`` (row, column) in mm, ``instance_number`` and
        ``frame_index`` = the 0-based slice index, ``slice_position_mm`` = position of the slice along the
        slicing axis' direction in the file's RAS+ world (mm), ``series_description`` = the header's
        ``descrip``.

    Raises
    ------
    NotAnImageError, TruncatedFileError, ReadError, ValueError
        As :func:`read_nifti_volume`.
    """
    path = Path(path)
    data, affine, zooms, header = _load(path)
    layout = _layout(affine, axis)
    volume = _oriented(data, layout)
    low, high = _display_range(volume, header)
    if high > low:
        display = np.clip((volume - low) / (high - low), 0.0, 1.0).astype(np.float32)
    else:
        display = np.zeros_like(volume)
    direction = _directions(affine)[:, layout.slice_axis]
    try:
        description = bytes(header["descrip"]).split(b"\x00")[0].decode("ascii", "replace").strip()  # type: ignore[index]
        bits = int(header["bitpix"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        description, bits = "", 0
    records = []
    for index in range(volume.shape[0]):
        voxel = np.zeros(4)
        voxel[layout.slice_axis] = index
        voxel[3] = 1.0
        position = float((affine @ voxel)[:3] @ direction)
        metadata = ImageMetadata(
            source=path,
            format="NIfTI",
            series_description=description,
            pixel_spacing_mm=(zooms[layout.row_axis], zooms[layout.column_axis]),
            slice_position_mm=position,
            instance_number=index,
            frame_index=index,
            photometric_interpretation="MONOCHROME2",
            bits_stored=bits or None,
        )
        records.append(ImageRecord(pixels=volume[index], display=display[index], metadata=metadata))
    return records
