"""DICOM attributes for one frame: functional-group flattening, geometry and :class:`ImageMetadata`.

Enhanced multi-frame objects (Enhanced MR/CT, PS3.3 C.7.6.16) keep spacing, position, orientation, rescale
and window inside the Shared and Per-Frame Functional Groups Sequences instead of the top level.
:func:`frame_dataset` gathers what one frame needs into a flat dataset, so that the grayscale pipeline and
the metadata read the same attributes for classic and enhanced files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from asdesk.core.records import ImageMetadata

#: Attributes a frame needs, looked up at the top level, then in the functional groups.
_FRAME_KEYWORDS: tuple[str, ...] = (
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)

#: Functional group macros (PS3.3 C.7.6.16.2) that hold the attributes above.
_GROUP_MACROS: tuple[str, ...] = (
    "PixelMeasuresSequence",
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
)


def _group_items(dataset: Dataset, index: int) -> list[Dataset]:
    """Functional group macro items for frame ``index``: shared first, per-frame last (it wins)."""
    items: list[Dataset] = []
    shared = dataset.get("SharedFunctionalGroupsSequence")
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    groups = []
    if shared:
        groups.append(shared[0])
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for macro in _GROUP_MACROS:
            sequence = group.get(macro)
            if sequence:
                items.append(sequence[0])
    return items


def frame_dataset(dataset: Dataset, index: int = 0) -> Dataset:
    """Flatten the attributes one frame needs into a small dataset.

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        A classic (single- or multi-frame) or enhanced multi-frame dataset.
    index : int
        0-based frame number.

    Returns
    -------
    pydicom.dataset.Dataset
        Image pixel, modality LUT, VOI LUT and plane attributes of the frame (top-level values overridden
        by the Shared, then the Per-Frame Functional Groups), with the source's ``file_meta`` so that
        lookup tables stored as OW keep their byte order.
    """
    flat = Dataset()
    for keyword in _FRAME_KEYWORDS:
        if keyword in dataset:
            flat[keyword] = dataset[keyword]
    for item in _group_items(dataset, index):
        for keyword in _FRAME_KEYWORDS:
            if keyword in item:
                flat[keyword] = item[keyword]
    if hasattr(dataset, "file_meta"):
        flat.file_meta = dataset.file_meta
    flat.set_original_encoding(*dataset.original_encoding)
    return flat


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _first_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        values = list(value)
        if not values:
            return None
        value = values[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _int_or_none(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        try:
            return int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None


def pixel_spacing_mm(frame: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing, else Imager Pixel Spacing.

    Parameters
    ----------
    frame : pydicom.dataset.Dataset
        A frame-flattened dataset (:func:`frame_dataset`).

    Returns
    -------
    tuple of float or None
        ``None`` when neither attribute holds two positive numbers (some CR files carry ``0\\0``).
    """
    found = _spacing_with_source(frame)
    return None if found is None else found[0]


def pixel_spacing_source(frame: Dataset) -> str:
    """The attribute :func:`pixel_spacing_mm` reads: ``"PixelSpacing"``, ``"ImagerPixelSpacing"`` or ``""``.

    Parameters
    ----------
    frame : pydicom.dataset.Dataset
        A frame-flattened dataset (:func:`frame_dataset`).

    Returns
    -------
    str
        ``"ImagerPixelSpacing"`` means the spacing is at the detector of a projection radiograph (PS3.3
        C.8.11.4.1.1), not in the patient; ``""`` when there is no usable spacing.
    """
    found = _spacing_with_source(frame)
    return "" if found is None else found[1]


def _spacing_with_source(frame: Dataset) -> tuple[tuple[float, float], str] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = frame.get(keyword)
        try:
            row, column = (float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0 and np.isfinite(row) and np.isfinite(column):
            return (row, column), keyword
    return None


def slice_normal(frame: Dataset) -> np.ndarray | None:
    """Unit normal of the image plane, row direction x column direction (PS3.3 C.7.6.2.1.1).

    Parameters
    ----------
    frame : pydicom.dataset.Dataset
        A frame-flattened dataset with Image Orientation (Patient).

    Returns
    -------
    numpy.ndarray or None
        float64 (3,) in the patient (LPS) frame, or ``None`` without a valid orientation.
    """
    orientation = frame.get("ImageOrientationPatient")
    try:
        cosines = np.array([float(v) for v in orientation], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if cosines.shape != (6,):
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def slice_position_mm(frame: Dataset) -> float | None:
    """Position of the frame along its plane normal: Image Position (Patient) · normal, in mm.

    Parameters
    ----------
    frame : pydicom.dataset.Dataset
        A frame-flattened dataset.

    Returns
    -------
    float or None
        ``None`` when the position or the orientation is missing.
    """
    normal = slice_normal(frame)
    position = frame.get("ImagePositionPatient")
    if normal is None or position is None:
        return None
    try:
        point = np.array([float(v) for v in position], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if point.shape != (3,):
        return None
    return float(point @ normal)


def transfer_syntax_name(dataset: Dataset) -> str:
    """Name the dataset's transfer syntax (0002,0010).

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        A dataset read from a file (with ``file_meta``).

    Returns
    -------
    str
        E.g. ``"JPEG 2000 Image Compression (Lossless Only)"``; ``""`` when the file meta has none.
    """
    uid = getattr(dataset, "file_meta", Dataset()).get("TransferSyntaxUID")
    return UID(str(uid)).name if uid else ""


def _multi_text(dataset: Dataset, keyword: str) -> str:
    """A multi-valued text attribute as DICOM writes it (values joined by a backslash)."""
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return "\\".join(str(item).strip() for item in value)
    return str(value).strip()


def image_orientation(frame: Dataset) -> tuple[float, ...] | None:
    """ImageOrientationPatient (0020,0037) as six finite floats, or ``None`` when absent or malformed."""
    value = frame.get("ImageOrientationPatient")
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != 6 or not all(np.isfinite(numbers)):
        return None
    return numbers


def image_position(frame: Dataset) -> tuple[float, float, float] | None:
    """ImagePositionPatient (0020,0032) as three finite floats in mm, or ``None`` when absent or malformed."""
    value = frame.get("ImagePositionPatient")
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        return None
    return (numbers[0], numbers[1], numbers[2])


def patient_orientation(dataset: Dataset) -> tuple[str, ...] | None:
    """PatientOrientation (0020,0020): the directions of the row and the column, e.g. ``("L", "F")``.

    Parameters
    ----------
    dataset : pydicom.dataset.Dataset
        The whole dataset.

    Returns
    -------
    tuple of str or None
        Two upper-case strings (PS3.3 C.7.6.1.1.1); ``None`` when the attribute is absent, empty or does not
        hold two values.
    """
    value = dataset.get("PatientOrientation")
    if value is None or value == "":
        return None
    values = [value] if isinstance(value, str) else list(value)
    texts = tuple(str(item).strip().upper() for item in values)
    if len(texts) != 2 or not all(texts):
        return None
    return texts


def build_metadata(path: Path, dataset: Dataset, frame: Dataset, frame_index: int | None) -> ImageMetadata:
    """Collect what reports and study-level results need about one frame.

    Parameters
    ----------
    path : Path
        The file read.
    dataset : pydicom.dataset.Dataset
        The whole dataset (patient, study and series attributes).
    frame : pydicom.dataset.Dataset
        The frame's flattened attributes (:func:`frame_dataset`).
    frame_index : int or None
        0-based frame of a multi-frame file, ``None`` for single-frame files.

    Returns
    -------
    ImageMetadata
        With format ``"DICOM"``; window centre/width are the first values, in modality units. The report
        header's attributes (accession number, patient sex and birth date, institution, referring physician,
        study date, time, id and description) are read as stored, empty when absent; Institution Name falls back
        to the first line of Institution Address.
    """
    bits = _int_or_none(frame.get("BitsStored"))
    return ImageMetadata(
        source=path,
        format="DICOM",
        patient_name=_text(dataset, "PatientName"),
        patient_id=_text(dataset, "PatientID"),
        study_uid=_text(dataset, "StudyInstanceUID"),
        series_uid=_text(dataset, "SeriesInstanceUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        study_date=_text(dataset, "StudyDate"),
        series_date=_text(dataset, "SeriesDate"),
        study_description=_text(dataset, "StudyDescription"),
        series_description=_text(dataset, "SeriesDescription"),
        modality=_text(dataset, "Modality"),
        body_part=_text(dataset, "BodyPartExamined"),
        pixel_spacing_mm=pixel_spacing_mm(frame),
        pixel_spacing_source=pixel_spacing_source(frame),
        window_centre=_first_float(frame.get("WindowCenter")),
        window_width=_first_float(frame.get("WindowWidth")),
        slice_position_mm=slice_position_mm(frame),
        slice_location_mm=_first_float(dataset.get("SliceLocation")),
        instance_number=_int_or_none(dataset.get("InstanceNumber")),
        series_number=_int_or_none(dataset.get("SeriesNumber")),
        frame_index=frame_index,
        transfer_syntax=transfer_syntax_name(dataset),
        photometric_interpretation=_text(frame, "PhotometricInterpretation"),
        bits_stored=bits,
        manufacturer=_text(dataset, "Manufacturer"),
        image_orientation=image_orientation(frame),
        image_position=image_position(frame),
        patient_orientation=patient_orientation(dataset),
        scanning_sequence=_multi_text(frame, "ScanningSequence") or _multi_text(dataset, "ScanningSequence"),
        sequence_name=_text(frame, "SequenceName") or _text(dataset, "SequenceName")
        or _text(frame, "PulseSequenceName"),
        inversion_time_ms=_first_float(frame.get("InversionTime", dataset.get("InversionTime"))),
        protocol_name=_text(dataset, "ProtocolName"),
        accession_number=_text(dataset, "AccessionNumber"),
        patient_sex=_text(dataset, "PatientSex").upper(),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        institution_name=_text(dataset, "InstitutionName") or _text(dataset, "InstitutionAddress").split("\n")[0],
        referring_physician=_text(dataset, "ReferringPhysicianName"),
        study_time=_text(dataset, "StudyTime"),
        study_id=_text(dataset, "StudyID"),
    )
