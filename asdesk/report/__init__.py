"""Reports: the PDF analysis report, the screening CSV log, the DICOM export (Secondary Capture + Structured
Report, :mod:`asdesk.report.dicom_export`) and numpy → image helpers.

Layer rule (DESIGN.md): imports only :mod:`asdesk.core`, numpy, the standard library and
``PySide6.QtGui``/``QtCore`` (never widgets, never :mod:`asdesk.inference` or TensorFlow). A model card
arrives here as its plain JSON dict.

The Qt-based parts (:func:`write_pdf_report`, :func:`write_dicom_results`, the image helpers) are imported
lazily, so that ``from asdesk.report import ScreeningCsv`` loads neither Qt nor highdicom.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdesk.core import AsdeskError


class ReportWriteError(AsdeskError, OSError):
    """A report file (PDF, CSV) could not be written.

    Parameters
    ----------
    path : str or Path
        The file concerned.
    reason : str
        What went wrong and how to fix it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


from asdesk.report.csvlog import SCREENING_COLUMNS, ScreeningCsv  # noqa: E402

if TYPE_CHECKING:
    from asdesk.report.dicom_export import write_dicom_results
    from asdesk.report.images import (
        array_to_qimage,
        blend_overlay,
        display_to_gray_uint8,
        png_bytes,
        save_png,
    )
    from asdesk.report.pdf import write_pdf_report

_LAZY = {
    "write_pdf_report": "asdesk.report.pdf",
    "write_dicom_results": "asdesk.report.dicom_export",
    "array_to_qimage": "asdesk.report.images",
    "blend_overlay": "asdesk.report.images",
    "display_to_gray_uint8": "asdesk.report.images",
    "png_bytes": "asdesk.report.images",
    "save_png": "asdesk.report.images",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'asdesk.report' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


__all__ = [
    "SCREENING_COLUMNS",
    "ReportWriteError",
    "ScreeningCsv",
    "array_to_qimage",
    "blend_overlay",
    "display_to_gray_uint8",
    "png_bytes",
    "save_png",
    "write_dicom_results",
    "write_pdf_report",
]
