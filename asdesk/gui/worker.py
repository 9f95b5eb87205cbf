"""The model worker: the one thread that owns TensorFlow and the loaded models.

The window never imports TensorFlow. :class:`ModelService` (GUI thread) starts a ``QThread`` and moves a
:class:`ModelWorker` onto it; the worker's first job chooses the device and discovers the model packs
(:meth:`ModelWorker.load`, fast: no model is loaded). Requests sent meanwhile wait in the thread's event
queue and run, in order, right after it; each loads the pack it needs on first use, so the pack of the file
the reader opened is loaded first. When the window has nothing more to read it asks for the other packs
(:meth:`ModelService.load_in_background`); they load one per queued step (the default model first), so a
request sent meanwhile waits for at most one pack. Every load is announced
(:attr:`ModelWorker.sig_model_load`) so the window can say "Loading model …".

The worker calls the same :mod:`asdesk.tasks` functions as the command line (``analyze_records`` /
``analyze_series`` for the viewer, ``screen_folder`` for screening) with a :class:`SignalProgress` and a
:class:`~asdesk.core.CancelToken`. Results come back as dataclasses through ``sig_*`` signals; errors as
:class:`~asdesk.gui.jobs.JobFailure`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from asdesk.core import AnalysisResult, CancelToken, ImageRecord, SeriesResult
from asdesk.gui.jobs import JobFailure, ProgressEvent, SignalProgress, failure_from_exception, next_job_id

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelsStatus:
    """What :meth:`ModelWorker.load` found.

    Attributes
    ----------
    packs : tuple of asdesk.inference.ModelPack
        Valid model packs (bundled and the user's), sorted by id.
    errors : tuple of str
        Packs that could not be used, with the reason.
    device : str
        Where models run, e.g. ``"CPU (2 threads)"`` or ``"GPU:0 (...)"``; empty when TensorFlow failed.
    error : str
        Why TensorFlow or the pack discovery failed; empty on success.
    load_seconds : float
        Time spent choosing the device and discovering the packs (no pack is loaded then).
    """

    packs: tuple[Any, ...]
    errors: tuple[str, ...]
    device: str
    error: str = ""
    load_seconds: float = 0.0


@dataclass(frozen=True)
class ModelLoadEvent:
    """A model pack starts or finished loading on the model worker.

    Attributes
    ----------
    pack_id : str
    version : str
    background : bool
        Loaded ahead of use (no request waits for it); False when a request needs it now.
    finished : bool
        False when loading starts, True when it ended (``error`` empty on success).
    seconds : float
        Time the load took (when finished).
    error : str
        Why it failed.
    """

    pack_id: str
    version: str
    background: bool
    finished: bool = False
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class AnalyzeRequest:
    """Analyse images already read for display.

    Attributes
    ----------
    job_id : int
    records : tuple of ImageRecord
        One image, or the slices of a series in order.
    source : str
        The file or folder they came from (for messages and logs).
    model_id : str
        Pack id, or empty to choose by modality and body part.
    operating_point : str
        Operating point, or empty for the card's default.
    preprocessing : tuple of dict or None
        A modified pipeline (from the preprocessing panel), or ``None`` for the card's own.
    read_errors : tuple of str
        Files of the series that could not be read (kept in the :class:`SeriesResult`).
    cancel : CancelToken
    force : bool
        Override the gates' refusals (the reader pressed "Analyse anyway"): results are marked as outside
        validated use.
    """

    job_id: int
    records: tuple[ImageRecord, ...]
    source: str
    model_id: str = ""
    operating_point: str = ""
    preprocessing: tuple[dict[str, Any], ...] | None = None
    read_errors: tuple[str, ...] = ()
    cancel: CancelToken = field(default_factory=CancelToken)
    force: bool = False


@dataclass(frozen=True)
class AnalysisOutcome:
    """The result of an :class:`AnalyzeRequest`.

    Attributes
    ----------
    job_id : int
    source : str
    results : tuple of AnalysisResult
        One per image, in order.
    series : SeriesResult or None
        For a series: the per-slice results and the study-level result.
    card : asdesk.inference.card.ModelCard
        The card of the model used.
    device : str
        Where the model ran.
    preprocessing : tuple of dict
        The pipeline used.
    preprocessing_modified : bool
        True when it departs from the card's.
    elapsed_s : float
    """

    job_id: int
    source: str
    results: tuple[AnalysisResult, ...]
    series: SeriesResult | None
    card: Any
    device: str
    preprocessing: tuple[dict[str, Any], ...]
    preprocessing_modified: bool
    elapsed_s: float

    @property
    def report_result(self) -> AnalysisResult | SeriesResult:
        """What a PDF report of this outcome shows."""
        return self.series if self.series is not None else self.results[0]


@dataclass(frozen=True)
class ScreenRequest:
    """Screen a folder with :func:`asdesk.tasks.screen_folder`.

    Attributes
    ----------
    job_id : int
    folder : Path
    csv_path : Path
    model_id : str
        Empty: per image by modality and body part.
    operating_point : str
        Empty: each card's default.
    reports_dir : Path or None
    cancel : CancelToken
    """

    job_id: int
    folder: Path
    csv_path: Path
    model_id: str = ""
    operating_point: str = ""
    reports_dir: Path | None = None
    cancel: CancelToken = field(default_factory=CancelToken)


@dataclass(frozen=True)
class ScreenOutcome:
    """How a screening run ended.

    Attributes
    ----------
    job_id : int
    summary : asdesk.tasks.screening.ScreeningSummary or None
        Counts, CSV path and time (also after a cancel).
    cancelled : bool
    message : str
        One line for the status bar.
    """

    job_id: int
    summary: Any
    cancelled: bool
    message: str


def _same_pipeline(card_steps: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]]) -> bool:
    from asdesk.gui.preprocessing_panel import canonical_steps

    return canonical_steps(card_steps) == canonical_steps(steps)


class ModelWorker(QObject):
    """Lives on the model thread; every slot runs there.

    Signals
    -------
    sig_models_ready(ModelsStatus)
        The packs are discovered (none loaded yet: each loads on first use, the others in the background).
    sig_model_load(ModelLoadEvent)
        A pack starts or finished loading.
    sig_started(int)
        A job started running (it may have waited in the queue).
    sig_progress(ProgressEvent)
    sig_analysis_done(AnalysisOutcome)
    sig_screen_row(ScreeningRow)
        One screening row, after it is on disk.
    sig_screen_done(ScreenOutcome)
    sig_failed(JobFailure)
        A job raised (also when cancelled: ``failure.cancelled``).
    """

    sig_models_ready = Signal(object)
    sig_model_load = Signal(object)
    sig_started = Signal(int)
    sig_progress = Signal(object)
    sig_analysis_done = Signal(object)
    sig_screen_row = Signal(object)
    sig_screen_done = Signal(object)
    sig_failed = Signal(object)

    _sig_warm_next = Signal()

    def __init__(self, model_directories: Sequence[Path] | None = None, preload: Sequence[str] = (),
                 max_preload: int = 2) -> None:
        super().__init__()
        self._directories = model_directories
        self._engines: Any = None
        self._preload = tuple(preload)
        self._max_preload = max_preload
        self._warm_queue: list[Any] = []
        self._background = False
        self._loading: Any = None
        self._packs: list[Any] = []
        self.device = ""
        # Queued even though sender and receiver share the thread: each background step goes to the back of
        # the event queue, behind the requests that arrived meanwhile.
        self._sig_warm_next.connect(self._warm_next, Qt.ConnectionType.QueuedConnection)

    def _cache(self) -> Any:  # noqa: ANN401
        if self._engines is None:
            from asdesk.tasks.engines import EngineCache, default_engines

            self._engines = default_engines() if self._directories is None else EngineCache(self._directories)
            self._engines.on_loading = self._on_pack_loading
        return self._engines

    def _on_pack_loading(self, pack: Any) -> None:  # noqa: ANN401 - asdesk.inference.ModelPack
        self._loading = pack
        self.sig_model_load.emit(ModelLoadEvent(pack.card.id, str(pack.card.version), self._background))

    @Slot()
    def load(self) -> None:
        """Choose the device and discover the model packs (no model is loaded here).

        The packs load on first use (the one a queued request needs first); the others when asked
        (:meth:`load_in_background`).
        """
        start = time.perf_counter()
        try:
            from asdesk.tasks.engines import configure_device

            self.device = configure_device()
            cache = self._cache()
            cache.refresh()
            packs, errors = cache.packs()
            status = ModelsStatus(tuple(packs), tuple(str(e) for e in errors), self.device,
                                  load_seconds=time.perf_counter() - start)
            LOGGER.info("models run on %s; %d model pack(s) found", self.device, len(packs))
        except Exception as error:  # noqa: BLE001 - reported to the window, never a crash
            LOGGER.exception("could not start the model runtime")
            status = ModelsStatus((), (), "", error=f"{type(error).__name__}: {error}",
                                  load_seconds=time.perf_counter() - start)
        self._packs = list(status.packs)
        self.sig_models_ready.emit(status)

    @Slot()
    def load_in_background(self) -> None:
        """Load the packs of :meth:`background_order` that are not loaded yet, one per queued step."""
        self._warm_queue = self.background_order(self._packs)
        if self._warm_queue:
            self._sig_warm_next.emit()

    def background_order(self, packs: Sequence[Any]) -> list[Any]:
        """The packs to load ahead of use, in order: the default model (``preload``) first, then the rest.

        All packs when there are at most ``max_preload`` of them; otherwise only the ``preload`` ones (a
        large collection of user packs is not loaded into memory unasked).

        Parameters
        ----------
        packs : sequence of asdesk.inference.ModelPack

        Returns
        -------
        list of asdesk.inference.ModelPack
        """
        first = [pack for pack in packs if pack.card.id in self._preload]
        rest = [pack for pack in packs if pack not in first] if len(packs) <= self._max_preload else []
        return first + rest

    @Slot()
    def _warm_next(self) -> None:
        """Load (and, on TensorFlow, trace) the next pack of the background queue, then queue the step after.

        Building a ``tf.function`` graph holds the GIL for a few hundred ms; doing it now, for batches of 1
        and 2 (after which ``reduce_retracing`` generalises the batch size), keeps it out of later analyses.
        A pack that fails is logged; the request that needs it will report the error.
        """
        import numpy as np

        cache = self._cache()
        while self._warm_queue:
            pack = self._warm_queue.pop(0)
            if cache.is_loaded(pack):
                continue
            start = time.perf_counter()
            self._background = True
            error_text = ""
            try:
                engine = cache.engine_for_pack(pack)
                for size in (1, 2):
                    batch = np.zeros((size, *pack.card.input_shape), dtype=np.float32)
                    engine.probabilities(batch)
                    engine.gradcam().raw(batch)
            except Exception as error:  # noqa: BLE001 - a broken pack must not stop the others
                LOGGER.warning("could not load model pack %s in the background: %s", pack.card.id, error)
                error_text = str(error)
            finally:
                self._background = False
            self.sig_model_load.emit(ModelLoadEvent(pack.card.id, str(pack.card.version), True, True,
                                                    time.perf_counter() - start, error_text))
            break
        if self._warm_queue:
            self._sig_warm_next.emit()

    @Slot()
    def refresh_packs(self) -> None:
        """Scan the model folders again (after a pack was installed)."""
        self.load()

    @Slot(object)
    def analyze(self, request: AnalyzeRequest) -> None:
        """Run an :class:`AnalyzeRequest` (``asdesk.tasks.analyze_records``)."""
        from asdesk.tasks import analysis

        self.sig_started.emit(request.job_id)
        progress = SignalProgress(request.job_id)
        progress.sig_progress.connect(self.sig_progress.emit)
        start = time.perf_counter()
        try:
            request.cancel.raise_if_cancelled()
            cache = self._cache()
            if not request.records:
                self._analyze_path(request, progress, start)
                return
            records = list(request.records)
            engine = self._engine_for(records[0], request.model_id)
            card = engine.card
            steps = tuple(dict(s) for s in (request.preprocessing or card.preprocessing))
            modified = request.preprocessing is not None and not _same_pipeline(card.preprocessing, steps)
            operating_point = request.operating_point or None
            if operating_point is not None and operating_point not in card.operating_points:
                operating_point = None
            outcome = analysis.analyze_records(  # the same choice as above (card.id would lose a "user:" alias)
                records, model_id=request.model_id or None, operating_point=operating_point, gradcam=True,
                as_series=len(records) > 1, progress=progress, cancel=request.cancel, engines=cache,
                errors=request.read_errors, force=request.force, preprocessing=steps if modified else None)
            if isinstance(outcome, SeriesResult):
                results, series = tuple(outcome.slices), outcome
            else:
                results, series = (outcome,), None
            elapsed = time.perf_counter() - start
            LOGGER.info("analysed %s: %d image(s) with %s %s in %.2f s", Path(request.source).name,
                        len(results), card.id, card.version, elapsed)
            self.sig_analysis_done.emit(AnalysisOutcome(request.job_id, request.source, results, series, card,
                                                        engine.device or self.device, steps, modified, elapsed))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the window
            self.sig_failed.emit(failure_from_exception(request.job_id, error))

    def _engine_for(self, record: ImageRecord, model_id: str) -> Any:  # noqa: ANN401
        """The engine that analyses ``record`` (loaded now if needed: "Loading model …", then "loaded")."""
        cache = self._cache()
        start = time.perf_counter()
        self._loading = None
        engine = cache.select(record, model_id or None)  # loads the pack on first use (_on_pack_loading)
        if self._loading is not None:
            self._loading = None
            self.sig_model_load.emit(ModelLoadEvent(engine.card.id, str(engine.card.version), False, True,
                                                    time.perf_counter() - start))
        return engine

    def _analyze_path(self, request: AnalyzeRequest, progress: SignalProgress, start: float) -> None:
        """Read and analyse a path exactly as ``asdesk analyze`` does (``asdesk.tasks.analyze_path``)."""
        from asdesk.tasks import analysis

        cache = self._cache()
        outcome = analysis.analyze_path(request.source, model_id=request.model_id or None,
                                        operating_point=request.operating_point or None, gradcam=True,
                                        progress=progress, cancel=request.cancel, engines=cache,
                                        force=request.force)
        if isinstance(outcome, SeriesResult):
            results, series = tuple(outcome.slices), outcome
        else:
            results, series = (outcome,), None
        engine = cache.select(results[0].record, request.model_id or None)  # the pack analyze_path used
        card = engine.card
        self.sig_analysis_done.emit(AnalysisOutcome(
            request.job_id, request.source, results, series, card, engine.device or self.device,
            tuple(dict(s) for s in card.preprocessing), False, time.perf_counter() - start))

    @Slot(object)
    def screen(self, request: ScreenRequest) -> None:
        """Run a :class:`ScreenRequest` (``asdesk.tasks.screen_folder``)."""
        from asdesk.gui.screening import ScreeningRow
        from asdesk.tasks.screening import ScreeningCancelledError, screen_folder

        self.sig_started.emit(request.job_id)
        progress = SignalProgress(request.job_id, min_interval_s=0.1)
        progress.sig_progress.connect(self.sig_progress.emit)

        def on_row(item: object) -> None:
            self.sig_screen_row.emit(ScreeningRow.from_any(item))

        try:
            request.csv_path.parent.mkdir(parents=True, exist_ok=True)
            summary = screen_folder(request.folder, request.csv_path, model_id=request.model_id or None,
                                    operating_point=request.operating_point or None,
                                    reports_dir=request.reports_dir, progress=progress, cancel=request.cancel,
                                    on_row=on_row, engines=self._cache())
            message = (f"Screening finished: {summary.n_done} analysed, {summary.n_errors} error(s), "
                       f"{summary.n_skipped_resumed} already done, in {summary.elapsed_s:.0f} s.")
            self.sig_screen_done.emit(ScreenOutcome(request.job_id, summary, False, message))
        except ScreeningCancelledError as error:
            summary = error.summary
            self.sig_screen_done.emit(ScreenOutcome(
                request.job_id, summary, True,
                f"Screening cancelled after {summary.n_done + summary.n_errors} image(s); the rows are saved, "
                "start again to resume."))
        except BaseException as error:  # noqa: BLE001
            failure = failure_from_exception(request.job_id, error)
            self.sig_failed.emit(failure)
            self.sig_screen_done.emit(ScreenOutcome(request.job_id, None, failure.cancelled, failure.message))


class ModelThread(QThread):
    """The model worker's thread, whose event loop runs inside one Python call.

    With a plain ``QThread`` every queued slot call enters Python afresh: PySide creates a Python thread
    state for the call and destroys it afterwards. TensorFlow keeps per-thread eager state tied to that
    Python thread state, and loading a Keras model in a later slot then crashes (segmentation fault in
    ``convert_to_eager_tensor``; reproduced here with TensorFlow 2.21 / PySide6 6.12). Running ``exec()``
    from a Python ``run()`` keeps one thread state for the thread's whole life, so every slot runs inside it.
    """

    def run(self) -> None:
        """Run the thread's event loop inside a Python frame."""
        self.exec()


class ModelService(QObject):
    """The GUI-thread side of the model worker: starts it, queues requests, cancels and stops it.

    Parameters
    ----------
    model_directories : sequence of Path, optional
        Model folders to search instead of the bundled and user ones (tests).
    parent : QObject, optional
    preload : sequence of str
        Pack ids loaded first in the background (the default model); see
        :meth:`ModelWorker.background_order`.

    Signals
    -------
    sig_models_ready(ModelsStatus), sig_model_load(ModelLoadEvent), sig_started(int), sig_progress(ProgressEvent),
    sig_analysis_done(AnalysisOutcome), sig_screen_row(ScreeningRow), sig_screen_done(ScreenOutcome),
    sig_failed(JobFailure)
        Forwarded from the worker, delivered on the GUI thread.
    """

    sig_models_ready = Signal(object)
    sig_model_load = Signal(object)
    sig_started = Signal(int)
    sig_progress = Signal(object)
    sig_analysis_done = Signal(object)
    sig_screen_row = Signal(object)
    sig_screen_done = Signal(object)
    sig_failed = Signal(object)

    _sig_load = Signal()
    _sig_background = Signal()
    _sig_analyze = Signal(object)
    _sig_screen = Signal(object)

    def __init__(self, model_directories: Sequence[Path] | None = None, parent: QObject | None = None,
                 preload: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self.status: ModelsStatus | None = None
        self._pending: dict[int, CancelToken] = {}
        self._thread = ModelThread()
        self._thread.setObjectName("asdesk-model-worker")
        self.worker = ModelWorker(model_directories, preload=preload)
        self.worker.moveToThread(self._thread)
        self._sig_load.connect(self.worker.load)
        self._sig_background.connect(self.worker.load_in_background)
        self._sig_analyze.connect(self.worker.analyze)
        self._sig_screen.connect(self.worker.screen)
        self.worker.sig_models_ready.connect(self._on_models_ready)
        self.worker.sig_model_load.connect(self.sig_model_load)
        self.worker.sig_started.connect(self.sig_started)
        self.worker.sig_progress.connect(self.sig_progress)
        self.worker.sig_analysis_done.connect(self._on_analysis_done)
        self.worker.sig_screen_row.connect(self.sig_screen_row)
        self.worker.sig_screen_done.connect(self._on_screen_done)
        self.worker.sig_failed.connect(self._on_failed)
        self._started = False

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the thread and ask it to load TensorFlow and the packs (returns at once)."""
        if self._started:
            return
        self._started = True
        self._thread.start()
        self._sig_load.emit()

    def load_in_background(self) -> None:
        """Load the packs not loaded yet, after the requests already queued (default model first).

        The window calls this once it has no file left to read, so the pack of the file opened at launch
        is loaded first, by its own analysis.
        """
        self.start()
        self._sig_background.emit()

    def refresh(self) -> None:
        """Discover the model packs again (queued behind running jobs)."""
        self._sig_load.emit()

    @property
    def ready(self) -> bool:
        """Whether the device is chosen and the packs are discovered (each pack loads on first use)."""
        return self.status is not None

    @property
    def packs(self) -> tuple[Any, ...]:
        """The packs found (empty before :attr:`sig_models_ready`)."""
        return self.status.packs if self.status else ()

    @property
    def busy(self) -> bool:
        """Whether a job is queued or running."""
        return bool(self._pending)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel every job and stop the thread, waiting at most ``timeout_ms``.

        Returns
        -------
        bool
            True if the thread stopped in time.
        """
        for token in self._pending.values():
            token.cancel()
        if not self._thread.isRunning():
            return True
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        if not stopped:
            LOGGER.warning("the model worker did not stop within %d ms", timeout_ms)
        return bool(stopped)

    # ------------------------------------------------------------------------------------------- jobs
    def analyze(self, records: Sequence[ImageRecord], source: str, model_id: str = "", operating_point: str = "",
                preprocessing: Sequence[Mapping[str, Any]] | None = None,
                read_errors: Sequence[str] = (), force: bool = False) -> int:
        """Queue an analysis; returns its job id at once.

        Parameters
        ----------
        records : sequence of ImageRecord
            One image or the slices of a series; empty to read ``source`` on the worker and analyse it
            exactly as ``asdesk analyze`` does (``asdesk.tasks.analyze_path``).
        source : str
            The path they came from.
        model_id : str
            Pack id, or empty to choose by modality and body part.
        operating_point : str
            Or empty for the card's default.
        preprocessing : sequence of mapping, optional
            A modified pipeline (the preprocessing panel's), or ``None`` for the card's.
        read_errors : sequence of str
            Unreadable files of the series.
        force : bool
            Override the gates' refusals (results marked as outside validated use).

        Returns
        -------
        int
            The job id, as in the signals.
        """
        self.start()
        request = AnalyzeRequest(next_job_id(), tuple(records), str(source), model_id, operating_point,
                                 None if preprocessing is None else tuple(dict(s) for s in preprocessing),
                                 tuple(read_errors), force=bool(force))
        self._pending[request.job_id] = request.cancel
        self._sig_analyze.emit(request)
        return request.job_id

    def screen(self, folder: str | Path, csv_path: str | Path, model_id: str = "", operating_point: str = "",
               reports_dir: str | Path | None = None) -> int:
        """Queue a screening run; returns its job id at once."""
        self.start()
        request = ScreenRequest(next_job_id(), Path(folder), Path(csv_path), model_id, operating_point,
                                None if reports_dir is None else Path(reports_dir))
        self._pending[request.job_id] = request.cancel
        self._sig_screen.emit(request)
        return request.job_id

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel one job (or all when ``job_id`` is ``None``); it stops at its next check."""
        for pending, token in list(self._pending.items()):
            if job_id is None or pending == job_id:
                token.cancel()

    def is_pending(self, job_id: int) -> bool:
        """Whether the job is queued or running."""
        return job_id in self._pending

    def _on_models_ready(self, status: ModelsStatus) -> None:
        self.status = status
        self.sig_models_ready.emit(status)

    def _on_analysis_done(self, outcome: AnalysisOutcome) -> None:
        self._pending.pop(outcome.job_id, None)
        self.sig_analysis_done.emit(outcome)

    def _on_screen_done(self, outcome: ScreenOutcome) -> None:
        self._pending.pop(outcome.job_id, None)
        self.sig_screen_done.emit(outcome)

    def _on_failed(self, failure: JobFailure) -> None:
        self._pending.pop(failure.job_id, None)
        self.sig_failed.emit(failure)


__all__ = [
    "AnalysisOutcome",
    "AnalyzeRequest",
    "ModelLoadEvent",
    "ModelService",
    "ModelWorker",
    "ModelsStatus",
    "ProgressEvent",
    "ScreenOutcome",
    "ScreenRequest",
]
