"""Frozen dataclasses that flow through asdesk: read → preprocess → classify → report.

``ImageRecord`` (from :mod:`asdesk.io`) → ``ModelInput`` (from :mod:`asdesk.preprocess`) →
``Prediction`` + Grad-CAM (from :mod:`asdesk.inference`) → ``AnalysisResult`` / ``SeriesResult`` (from
:mod:`asdesk.tasks`) → reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageMetadata:
    """What a report and a study-level result need to know about an image.

    All fields are optional: a PNG has none of the DICOM ones. Strings are empty when unknown.

    Attributes
    ----------
    source : Path
        The file the image was read from.
    format : str
        ``"DICOM"``, ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"NIfTI"``, ...
    patient_name, patient_id : str
        (0010,0010) and (0010,0020). Never logged.
    study_uid, series_uid, sop_instance_uid : str
        (0020,000D), (0020,000E), (0008,0018).
    study_date, series_date : str
        DICOM DA strings, ``YYYYMMDD``.
    study_description, series_description : str
        (0008,1030), (0008,103E).
    modality : str
        (0008,0060), e.g. ``"MR"``, ``"CR"``, ``"DX"``; empty for raster files.
    body_part : str
        (0018,0015), e.g. ``"SPINE"``, ``"KNEE"``.
    pixel_spacing_mm : tuple of float or None
        (row spacing, column spacing) in mm, from PixelSpacing or ImagerPixelSpacing.
    pixel_spacing_source : str
        The attribute ``pixel_spacing_mm`` came from: ``"PixelSpacing"`` (0028,0030) (in the patient),
        ``"ImagerPixelSpacing"`` (0018,1164) (at the detector of a projection radiograph, PS3.3 C.8.11.4.1.1,
        magnified with respect to the patient) or ``""`` when there is no spacing.
    window_centre, window_width : float or None
        The first (0028,1050)/(0028,1051) value, in modality-LUT units.
    slice_position_mm : float or None
        Position along the slice normal (ImagePositionPatient projected on the normal), in mm.
    slice_location_mm : float or None
        (0020,1041) SliceLocation in mm, as the scanner wrote it (used where the position is unknown).
    instance_number : int or None
        (0020,0013).
    series_number : int or None
        (0020,0011).
    frame_index : int or None
        Frame of a multi-frame file, 0-based; ``None`` for single-frame files.
    transfer_syntax : str
        Transfer syntax UID name, e.g. ``"JPEG 2000 Image Compression (Lossless Only)"``.
    photometric_interpretation : str
        ``"MONOCHROME1"``, ``"MONOCHROME2"``, ``"RGB"``, ``"YBR_FULL"``, ...
    bits_stored : int or None
        (0028,0101), or the raster bit depth.
    manufacturer : str
        (0008,0070).
    image_orientation : tuple of float or None
        (0020,0037) ImageOrientationPatient: direction cosines of the row and the column (6 values, patient
        coordinates LPS); ``None`` when the file has none (radiographs, raster files).
    image_position : tuple of float or None
        (0020,0032) ImagePositionPatient: the centre of the first transmitted pixel, (x, y, z) in mm in the
        patient coordinates (LPS); ``None`` when the file has none.
    patient_orientation : tuple of str or None
        (0020,0020) PatientOrientation: the patient directions of the row (towards the right edge) and of the
        column (towards the bottom edge), e.g. ``("L", "F")``; radiographs carry it instead of
        ImageOrientationPatient. ``None`` when absent.
    scanning_sequence : str
        (0018,0020), e.g. ``"SE\\IR"``; MR only.
    sequence_name : str
        (0018,0024), e.g. ``"*tir2d1rs13"`` (Siemens STIR); MR only.
    inversion_time_ms : float or None
        (0018,0082) in ms; MR inversion-recovery sequences only.
    protocol_name : str
        (0018,1030).
    accession_number : str
        (0008,0050): the RIS order the study belongs to.
    patient_sex : str
        (0010,0040): ``"M"``, ``"F"``, ``"O"`` or empty.
    patient_birth_date : str
        (0010,0030), DICOM DA ``YYYYMMDD``.
    institution_name : str
        (0008,0080); when the file has none, the first line of (0008,0081) Institution Address.
    referring_physician : str
        (0008,0090) Referring Physician's Name, DICOM PN (``Family^Given``).
    study_time : str
        (0008,0030), DICOM TM ``HHMMSS.FFFFFF``.
    study_id : str
        (0020,0010).
    """

    source: Path
    format: str = ""
    patient_name: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uid: str = ""
    study_date: str = ""
    series_date: str = ""
    study_description: str = ""
    series_description: str = ""
    modality: str = ""
    body_part: str = ""
    pixel_spacing_mm: tuple[float, float] | None = None
    pixel_spacing_source: str = ""
    window_centre: float | None = None
    window_width: float | None = None
    slice_position_mm: float | None = None
    slice_location_mm: float | None = None
    instance_number: int | None = None
    series_number: int | None = None
    frame_index: int | None = None
    transfer_syntax: str = ""
    photometric_interpretation: str = ""
    bits_stored: int | None = None
    manufacturer: str = ""
    image_orientation: tuple[float, ...] | None = None
    image_position: tuple[float, float, float] | None = None
    patient_orientation: tuple[str, ...] | None = None
    scanning_sequence: str = ""
    sequence_name: str = ""
    inversion_time_ms: float | None = None
    protocol_name: str = ""
    accession_number: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""
    institution_name: str = ""
    referring_physician: str = ""
    study_time: str = ""
    study_id: str = ""


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One 2-D image as read, before any model-specific preprocessing.

    Attributes
    ----------
    pixels : numpy.ndarray
        float32, shape (H, W) for grayscale or (H, W, 3) for colour (RGB order). Grayscale DICOM values are
        *after* the modality LUT (rescale slope/intercept) and *before* VOI and MONOCHROME1 inversion, so
        they keep their physical meaning (e.g. HU on CT). Raster images keep their stored values (0-255 or
        0-65535).
    display : numpy.ndarray
        float32 in [0, 1], same shape as ``pixels``: the image as a reader sees it by default, i.e. the full
        DICOM grayscale chain applied (modality LUT → VOI LUT or window centre/width, or the value range
        when the file has neither → MONOCHROME1 inversion).
    metadata : ImageMetadata
        Where it came from and the tags a report needs.
    """

    pixels: np.ndarray
    display: np.ndarray
    metadata: ImageMetadata

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def inverted(self) -> bool:
        """True for MONOCHROME1 images, where low values are displayed bright."""
        return self.metadata.photometric_interpretation == "MONOCHROME1"


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the model pack that produced a result (IHE AI Results: every output names it).

    Attributes
    ----------
    pack_id, version, sha256 : str
        Pack id (folder name), the card's version and the SHA-256 of ``model.keras``.
    task : str
        What the model answers, e.g. ``"active sacroiliitis (bone-marrow oedema) on STIR"``.
    positive_label, negative_label : str
        Human-readable finding names.
    origin : str
        Where the pack comes from: ``"bundled"`` (shipped with asdesk, pinned), ``"user-installed, signed (key
        <fingerprint>)"`` or ``"user-installed, unsigned"``; ``""`` when not known (a card read on its own).
        Every result, CSV row and report should show it.
    map_name : str
        What the pack's heat map is, as the viewer, legends and reports name it: ``"Grad-CAM"`` (where the
        classifier looked) or ``"oedema map"`` (a segmentation model's per-pixel oedema probability).
    """

    pack_id: str
    version: str
    sha256: str
    task: str = ""
    positive_label: str = "positive"
    negative_label: str = "negative"
    origin: str = ""
    map_name: str = "Grad-CAM"


@dataclass(frozen=True)
class Prediction:
    """A classifier's answer for one image.

    Attributes
    ----------
    probability : float
        Probability of the positive class, in [0, 1], as shown: calibrated when the card has a calibration
        (then ``threshold`` is the calibrated threshold too); for a study, the study score.
    threshold : float
        The operating point's threshold used for the finding, on the same scale as ``probability``.
    operating_point : str
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``.
    positive : bool
        ``probability >= threshold``.
    finding : str
        The card's positive or negative label.
    raw_probability : float or None
        The model's own output, before calibration (``None`` when not recorded).
    calibrated : bool
        ``probability`` and ``threshold`` went through the card's calibration; False for raw outputs and
        for study scores.
    """

    probability: float
    threshold: float
    operating_point: str
    positive: bool
    finding: str
    raw_probability: float | None = None
    calibrated: bool = False


@dataclass(frozen=True)
class GateVerdict:
    """Whether an image was inside what its model was validated for (DESIGN.md, "A finding is earned").

    Two gates stand before a finding: the *metadata* gate (modality, body part, MR plane and sequence against
    the card) and the *content* gate (distance of the image's pooled features to the training images,
    Lee et al., NeurIPS 2018). A refused image gets no finding unless the user overrides the refusal, and an
    overridden result is marked as outside validated use wherever it appears.

    Attributes
    ----------
    reasons : tuple of str
        Why the image is outside the model's validated use; empty when both gates accepted it.
    distance : float or None
        Content-gate distance of the image (dimensionless Mahalanobis distance), ``None`` when not measured.
    threshold : float or None
        The card's content-gate threshold: a distance above it is out of distribution.
    overridden : bool
        The user asked for a result despite the refusal (``--force``, the window's override button).
    content_checked : bool
        False when the pack has no content gate (only the metadata gate was applied).
    """

    reasons: tuple[str, ...] = ()
    distance: float | None = None
    threshold: float | None = None
    overridden: bool = False
    content_checked: bool = True

    @property
    def accepted(self) -> bool:
        """Both gates accepted the image."""
        return not self.reasons

    @property
    def refused(self) -> bool:
        """The image is refused and the refusal was not overridden: show no finding."""
        return bool(self.reasons) and not self.overridden

    def text(self, pack_id: str) -> str:
        """One line for a report or a CSV: empty when accepted."""
        if not self.reasons:
            return ""
        head = f"outside what {pack_id} was validated for: " + "; ".join(self.reasons)
        return head + (" (overridden by the user: result outside validated use)" if self.overridden else "")


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """The result of analysing one image.

    Attributes
    ----------
    record : ImageRecord
        The image as read.
    model_input : numpy.ndarray
        float32 (h, w) in [0, 1]: exactly the image the model received, before channel replication and
        the backbone's normalisation (the viewer's "model input" view).
    prediction : Prediction
        Probability, threshold and finding.
    model : ModelInfo
        Pack id, version and hash.
    heatmap : numpy.ndarray or None
        Grad-CAM, float32 (H, W) in [0, 1] at the *image's* size (``record.shape``).
    overlay : numpy.ndarray or None
        RGBA uint8 (H, W, 4): the heatmap through a colour map with alpha, to draw over ``record.display``.
    timings_ms : dict
        Per-stage wall time in ms (``read``, ``preprocess``, ``classify``, ``gradcam``).
    gate : GateVerdict
        The metadata and content gates' verdict. When ``gate.refused`` the result has no finding: every
        display shows the refusal instead of ``prediction`` (which keeps the model's output for audit).
    crop_box : tuple of int or None
        (top, left, bottom, right) in image pixels: the part of the image the model saw (its crop), for the
        viewer's outline; ``None`` when the model saw the whole image.
    """

    record: ImageRecord
    model_input: np.ndarray
    prediction: Prediction
    model: ModelInfo
    heatmap: np.ndarray | None = None
    overlay: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    gate: GateVerdict = field(default_factory=GateVerdict)
    crop_box: tuple[int, int, int, int] | None = None

    @property
    def refused(self) -> bool:
        """True when the image was refused (and not overridden): it has no finding."""
        return self.gate.refused

    @property
    def finding_text(self) -> str:
        """What every display shows as the finding: the finding, or the refusal."""
        if self.gate.refused:
            return "Not analysed: " + self.gate.text(self.model.pack_id)
        return self.prediction.finding


def series_refused(n_refused: int, n_slices: int) -> bool:
    """The rule that refuses a whole series: more than half of its slices were refused by the model's gates.

    A study result is never made of a small, convenient subset of a series: when most slices are outside what
    the model was validated for, so is the series. Used by :class:`SeriesResult`, the study decision and the
    screening CSV's study rows alike.

    Parameters
    ----------
    n_refused, n_slices : int
        Refused slices and all slices of the series.

    Returns
    -------
    bool
    """
    return n_slices > 0 and 2 * n_refused > n_slices


@dataclass(frozen=True, eq=False)
class SeriesResult:
    """The result of analysing a series (one study's slices) and the study-level decision.

    Attributes
    ----------
    slices : tuple of AnalysisResult
        Per-slice results, in series order (InstanceNumber, then slice position).
    study_probability : float
        The study-level score given by the card's study rule (e.g. the mean of the top-k slice
        probabilities), in [0, 1].
    study_prediction : Prediction
        The study-level finding at the card's study threshold.
    study_rule : str
        The rule in words, as the card states it.
    errors : tuple of str
        Files of the series that could not be read, with the reason.
    """

    slices: tuple[AnalysisResult, ...]
    study_probability: float
    study_prediction: Prediction
    study_rule: str
    errors: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """The series is outside what the model was validated for (:func:`series_refused`): no study finding."""
        return series_refused(self.n_refused, len(self.slices))

    @property
    def n_refused(self) -> int:
        """Slices refused by the model's gates (left out of the study result)."""
        return sum(1 for result in self.slices if result.refused)
