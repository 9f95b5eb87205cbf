"""The screening CSV log: header once, one row per call, resume, crash tolerance, error rows.

Results are built on a real knee radiograph and a real SI-joint STIR DICOM slice; the model identity and
probabilities are TEST DATA.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared

from asdesk.core import AnalysisResult, AsdeskError, ImageMetadata, ImageRecord, ModelInfo, Prediction
from asdesk.report import SCREENING_COLUMNS, ReportWriteError, ScreeningCsv
from asdesk.report.csvlog import LEGACY_COLUMNS, CsvLockedError

REPO = Path(__file__).resolve().parents[1]

DATA = SHARED_DATA
KNEE_DIR = DATA / "knee-xray-kl" / "val" / "2"
STIR_DIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"

pytestmark = requires_shared("data/knee-xray-kl", "data/sij-mri-dicom")

TEST_MODEL = ModelInfo(pack_id="test-pack", version="0.0.1-test", sha256="fedcba9876543210" * 4,
                       task="TEST DATA", positive_label="positive (TEST)", negative_label="negative (TEST)")


def knee_files(count: int) -> list[Path]:
    return sorted(KNEE_DIR.glob("*.png"))[:count]


def knee_result(path: Path, probability: float) -> AnalysisResult:
    pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    record = ImageRecord(pixels, pixels / 255.0, ImageMetadata(source=path, format="PNG"))
    finding = "positive (TEST)" if probability >= 0.5 else "negative (TEST)"
    return AnalysisResult(record=record, model_input=record.display, model=TEST_MODEL,
                          prediction=Prediction(probability, 0.5, "balanced", probability >= 0.5, finding))


def dicom_result(path: Path, probability: float, frame_index: int | None = None) -> AnalysisResult:
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.float32)
    display = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1.0)
    meta = ImageMetadata(source=path, format="DICOM", patient_id=str(dataset.PatientID),
                         study_uid=str(dataset.StudyInstanceUID), series_uid=str(dataset.SeriesInstanceUID),
                         modality=str(dataset.Modality), instance_number=int(dataset.InstanceNumber),
                         frame_index=frame_index)
    return AnalysisResult(record=ImageRecord(pixels, display, meta), model_input=display, model=TEST_MODEL,
                          prediction=Prediction(probability, 0.35, "high_sensitivity", probability >= 0.35,
                                                "positive (TEST)"))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_header_once_and_rows_appended_across_instances(tmp_path):
    log_path = tmp_path / "screen.csv"
    first, second, third = knee_files(3)
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(first, 0.123456789))
        log.write_result(knee_result(second, 0.9))
    with ScreeningCsv(log_path) as log:                          # a resumed run appends
        log.write_result(knee_result(third, 0.5))
    rows = read_csv(log_path)
    assert rows[0] == list(SCREENING_COLUMNS)
    assert [row[0] == "file" for row in rows].count(True) == 1
    assert len(rows) == 4 and all(len(row) == len(SCREENING_COLUMNS) for row in rows)
    records = [dict(zip(SCREENING_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [Path(r["file"]).name for r in records] == [first.name, second.name, third.name]
    assert records[0]["probability"] == "0.123457" and records[0]["threshold"] == "0.500000"
    assert records[1]["finding"] == "positive (TEST)" and records[0]["finding"] == "negative (TEST)"
    assert records[0]["model_id"] == "test-pack" and records[0]["model_version"] == "0.0.1-test"
    assert records[0]["model_sha256"] == TEST_MODEL.sha256
    assert records[0]["frame"] == "" and records[0]["error"] == "" and records[0]["modality"] == ""
    stamp = datetime.fromisoformat(records[0]["timestamp"])
    assert stamp.tzinfo is not None and abs((datetime.now().astimezone() - stamp).total_seconds()) < 120
    assert ScreeningCsv.completed(log_path) == {ScreeningCsv.key(p, None) for p in (first, second, third)}


def test_each_row_is_on_disk_before_the_log_is_closed(tmp_path):
    log_path = tmp_path / "screen.csv"
    log = ScreeningCsv(log_path)
    try:
        log.write_result(knee_result(knee_files(1)[0], 0.7))
        assert len(read_csv(log_path)) == 2                    # visible to another reader at once
        assert len(ScreeningCsv.completed(log_path)) == 1
    finally:
        log.close()
    log.close()                                                 # idempotent


def test_batched_sync_flushes_every_row_at_once_and_fsyncs_once_per_batch(tmp_path, monkeypatch):
    """Group commit: each row reaches the OS (another reader sees it) as it is written; the disk sync is one
    ``fsync`` per :meth:`sync` call (per screening batch) and one at close, not one per row."""
    from asdesk.report import csvlog

    calls = []
    real = os.fsync
    monkeypatch.setattr(csvlog.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    log_path = tmp_path / "screen.csv"
    files = knee_files(5)
    log = ScreeningCsv(log_path, sync_each_row=False)
    try:
        for path in files[:3]:
            log.write_result(knee_result(path, 0.4))
            assert len(ScreeningCsv.completed(log_path)) == files.index(path) + 1  # visible at once
        assert calls == []
        log.sync()
        log.sync()  # nothing new: no second fsync
        assert len(calls) == 1
        for path in files[3:]:
            log.write_result(knee_result(path, 0.6))
    finally:
        log.close()
    assert len(calls) == 2 and len(ScreeningCsv.completed(log_path)) == 5
    with ScreeningCsv(log_path) as each:  # the default: one fsync per row
        each.write_result(knee_result(knee_files(6)[5], 0.1))
    assert len(calls) == 3


def test_screening_fsyncs_once_per_batch(tmp_path, tiny_pack, monkeypatch):
    from conftest import TINY_PACK_ID

    from asdesk.report import csvlog
    from asdesk.tasks import EngineCache, screen_folder

    calls = []
    real = os.fsync
    monkeypatch.setattr(csvlog.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    folder = tmp_path / "in"
    folder.mkdir()
    for index, path in enumerate(knee_files(10)):
        (folder / f"{index:02d}-{path.name}").write_bytes(path.read_bytes())
    summary = screen_folder(folder, tmp_path / "s.csv", model_id=TINY_PACK_ID, batch_size=4,
                            engines=EngineCache([tiny_pack.path.parent]))
    assert summary.n_done == 10 and len(ScreeningCsv.completed(tmp_path / "s.csv")) == 10
    assert 3 <= len(calls) <= 4  # three batches (4 + 4 + 2 rows) and the header, not one per row


def test_dicom_rows_carry_the_identifiers_and_frame(tmp_path):
    log_path = tmp_path / "screen.csv"
    dicom_file = sorted(STIR_DIR.iterdir())[0]
    with ScreeningCsv(log_path) as log:
        log.write_result(dicom_result(dicom_file, 0.42))
        log.write_result(dicom_result(dicom_file, 0.2, frame_index=3))
    rows = ScreeningCsv.read_rows(log_path)
    dataset = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    assert rows[0]["patient_id"] == str(dataset.PatientID)
    assert rows[0]["study_uid"] == str(dataset.StudyInstanceUID)
    assert rows[0]["series_uid"] == str(dataset.SeriesInstanceUID)
    assert rows[0]["modality"] == "MR" and rows[0]["operating_point"] == "high_sensitivity"
    assert rows[0]["file"] == os.path.abspath(dicom_file)
    assert ScreeningCsv.completed(log_path) == {(os.path.abspath(dicom_file), ""),
                                                (os.path.abspath(dicom_file), "3")}


def test_error_rows_count_as_done_unless_retrying_errors(tmp_path):
    log_path = tmp_path / "screen.csv"
    good, bad, later_fixed = knee_files(3)
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(good, 0.3))
        log.write_error(bad, None, "TruncatedFileError: file ends before its pixel data,\nre-copy it",
                        TEST_MODEL)
        log.write_error(later_fixed, 2, 'a "quoted", comma message', None)
    rows = ScreeningCsv.read_rows(log_path)
    assert rows[1]["error"] == "TruncatedFileError: file ends before its pixel data, re-copy it"
    assert rows[1]["probability"] == "" and rows[1]["finding"] == ""
    assert rows[1]["model_sha256"] == TEST_MODEL.sha256
    assert rows[2]["error"] == 'a "quoted", comma message' and rows[2]["model_id"] == ""
    assert rows[2]["frame"] == "2"
    assert len(read_csv(log_path)) == 4                         # every row on one line
    assert ScreeningCsv.completed(log_path) == {ScreeningCsv.key(good, None), ScreeningCsv.key(bad, None),
                                                ScreeningCsv.key(later_fixed, 2)}
    assert ScreeningCsv.completed(log_path, include_errors=False) == {ScreeningCsv.key(good, None)}
    with ScreeningCsv(log_path) as log:                          # a --retry-errors run succeeds later
        log.write_result(knee_result(bad, 0.8))
    assert ScreeningCsv.key(bad, None) in ScreeningCsv.completed(log_path, include_errors=False)


def test_a_truncated_last_line_is_skipped_and_cut_off_on_resume(tmp_path):
    log_path = tmp_path / "screen.csv"
    first, second, third = knee_files(3)
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(first, 0.1))
    # Simulate a crash in the middle of the next row: a fragment without its line end.
    with open(log_path, "ab") as crash:
        crash.write(f"{os.path.abspath(second)},,,,,,test-pack,0.0.1-test,fedc".encode())
    assert ScreeningCsv.completed(log_path) == {ScreeningCsv.key(first, None)}
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(third, 0.6))
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and second.name not in log_path.read_text(encoding="utf-8")  # the fragment is gone
    assert lines[2].startswith(os.path.abspath(third) + ",")
    assert ScreeningCsv.completed(log_path) == {ScreeningCsv.key(first, None), ScreeningCsv.key(third, None)}
    assert [Path(r["file"]).name for r in ScreeningCsv.read_rows(log_path)] == [first.name, third.name]


def test_a_row_cut_inside_its_timestamp_is_not_counted(tmp_path):
    log_path = tmp_path / "screen.csv"
    first, second = knee_files(2)
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(first, 0.1))
        log.write_result(knee_result(second, 0.2))
    text = log_path.read_text(encoding="utf-8")
    log_path.write_text(text[:-12], encoding="utf-8")            # the crash cut the last timestamp
    with ScreeningCsv(log_path):                                 # terminates the fragment
        pass
    assert ScreeningCsv.completed(log_path) == {ScreeningCsv.key(first, None)}


def test_a_crash_while_writing_the_header_restarts_the_file(tmp_path):
    log_path = tmp_path / "screen.csv"
    log_path.write_text("file,frame,row_kind,sta", encoding="utf-8")
    assert ScreeningCsv.completed(log_path) == set()
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(knee_files(1)[0], 0.5))
    rows = read_csv(log_path)
    assert rows[0] == list(SCREENING_COLUMNS) and len(rows) == 2


def test_empty_or_missing_file_gets_a_header(tmp_path):
    assert ScreeningCsv.completed(tmp_path / "absent.csv") == set()
    empty = tmp_path / "empty.csv"
    empty.touch()
    ScreeningCsv(empty).close()
    assert read_csv(empty) == [list(SCREENING_COLUMNS)]
    ScreeningCsv(empty).close()
    assert read_csv(empty) == [list(SCREENING_COLUMNS)]          # still one header


def test_foreign_csv_and_unwritable_paths_are_refused(tmp_path):
    foreign = tmp_path / "other.csv"
    foreign.write_text("name,score\nx,1\n", encoding="utf-8")
    with pytest.raises(ReportWriteError, match="not an asdesk screening CSV") as caught:
        ScreeningCsv(foreign)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, AsdeskError)
    assert foreign.read_text(encoding="utf-8") == "name,score\nx,1\n"   # untouched
    with pytest.raises(ReportWriteError, match="not an asdesk screening CSV"):
        ScreeningCsv.completed(foreign)
    with pytest.raises(ReportWriteError, match="cannot open"):
        ScreeningCsv(tmp_path / "missing-folder" / "screen.csv")
    with pytest.raises(ReportWriteError, match="cannot open"):
        ScreeningCsv(tmp_path)


def test_rows_from_several_threads_stay_whole(tmp_path):
    log_path = tmp_path / "screen.csv"
    files = knee_files(4)
    with ScreeningCsv(log_path) as log:
        def work(worker: int) -> None:
            for index in range(15):
                log.write_error(files[worker], index, f"TEST worker {worker} row {index}", TEST_MODEL)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    rows = ScreeningCsv.read_rows(log_path)
    assert len(rows) == 60 and len(read_csv(log_path)) == 61
    assert len(ScreeningCsv.completed(log_path)) == 60


def test_the_csv_log_does_not_load_qt():
    code = ("import sys, asdesk.report; from asdesk.report import ScreeningCsv; "
            "print(sorted(m for m in sys.modules if m.startswith('PySide6.')))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_a_second_writer_is_refused_while_the_first_holds_the_csv(tmp_path):
    log_path = tmp_path / "screen.csv"
    first, second = knee_files(2)
    code = ("import sys; from asdesk.report import ScreeningCsv\n"
            "try:\n    ScreeningCsv(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "else:\n    print('opened')\n")
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(first, 0.3))
        other = subprocess.run([sys.executable, "-c", code, str(log_path)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert other.stdout.startswith("CsvLockedError"), other.stdout + other.stderr
        assert "another asdesk screening" in other.stdout and str(log_path) in other.stdout
        with pytest.raises(CsvLockedError):                          # a second writer in this process too
            ScreeningCsv(log_path)
        log.write_result(knee_result(second, 0.4))
    assert len(ScreeningCsv.read_rows(log_path)) == 2               # nothing written twice
    after = subprocess.run([sys.executable, "-c", code, str(log_path)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert after.stdout.strip() == "opened"                          # released on close


def test_skipped_and_study_rows_carry_their_kind_and_status(tmp_path):
    log_path = tmp_path / "screen.csv"
    image, other = knee_files(2)
    with ScreeningCsv(log_path) as log:
        log.write_result(knee_result(image, 0.3))
        log.write_skipped(other, "skipped: not an image (Basic Text SR Storage)")
        log.write_study(tmp_path, {"series_uid": "1.2.3", "modality": "MR"}, TEST_MODEL, 0.61, 0.5, "study",
                        "positive (TEST)")
    rows = ScreeningCsv.read_rows(log_path)
    assert [(r["row_kind"], r["status"]) for r in rows] == [("image", "result"), ("image", "skipped"),
                                                             ("study", "result")]
    assert rows[1]["error"].startswith("skipped: not an image") and rows[1]["probability"] == ""
    assert rows[2]["probability"] == "0.610000" and rows[2]["series_uid"] == "1.2.3"
    assert ScreeningCsv.completed(log_path, include_errors=False) == {ScreeningCsv.key(image, None),
                                                                      ScreeningCsv.key(other, None)}
    assert ScreeningCsv.completed_studies(log_path) == {("1.2.3", TEST_MODEL.pack_id)}


def test_a_legacy_csv_is_read_and_appended_in_its_own_format(tmp_path):
    log_path = tmp_path / "old.csv"
    first, second = knee_files(2)
    legacy = [os.path.abspath(first), "", "", "", "", "", "p", "1", "ab", "0.2", "0.5", "balanced",
              "neg", "", "2024-01-01T00:00:00+00:00"]
    with open(log_path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([list(LEGACY_COLUMNS), legacy])
    with ScreeningCsv(log_path) as log:
        log.write_error(second, None, "broken", None)
    rows = read_csv(log_path)
    assert rows[0] == list(LEGACY_COLUMNS) and all(len(r) == len(LEGACY_COLUMNS) for r in rows)
    parsed = ScreeningCsv.read_rows(log_path)
    assert [(r["row_kind"], r["status"]) for r in parsed] == [("image", "result"), ("image", "error")]
