"""The asdesk error hierarchy.

Every error a user can meet is an :class:`AsdeskError`. Messages say what happened, what was expected and
how to fix it (keras-io style), and name the file concerned, so the CLI and the GUI can show them as they
are, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class AsdeskError(Exception):
    """Base class of every error asdesk raises on purpose."""


class ReadError(AsdeskError, ValueError):
    """A file could not be read as an image.

    Parameters
    ----------
    path : str or Path
        The file (or folder) concerned.
    reason : str
        What was wrong and what to do about it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotAnImageError(ReadError):
    """The file is neither DICOM nor a raster image format asdesk reads."""


class TruncatedFileError(ReadError):
    """The file ends before its pixel data (an interrupted copy or download)."""


class NoPixelDataError(ReadError):
    """A DICOM file without an image (a structured report, a presentation state, ...)."""


class UnsupportedTransferSyntaxError(ReadError):
    """Compressed pixel data for which no decoder plugin is installed."""


class DicomDecodeError(ReadError):
    """The DICOM pixel data could not be decoded."""


class EmptySeriesError(ReadError):
    """A folder that holds no readable image."""


class PreprocessError(AsdeskError, ValueError):
    """A preprocessing step got an input or a parameter it cannot handle."""


class CardError(AsdeskError, ValueError):
    """A model-pack card is missing, malformed or inconsistent."""


class ModelHashMismatchError(CardError):
    """``model.keras`` does not have the SHA-256 its card states: the pack was altered or damaged."""


class ModelNotFoundError(AsdeskError, LookupError):
    """No model pack matches the requested id, modality or body part."""


class CancelledError(AsdeskError):
    """Long work stopped because its :class:`~asdesk.core.progress.CancelToken` was set."""
