"""Results a PACS can store: a DICOM Secondary Capture of each analysed image and a DICOM Structured Report.

Written with ``highdicom`` (Herrmann et al., J Digit Imaging 2022), which builds both objects from the standard's
modules and templates:

* **Secondary Capture Image** (PS3.3 A.8.1, :class:`highdicom.sc.SCImage`): the analysed image with its Grad-CAM
  map blended over it and the finding, the model and the intended use written in a band below
  (:func:`asdesk.report.burn_in.burn_in`; Burned In Annotation ``YES``), RGB, 8 bits. One instance per analysed
  image (every slice of a series, in series order), in one new series of the *source* study: the patient and
  study modules are copied from the source, Source Image Sequence names the source image (and frame).
* **Comprehensive 3D SR** (PS3.3 A.35.13) holding a **TID 1500 Measurement Report** (PS3.16): the model is the
  observer device (TID 1004; IHE AI Results: Device Observer Name = pack id, Model Name = pack id and version,
  Manufacturer = asdesk and its version, Serial Number = the SHA-256 of the model file, UID derived from it);
  one measurement group (TID 1501) for the finding (the study finding for a series, referencing every slice),
  then one per slice: finding type, qualitative evaluation present / absent (or *not analysed* for an image the
  model's gates refused, with the reason), the calibrated probability (DCM 122157 "Probability", unit UCUM "1")
  or the study score, the threshold (DCM 122411) and the operating point (DCM 111081), the algorithm's
  identification (TID 4019: pack id, version, operating point, threshold, hashes), and the CAD processing summary
  (DCM 111017). The reader's conclusion, when one was recorded, is a group of its own whose observation context
  is the reader (a person observer, TID 1003; ``HAS OBS CONTEXT``), with the time of the decision as its
  Observation DateTime, the conclusion (present / absent / indeterminate), whether it agrees with the AI finding
  and the reader's note.

Concepts without a standard code (the model's finding, *not analysed*, the study score, the reader's agreement)
use the private coding scheme ``99ASDESK`` (PS3.16 8.2), declared in the Coding Scheme Identification Sequence.

Layer rule (DESIGN.md): only :mod:`asdesk.core`, numpy, pydicom, highdicom and QtGui (for the burned-in text).
The source headers and the study a raster image is filed under are assembled by
:mod:`asdesk.tasks.dicom_export`; nothing here reads an image.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import asdesk
from asdesk.core import AnalysisResult, SeriesResult
from asdesk.core.reader_decision import ReaderDecision
from asdesk.report import ReportWriteError
from asdesk.report.burn_in import CAUTION, MUTED, NEGATIVE, POSITIVE, WHITE, BurnInLine, burn_in

LOGGER = logging.getLogger(__name__)

__all__ = [
    "PRIVATE_SCHEME",
    "SC_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "DicomExport",
    "burn_in_lines",
    "derived_uid",
    "device_observer_uid",
    "placeholder_study",
    "write_dicom_results",
]

PRIVATE_SCHEME = "99ASDESK"
"""Private coding scheme designator of asdesk's own concepts (PS3.16 8.2: private schemes begin with 99)."""
SC_SERIES_NUMBER = 9901
"""Series Number of the Secondary Capture series (high, so that it sorts after the acquired series)."""
SR_SERIES_NUMBER = 9902
"""Series Number of the Structured Report series."""
MANUFACTURER = "asdesk"

UNITLESS = hd.sr.CodedConcept("1", "UCUM", "no units")
NOT_ANALYSED = hd.sr.CodedConcept("NOTANALYSED", PRIVATE_SCHEME, "Not analysed: outside the model's validated use")
STUDY_SCORE = hd.sr.CodedConcept("STUDYSCORE", PRIVATE_SCHEME, "Study score (the model card's study rule)")
READER_AGREEMENT = hd.sr.CodedConcept("READERAGREE", PRIVATE_SCHEME, "Reader agrees with the AI finding")
_COPIED_FROM_STUDY = ("StudyDescription", "PatientComments", "PatientAge")
_CONCLUSION_CODES = {"positive": codes.SCT.Present, "negative": codes.SCT.Absent,
                     "indeterminate": codes.SCT.Indeterminate}


@dataclass(frozen=True)
class DicomExport:
    """What :func:`write_dicom_results` wrote.

    Attributes
    ----------
    secondary_captures : tuple of Path
        One Secondary Capture file per analysed image, in series order.
    structured_report : Path
        The Comprehensive 3D SR file.
    study_instance_uid : str
        The study both are filed under (the source's, or a new one for a raster image).
    new_study : bool
        True when the input was not DICOM and a new study with a placeholder patient identity was made.
    """

    secondary_captures: tuple[Path, ...]
    structured_report: Path
    study_instance_uid: str
    new_study: bool


def _percent(value: float) -> str:
    return f"{100.0 * float(value):.1f} %"


def _labels(card: Mapping[str, Any], result: AnalysisResult) -> tuple[str, str]:
    labels = card.get("labels") if isinstance(card.get("labels"), Mapping) else {}
    return (str(labels.get("positive", result.model.positive_label)),
            str(labels.get("negative", result.model.negative_label)))


def _slice_text(result: AnalysisResult) -> str:
    meta = result.record.metadata
    parts = []
    if meta.instance_number is not None:
        parts.append(f"instance {meta.instance_number}")
    if meta.frame_index is not None:
        parts.append(f"frame {meta.frame_index + 1}")
    if meta.slice_position_mm is not None:
        parts.append(f"position {meta.slice_position_mm:.1f} mm")
    return ", ".join(parts)


def burn_in_lines(result: AnalysisResult | SeriesResult, index: int, card: Mapping[str, Any],
                  decision: ReaderDecision | None = None) -> list[BurnInLine]:
    """The text burned into the Secondary Capture of image ``index``.

    Parameters
    ----------
    result : AnalysisResult or SeriesResult
    index : int
        0-based slice of a series (0 for one image).
    card : mapping
        The model card as JSON data (labels).
    decision : ReaderDecision, optional
        Written as its own line when the reader gave a conclusion.

    Returns
    -------
    list of BurnInLine
        The AI finding (or refusal), its numbers, for a series the slice's own result, the reader's conclusion,
        the heat map's meaning, and the model with the intended use.
    """
    series = result if isinstance(result, SeriesResult) else None
    shown: AnalysisResult = series.slices[index] if series is not None else result  # type: ignore[assignment]
    model = shown.model
    positive_label, negative_label = _labels(card, shown)
    lines: list[BurnInLine] = []
    if series is not None:
        study = series.study_prediction
        if series.refused:
            lines.append(BurnInLine(f"AI study result: not analysed: {series.n_refused} of {len(series.slices)} "
                                    f"slices are outside what {model.pack_id} was validated for", CAUTION, True))
        else:
            relation = "≥" if study.positive else "<"
            lines.append(BurnInLine(f"AI study finding: {study.finding}", POSITIVE if study.positive else NEGATIVE,
                                    True, 1.15))
            lines.append(BurnInLine(f"study score {_percent(series.study_probability)} {relation} threshold "
                                    f"{_percent(study.threshold)} ({series.study_rule or 'the card’s study rule'})"))
        where = f"Slice {index + 1} of {len(series.slices)}"
        detail = _slice_text(shown)
        where += f" ({detail})" if detail else ""
        if shown.refused:
            lines.append(BurnInLine(f"{where}: not analysed (outside validated use)", CAUTION))
        else:
            lines.append(BurnInLine(f"{where}: probability {_percent(shown.prediction.probability)}, "
                                    f"{shown.prediction.finding}", WHITE))
    elif shown.refused:
        lines.append(BurnInLine("AI: not analysed: " + shown.gate.text(model.pack_id), CAUTION, True))
    else:
        prediction = shown.prediction
        relation = "≥" if prediction.positive else "<"
        kind = "calibrated probability" if prediction.calibrated else "probability"
        lines.append(BurnInLine(f"AI finding: {prediction.finding}", POSITIVE if prediction.positive else NEGATIVE,
                                True, 1.15))
        lines.append(BurnInLine(f"{kind} {_percent(prediction.probability)} {relation} threshold "
                                f"{_percent(prediction.threshold)} · "
                                f"{prediction.operating_point.replace('_', ' ')} operating point"))
    overridden = [item for item in (series.slices if series is not None else (shown,)) if item.gate.overridden]
    if overridden:
        lines.append(BurnInLine("OUTSIDE VALIDATED USE: refusal overridden by the user ("
                                + "; ".join(overridden[0].gate.reasons) + ")", CAUTION, True))
    if decision is not None and decision.decided:
        lines.append(BurnInLine(f"Reader ({decision.signed()}): "
                                f"{decision.summary(positive_label, negative_label)}", WHITE, True))
    if shown.overlay is not None and not shown.refused:
        lines.append(BurnInLine("Heat map: oedema map, the model's per-pixel probability of bone-marrow oedema"
                                if model.map_name == "oedema map" else "Heat map: Grad-CAM, where the model's "
                                "evidence lies (not a segmentation of disease)", MUTED, scale=0.8))
    lines.append(BurnInLine(f"{model.pack_id} {model.version} · model SHA-256 {model.sha256[:12]} · asdesk "
                            f"{asdesk.__version__} · {asdesk.INTENDED_USE.split('.')[0]}", MUTED, scale=0.8))
    return lines


def _orientation_letter(vector: Sequence[float]) -> str:
    """Patient orientation letters of a direction in LPS (PS3.3 C.7.6.1.1.1): main axis first, then others > 0.25."""
    names = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(np.asarray(vector, dtype=float)))
    letters = ""
    for axis in order:
        component = float(vector[axis])
        if abs(component) < 0.25 and letters:
            continue
        letters += names[axis][0] if component > 0 else names[axis][1]
    return letters[:3]


def _patient_orientation(result: AnalysisResult, source: Dataset | None) -> list[str] | str:
    """(0020,0020) of the Secondary Capture: from ImageOrientationPatient, else the source's own value, else empty."""
    orientation = result.record.metadata.image_orientation
    if orientation is not None and len(orientation) == 6:
        return [_orientation_letter(orientation[:3]), _orientation_letter(orientation[3:])]
    if source is not None and source.get("PatientOrientation"):
        value = source.PatientOrientation
        return list(value) if not isinstance(value, str) else value
    return ""


def _reference_item(sop_class: str, sop_instance: str, frame: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if frame is not None:
        item.ReferencedFrameNumber = frame
    return item


def derived_uid(*parts: str) -> str:
    """A UID that is the same for the same ``parts``: ``2.25.`` and 128 bits of their SHA-256 as a decimal.

    PS3.5 B.2 allows UIDs under the root 2.25 made of a 128-bit UUID written as an integer; the first 128 bits of a
    SHA-256 serve as such a number (as pydicom's ``generate_uid(entropy_srcs=...)`` does under its own root).
    """
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def device_observer_uid(sha256: str, pack_id: str) -> str:
    """A UID for the model as an observer device, the same for every export of the same model file (2.25 root)."""
    return derived_uid("asdesk-model", pack_id, sha256)


def _finding_concept(card: Mapping[str, Any], result: AnalysisResult) -> hd.sr.CodedConcept:
    """The model's finding as a coded concept: the card's ``finding_code`` when it has one, else a private code."""
    code = card.get("finding_code")
    if isinstance(code, Mapping) and all(isinstance(code.get(k), str) and code.get(k) for k in ("value", "scheme",
                                                                                                   "meaning")):
        return hd.sr.CodedConcept(code["value"], code["scheme"], code["meaning"][:64])
    positive_label, _ = _labels(card, result)
    return hd.sr.CodedConcept(result.model.pack_id, PRIVATE_SCHEME, positive_label[:64] or result.model.pack_id)


def _algorithm(result: AnalysisResult, card: Mapping[str, Any],
               series: SeriesResult | None = None) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification: the pack, its version, the operating point, the thresholds and hashes."""
    prediction = result.prediction
    calibrated = " (calibrated)" if prediction.calibrated else ""
    parameters = [f"operating point: {prediction.operating_point}",
                  f"{'slice ' if series is not None else ''}threshold: {prediction.threshold:.6f}{calibrated}"]
    if series is not None:
        parameters += [f"study rule: {series.study_rule or 'not stated'}",
                       f"study threshold: {series.study_prediction.threshold:.6f}"]
    parameters.append(f"model.keras SHA-256: {result.model.sha256}")
    onnx = card.get("onnx")
    if isinstance(onnx, Mapping) and onnx.get("sha256"):
        parameters.append(f"model.onnx SHA-256: {onnx['sha256']}")
    if result.model.origin:
        parameters.append(f"origin: {result.model.origin}")
    return hd.sr.AlgorithmIdentification(name=result.model.pack_id, version=result.model.version or "unknown",
                                         parameters=parameters, manufacturer=MANUFACTURER)


def _text_item(name: hd.sr.CodedConcept | Any, value: str) -> hd.sr.TextContentItem:  # noqa: ANN401 - a Code
    return hd.sr.TextContentItem(name=name, value=value[:10_000], relationship_type="CONTAINS")


def _summary_evaluation(refused: bool, positive: bool) -> hd.sr.QualitativeEvaluation:
    if refused:
        value = codes.DCM.NoAlgorithmsSucceededWithoutFindings
    elif positive:
        value = codes.DCM.AllAlgorithmsSucceededWithFindings
    else:
        value = codes.DCM.AllAlgorithmsSucceededWithoutFindings
    return hd.sr.QualitativeEvaluation(name=codes.DCM.CADProcessingAndFindingsSummary, value=value)


def _ai_group(identifier: str, concept: hd.sr.CodedConcept, algorithm: hd.sr.AlgorithmIdentification,
              references: Sequence[hd.sr.SourceImageForMeasurementGroup], refused: bool, positive: bool,
              probability: float, threshold: float, operating_point: str, comments: Sequence[str],
              score_concept: hd.sr.CodedConcept | Any = None) -> hd.sr.MeasurementsAndQualitativeEvaluations:  # noqa: ANN401
    """One TID 1501 group of the AI's result (the finding of an image, of a slice or of the study)."""
    measurements = []
    if not refused:
        measurements = [
            hd.sr.Measurement(name=score_concept or codes.DCM.Probability, value=float(probability), unit=UNITLESS,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(threshold), unit=UNITLESS,
                              algorithm_id=algorithm),
        ]
    finding_value = NOT_ANALYSED if refused else (codes.SCT.Present if positive else codes.SCT.Absent)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=identifier[:64]),
        finding_type=concept, algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept, value=finding_value),
                                 _summary_evaluation(refused, positive)],
        source_images=list(references))
    container = group[0]
    container.ContentSequence.append(_text_item(codes.DCM.CADOperatingPointDescription,
                                                operating_point.replace("_", " ") or "not stated"))
    for comment in comments:
        if comment:
            container.ContentSequence.append(_text_item(codes.DCM.Comment, comment))
    return group


def _dicom_datetime(value: str) -> str:
    """ISO 8601 → DICOM DT ``YYYYMMDDHHMMSS&ZZXX`` (``""`` when not a time)."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return ""
    return moment.strftime("%Y%m%d%H%M%S%z")


def _person_name(name: str) -> str:
    """A reader's name as DICOM PN: ``Family, Given`` → ``Family^Given``; one free-text name stays one component."""
    text = " ".join(name.split()) or "reader not named"
    if "^" in text:
        return text[:64]
    if "," in text:
        family, given = (part.strip() for part in text.split(",", 1))
        return f"{family[:64]}^{given[:64]}"
    return text[:64] + "^"


def _reader_group(decision: ReaderDecision, concept: hd.sr.CodedConcept,
                  references: Sequence[hd.sr.SourceImageForMeasurementGroup],
                  ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The reader's conclusion: a TID 1501 group observed by a person (TID 1002/1003 as HAS OBS CONTEXT)."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="reader conclusion"),
        finding_type=concept,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept,
                                                             value=_CONCLUSION_CODES[decision.conclusion])],
        source_images=list(references))
    container = group[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a one-component name is what the reader typed
        observer = hd.sr.ObserverContext(
            observer_type=codes.cid270.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=_person_name(decision.reader)))
    for position, item in enumerate(observer):
        container.ContentSequence.insert(position, item)
    when = _dicom_datetime(decision.recorded_at)
    if when:
        container.ObservationDateTime = when
    if decision.agreement in ("agree", "disagree"):
        container.ContentSequence.append(hd.sr.CodeContentItem(
            name=READER_AGREEMENT, value=codes.SCT.Yes if decision.agreement == "agree" else codes.SCT.No,
            relationship_type="CONTAINS"))
    if decision.ai is not None:
        container.ContentSequence.append(_text_item(codes.DCM.Comment, "AI finding the reader answered: "
                                                    + decision.ai.text()))
    if decision.note.strip():
        container.ContentSequence.append(_text_item(codes.DCM.Comment, "Reader's note: " + decision.note.strip()))
    return group


def _coding_scheme() -> hd.coding_schemes.CodingSchemeIdentificationItem:
    return hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="asdesk private concepts", version="1",
        responsible_organization="asdesk")


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ReportWriteError(folder, "is not a folder; create it or choose another one for the DICOM files")
    probe = folder / f".asdesk-write-test-{generate_uid()[-12:]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ReportWriteError(folder, f"cannot write in it ({error.strerror or error}); choose a folder you can "
                                       "write to") from error


def _save(dataset: Dataset, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        dataset.save_as(temporary, enforce_file_format=True)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ReportWriteError(path, f"cannot write the DICOM file ({error.strerror or error})") from error
    return path


def write_dicom_results(folder: str | Path, result: AnalysisResult | SeriesResult, card: Mapping[str, Any],
                        study: Dataset, sources: Sequence[Dataset | None], decision: ReaderDecision | None = None,
                        prefix: str = "asdesk") -> DicomExport:
    """Write the Secondary Capture(s) and the Structured Report of one analysed image or series.

    Parameters
    ----------
    folder : str or Path
        An existing, writable folder. Files: ``<prefix>-sc-001.dcm`` ... (one per image) and ``<prefix>-sr.dcm``.
    result : AnalysisResult or SeriesResult
        As :mod:`asdesk.tasks` decided it (judged at the operating point to report). ``record.display``: float
        (H, W) in [0, 1]; ``overlay``: uint8 (H, W, 4) RGBA or ``None``.
    card : mapping
        The model card as JSON data (labels, ONNX hash; optional ``finding_code`` {value, scheme, meaning}).
    study : pydicom.dataset.Dataset
        The patient and study the results are filed under: the header of the (first) source image, or, for a raster
        image, a new study with a placeholder patient identity (``StudyInstanceUID``, ``PatientID``, ``PatientName``,
        ``StudyDescription``, ...).
    sources : sequence of pydicom.dataset.Dataset or None
        Per analysed image (``result.slices`` order), the source image's header (``SOPClassUID``,
        ``SOPInstanceUID``; pixel data not needed), or ``None`` for a raster image: the SR then references the
        Secondary Capture, which holds the only DICOM copy of the analysed pixels.
    decision : ReaderDecision, optional
        The reader's conclusion; written to the SR (a person observer) and burned into the images when decided.
    prefix : str
        Start of the file names.

    Returns
    -------
    DicomExport

    Raises
    ------
    asdesk.report.ReportWriteError
        If the folder does not exist or is not writable, or a file cannot be written.
    ValueError
        If ``sources`` does not have one entry per analysed image, or a series has no slices.

    Notes
    -----
    Standards: DICOM PS3.3 A.8.1 (Secondary Capture Image IOD), A.35.13 (Comprehensive 3D SR IOD), PS3.16 TID
    1500 / 1501 / 1001-1004 / 4019; IHE Radiology AI Results (AIR) for the observer device and the references
    to the source images. Each export makes new SOP Instance UIDs (a second export is a second set of objects).
    """
    from asdesk.report.pdf import ensure_gui_application

    folder = Path(folder)
    slices = list(result.slices) if isinstance(result, SeriesResult) else [result]
    if not slices:
        raise ValueError("the SeriesResult has no slices; nothing to export")
    if len(sources) != len(slices):
        raise ValueError(f"sources must have one entry per analysed image: {len(sources)} for {len(slices)} images")
    _check_folder(folder)
    ensure_gui_application()
    series = result if isinstance(result, SeriesResult) else None
    first = slices[0]
    new_study = all(source is None for source in sources)
    sc_series_uid, sr_series_uid = generate_uid(), generate_uid()
    study_description = str(study.get("StudyDescription", "") or "")
    software = asdesk.__version__

    secondary_captures: list[Dataset] = []
    paths: list[Path] = []
    for index, (item, source) in enumerate(zip(slices, sources, strict=True)):
        pixels = burn_in(item.record.display, None if item.refused else item.overlay,
                         burn_in_lines(result, index, card, decision))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # person names as the source stores them
            image = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=study, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
                coordinate_system="PATIENT", series_instance_uid=sc_series_uid, series_number=SC_SERIES_NUMBER,
                sop_instance_uid=generate_uid(), instance_number=index + 1, manufacturer=MANUFACTURER,
                patient_orientation=("L", "F"), transfer_syntax_uid=hd.sc.sop.ExplicitVRLittleEndian,
                series_description="asdesk AI result: heat map and finding (research use)",
                manufacturer_model_name="asdesk", software_versions=software)
        image.PatientOrientation = _patient_orientation(item, source)
        image.Laterality = ""  # General Series 2C: unknown (the heat map does not say which side)
        image.BurnedInAnnotation = "YES"
        image.ImageComments = (f"AI result of {item.model.pack_id} {item.model.version} (asdesk {software}) with "
                               f"the {item.model.map_name} and the finding burned in. " + asdesk.INTENDED_USE)[:10240]
        image.DerivationDescription = (f"Source image with the {item.model.map_name} blended in and the AI finding "
                                       "written below, enlarged for legibility")[:1024]
        for keyword in _COPIED_FROM_STUDY:  # type 3 attributes highdicom does not copy
            if study.get(keyword):
                setattr(image, keyword, study.get(keyword))
        if source is not None and source.get("SOPInstanceUID"):
            frame = item.record.metadata.frame_index
            image.SourceImageSequence = [_reference_item(str(source.SOPClassUID), str(source.SOPInstanceUID),
                                                         None if frame is None else frame + 1)]
        secondary_captures.append(image)
        paths.append(_save(image, folder / f"{prefix}-sc-{index + 1:03d}.dcm"))

    # --- the Structured Report
    def reference(position: int) -> hd.sr.SourceImageForMeasurementGroup:
        source = sources[position]
        if source is None:
            capture = secondary_captures[position]
            return hd.sr.SourceImageForMeasurementGroup(str(capture.SOPClassUID), str(capture.SOPInstanceUID))
        frame = slices[position].record.metadata.frame_index
        return hd.sr.SourceImageForMeasurementGroup(str(source.SOPClassUID), str(source.SOPInstanceUID),
                                                    None if frame is None else [frame + 1])

    evidence: dict[str, Dataset] = {}
    for position, source in enumerate(sources):
        chosen = source if source is not None else secondary_captures[position]
        evidence.setdefault(str(chosen.SOPInstanceUID), chosen)
    concept = _finding_concept(card, first)
    all_references = [reference(position) for position in range(len(slices))]
    groups = []
    if series is not None:
        study_prediction = series.study_prediction
        comments = []
        if series.refused:
            comments.append(f"{series.n_refused} of {len(slices)} slices are outside what {first.model.pack_id} "
                            f"was validated for: {next(s for s in slices if s.refused).gate.text(first.model.pack_id)}")
        elif series.n_refused:
            comments.append(f"{series.n_refused} refused slice(s) left out of the study result")
        overridden = [s for s in slices if s.gate.overridden]
        if overridden:
            comments.append(f"OUTSIDE VALIDATED USE: the refusal of {len(overridden)} slice(s) was overridden by the "
                            f"user ({'; '.join(overridden[0].gate.reasons)})")
        groups.append(_ai_group(
            "AI study finding", concept, _algorithm(first, card, series), all_references, series.refused,
            bool(study_prediction.positive), series.study_probability, study_prediction.threshold,
            first.prediction.operating_point, comments, score_concept=STUDY_SCORE))
    for position, item in enumerate(slices):
        label = f"slice {position + 1} of {len(slices)}" if series is not None else "AI finding"
        detail = _slice_text(item) if series is not None else ""
        comments = []
        if item.gate.reasons:
            comments.append(item.gate.text(item.model.pack_id))
        groups.append(_ai_group(
            label + (f" ({detail})" if detail else ""), concept, _algorithm(item, card),
            [reference(position)], item.refused, bool(item.prediction.positive), item.prediction.probability,
            item.prediction.threshold, item.prediction.operating_point, comments))
    if decision is not None and decision.decided:
        groups.append(_reader_group(decision, concept, all_references))

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(first.model.sha256, first.model.pack_id), name=first.model.pack_id[:64],
        manufacturer_name=f"{MANUFACTURER} {software}", model_name=f"{first.model.pack_id} {first.model.version}"[:64],
        serial_number=first.model.sha256)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.cid270.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # person names and UIDs as the source stores them
        document = hd.sr.Comprehensive3DSR(
            evidence=list(evidence.values()), content=report[0], series_instance_uid=sr_series_uid,
            series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
            series_description="asdesk AI result: structured report (research use)",
            manufacturer_model_name="asdesk", software_versions=software, coding_schemes=[_coding_scheme()])
    for keyword in ("RequestingService",):  # copied from the source, not an attribute of the SR IOD
        if keyword in document:
            delattr(document, keyword)
    if study_description and "StudyDescription" not in document:
        document.StudyDescription = study_description
    sr_path = _save(document, folder / f"{prefix}-sr.dcm")
    LOGGER.info("DICOM export: %d secondary capture(s) and a structured report written (model %s %s)",
                len(paths), first.model.pack_id, first.model.version)
    return DicomExport(tuple(paths), sr_path, str(study.StudyInstanceUID), new_study)


def placeholder_study(file_sha256: str, name: str, study_date: str, study_time: str) -> Dataset:
    """A new study for a raster image (no patient identity): the patient is clearly a placeholder.

    Parameters
    ----------
    file_sha256 : str
        SHA-256 of the image file: the study UID and the placeholder Patient ID derive from it, so that exporting
        the same file again files the results in the same study.
    name : str
        The file's name (in the study description).
    study_date, study_time : str
        DICOM DA / TM of the export.

    Returns
    -------
    pydicom.dataset.Dataset
        Patient Name ``NON-DICOM INPUT^NO PATIENT IDENTITY``, Patient ID ``NODICOM-<16 hex>``, empty sex, birth
        date, accession number and referring physician (Type 2), Study ID ``ASDESK``, a study description naming
        the file, and Patient Comments saying that the patient is a placeholder.
    """
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "NON-DICOM INPUT^NO PATIENT IDENTITY"
    dataset.PatientID = f"NODICOM-{file_sha256[:16].upper()}"
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    dataset.PatientComments = (f"Placeholder patient: asdesk analysed a non-DICOM image ({name}) that carries no "
                               "patient identity.")[:10240]
    dataset.StudyInstanceUID = derived_uid("asdesk-non-dicom-study", file_sha256)
    dataset.StudyID = "ASDESK"
    dataset.StudyDate = study_date
    dataset.StudyTime = study_time
    dataset.AccessionNumber = ""
    dataset.ReferringPhysicianName = ""
    dataset.StudyDescription = f"asdesk: non-DICOM image {name} (no patient identity)"[:64]
    return dataset

