"""Assemble what the DICOM export needs and write it: the work behind ``asdesk analyze --dicom-out`` and the
window's File → Export DICOM.

For every analysed image the source file's header is read again (:func:`asdesk.io.dicom.read_header`, without
pixel data), so that the Secondary Capture and the Structured Report are filed in the source's study with its
patient module and reference the source images by their UIDs. A raster image (PNG, JPEG, TIFF) has no study: it
gets a new one with a placeholder patient identity (:func:`asdesk.report.dicom_export.placeholder_study`), derived
from the file's SHA-256 so that exporting the same file again files into the same study. The writing itself is
:func:`asdesk.report.dicom_export.write_dicom_results`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdesk.core import AnalysisResult, ReadError, SeriesResult
from asdesk.core.reader_decision import ReaderDecision, ReaderDecisionStore, case_key, file_sha256

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from asdesk.report.dicom_export import DicomExport

LOGGER = logging.getLogger(__name__)

__all__ = ["export_dicom", "export_prefix", "reader_decision_for", "result_case_key", "source_headers"]


def _slices(result: AnalysisResult | SeriesResult) -> list[AnalysisResult]:
    return list(result.slices) if isinstance(result, SeriesResult) else [result]


def source_headers(result: AnalysisResult | SeriesResult) -> tuple[Dataset, list[Dataset | None]]:
    """The study to file the results under and each analysed image's source header.

    Parameters
    ----------
    result : AnalysisResult or SeriesResult

    Returns
    -------
    study : pydicom.dataset.Dataset
        The first DICOM source's header, or for raster input a new study with a placeholder patient identity.
    sources : list of pydicom.dataset.Dataset or None
        Per analysed image (series order): the source file's header, ``None`` for a raster image.

    Raises
    ------
    ReadError
        A DICOM source file can no longer be read (moved, deleted): the results cannot be linked to it.
    """
    from asdesk.io.dicom import read_header
    from asdesk.report.dicom_export import placeholder_study
    headers: dict[Path, Dataset] = {}
    sources: list[Dataset | None] = []
    for item in _slices(result):
        meta = item.record.metadata
        if meta.format != "DICOM":
            sources.append(None)
            continue
        path = Path(meta.source)
        if path not in headers:
            try:
                headers[path] = read_header(path)
            except ReadError as error:
                raise ReadError(path, "the source DICOM file is needed to file the results in its study and "
                                      f"cannot be read again ({error.reason})") from error
        sources.append(headers[path])
    study = next((source for source in sources if source is not None), None)
    if study is None:
        path = Path(_slices(result)[0].record.metadata.source)
        try:
            digest = file_sha256(path)
            modified = datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        except OSError as error:
            raise ReadError(path, f"the image file cannot be read again ({error.strerror or error})") from error
        study = placeholder_study(digest, path.name, modified.strftime("%Y%m%d"), modified.strftime("%H%M%S"))
    return study, sources


def export_prefix(result: AnalysisResult | SeriesResult) -> str:
    """File-name prefix of a case's DICOM files: the series folder's or the file's name, made safe."""
    source = Path(_slices(result)[0].record.metadata.source)
    name = source.parent.name if isinstance(result, SeriesResult) and len(result.slices) > 1 else source.stem
    if isinstance(result, SeriesResult) and len({Path(s.record.metadata.source) for s in result.slices}) == 1:
        name = source.stem  # a multi-frame file
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "asdesk"


def result_case_key(result: AnalysisResult | SeriesResult) -> str:
    """The reader-decision key of a result's case (:func:`asdesk.core.reader_decision.case_key`)."""
    return case_key([item.record.metadata for item in _slices(result)])


def reader_decision_for(result: AnalysisResult | SeriesResult,
                        store: ReaderDecisionStore | None = None) -> ReaderDecision | None:
    """The reader's saved decision on a result's case, or ``None`` (also when the case cannot be keyed).

    Parameters
    ----------
    result : AnalysisResult or SeriesResult
    store : ReaderDecisionStore, optional
        Default: the user's (``<user data dir>/reader-decisions``).
    """
    try:
        key = result_case_key(result)
    except OSError as error:
        LOGGER.warning("cannot key the case for its reader decision: %s", error)
        return None
    return (store or ReaderDecisionStore()).load(key)


def export_dicom(result: AnalysisResult | SeriesResult, card: Mapping[str, Any], folder: str | Path,
                 decision: ReaderDecision | None = None, prefix: str | None = None) -> DicomExport:
    """Write a DICOM Secondary Capture per analysed image and a DICOM Structured Report of the finding.

    Parameters
    ----------
    result : AnalysisResult or SeriesResult
        Judged at the operating point to report.
    card : mapping
        The model card as JSON data (``ModelCard.raw``).
    folder : str or Path
        An existing, writable folder.
    decision : ReaderDecision, optional
        The reader's conclusion to include (a person observer in the SR, a line in the burned-in text).
    prefix : str, optional
        Start of the file names; default :func:`export_prefix`.

    Returns
    -------
    DicomExport
        The files written and the study they belong to.

    Raises
    ------
    ReadError
        A source file can no longer be read.
    asdesk.report.ReportWriteError
        The folder is missing or not writable.
    """
    from asdesk.report.dicom_export import write_dicom_results

    study, sources = source_headers(result)
    return write_dicom_results(folder, result, card, study, sources, decision=decision,
                               prefix=prefix or export_prefix(result))

