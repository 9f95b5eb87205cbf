"""What a reader's viewer computes, without Qt: orientation markers, measurements, linked slices, corner text.

Every function here is pure (numpy and :mod:`asdesk.core` only), so the viewer's numbers are tested headless:

* :mod:`asdesk.viewing.orientation`: the patient direction at each image edge (R/L, A/P, H/F) from
  ImageOrientationPatient or PatientOrientation (DICOM PS3.3 C.7.6.2.1.1, C.7.6.1.1.1);
* :mod:`asdesk.viewing.measure`: line length in mm and ROI statistics (mean, SD, area);
* :mod:`asdesk.viewing.linking`: the slice of another series nearest a slice's position along the normal;
* :mod:`asdesk.viewing.studies`: series grouped by study (StudyInstanceUID);
* :mod:`asdesk.viewing.annotations`: the four corner texts (patient, study, series, slice, window, zoom).
"""

from __future__ import annotations

from asdesk.viewing.annotations import CornerText, ViewState, corner_text, format_window
from asdesk.viewing.linking import SliceLink, linked_slice
from asdesk.viewing.measure import LineMeasurement, RoiStatistics, measure_line, measure_roi, shape_mask
from asdesk.viewing.orientation import EdgeLabels, direction_label, edge_labels
from asdesk.viewing.studies import StudyGroup, group_by_study

__all__ = [
    "CornerText",
    "EdgeLabels",
    "LineMeasurement",
    "RoiStatistics",
    "SliceLink",
    "StudyGroup",
    "ViewState",
    "corner_text",
    "direction_label",
    "edge_labels",
    "format_window",
    "group_by_study",
    "linked_slice",
    "measure_line",
    "measure_roi",
    "shape_mask",
]
