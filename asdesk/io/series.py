"""Read a folder holding a DICOM series: group files by Series Instance UID, read the largest series, sort.

PACS exports put one series per folder, in files without extension, named in no useful order. Slices are
ordered by Instance Number (0020,0013), then by position along the slice normal computed from Image
Position/Orientation (Patient) (PS3.3 C.7.6.2.1.1). One bad file never stops a series: it is reported in
the returned error list.
"""

from __future__ import annotations

from pathlib import Path

from asdesk.core.errors import EmptySeriesError, ReadError
from asdesk.core.progress import CancelToken, NullProgress, ProgressSink
from asdesk.core.records import ImageRecord
from asdesk.io.detect import should_skip, sniff
from asdesk.io.dicom import quiet, read_dicom_frames, read_header


def _folder_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise ReadError(folder, "no such folder; check the path")
    if not folder.is_dir():
        raise ReadError(folder, "not a folder; open it as a single file instead")
    return sorted(path for path in folder.iterdir() if path.is_file() and not should_skip(path))


def _scan(
    files: list[Path], cancel: CancelToken | None
) -> tuple[dict[str, list[Path]], dict[str, str], list[str]]:
    """Group DICOM files by series uid; return (groups, series descriptions, errors of other files)."""
    groups: dict[str, list[Path]] = {}
    descriptions: dict[str, str] = {}
    errors: list[str] = []
    for path in files:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if sniff(path) != "dicom":
            errors.append(f"{path}: not a DICOM file (no 'DICM' at byte 128 and no image dataset); skipped")
            continue
        try:
            header = read_header(path)
            with quiet():
                uid = str(header.get("SeriesInstanceUID", "") or "").strip()
                description = str(header.get("SeriesDescription", "") or "").strip()
        except ReadError as error:
            errors.append(str(error))
            continue
        groups.setdefault(uid, []).append(path)
        descriptions.setdefault(uid, description)
    ordered = dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))
    return ordered, descriptions, errors


def group_series(folder: str | Path) -> dict[str, list[Path]]:
    """Group the DICOM files of a folder by Series Instance UID (0020,000E).

    Only the folder's own files are looked at (not sub-folders); hidden files and obvious non-images
    (documents, DICOMDIR, ...) are skipped, and DICOM is recognised by content, so files without extension
    are found.

    Parameters
    ----------
    folder : str or Path
        The folder.

    Returns
    -------
    dict of str to list of Path
        Series uid → its files (sorted by name); the largest series first, ties by uid. Files without a
        Series Instance UID are grouped under ``""``. Empty when the folder holds no DICOM file.

    Raises
    ------
    ReadError
        ``folder`` does not exist or is not a folder.
    """
    groups, _, _ = _scan(_folder_files(Path(folder)), None)
    return groups


def _series_order(record: ImageRecord) -> tuple[bool, int, bool, float, int, str]:
    meta = record.metadata
    return (
        meta.instance_number is None,
        meta.instance_number or 0,
        meta.slice_position_mm is None,
        meta.slice_position_mm or 0.0,
        meta.frame_index or 0,
        str(meta.source),
    )


def read_series(
    folder: str | Path,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
) -> tuple[list[ImageRecord], list[str]]:
    """Read every image of a DICOM series folder, in series order.

    When the folder holds several series (several Series Instance UIDs), the one with the most files is
    read and each other series is reported in the errors (use :func:`group_series` to pick another).
    Multi-frame files give one record per frame.

    Parameters
    ----------
    folder : str or Path
        A folder of DICOM files (any names, extensionless PACS exports included).
    progress : ProgressSink, optional
        Gets ``start(number of files)``, one ``advance`` per file and ``finish()``.
    cancel : CancelToken, optional
        Checked between files.

    Returns
    -------
    records : list of ImageRecord
        Sorted by Instance Number (0020,0013), then position along the slice normal (mm), then frame.
    errors : list of str
        ``"file: reason"`` for each file that could not be read (including non-DICOM files) and one line
        per other series that was skipped.

    Raises
    ------
    EmptySeriesError
        No readable DICOM image in the folder.
    ReadError
        ``folder`` does not exist or is not a folder.
    CancelledError
        ``cancel`` was set.
    """
    folder = Path(folder)
    sink = progress if progress is not None else NullProgress()
    files = _folder_files(folder)
    sink.start(len(files), f"Reading series {folder.name}")
    try:
        groups, descriptions, errors = _scan(files, cancel)
        if not groups:
            reason = "no DICOM image in this folder"
            if errors:
                reason += f" ({len(errors)} other file(s), e.g. {errors[0]})"
            raise EmptySeriesError(folder, reason + "; choose the folder that holds the series' files")
        chosen, *others = groups
        for uid in others:
            errors.append(
                f"{groups[uid][0]}: series {uid or '(no uid)'} '{descriptions.get(uid, '')}' "
                f"({len(groups[uid])} file(s)) skipped: the folder holds {len(groups)} series and the "
                f"largest ({len(groups[chosen])} files) was read; open the others one by one"
            )
        sink.advance(len(files) - len(groups[chosen]), "")
        records: list[ImageRecord] = []
        for path in groups[chosen]:
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                records.extend(read_dicom_frames(path))
            except ReadError as error:
                errors.append(str(error))
            sink.advance(1, path.name)
        if not records:
            raise EmptySeriesError(
                folder, f"none of the {len(groups[chosen])} DICOM file(s) could be read (first: {errors[0]})"
            )
        records.sort(key=_series_order)
        return records, errors
    finally:
        sink.finish()
