"""The model worker thread (pytest-qt, offscreen): results by signals, cancel, errors, responsiveness.

A REAL tiny model pack (MobileNetV2 with random weights, 32 x 32, written by asdesk.inference.write_pack)
runs the real flow: its probabilities and heat maps are meaningless TEST DATA. Images are real (the SI-joint
STIR DICOM series from ../shared/data).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

sys.path.insert(0, str(Path(__file__).resolve().parent / "gui_xvfb"))
from conftest import SHARED_DATA, requires_shared  # noqa: E402
from event_loop import EventLoopGapMeter  # noqa: E402
from tiny_pack import build_tiny_pack  # noqa: E402

DATA = SHARED_DATA
STIR_DIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"
PACK_ID = "gui-tiny-pack"

pytestmark = [pytest.mark.gui, requires_shared("data/sij-mri-dicom")]


@pytest.fixture(scope="session")
def gui_pack_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pack, built once per session."""
    pytest.importorskip("tensorflow")
    return build_tiny_pack(tmp_path_factory.mktemp("gui-packs") / PACK_ID, PACK_ID, 32)


@pytest.fixture
def gui_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gui_pack_source: Path) -> Path:
    """A private ASDESK_HOME with the tiny pack installed in its user model folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("ASDESK_HOME", str(home))
    shutil.copytree(gui_pack_source, home / "data" / "models" / PACK_ID)
    return home


@pytest.fixture
def service(qtbot, gui_home: Path) -> Any:  # noqa: ANN401
    """A started :class:`ModelService` whose models are loaded."""
    from asdesk.gui.worker import ModelService

    model_service = ModelService()
    with qtbot.waitSignal(model_service.sig_models_ready, timeout=120_000) as blocker:
        model_service.start()
    status = blocker.args[0]
    assert not status.error, status.error
    assert PACK_ID in [pack.card.id for pack in status.packs]
    assert status.device.startswith(("CPU", "GPU"))
    yield model_service
    assert model_service.shutdown(10_000)


@pytest.fixture(scope="module")
def stir_records() -> list:
    from asdesk.io import read_series

    records, _errors = read_series(STIR_DIR)
    return list(records)


def test_requests_queued_before_models_are_ready_run_when_ready(qtbot, gui_home, stir_records):
    from asdesk.gui.worker import ModelService

    model_service = ModelService()
    try:
        assert not model_service.ready
        with qtbot.waitSignals([model_service.sig_models_ready, model_service.sig_analysis_done],
                               timeout=120_000, order="strict"):
            job = model_service.analyze(stir_records[:2], str(STIR_DIR), model_id=PACK_ID)  # starts the worker
        assert model_service.ready and not model_service.is_pending(job)
    finally:
        assert model_service.shutdown(10_000)


def test_analysis_of_a_series_returns_dataclasses(qtbot, service, stir_records):
    from asdesk.core import SeriesResult
    from asdesk.gui.worker import AnalysisOutcome

    progress = []
    service.sig_progress.connect(progress.append)
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000) as blocker:
        job = service.analyze(stir_records, str(STIR_DIR), model_id=PACK_ID, operating_point="high_sensitivity")
    outcome = blocker.args[0]
    assert isinstance(outcome, AnalysisOutcome) and outcome.job_id == job
    assert isinstance(outcome.series, SeriesResult) and len(outcome.results) == len(stir_records)
    assert outcome.card.id == PACK_ID and not outcome.preprocessing_modified
    assert outcome.device.startswith(("CPU", "GPU"))
    for record, result in zip(stir_records, outcome.results, strict=True):
        assert result.record is record
        assert result.heatmap is not None and result.heatmap.shape == record.shape
        assert result.model_input.shape == (32, 32)
        assert result.prediction.operating_point == "high_sensitivity" and result.prediction.threshold == 0.2
        assert result.model.pack_id == PACK_ID
    assert progress and progress[-1].finished and progress[-1].done == len(stir_records)
    assert not service.busy


def test_analysis_equals_the_cli_flow(qtbot, service, stir_records):
    """The window's analysis (records read for display) equals ``asdesk.tasks.analyze_path`` on the folder."""
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000) as viewer_run:
        service.analyze(stir_records, str(STIR_DIR), model_id=PACK_ID)
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000) as path_run:
        service.analyze([], str(STIR_DIR), model_id=PACK_ID)  # read on the worker, as `asdesk analyze`
    first, second = viewer_run.args[0], path_run.args[0]
    assert [r.prediction.probability for r in first.results] == pytest.approx(
        [r.prediction.probability for r in second.results], abs=1e-6)
    assert first.series.study_probability == pytest.approx(second.series.study_probability, abs=1e-6)


def test_modified_preprocessing_is_flagged(qtbot, service, stir_records):
    card_steps = [{"name": "window", "mode": "percentile", "low": 5.0, "high": 95.0},
                  {"name": "clahe", "clip_limit": 3.0, "tile_grid": [4, 4]},
                  {"name": "resize", "height": 32, "width": 32, "mode": "pad"},
                  {"name": "normalise", "backbone": "mobilenet_v2"}]
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000) as blocker:
        service.analyze(stir_records[6:7], str(STIR_DIR), model_id=PACK_ID, preprocessing=card_steps)
    outcome = blocker.args[0]
    assert outcome.preprocessing_modified and outcome.series is None
    from asdesk.preprocess import build_pipeline

    expected = build_pipeline(card_steps)(stir_records[6]).image
    assert (outcome.results[0].model_input == expected).all()


def test_cancel_stops_a_queued_analysis(qtbot, service, stir_records):
    failures = []
    done = []
    service.sig_failed.connect(failures.append)
    service.sig_analysis_done.connect(done.append)
    first = service.analyze(stir_records, str(STIR_DIR), model_id=PACK_ID)
    second = service.analyze(stir_records, str(STIR_DIR), model_id=PACK_ID)
    with qtbot.waitSignal(service.sig_failed, timeout=120_000,
                          check_params_cb=lambda failure: failure.job_id == second):
        service.cancel(second)
    qtbot.waitUntil(lambda: not service.busy, timeout=120_000)
    assert [failure.job_id for failure in failures] == [second] and failures[0].cancelled
    assert [outcome.job_id for outcome in done] == [first]


def test_cancel_during_a_long_run(qtbot, service, stir_records):
    started = []
    service.sig_started.connect(started.append)
    job = service.analyze(stir_records * 6, str(STIR_DIR), model_id=PACK_ID)  # 90 slices, batches of 8
    qtbot.waitUntil(lambda: job in started, timeout=120_000)
    with qtbot.waitSignal(service.sig_failed, timeout=120_000) as blocker:
        service.cancel(job)
    assert blocker.args[0].job_id == job and blocker.args[0].cancelled


def test_a_bad_file_reports_an_error(qtbot, service, tmp_path: Path):
    bad = tmp_path / "not-an-image.dcm"
    bad.write_bytes(b"this is not DICOM nor an image" * 20)
    with qtbot.waitSignal(service.sig_failed, timeout=120_000) as blocker:
        job = service.analyze([], str(bad), model_id=PACK_ID)
    failure = blocker.args[0]
    assert failure.job_id == job and not failure.cancelled and failure.expected
    assert "not-an-image.dcm" in failure.message
    with qtbot.waitSignal(service.sig_failed, timeout=120_000) as blocker:
        service.analyze([], str(STIR_DIR), model_id="no-such-pack")
    assert "no-such-pack" in blocker.args[0].message


def test_event_loop_stays_responsive_during_analysis(qtbot, service, stir_records):
    """A 20 ms timer keeps firing (largest gap < 100 ms) while the worker analyses a series."""
    meter = EventLoopGapMeter(20)
    # Warm-up run (graph tracing, Grad-CAM build) outside the measurement.
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000):
        service.analyze(stir_records[:2], str(STIR_DIR), model_id=PACK_ID)
    started = time.perf_counter()
    with qtbot.waitSignal(service.sig_analysis_done, timeout=120_000):
        meter.start()
        service.analyze(stir_records * 2, str(STIR_DIR), model_id=PACK_ID)
    meter.stop()
    elapsed = time.perf_counter() - started
    print(f"analysis {elapsed:.2f} s, {len(meter.gaps)} ticks, largest gap {meter.max_gap} ms")
    assert len(meter.gaps) >= max(3, int(elapsed / 0.02 * 0.3)), (len(meter.gaps), elapsed)
    assert meter.max_gap < 100, f"the event loop stalled for {meter.max_gap} ms during the analysis"
