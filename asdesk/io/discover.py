"""Walk a folder tree for screening: list every image (DICOM frame or raster file) found in it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.uid import UID

from asdesk.core.errors import NotAnImageError, ReadError
from asdesk.core.progress import CancelToken, NullProgress, ProgressSink
from asdesk.core.records import ImageRecord
from asdesk.io.detect import should_skip, sniff
from asdesk.io.dicom import check_header, load_dataset, quiet, read_dicom_frame, read_header
from asdesk.io.raster import read_raster
from asdesk.io.sanity import describe, must_propagate

logger = logging.getLogger(__name__)


ItemKind = Literal["dicom", "raster", "skipped", "error"]


@dataclass(frozen=True)
class ScanItem:
    """One file (or one frame of a multi-frame file) found by :func:`discover`.

    Attributes
    ----------
    path : Path
        The file.
    kind : {"dicom", "raster", "skipped", "error"}
        How to read it (decided by content); ``"skipped"`` for a file that holds no image (a DICOM
        structured report, an RT plan, a file of unknown content), ``"error"`` for a file that is broken
        before any pixel is read (empty, header unreadable or inconsistent). Both carry ``reason``.
    series_uid : str
        Series Instance UID (0020,000E) of a DICOM image, to group study-level results; ``""`` for raster
        files and DICOM files without one.
    frame : int or None
        0-based frame of a multi-frame DICOM file; ``None`` for single-frame files and raster images.
    reason : str
        Why a ``"skipped"`` or ``"error"`` item is not read (names no file; the row does); ``""`` otherwise.
    """

    path: Path
    kind: ItemKind
    series_uid: str = ""
    frame: int | None = None
    reason: str = ""

    @property
    def is_image(self) -> bool:
        """``True`` for items to read and analyse (``kind`` ``"dicom"`` or ``"raster"``)."""
        return self.kind in ("dicom", "raster")


def _walk(root: Path) -> tuple[list[Path], int]:
    """Every non-skipped file under ``root`` (hidden folders excluded, sorted) and how many were ignored."""
    if root.is_file():
        return [root], 0
    found: list[Path] = []
    ignored = 0
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in names:
            path = Path(directory) / name
            if should_skip(path):
                ignored += 1
            else:
                found.append(path)
    return sorted(found), ignored


def _reason(error: ReadError) -> str:
    return error.reason


def _object_kind(header: Dataset) -> str:
    """What a DICOM object without an image is, in words (its SOP class name)."""
    uid = header.get("SOPClassUID") or getattr(header, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    name = UID(str(uid)).name if uid else ""
    return name if name and name != str(uid) else "a DICOM object without Rows and Columns"


def _dicom_items(path: Path) -> list[ScanItem]:
    try:
        header = read_header(path)
    except ReadError as error:
        return [ScanItem(path, "error", reason=_reason(error))]
    try:
        with quiet():
            if "Rows" not in header or "Columns" not in header:
                if "PixelData" in header or "FloatPixelData" in header:
                    return [ScanItem(path, "error", reason="pixel data without Rows and Columns: the header "
                                                           "is damaged")]
                return [ScanItem(path, "skipped", reason=f"skipped: not an image ({_object_kind(header)})")]
            uid = str(header.get("SeriesInstanceUID", "") or "").strip()
            frames = check_header(path, header)
            if frames > 1:
                # Check the pixel data against the frame count now: a header claiming 2,000 frames must give
                # one error row, not 2,000.
                load_dataset(path)
    except ReadError as error:
        return [ScanItem(path, "error", reason=_reason(error))]
    except BaseException as error:  # noqa: BLE001 - a damaged header may raise anything on access
        if must_propagate(error):
            raise
        return [ScanItem(path, "error", reason=f"the DICOM header cannot be read ({describe(error)})")]
    if frames > 1:
        return [ScanItem(path, "dicom", uid, index) for index in range(frames)]
    return [ScanItem(path, "dicom", uid, None)]


def _items(path: Path) -> list[ScanItem]:
    """The items of one file: always at least one."""
    try:
        size = path.stat().st_size
    except OSError as error:
        return [ScanItem(path, "error", reason=f"the file cannot be opened ({error.strerror or error})")]
    if size == 0:
        return [ScanItem(path, "error", reason="the file is empty (0 bytes); copy it again from its source")]
    try:
        kind = sniff(path)
    except BaseException as error:  # noqa: BLE001 - sniffing parses untrusted bytes
        if must_propagate(error):
            raise
        return [ScanItem(path, "error", reason=f"the file cannot be examined ({describe(error)})")]
    if kind == "dicom":
        return _dicom_items(path)
    if kind == "raster":
        return [ScanItem(path, "raster")]
    return [ScanItem(path, "skipped", reason="skipped: not an image (neither DICOM nor PNG, JPEG, TIFF or BMP)")]


@dataclass
class Discovery:
    """What :func:`discover_all` found.

    Attributes
    ----------
    items : list of ScanItem
        One item per visited file (one per frame for multi-frame DICOM), sorted by path then frame.
    ignored : int
        Files not opened because their name says they are no image (hidden files, DICOMDIR, ``.txt``,
        ``.csv``, ``.pdf``, archives, ...; see :func:`asdesk.io.detect.should_skip`). They get no row.
    """

    items: list[ScanItem]
    ignored: int = 0

    @property
    def n_images(self) -> int:
        """Items to read and analyse."""
        return sum(1 for item in self.items if item.is_image)


def discover_all(
    root: str | Path,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
) -> Discovery:
    """Visit every file under a folder for screening; every visited file gives at least one item.

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
    Discovery
        Images (``"dicom"``, ``"raster"``), non-images (``"skipped"`` with the reason) and broken files
        (``"error"`` with the reason), plus the number of files ignored by name.

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
    files, ignored = _walk(root)
    sink.start(len(files), f"Looking for images in {root.name}")
    items: list[ScanItem] = []
    try:
        for path in files:
            if cancel is not None:
                cancel.raise_if_cancelled()
            items.extend(_items(path))
            sink.advance(1, path.name)
    finally:
        sink.finish()
    return Discovery(items, ignored)


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
    skipped without being opened; DICOM objects without an image and unreadable files are left out too (use
    :func:`discover_all` to get an item for every visited file).

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
    return [item for item in discover_all(root, progress, cancel).items if item.is_image]


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
        Any of the read errors of :func:`asdesk.io.read_image`; for a ``"skipped"`` or ``"error"`` item, its
        reason. No other exception escapes except interrupts and cancellation
        (:func:`asdesk.io.sanity.must_propagate`).
    """
    if not item.is_image:
        raise (NotAnImageError if item.kind == "skipped" else ReadError)(item.path, item.reason)
    try:
        return _read_item(item)
    except ReadError:
        raise
    except BaseException as error:  # noqa: BLE001 - a reader bug or a native panic is this file's error
        if must_propagate(error):
            raise
        raise ReadError(item.path, f"the image cannot be read ({describe(error)})") from error


def _read_item(item: ScanItem) -> ImageRecord:
    if item.kind == "raster":
        return read_raster(item.path)
    return read_dicom_frame(item.path, item.frame or 0)
