"""Layer 0: dataclasses, errors, progress/cancel protocols, paths, settings and logging.

Imports only the standard library and numpy.
"""

from asdesk.core.errors import (
    AsdeskError,
    CancelledError,
    CardError,
    DicomDecodeError,
    EmptySeriesError,
    ModelHashMismatchError,
    ModelNotFoundError,
    NoPixelDataError,
    NotAnImageError,
    PreprocessError,
    ReadError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from asdesk.core.progress import CancelToken, NullProgress, ProgressSink
from asdesk.core.records import (
    AnalysisResult,
    GateVerdict,
    ImageMetadata,
    ImageRecord,
    ModelInfo,
    Prediction,
    SeriesResult,
    series_refused,
)

__all__ = [
    "AnalysisResult",
    "AsdeskError",
    "CancelToken",
    "CancelledError",
    "CardError",
    "DicomDecodeError",
    "EmptySeriesError",
    "GateVerdict",
    "ImageMetadata",
    "ImageRecord",
    "ModelHashMismatchError",
    "ModelInfo",
    "ModelNotFoundError",
    "NoPixelDataError",
    "NotAnImageError",
    "NullProgress",
    "Prediction",
    "PreprocessError",
    "ProgressSink",
    "ReadError",
    "SeriesResult",
    "TruncatedFileError",
    "series_refused",
    "UnsupportedTransferSyntaxError",
]
