"""DICOM results a PACS can store, written from real analyses with the shipped model packs and read back with
pydicom: Secondary Captures linked to the source study, a TID 1500 Structured Report with the model as observer
device and the reader as observer person, validated with dicom3tools' ``dciodvfy`` when it is installed.

Real data: the SI-joint STIR series (15 extensionless slices, analysed by the shipped SIJ pack), the T1 series of
the same study (the SIJ pack refuses it: analysed as is and with ``force``) and a knee radiograph PNG. The
reader's decisions below are TEST DATA.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from asdesk.core.reader_decision import AiFindingRef, ReaderDecision

STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
T1 = SHARED_DATA / "sij-mri-dicom" / "patient1" / "T1"
SIJ = "sij-mri-stir-inflammation"
KNEE_DIR = SHARED_DATA / "knee-xray-kl" / "val" / "3"
REPO = Path(__file__).resolve().parents[1]

pytestmark = requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def engines() -> Any:  # noqa: ANN401
    from asdesk.tasks import default_engines

    if not (REPO / "models" / "sij-mri-stir-inflammation" / "card.json").is_file():
        pytest.skip("the shipped model packs are not in models/")
    return default_engines()


@pytest.fixture(scope="module")
def stir(engines) -> Any:  # noqa: ANN401
    from asdesk.tasks import analyze_path

    return analyze_path(STIR, engines=engines)


@pytest.fixture(scope="module")
def t1_refused(engines) -> Any:  # noqa: ANN401
    from asdesk.tasks import analyze_path

    return analyze_path(T1, engines=engines, model_id=SIJ)


@pytest.fixture(scope="module")
def t1_forced(engines) -> Any:  # noqa: ANN401
    from asdesk.tasks import analyze_path

    return analyze_path(T1, engines=engines, model_id=SIJ, force=True)


@pytest.fixture(scope="module")
def knee(engines) -> Any:  # noqa: ANN401
    from asdesk.tasks import analyze_path

    return analyze_path(sorted(KNEE_DIR.glob("*.png"))[0], engines=engines)


def card_of(engines, result) -> dict:
    first = result.slices[0] if hasattr(result, "slices") else result
    return dict(engines.get(first.model.pack_id).card.raw)


def sources() -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in STIR.iterdir() if path.is_file()]
    return sorted(datasets, key=lambda d: int(d.InstanceNumber))


# --------------------------------------------------------------------------------------------- SR reading
def items(sequence, depth: int = 0):
    """Every content item of an SR content tree, depth first, with its depth."""
    for item in sequence:
        yield item, depth
        if "ContentSequence" in item:
            yield from items(item.ContentSequence, depth + 1)


def name(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""


def value(item) -> Any:  # noqa: ANN401
    kind = item.ValueType
    if kind == "CODE":
        return item.ConceptCodeSequence[0].CodeMeaning
    if kind in ("TEXT", "UIDREF"):
        return item.TextValue if kind == "TEXT" else item.UID
    if kind == "NUM":
        return float(item.MeasuredValueSequence[0].NumericValue)
    if kind == "PNAME":
        return str(item.PersonName)
    if kind == "IMAGE":
        return item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return None


def groups(document) -> list[Any]:
    containers = [item for item, _ in items(document.ContentSequence) if name(item) == "Measurement Group"]
    assert containers, "the report has no measurement group"
    return containers


def children(group, concept: str) -> list[Any]:
    return [value(item) for item in group.ContentSequence if name(item) == concept]


def tracking(group) -> str:
    return children(group, "Tracking Identifier")[0]


# ------------------------------------------------------------------------------------------------- tests
def test_series_secondary_captures_are_filed_in_the_source_study(tmp_path, engines, stir):
    from asdesk.tasks.dicom_export import export_dicom

    written = export_dicom(stir, card_of(engines, stir), tmp_path)
    source = sources()
    assert len(written.secondary_captures) == 15 and not written.new_study
    captures = [pydicom.dcmread(path) for path in written.secondary_captures]
    assert {c.SOPClassUID for c in captures} == {SecondaryCaptureImageStorage}
    assert {c.StudyInstanceUID for c in captures} == {source[0].StudyInstanceUID} == {written.study_instance_uid}
    assert len({c.SeriesInstanceUID for c in captures}) == 1
    assert captures[0].SeriesInstanceUID != source[0].SeriesInstanceUID                # a new series
    assert [c.InstanceNumber for c in captures] == list(range(1, 16))
    assert len({c.SOPInstanceUID for c in captures}) == 15
    for capture, original in zip(captures, source, strict=True):                         # slice k -> source k
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        assert capture.SourceImageSequence[0].ReferencedSOPClassUID == original.SOPClassUID
    first = captures[0]
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyDate", "StudyID", "StudyDescription"):
        assert str(first.get(keyword)) == str(source[0].get(keyword)), keyword     # the patient and study copied
    assert first.BurnedInAnnotation == "YES" and first.PhotometricInterpretation == "RGB"
    assert first.SamplesPerPixel == 3 and first.BitsAllocated == 8 and first.Modality == "OT"
    assert list(first.PatientOrientation) == ["L", "FP"]        # from ImageOrientationPatient (1,0,0 / 0,.62,-.78)
    pixels = first.pixel_array
    assert pixels.shape[1] == 768 and pixels.shape[0] > 768      # enlarged x3 for legible text, plus the text band
    band = pixels[770:].astype(int)
    assert (band.max(axis=2) > 150).sum() > 2000                 # text is written in the band below the image
    top = stir.slices[int(np.argmax([s.prediction.probability for s in stir.slices]))]
    shown = pydicom.dcmread(written.secondary_captures[stir.slices.index(top)]).pixel_array[:768].astype(int)
    colour = np.abs(shown[..., 0] - shown[..., 2]) + np.abs(shown[..., 1] - shown[..., 2])
    assert (colour > 40).sum() > 500                             # the heat map is burned in on the top slice


def test_series_structured_report_holds_the_finding_the_model_and_the_reader(tmp_path, engines, stir):
    from asdesk.tasks.dicom_export import export_dicom

    card = card_of(engines, stir)
    decision = ReaderDecision(key="TEST", conclusion="negative", note="TEST note: vascular signal, no oedema",
                              reader="Lovelace, Ada", recorded_at="2025-03-01T14:05:09+01:00",
                              ai=AiFindingRef.from_result(stir))
    written = export_dicom(stir, card, tmp_path, decision=decision)
    document = pydicom.dcmread(written.structured_report)
    source = sources()
    assert document.SOPClassUID == Comprehensive3DSRStorage and document.Modality == "SR"
    assert document.StudyInstanceUID == source[0].StudyInstanceUID and document.PatientID == source[0].PatientID
    assert document.CompletionFlag == "COMPLETE" and document.VerificationFlag == "UNVERIFIED"
    evidence = {item.ReferencedSOPInstanceUID for study in document.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {d.SOPInstanceUID for d in source}
    assert document.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99ASDESK"
    # IHE AI Results: the model is the observer device, identified by pack id, version and the model file's hash.
    top = {name(item): value(item) for item in document.ContentSequence if item.RelationshipType == "HAS OBS CONTEXT"}
    assert top["Observer Type"] == "Device"
    assert top["Device Observer Name"] == "sij-mri-stir-inflammation" == card["id"]
    assert top["Device Observer Model Name"] == f"sij-mri-stir-inflammation {card['version']}"
    assert top["Device Observer Serial Number"] == card["sha256"]
    assert top["Device Observer Manufacturer"].startswith("asdesk")
    found = groups(document)
    assert len(found) == 1 + 15 + 1                                  # study finding, 15 slices, the reader
    study_group, slice_groups, reader_group = found[0], found[1:16], found[16]
    positive_label = card["labels"]["positive"]
    study = stir.study_prediction
    assert tracking(study_group) == "AI study finding"
    assert children(study_group, "Finding") == [positive_label]
    assert children(study_group, positive_label) == ["Present" if study.positive else "Absent"]
    assert children(study_group, "Study score (the model card's study rule)") == [
        pytest.approx(stir.study_probability, abs=1e-6)]
    assert children(study_group, "Threshold Value") == [pytest.approx(study.threshold, abs=1e-6)]
    assert children(study_group, "CAD Operating Point Description") == ["balanced"]
    assert set(children(study_group, "Source of Measurement")) == {d.SOPInstanceUID for d in source}
    assert not any("OUTSIDE VALIDATED USE" in text for text in children(study_group, "Comment"))  # not forced
    parameters = " | ".join(children(study_group, "Algorithm Parameters"))
    assert card["sha256"] in parameters and "study rule" in parameters
    for index, (group, result) in enumerate(zip(slice_groups, stir.slices, strict=True)):
        assert tracking(group).startswith(f"slice {index + 1} of 15")
        assert children(group, "Probability") == [pytest.approx(result.prediction.probability, abs=1e-6)]
        assert children(group, positive_label) == ["Present" if result.prediction.positive else "Absent"]
        assert children(group, "Source of Measurement") == [source[index].SOPInstanceUID]
    # The reader's conclusion: a separate group whose observer is a person.
    context = {name(item): value(item) for item in reader_group.ContentSequence
               if item.RelationshipType == "HAS OBS CONTEXT"}
    assert context["Observer Type"] == "Person" and context["Person Observer Name"] == "Lovelace^Ada"
    assert reader_group.ObservationDateTime == "20250301140509+0100"
    assert children(reader_group, positive_label) == ["Absent"]
    agreement = children(reader_group, "Reader agrees with the AI finding")
    assert agreement == (["No"] if study.positive else ["Yes"])
    assert "Reader's note: TEST note: vascular signal, no oedema" in children(reader_group, "Comment")
    assert len(children(reader_group, "Source of Measurement")) == 15


def test_a_refused_series_is_reported_as_not_analysed(tmp_path, engines, t1_refused):
    from asdesk.tasks.dicom_export import export_dicom

    assert t1_refused.refused                                     # the shipped SIJ pack reads STIR, not T1
    written = export_dicom(t1_refused, card_of(engines, t1_refused), tmp_path)
    study_group = groups(pydicom.dcmread(written.structured_report))[0]
    label = card_of(engines, t1_refused)["labels"]["positive"]
    assert children(study_group, label) == ["Not analysed: outside the model's validated use"]
    assert children(study_group, "CAD Processing and Findings Summary") == ["No algorithms succeeded; without findings"]
    assert children(study_group, "Probability") == [] and children(study_group, "Study score (the model card's "
                                                                                 "study rule)") == []
    assert "outside what sij-mri-stir-inflammation was validated for" in children(study_group, "Comment")[0]
    capture = pydicom.dcmread(written.secondary_captures[0]).pixel_array[:768].astype(int)
    assert np.abs(capture[..., 0] - capture[..., 2]).max() <= 2    # no heat map on a refused image


def test_a_forced_series_is_marked_outside_validated_use(tmp_path, engines, t1_forced):
    from asdesk.tasks.dicom_export import export_dicom

    assert not t1_forced.refused and all(s.gate.overridden for s in t1_forced.slices)
    written = export_dicom(t1_forced, card_of(engines, t1_forced), tmp_path)
    study_group = groups(pydicom.dcmread(written.structured_report))[0]
    assert any("OUTSIDE VALIDATED USE" in text for text in children(study_group, "Comment"))


def test_a_png_gets_a_new_study_with_a_placeholder_patient(tmp_path, engines, knee):
    from asdesk.tasks.dicom_export import export_dicom

    card = card_of(engines, knee)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = export_dicom(knee, card, tmp_path / "a")
    again = export_dicom(knee, card, tmp_path / "b")
    assert first.new_study and first.study_instance_uid == again.study_instance_uid   # same file, same study
    (capture_path,) = first.secondary_captures
    capture = pydicom.dcmread(capture_path)
    document = pydicom.dcmread(first.structured_report)
    assert str(capture.PatientName) == "NON-DICOM INPUT^NO PATIENT IDENTITY" == str(document.PatientName)
    assert capture.PatientID.startswith("NODICOM-") and "Placeholder patient" in capture.PatientComments
    file_name = knee.record.metadata.source.name
    assert capture.StudyDescription == f"asdesk: non-DICOM image {file_name} (no patient identity)"
    assert capture.StudyInstanceUID == document.StudyInstanceUID == first.study_instance_uid
    assert "SourceImageSequence" not in capture                    # there is no DICOM source to point to
    (group,) = groups(document)
    assert children(group, "Source of Measurement") == [capture.SOPInstanceUID]   # the SC holds the pixels
    assert children(group, "Probability") == [pytest.approx(knee.prediction.probability, abs=1e-6)]
    assert children(group, "Threshold Value") == [pytest.approx(knee.prediction.threshold, abs=1e-6)]
    assert children(group, card["labels"]["positive"]) == ["Present" if knee.prediction.positive else "Absent"]


def test_highdicom_parses_the_report_back_as_tid_1500(tmp_path, engines, knee):
    import highdicom as hd

    from asdesk.tasks.dicom_export import export_dicom

    written = export_dicom(knee, card_of(engines, knee), tmp_path)
    document = hd.sr.srread(written.structured_report)
    assert isinstance(document, hd.sr.Comprehensive3DSR) and document.SeriesNumber == 9902
    report = document.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (group,) = report.get_image_measurement_groups()
    assert group.finding_type.value == "knee-xray-oa" and group.finding_type.scheme_designator == "99ASDESK"
    measured = {item.name.meaning: item.value for item in group.get_measurements()}
    assert measured["Probability"] == pytest.approx(knee.prediction.probability, abs=1e-6)
    evaluations = [item.value.meaning for item in group.get_qualitative_evaluations()]
    assert ("Present" if knee.prediction.positive else "Absent") in evaluations


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dicom3tools' dciodvfy reports for a file."""
    completed = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (completed.stdout + completed.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


# Warnings dciodvfy gives and why they are expected (README, "Export DICOM"):
EXPECTED_WARNINGS = (
    r"Retired Person Name form",             # the source's names "02-01" and "0" have one component: copied as is
    r"Value is zero for value 1 of attribute <Patient's Size>",   # the source's Patient's Size is 0: copied
    r"Unrecognized defined term <99ASDESK>",  # asdesk's private coding scheme (declared in the SR)
    r"attribute <Laterality>",               # General Series Laterality (2C) empty: the side is not known
)


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian package dicom3tools) is not installed: apt-get install dicom3tools")
def test_dciodvfy_finds_no_error_of_ours(tmp_path, engines, stir, knee):
    from asdesk.tasks.dicom_export import export_dicom

    decision = ReaderDecision(key="TEST", conclusion="indeterminate", note="TEST", reader="Test Reader",
                              recorded_at="2025-03-01T14:05:09+01:00", ai=AiFindingRef.from_result(stir))
    (tmp_path / "stir").mkdir()
    (tmp_path / "knee").mkdir()
    series = export_dicom(stir, card_of(engines, stir), tmp_path / "stir", decision=decision)
    image = export_dicom(knee, card_of(engines, knee), tmp_path / "knee")
    source_series_uid = sources()[0].SeriesInstanceUID
    for path in [series.secondary_captures[0], series.secondary_captures[-1], series.structured_report,
                 *image.secondary_captures, image.structured_report]:
        errors, warnings = dciodvfy(path)
        if path == series.structured_report:
            # The one error is the source's own Series Instance UID (a component with a leading zero), which the
            # SR must quote as it is to reference the source series; dciodvfy reports it in the source file too.
            assert all(source_series_uid in line or "invalid data values" in line for line in errors), errors
        else:
            assert errors == [], (path.name, errors)
        unexpected = [line for line in warnings if not any(re.search(p, line) for p in EXPECTED_WARNINGS)]
        assert unexpected == [], (path.name, unexpected)
    source_errors, _ = dciodvfy(STIR / "I1000000")
    assert any(source_series_uid in line for line in source_errors)   # the UID error is the source's


def test_analyze_dicom_out_on_the_command_line(tmp_path, capsys, engines):
    from asdesk import cli

    knee_file = sorted(KNEE_DIR.glob("*.png"))[0]
    out = tmp_path / "pacs" / "new"                                   # created when missing
    assert cli.main(["analyze", str(knee_file), "--dicom-out", str(out), "--json", "-q"]) == 0
    (document,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    dicom = document["dicom"]
    assert dicom["new_study"] is True and len(dicom["secondary_captures"]) == 1
    assert Path(dicom["structured_report"]) == out / f"{knee_file.stem}-sr.dcm"
    assert sorted(p.name for p in out.iterdir()) == [f"{knee_file.stem}-sc-001.dcm", f"{knee_file.stem}-sr.dcm"]
    assert pydicom.dcmread(dicom["structured_report"]).SOPClassUID == Comprehensive3DSRStorage
    assert cli.main(["analyze", str(T1), "--model", SIJ, "--dicom-out", str(tmp_path / "series"), "-q"]) == 3
    text = capsys.readouterr().out                                # exit 3: refused, and the files still written
    assert f"DICOM: 15 secondary capture(s) and a structured report in {tmp_path / 'series'}" in text
    assert len(list((tmp_path / "series").glob("T1-sc-*.dcm"))) == 15


def test_an_unwritable_folder_is_a_clear_error(tmp_path, engines, knee):
    from asdesk.report import ReportWriteError
    from asdesk.tasks.dicom_export import export_dicom

    with pytest.raises(ReportWriteError, match="is not a folder"):
        export_dicom(knee, card_of(engines, knee), tmp_path / "missing")
