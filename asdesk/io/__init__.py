"""Layer 1: readers. DICOM (pydicom + BSD/MIT decoder plugins), raster images, series folders, folder
discovery for screening, and NIfTI volumes for training data.

Every reader returns :class:`~asdesk.core.records.ImageRecord` objects and raises only
:class:`~asdesk.core.errors.ReadError` subclasses, each naming the file and saying what to do.

Modules: :mod:`~asdesk.io.detect` (content sniffing), :mod:`~asdesk.io.dicom` (DICOM files),
:mod:`~asdesk.io.dicom_meta` (attributes, functional groups, geometry), :mod:`~asdesk.io.grayscale`
(PS3.3 C.11 display chain), :mod:`~asdesk.io.raster` (PNG/JPEG/TIFF/BMP), :mod:`~asdesk.io.reader`
(DICOM-or-raster dispatch), :mod:`~asdesk.io.series` (series folders), :mod:`~asdesk.io.discover`
(folder trees) and :mod:`~asdesk.io.nifti` (NIfTI; nibabel imported lazily).
"""

from asdesk.io.detect import is_dicom, is_raster, sniff
from asdesk.io.dicom import read_dicom_frame
from asdesk.io.discover import ScanItem, discover, read_item
from asdesk.io.nifti import nifti_orientation, nifti_slices, read_nifti_volume
from asdesk.io.reader import read_frames, read_image
from asdesk.io.series import group_series, read_series

__all__ = [
    "ScanItem",
    "discover",
    "group_series",
    "is_dicom",
    "is_raster",
    "nifti_orientation",
    "nifti_slices",
    "read_dicom_frame",
    "read_frames",
    "read_image",
    "read_item",
    "read_nifti_volume",
    "read_series",
    "sniff",
]
