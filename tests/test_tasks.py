"""The headless work functions (``asdesk.tasks``), tested apart from any UI with a recording progress sink
and a cancel token (Orange3 style), on real scans and a real (tiny, random-weight) model pack."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_PACK_ID, TINY_STUDY_K, skip_without_shared, tiny_card

from asdesk.core import AnalysisResult, CancelledError, CancelToken, ModelHashMismatchError, SeriesResult
from asdesk.report import ScreeningCsv
from asdesk.tasks import (
    EngineCache,
    ScreeningCancelledError,
    ScreeningError,
    analyze_batch,
    analyze_path,
    analyze_records,
    report_name,
    screen_folder,
    study_decision,
)


class RecordingProgress:
    """A ProgressSink that records every call (the mock ``state`` of Orange3's tests)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, str]] = []

    def start(self, total: int | None, label: str = "") -> None:
        self.events.append(("start", total, label))

    def advance(self, n: int = 1, message: str = "") -> None:
        self.events.append(("advance", n, message))

    def finish(self) -> None:
        self.events.append(("finish", None, ""))

    def rounds(self) -> list[tuple[int | None, int]]:
        """(total announced, units advanced) per start/finish round."""
        out: list[tuple[int | None, int]] = []
        for kind, value, _ in self.events:
            if kind == "start":
                out.append((value, 0))
            elif kind == "advance" and out:
                out[-1] = (out[-1][0], out[-1][1] + value)
        return out


@pytest.fixture(scope="session")
def engines(tiny_pack) -> EngineCache:
    """An engine cache over the tiny pack only (hermetic: bundled packs are not seen)."""
    return EngineCache([tiny_pack.path.parent])


@pytest.fixture(scope="session")
def stir(shared_data) -> Path:
    skip_without_shared("data/sij-mri-dicom")
    return shared_data / "sij-mri-dicom" / "patient1" / "STIR"


@pytest.fixture(scope="session")
def knee_files(shared_data) -> list[Path]:
    skip_without_shared("data/knee-xray-kl")
    val = shared_data / "knee-xray-kl" / "val"
    return sorted((val / "0").glob("*.png"))[:3] + sorted((val / "3").glob("*.png"))[:3]


@pytest.fixture(scope="session")
def stir_result(stir, engines) -> SeriesResult:
    """The STIR series analysed once for the session (Grad-CAM on)."""
    result = analyze_path(stir, model_id=TINY_PACK_ID, engines=engines)
    assert isinstance(result, SeriesResult)
    return result


# ------------------------------------------------------------------------------------------- analysis
def test_series_folder_gives_sorted_slices_and_the_cards_study_rule(stir, stir_result, engines):
    result = stir_result
    assert len(result.slices) == 15
    instances = [r.record.metadata.instance_number for r in result.slices]
    assert instances == sorted(instances)
    # the PACS file names are not in slice order: the series was sorted by the tags, not by name
    names = [r.record.metadata.source.name for r in result.slices]
    assert names != sorted(names)
    positions = [r.record.metadata.slice_position_mm for r in result.slices]
    assert all(np.diff(positions) < 0) or all(np.diff(positions) > 0)
    probabilities = np.array([r.prediction.probability for r in result.slices])
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert probabilities.std() > 0.01  # the tiny pack tells slices apart
    top_k = np.sort(probabilities)[::-1][:TINY_STUDY_K].mean()
    assert result.study_probability == pytest.approx(top_k, abs=1e-6)
    assert result.study_prediction.threshold == 0.5
    assert result.study_prediction.positive == (top_k >= 0.5)
    assert "3 highest" in result.study_rule
    for item in result.slices:
        assert item.model.pack_id == TINY_PACK_ID
        assert item.heatmap is not None and item.heatmap.shape == item.record.shape
        assert item.overlay is not None and item.overlay.shape == (*item.record.shape, 4)
        assert item.prediction.finding in ("Test positive", "Test negative")
        assert item.prediction.positive == (item.prediction.probability >= item.prediction.threshold)


def test_extensionless_dicom_file_gives_one_result_equal_to_its_slice(stir, stir_result, engines):
    path = stir / "I1000000"
    result = analyze_path(path, model_id=TINY_PACK_ID, gradcam=False, engines=engines)
    assert isinstance(result, AnalysisResult)
    assert result.heatmap is None
    same = [r for r in stir_result.slices if r.record.metadata.source == path]
    assert result.prediction.probability == pytest.approx(same[0].prediction.probability, abs=1e-5)
    assert result.record.metadata.modality == "MR"
    assert "read" in result.timings_ms and "classify" in result.timings_ms


def test_png_chooses_the_pack_by_modality_and_reports_progress(knee_files, engines):
    progress = RecordingProgress()
    result = analyze_path(knee_files[0], progress=progress, engines=engines)  # no model id: by modality ''
    assert isinstance(result, AnalysisResult)
    assert result.model.pack_id == TINY_PACK_ID
    assert progress.rounds() == [(1, 1)]
    assert progress.events[-1][0] == "finish"


def test_operating_point_changes_only_the_threshold(knee_files, engines):
    sensitive = analyze_path(knee_files[1], TINY_PACK_ID, "high_sensitivity", gradcam=False, engines=engines)
    specific = analyze_path(knee_files[1], TINY_PACK_ID, "high_specificity", gradcam=False, engines=engines)
    assert sensitive.prediction.probability == pytest.approx(specific.prediction.probability, abs=1e-6)
    assert (sensitive.prediction.threshold, specific.prediction.threshold) == (0.2, 0.8)
    assert sensitive.prediction.operating_point == "high_sensitivity"


def test_series_progress_covers_reading_and_analysis(stir, engines):
    progress = RecordingProgress()
    analyze_path(stir, model_id=TINY_PACK_ID, gradcam=False, progress=progress, engines=engines)
    rounds = progress.rounds()
    assert rounds[-1] == (15, 15)  # classification, batch by batch
    assert rounds[0][0] == 15  # reading the folder's 15 files
    assert [kind for kind, _, _ in progress.events].count("finish") == len(rounds)


def test_study_without_a_rule_is_the_top_slice_and_says_so(stir_result):
    from asdesk.inference import ModelCard

    card = ModelCard.from_dict(tiny_card(study_rule=False))
    score, prediction, text = study_decision(stir_result.slices, card)
    assert score == pytest.approx(max(r.prediction.probability for r in stir_result.slices))
    assert prediction.threshold == 0.5 and prediction.operating_point == "balanced"
    assert "no study rule" in text


def test_analyze_records_as_the_window_calls_it(stir_result, engines):
    records = [r.record for r in stir_result.slices[:4]]
    series = analyze_records(records, model_id=TINY_PACK_ID, gradcam=False, engines=engines)
    assert isinstance(series, SeriesResult) and len(series.slices) == 4
    single = analyze_records(records[:1], gradcam=False, engines=engines)
    assert isinstance(single, AnalysisResult)
    assert single.prediction.probability == pytest.approx(series.slices[0].prediction.probability, abs=1e-5)


def test_cancelled_analysis_raises_before_work(stir, engines):
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        analyze_path(stir, model_id=TINY_PACK_ID, cancel=token, engines=engines)


def test_bad_inputs_raise_read_errors(tmp_path, engines):
    from asdesk.core import ModelNotFoundError, ReadError

    with pytest.raises(ReadError, match="no such file"):
        analyze_path(tmp_path / "missing.dcm", engines=engines)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ReadError):
        analyze_path(junk, engines=engines)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadError):
        analyze_path(tmp_path / "empty", engines=engines)
    with pytest.raises(ModelNotFoundError):
        analyze_path(
            Path(__file__).parents[1] / "resources" / "samples" / "knee-kl3-9023348L.png",
            model_id="no-such-pack",
            engines=engines,
        )


# ------------------------------------------------------------------------------------------- engines
def test_engine_cache_returns_one_engine_per_pack_across_threads(engines):
    found: list[Any] = []
    threads = [threading.Thread(target=lambda: found.append(engines.get(TINY_PACK_ID))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(engine) for engine in found}) == 1
    assert engines.loaded() == [TINY_PACK_ID]
    assert found[0].device


def test_engine_cache_refuses_an_altered_model(tiny_pack, tmp_path):
    copy = tmp_path / "packs" / TINY_PACK_ID
    shutil.copytree(tiny_pack.path, copy)
    with open(copy / "model.keras", "ab") as handle:
        handle.write(b"tampered")
    cache = EngineCache([copy.parent])
    with pytest.raises(ModelHashMismatchError):
        cache.get(TINY_PACK_ID)
    assert cache.loaded() == []


# ------------------------------------------------------------------------------------------- screening
def _truncated_copy(source: Path, target: Path, keep: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep])
    return target


@pytest.fixture
def screen_dir(tmp_path, knee_files, stir) -> Path:
    """6 knee PNGs (KL 0 and 3), 3 extensionless STIR files, a truncated PNG, a truncated DICOM and a text
    file (skipped, not an image)."""
    root = tmp_path / "screen"
    (root / "knee").mkdir(parents=True)
    (root / "mri").mkdir()
    for path in knee_files:
        shutil.copyfile(path, root / "knee" / f"{path.parent.name}-{path.name}")
    for name in ("I1000000", "I2000000", "I3000000"):
        shutil.copyfile(stir / name, root / "mri" / name)
    _truncated_copy(knee_files[0], root / "knee" / "broken.png", 200)
    _truncated_copy(stir / "I4000000", root / "mri" / "I4000000", 60_000)
    (root / "notes.txt").write_text("not an image\n")
    return root


EXPECTED_RESULTS, EXPECTED_ERRORS = 9, 2


def test_screen_writes_a_row_per_image_and_an_error_row_per_bad_file(screen_dir, tmp_path, engines):
    csv_path = tmp_path / "out.csv"
    progress = RecordingProgress()
    rows: list[Any] = []
    summary = screen_folder(
        screen_dir,
        csv_path,
        model_id=TINY_PACK_ID,
        progress=progress,
        batch_size=4,
        on_row=rows.append,
        engines=engines,
    )
    assert (summary.n_done, summary.n_errors, summary.n_skipped_resumed) == (EXPECTED_RESULTS, EXPECTED_ERRORS, 0)
    assert summary.n_found == EXPECTED_RESULTS + EXPECTED_ERRORS and not summary.cancelled
    everything = ScreeningCsv.read_rows(csv_path)
    table = [row for row in everything if row["row_kind"] == "image"]
    assert len(table) == EXPECTED_RESULTS + EXPECTED_ERRORS
    # the STIR series (3 good slices + 1 truncated) gets one study row, an error: a slice is missing
    studies = [row for row in everything if row["row_kind"] == "study"]
    assert len(studies) == 1 and studies[0]["status"] == "error" and studies[0]["probability"] == ""
    assert "1 of the 4 slices" in studies[0]["error"] and studies[0]["file"] == str(screen_dir / "mri")
    assert summary.n_study_rows == 1 and summary.n_study_errors == 1 and summary.failed
    errors = {Path(row["file"]).name: row["error"] for row in table if row["error"]}
    assert set(errors) == {"broken.png", "I4000000"}
    assert all(row["model_id"] == TINY_PACK_ID and row["model_sha256"] for row in table)
    assert len(rows) == len(table)
    assert sum(isinstance(row, ScreeningError) for row in rows) == EXPECTED_ERRORS
    assert progress.rounds()[-1] == (EXPECTED_RESULTS + EXPECTED_ERRORS, EXPECTED_RESULTS + EXPECTED_ERRORS)

    # the CSV holds exactly the engine's probabilities
    from asdesk.io import read_image

    good = [row for row in table if not row["error"]]
    records = [read_image(row["file"]) for row in good]
    direct = analyze_batch(engines.get(TINY_PACK_ID), records, gradcam=False)
    for row, result in zip(good, direct, strict=True):
        assert float(row["probability"]) == pytest.approx(result.prediction.probability, abs=1e-6)
        assert row["finding"] == result.prediction.finding
        assert float(row["threshold"]) == result.prediction.threshold

    # resume: a second run adds nothing
    again = screen_folder(screen_dir, csv_path, model_id=TINY_PACK_ID, engines=engines)
    assert (again.n_done, again.n_errors, again.n_skipped_resumed) == (0, 0, EXPECTED_RESULTS + EXPECTED_ERRORS)
    assert len(ScreeningCsv.read_rows(csv_path)) == EXPECTED_RESULTS + EXPECTED_ERRORS + 1
    assert again.n_study_rows == 0 and again.n_errors_before == EXPECTED_ERRORS and again.failed


def test_cancel_mid_screen_keeps_finished_rows_and_resume_completes(screen_dir, tmp_path, engines):
    csv_path = tmp_path / "cancelled.csv"
    token = CancelToken()

    def cancel_after_first_row(_row: object) -> None:
        token.cancel()

    with pytest.raises(ScreeningCancelledError) as caught:
        screen_folder(
            screen_dir,
            csv_path,
            model_id=TINY_PACK_ID,
            batch_size=3,
            cancel=token,
            on_row=cancel_after_first_row,
            engines=engines,
        )
    summary = caught.value.summary
    assert summary.cancelled and summary.n_done + summary.n_errors == 3  # the batch under way finished
    assert len(ScreeningCsv.read_rows(csv_path)) == 3
    assert isinstance(caught.value, CancelledError)

    resumed = screen_folder(screen_dir, csv_path, model_id=TINY_PACK_ID, batch_size=3, engines=engines)
    assert resumed.n_skipped_resumed == 3
    assert resumed.n_done + resumed.n_errors == EXPECTED_RESULTS + EXPECTED_ERRORS - 3
    table = ScreeningCsv.read_rows(csv_path)
    keys = [(row["file"], row["frame"]) for row in table if row["row_kind"] == "image"]
    assert len(keys) == len(set(keys)) == EXPECTED_RESULTS + EXPECTED_ERRORS
    assert [row["row_kind"] for row in table].count("study") == 1


def test_screen_without_model_routes_per_image_and_flags_unmatched(screen_dir, tiny_pack, tmp_path):
    """Without --model each image gets the pack for its modality; an image no pack accepts gets an error."""
    import json

    packs = tmp_path / "packs"
    mr_only = packs / "tiny-mr-only"
    shutil.copytree(tiny_pack.path, mr_only)
    card = json.loads((mr_only / "card.json").read_text())
    card.update(id="tiny-mr-only", modalities=["MR"])
    (mr_only / "card.json").write_text(json.dumps(card))
    csv_path = tmp_path / "routed.csv"
    summary = screen_folder(screen_dir, csv_path, engines=EngineCache([packs]), batch_size=16)
    table = ScreeningCsv.read_rows(csv_path)
    by_name = {Path(row["file"]).name: row for row in table}
    assert by_name["I1000000"]["model_id"] == "tiny-mr-only" and not by_name["I1000000"]["error"]
    knee_rows = [row for row in table if row["file"].endswith(".png") and "broken" not in row["file"]]
    assert knee_rows and all("no installed model pack was made for" in row["error"] for row in knee_rows)
    assert summary.n_done == 3  # the three readable STIR files
    assert summary.n_errors == len(table) - 3 - 1  # the STIR series' study row (a slice failed) is no file


def test_screen_writes_one_pdf_per_image(tmp_path, knee_files, engines):
    folder = tmp_path / "two"
    folder.mkdir()
    for path in knee_files[:2]:
        shutil.copyfile(path, folder / path.name)
    reports = tmp_path / "reports"
    summary = screen_folder(folder, tmp_path / "two.csv", model_id=TINY_PACK_ID, reports_dir=reports, engines=engines)
    assert summary.n_done == 2 and not summary.report_errors
    written = sorted(p.name for p in reports.glob("*.pdf"))
    assert written == sorted(f"{p.stem}.pdf" for p in knee_files[:2])
    assert all((reports / name).read_bytes()[:5] == b"%PDF-" for name in written)


def test_screen_rejects_a_missing_folder_and_unknown_model(tmp_path, screen_dir, engines):
    from asdesk.core import ModelNotFoundError, ReadError

    with pytest.raises(ReadError):
        screen_folder(tmp_path / "missing", tmp_path / "x.csv", engines=engines)
    with pytest.raises(ModelNotFoundError):
        screen_folder(screen_dir, tmp_path / "x.csv", model_id="no-such-pack", engines=engines)
    assert not (tmp_path / "x.csv").exists()


def test_report_names_are_flat_and_unique(tmp_path):
    root = tmp_path / "root"
    assert report_name(root / "a" / "b.png", None, root) == "a__b.pdf"
    assert report_name(root / "a" / "b.png", 3, root) == "a__b-f3.pdf"
    assert report_name(tmp_path / "elsewhere" / "c d.dcm", None, root) == "c_d.pdf"
