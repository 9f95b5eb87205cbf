"""Page 1 of the PDF is what a referrer reads in ten seconds: the header, the AI finding with its key numbers,
the reader's conclusion apart from it (name and time), the image with its map, and the disclaimer once; the
details follow on later pages.

Real images (a knee radiograph PNG, the SI-joint STIR DICOM series); the model identity, card, predictions and
reader decisions are TEST DATA (see test_report_pdf.py).
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from conftest import requires_shared
from test_report_pdf import STIR_DIR, TEST_CARD, analysis, knee_record

import asdesk
from asdesk.core import Prediction, SeriesResult
from asdesk.core.reader_decision import AiFindingRef, ReaderDecision
from asdesk.report.pdf import write_pdf_report

pytestmark = requires_shared("data/knee-xray-kl", "data/sij-mri-dicom")

CARD = {**TEST_CARD, "performance": {**TEST_CARD["performance"], "detail": {"at_operating_points": {  # TEST DATA
    "balanced": {"sensitivity": {"value": 0.78, "ci95": [0.70, 0.85]},
                 "specificity": {"value": 0.74, "ci95": [0.69, 0.79]}}}}}}
DISCLAIMER = " ".join(asdesk.INTENDED_USE.split())


def page_text(path: Path, first: int, last: int | None = None) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    completed = subprocess.run(["pdftotext", "-layout", "-f", str(first), "-l", str(last or first), str(path), "-"],
                               capture_output=True, text=True, check=True, timeout=60)
    return " ".join(unicodedata.normalize("NFKC", completed.stdout).split())


def page_count(path: Path) -> int:
    if shutil.which("pdfinfo") is None:
        pytest.skip("pdfinfo (poppler-utils) is not installed")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def test_page_one_has_the_finding_key_numbers_reader_and_disclaimer_once(tmp_path):
    result = analysis(knee_record(), 0.6234)
    decision = ReaderDecision(key="TEST", conclusion="negative", note="TEST note: no osteophytes on the lateral view",
                              reader="Lovelace, Ada", recorded_at="2025-03-01T14:05:09+01:00",
                              ai=AiFindingRef.from_result(result))
    path = write_pdf_report(tmp_path / "r.pdf", result, CARD, operating_point_note="TEST NOTE",
                            reader_decision=decision)
    one = page_text(path, 1)
    assert "asdesk analysis report" in one
    assert "AI finding (decision support)" in one and "osteoarthritis KL2-4" in one
    assert "Probability 62.3 % ≥ threshold 50.0 %" in one
    assert "Operating point balanced" in one
    assert "Held-out sensitivity 0.780 (95% CI 0.700–0.850)" in one
    assert "Held-out specificity 0.740 (95% CI 0.690–0.790)" in one
    # The reader's conclusion, apart from the AI finding, with name and time.
    assert "Reader's conclusion Disagrees with the AI finding: negative (no osteoarthritis KL0-1)" in one
    assert "Reader: Lovelace, Ada · recorded 2025-03-01 14:05 (UTC+01:00)" in one
    assert "TEST note: no osteophytes on the lateral view" in one
    # Header of a PNG: every clinical field absent, shown as an em dash.
    assert "Accession number — " in one and "Referring physician —" in one
    assert one.count(DISCLAIMER) == 1 and one.lower().count("not a medical device") == 1   # once on page 1
    assert "Measured performance" not in one and "TEST NOTE" not in one                   # details come later
    rest = page_text(path, 2, page_count(path))
    assert rest.startswith("Details of the AI result")
    assert "Measured performance" in rest and "TEST NOTE" in rest and "Patient and study" in rest
    assert "research use only; not a medical device" in rest                # later pages' footers say it


def test_a_negative_finding_says_below_threshold_and_no_decision_says_not_recorded(tmp_path):
    path = write_pdf_report(tmp_path / "n.pdf", analysis(knee_record(), 0.2), CARD)
    one = page_text(path, 1)
    assert "Probability 20.0 % < threshold 50.0 %" in one and "no osteoarthritis KL0-1" in one
    assert "Reader's conclusion Not recorded in asdesk" in one


def test_an_agreement_and_a_draft_note(tmp_path):
    result = analysis(knee_record(), 0.9)
    agreed = ReaderDecision(key="T", conclusion="positive", reader="Dr Grace Hopper",
                            recorded_at="2025-03-02T09:00:00+00:00", ai=AiFindingRef.from_result(result))
    one = page_text(write_pdf_report(tmp_path / "a.pdf", result, CARD, reader_decision=agreed), 1)
    assert "Agrees with the AI finding: positive (osteoarthritis KL2-4)" in one and "Dr Grace Hopper" in one
    draft = ReaderDecision(key="T", conclusion="", note="TEST draft", ai=AiFindingRef.from_result(result))
    one = page_text(write_pdf_report(tmp_path / "d.pdf", result, CARD, reader_decision=draft), 1)
    assert "Not recorded in asdesk" in one and "Reader's note (draft): TEST draft" in one
    stale = ReaderDecision(key="T", conclusion="negative", reader="R", recorded_at="2025-03-02T09:00:00+00:00",
                           ai=AiFindingRef(finding="older finding", positive=False, operating_point="high_specificity",
                                           model_id="test-pack-knee", model_version="0.0.1-test"))
    one = page_text(write_pdf_report(tmp_path / "s.pdf", result, CARD, reader_decision=stale), 1)
    assert "Recorded against an earlier AI finding: older finding" in one


def test_series_page_one_has_the_dicom_header_and_the_study_finding(tmp_path):
    from asdesk.io import read_series

    records, _ = read_series(STIR_DIR)
    slices = tuple(analysis(record, 0.2 + 0.04 * index) for index, record in enumerate(records))
    study = Prediction(0.71, 0.5, "study", True, "osteoarthritis KL2-4")   # TEST DATA
    series = SeriesResult(slices=slices, study_probability=0.71, study_prediction=study,
                          study_rule="TEST RULE: top-3 mean")
    path = write_pdf_report(tmp_path / "s.pdf", series, CARD)
    one = page_text(path, 1)
    assert "Accession number 3283881396" in one and "Study date 2008-02-22 11:00:24" in one
    assert "Sex — " in one and "Birth date —" in one and "Referring physician 0" in one
    assert "Study description 050" in one and "Modality MR" in one
    assert "AI study-level finding (decision support)" in one
    assert "Study score 71.0 % ≥ threshold 50.0 % (the card's study rule)" in one
    assert f"Highest slice {100 * slices[-1].prediction.probability:.1f} % (instance 15" in one
    assert one.count(DISCLAIMER) == 1 and "Per-slice probabilities" not in one
    assert "Per-slice probabilities" in page_text(path, 2, page_count(path))


def test_page_one_renders_the_image_and_map(tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    import cv2
    import numpy as np

    path = write_pdf_report(tmp_path / "r.pdf", analysis(knee_record(), 0.8), CARD)
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "p")],
                   check=True, timeout=60)
    page = cv2.cvtColor(cv2.imread(str(next(tmp_path.glob("p*.png")))), cv2.COLOR_BGR2RGB).astype(int)
    red = (page[..., 0] > 180) & (page[..., 1] < 120) & (page[..., 2] < 120)
    assert red.sum() > 50                                               # the heat map is on page 1
    lower = page[page.shape[0] // 2:]
    gray = (np.abs(lower[..., 0] - lower[..., 2]) < 4) & (lower[..., 0] > 40) & (lower[..., 0] < 215)
    assert gray.sum() > 3000                                            # and so is the radiograph


def test_accepted_modalities_and_body_parts_have_no_stray_commas(tmp_path):
    card = {**CARD, "modalities": ["", "CR", "DX"], "body_parts": ["KNEE", ""]}   # as the shipped knee card
    path = write_pdf_report(tmp_path / "m.pdf", analysis(knee_record(), 0.7), card)
    text = page_text(path, 1, page_count(path))
    assert "Modalities CR, DX; files without the" in text          # (the table wraps "attribute")
    assert "Body parts KNEE; files without the" in text
    assert ", CR" not in text and "KNEE," not in text
