"""Write small, valid DICOM files with chosen attributes for tests (pydicom, Explicit VR Little Endian).

The pixel data and attributes are whatever the test gives: use it where a known value (a pixel spacing, an
orientation) must be checked end to end through the real reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(path: Path, pixels: np.ndarray, **attributes: Any) -> Path:  # noqa: ANN401
    """Write a MONOCHROME2 image with ``attributes`` (DICOM keywords) to ``path``.

    Parameters
    ----------
    path : Path
        The file to write (any name; extensionless is fine).
    pixels : numpy.ndarray
        uint16 (H, W) stored values.
    **attributes
        DICOM keywords and values, e.g. ``PixelSpacing=[0.5, 0.25]``, ``Modality="DX"``.

    Returns
    -------
    Path
        ``path``.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "OT"
    dataset.PatientName = "Test^Patient"
    dataset.PatientID = "TEST-1"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path
