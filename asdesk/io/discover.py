"""Walk a folder tree for screening: list every image (DICOM frame or raster file) found in it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asdesk.core.errors import ReadError
from asdesk.core.progress import CancelToken, NullProgress, ProgressSink
from asdesk.core.records import ImageRecord
from asdesk.io.detect import should_skip, sniff
from asdesk.io.dicom import quiet, read_dicom_frame, read_header
from asdesk.io.raster import read_raster

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanItem:
    """One image found by :func:`discover`.

    Attributes
    ----------
    path : Path
        The file.
    kind : {"dicom", "raster"}
        How to read it (decided by content).
    series_uid : str
        Series Instance UID (0020,000E) of a DICOM image, to group study-level results; ``""`` for raster
        files and DICOM files without one.
    frame : int or None
        0-based frame of a multi-frame DICOM file; ``None`` for single-frame files and raster images.
    """

    path: Path
    kind: Literal["dicom", "raster"]
    series_uid: str = ""
    frame: int | None = None


def _walk(root: Path) -> list[Path]:
    """Every non-skipped file under ``root``, hidden folders excluded, sorted."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in names:
            path = Path(directory) / name
            if not should_skip(path):
                found.append(path)
    return sorted(found)


def _dicom_items(path: Path) -> list[ScanItem]:
    try:
        header = read_header(path)
        with quiet():
            if "Rows" not in header or "Columns" not in header:
                return []  # a DICOM object without an image (SR, RT plan, presentation state, ...)
            uid = str(header.get("SeriesInstanceUID", "") or "").strip()
            frames = int(header.get("NumberOfFrames", 1) or 1)
    except (ReadError, ValueError, TypeError) as error:
        logger.debug("skipping unreadable DICOM header: %s", error)
        return []
    if frames > 1:
        return [ScanItem(path, "dicom", uid, index) for index in range(frames)]
    return [ScanItem(path, "dicom", uid, None)]


def discover(
    root: str | Path,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
) -> list[ScanItem]:
    """Find every image under a folder, for screening.

    Each DICOM image file gives one item (a multi-frame file one item per frame) carrying its Series
    Instance UID, so that study-level results can be grouped; each PNG/JPEG/TIFF/BMP file gives one item.
    File types are decided by content, so DICOM files without extension are found. Hidden files and
    folders, DICOMDIR and obvious non-images (``.txt``, ``.csv``, ``.json``, ``.pdf``, archives, ...) are
    skipped without being opened; DICOM objects without an image and unreadable files are skipped too.

    Parameters
    ----------
    root : str or Path
        Folder to walk recursively (a single file is accepted too).
    progress : ProgressSink, optional
        Gets ``start(number of candidate files)``, one ``advance`` per file and ``finish()``.
    cancel : CancelToken, optional
        Checked between files.

    Returns
    -------
    list of ScanItem
        Sorted by path, then frame: the same tree always gives the same list.

    Raises
    ------
    ReadError
        ``root`` does not exist.
    CancelledError
        ``cancel`` was set.
    """
    root = Path(root)
    if not root.exists():
        raise ReadError(root, "no such folder; check the path")
    sink = progress if progress is not None else NullProgress()
    files = _walk(root)
    sink.start(len(files), f"Looking for images in {root.name}")
    items: list[ScanItem] = []
    try:
        for path in files:
            if cancel is not None:
                cancel.raise_if_cancelled()
            kind = sniff(path)
            if kind == "dicom":
                items.extend(_dicom_items(path))
            elif kind == "raster":
                items.append(ScanItem(path, "raster"))
            sink.advance(1, path.name)
    finally:
        sink.finish()
    return items


def read_item(item: ScanItem) -> ImageRecord:
    """Read the image a :class:`ScanItem` points to (decoding only its frame).

    Parameters
    ----------
    item : ScanItem
        An item from :func:`discover`.

    Returns
    -------
    ImageRecord
        As :func:`asdesk.io.read_image`, for the item's frame.

    Raises
    ------
    ReadError
        Any of the read errors of :func:`asdesk.io.read_image`.
    """
    if item.kind == "raster":
        return read_raster(item.path)
    return read_dicom_frame(item.path, item.frame or 0)
