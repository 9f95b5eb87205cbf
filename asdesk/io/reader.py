"""One entry point for single files: decide DICOM or raster by content, then read."""

from __future__ import annotations

from pathlib import Path

from asdesk.core.errors import NotAnImageError, ReadError
from asdesk.core.records import ImageRecord
from asdesk.io.detect import sniff
from asdesk.io.dicom import read_dicom_frames, read_dicom_image
from asdesk.io.raster import read_raster


def _kind(path: Path) -> str:
    if not path.exists():
        raise ReadError(path, "no such file; check the path")
    if path.is_dir():
        raise NotAnImageError(path, "this is a folder; open a file, or read the folder as a series")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ReadError(path, f"the file cannot be opened ({error.strerror or error})") from error
    if size == 0:
        raise NotAnImageError(path, "the file is empty (0 bytes); copy it again from its source")
    kind = sniff(path)
    if not kind:
        raise NotAnImageError(
            path,
            "neither DICOM (no 'DICM' at byte 128 and no image dataset) nor a PNG, JPEG, TIFF or BMP image; "
            "open a DICOM file or an image file",
        )
    return kind


def read_image(path: str | Path) -> ImageRecord:
    """Read one 2-D image from a DICOM or raster file, deciding which by content.

    DICOM goes through the PS3.3 C.11 grayscale chain (modality LUT → VOI LUT or window → MONOCHROME1
    inversion, see :func:`asdesk.io.dicom.read_dicom_image`); a multi-frame file gives its first frame.
    PNG/JPEG/TIFF/BMP are read by :func:`asdesk.io.raster.read_raster`.

    Parameters
    ----------
    path : str or Path
        The file. Its name and extension are ignored.

    Returns
    -------
    ImageRecord
        ``pixels`` float32 (H, W) or (H, W, 3); ``display`` float32 in [0, 1], same shape.

    Raises
    ------
    NotAnImageError
        Neither DICOM nor a supported raster image (including empty files and folders).
    TruncatedFileError, NoPixelDataError, UnsupportedTransferSyntaxError, DicomDecodeError
        DICOM problems, each naming the file and what to do.
    ReadError
        The file does not exist or cannot be opened.
    """
    path = Path(path)
    if _kind(path) == "dicom":
        return read_dicom_image(path)
    return read_raster(path)


def read_frames(path: str | Path) -> list[ImageRecord]:
    """Read every frame of a file: one record per frame of a multi-frame DICOM, else a list of one.

    Parameters
    ----------
    path : str or Path
        A DICOM or raster file.

    Returns
    -------
    list of ImageRecord
        In frame order; ``metadata.frame_index`` is set (0-based) for multi-frame DICOM only.

    Raises
    ------
    ReadError
        The same errors as :func:`read_image`.
    """
    path = Path(path)
    if _kind(path) == "dicom":
        return read_dicom_frames(path)
    return [read_raster(path)]
