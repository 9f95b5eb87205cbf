"""Decide what a file holds from its content, never from its name.

PACS exports have no file extension and some older DICOM files have no preamble, so the only reliable
test is the content: ``DICM`` at byte 128 (DICOM PS3.10 section 7.1), a raster format's signature, or,
failing both, a forced DICOM parse that finds an image (Rows and Columns). File names are used only to
*skip* files quickly when walking folders (hidden files, documents, DICOMDIR).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Literal

import pydicom

logger = logging.getLogger(__name__)

FileKind = Literal["dicom", "raster", ""]

#: Bytes read to probe a preamble-less DICOM file (group 0028 comes long before the pixel data).
_PROBE_BYTES = 1 << 20

#: Raster signatures (magic numbers) and the format name each one means.
_RASTER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)

#: Extensions that are never images: skipped when walking folders, without opening the file.
NON_IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".txt", ".csv", ".tsv", ".json", ".xml", ".html", ".htm", ".pdf", ".doc", ".docx", ".xls",
        ".xlsx", ".ppt", ".pptx", ".md", ".rst", ".log", ".ini", ".cfg", ".toml", ".yaml", ".yml",
        ".py", ".pyc", ".sh", ".bat", ".exe", ".dll", ".so", ".zip", ".gz", ".tgz", ".bz2", ".xz",
        ".7z", ".rar", ".tar", ".iso", ".mp4", ".avi", ".mov", ".mkv", ".mp3", ".wav", ".db",
        ".sqlite", ".lnk", ".url", ".nii", ".mgz", ".h5", ".hdf5", ".npy", ".npz", ".pkl", ".keras",
    }
)

#: File names that are never images (DICOM media directories, OS metadata).
NON_IMAGE_NAMES: frozenset[str] = frozenset({"dicomdir", "thumbs.db", "desktop.ini", "lockfile", "version"})


def should_skip(path: Path) -> bool:
    """Tell whether a file found while walking a folder can be skipped without opening it.

    Parameters
    ----------
    path : Path
        A file.

    Returns
    -------
    bool
        ``True`` for hidden files (name starting with ``.``), DICOMDIR and other known non-image names,
        and documents, archives, code and data files recognised by their extension. Files without an
        extension are never skipped: PACS exports have none.
    """
    name = path.name
    if name.startswith(".") or name.lower() in NON_IMAGE_NAMES:
        return True
    return path.suffix.lower() in NON_IMAGE_SUFFIXES


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def raster_format(head: bytes) -> str:
    """Name the raster format whose signature starts ``head``.

    Parameters
    ----------
    head : bytes
        The first bytes of a file (at least 8).

    Returns
    -------
    str
        ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, or ``""`` when no known signature matches.
    """
    for signature, name in _RASTER_SIGNATURES:
        if head.startswith(signature):
            return name
    return ""


def _has_dicm_prefix(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _plausible_first_group(head: bytes) -> bool:
    """A preamble-less dataset starts with a low, even group number (0002, 0008, ... 0028)."""
    if len(head) < 8:
        return False
    for group in (int.from_bytes(head[0:2], "little"), int.from_bytes(head[0:2], "big")):
        if 0x0002 <= group <= 0x0028 and group % 2 == 0:
            return True
    return False


def _is_preambleless_image(path: Path, head: bytes) -> bool:
    """Try a forced parse of the file's first MiB; accept only a dataset that describes an image."""
    if not _plausible_first_group(head):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(
                io.BytesIO(_head(path, _PROBE_BYTES)), force=True, stop_before_pixels=True
            )
            return "Rows" in dataset and "Columns" in dataset and int(dataset.Rows) > 0
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return False


def sniff(path: str | Path) -> FileKind:
    """Classify a file by its content.

    Parameters
    ----------
    path : str or Path
        The file to look at.

    Returns
    -------
    {"dicom", "raster", ""}
        ``"dicom"`` for a file with ``DICM`` at byte 128 (PS3.10 7.1) or a preamble-less dataset that
        holds an image (Rows/Columns); ``"raster"`` for PNG, JPEG, TIFF or BMP signatures; ``""`` for
        anything else, including empty and unreadable files.
    """
    path = Path(path)
    try:
        head = _head(path, 132)
    except OSError:
        return ""
    if _has_dicm_prefix(head):
        return "dicom"
    if raster_format(head):
        return "raster"
    if _is_preambleless_image(path, head):
        return "dicom"
    return ""


def is_dicom(path: str | Path) -> bool:
    """Tell whether a file is DICOM, by content.

    A file is DICOM when it has ``DICM`` at byte 128 (DICOM PS3.10 section 7.1), whatever its name. A file
    without that preamble is accepted when ``pydicom.dcmread(force=True)`` reads a dataset with Rows and
    Columns from it, so that old preamble-less images are read but random files are not.

    Parameters
    ----------
    path : str or Path
        The file to test. Its name and extension are ignored.

    Returns
    -------
    bool
        ``True`` for DICOM files; ``False`` otherwise, including for missing or unreadable files.
    """
    return sniff(path) == "dicom"


def is_raster(path: str | Path) -> bool:
    """Tell whether a file is a PNG, JPEG, TIFF or BMP image, by its signature.

    Parameters
    ----------
    path : str or Path
        The file to test.

    Returns
    -------
    bool
        ``True`` when the file starts with a supported raster signature.
    """
    return sniff(path) == "raster"
