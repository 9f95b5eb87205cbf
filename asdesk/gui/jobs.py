"""The adapter between long work (plain functions with ``progress``/``cancel``) and the Qt event loop.

Two kinds of background work exist in the window:

* I/O without TensorFlow (reading a file or a series for display, scanning a dropped folder, writing a
  report, a preprocessing preview): :func:`run_in_pool` runs a function on ``QThreadPool.globalInstance()``
  and delivers its return value or its error back on the GUI thread through the signals of a
  :class:`PoolJob`.
* Work that needs the model: the one :class:`~asdesk.gui.worker.ModelWorker` thread.

Both report progress through :class:`SignalProgress`, a :class:`~asdesk.core.ProgressSink` that turns
``start``/``advance``/``finish`` into a Qt signal carrying a :class:`ProgressEvent`; Qt queues the signal
across threads, so the sink can be called from any thread.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from asdesk.core import AsdeskError, CancelledError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report of one job.

    Attributes
    ----------
    job_id : int
        The job the report belongs to.
    done : int
        Units of work finished so far.
    total : int or None
        Units of work in all, ``None`` when unknown.
    label : str
        What the job is doing (from ``start``).
    message : str
        The last unit's message (from ``advance``), e.g. a file name.
    elapsed_s : float
        Seconds since ``start``.
    finished : bool
        True for the report sent by ``finish``.
    """

    job_id: int
    done: int
    total: int | None
    label: str = ""
    message: str = ""
    elapsed_s: float = 0.0
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1], or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def remaining_s(self) -> float | None:
        """Estimated seconds left (linear extrapolation), ``None`` before the first unit is done."""
        if not self.total or self.done <= 0:
            return None
        return max(0.0, self.elapsed_s / self.done * (self.total - self.done))


@dataclass(frozen=True)
class JobFailure:
    """Why a job did not return a result.

    Attributes
    ----------
    job_id : int
        The job.
    message : str
        A message for the user (an :class:`~asdesk.core.AsdeskError` message as it is, else the exception
        type and text).
    cancelled : bool
        True when the job stopped because it was cancelled.
    expected : bool
        True for :class:`~asdesk.core.AsdeskError` (bad input, missing model): no traceback is needed.
    detail : str
        The formatted traceback, for the log.
    refused : bool
        True when no installed model was made for the image (:class:`asdesk.tasks.NoPackAcceptsError`): a
        refusal to show, not a failure.
    """

    job_id: int
    message: str
    cancelled: bool = False
    expected: bool = True
    detail: str = ""
    refused: bool = False


def failure_from_exception(job_id: int, error: BaseException) -> JobFailure:
    """Describe an exception raised by a job.

    Parameters
    ----------
    job_id : int
        The job that raised it.
    error : BaseException
        The exception.

    Returns
    -------
    JobFailure
    """
    detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if isinstance(error, CancelledError):
        return JobFailure(job_id, "Cancelled.", cancelled=True, expected=True, detail="")
    if isinstance(error, AsdeskError):
        from asdesk.tasks.gates import NoPackAcceptsError

        return JobFailure(job_id, str(error), expected=True, detail=detail,
                          refused=isinstance(error, NoPackAcceptsError))
    return JobFailure(job_id, f"{type(error).__name__}: {error}", expected=False, detail=detail)


class SignalProgress(QObject):
    """A :class:`~asdesk.core.ProgressSink` that emits :attr:`sig_progress` with a :class:`ProgressEvent`.

    Parameters
    ----------
    job_id : int
        Put in every event.
    min_interval_s : float
        Intermediate events closer together than this are dropped (the first, the last and ``finish``
        always go through), so a fast loop cannot flood the GUI thread.
    """

    sig_progress = Signal(object)

    def __init__(self, job_id: int, min_interval_s: float = 0.05) -> None:
        super().__init__()
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._total: int | None = None
        self._done = 0
        self._label = ""
        self._start = time.monotonic()
        self._last_emit = 0.0

    def start(self, total: int | None, label: str = "") -> None:
        """Begin: ``total`` units (``None`` if unknown)."""
        self._total = total
        self._done = 0
        self._label = label
        self._start = time.monotonic()
        self._emit("", force=True)

    def advance(self, n: int = 1, message: str = "") -> None:
        """``n`` more units are done."""
        self._done += n
        last = self._total is not None and self._done >= self._total
        self._emit(message, force=last)

    def finish(self) -> None:
        """The work ended (also after an error or a cancel)."""
        self.sig_progress.emit(ProgressEvent(self.job_id, self._done, self._total, self._label, "",
                                             time.monotonic() - self._start, finished=True))

    def _emit(self, message: str, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < self.min_interval_s:
            return
        self._last_emit = now
        self.sig_progress.emit(ProgressEvent(self.job_id, self._done, self._total, self._label, message,
                                             now - self._start))


class PoolJobSignals(QObject):
    """Signals of a :class:`PoolJob` (a ``QRunnable`` cannot have signals itself)."""

    sig_done = Signal(int, object)
    sig_failed = Signal(object)


class PoolJob(QRunnable):
    """Runs ``function(*args, **kwargs)`` on a pool thread and reports through :attr:`signals`.

    Parameters
    ----------
    job_id : int
        Identifies the job in the signals.
    function : callable
        Plain function: must not touch widgets.
    *args, **kwargs
        Its arguments.
    """

    def __init__(self, job_id: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__()
        self.job_id = job_id
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.signals = PoolJobSignals()
        self.setAutoDelete(True)

    def run(self) -> None:
        """Called by the pool thread."""
        try:
            value = self.function(*self.args, **self.kwargs)
        except BaseException as error:  # noqa: BLE001 - every error goes back to the GUI thread
            failure = failure_from_exception(self.job_id, error)
            if not failure.expected:
                LOGGER.error("background job %d failed:\n%s", self.job_id, failure.detail)
            self.signals.sig_failed.emit(failure)
            return
        self.signals.sig_done.emit(self.job_id, value)


_NEXT_JOB_ID = [0]
_LIVE_RELAYS: set[_Relay] = set()


def next_job_id() -> int:
    """A new job id, unique in this process (call from the GUI thread)."""
    _NEXT_JOB_ID[0] += 1
    return _NEXT_JOB_ID[0]


class _Relay(QObject):
    """Lives on the GUI thread and calls a job's callbacks there (queued connections)."""

    def __init__(self, on_done: Callable[[Any], None] | None, on_failed: Callable[[JobFailure], None] | None,
                 parent: QObject | None) -> None:
        super().__init__(parent)
        self._on_done = on_done
        self._on_failed = on_failed
        if parent is None:
            _LIVE_RELAYS.add(self)

    @Slot(int, object)
    def done(self, _job_id: int, value: object) -> None:
        try:
            if self._on_done is not None:
                self._on_done(value)
        finally:
            self._release()

    @Slot(object)
    def failed(self, failure: object) -> None:
        try:
            if self._on_failed is not None:
                self._on_failed(failure)  # type: ignore[arg-type]
        finally:
            self._release()

    def _release(self) -> None:
        _LIVE_RELAYS.discard(self)
        self.deleteLater()


def run_in_pool(function: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None,  # noqa: ANN401
                on_failed: Callable[[JobFailure], None] | None = None, context: QObject | None = None,
                **kwargs: Any) -> int:  # noqa: ANN401
    """Run ``function`` on the global thread pool; call back on the GUI thread.

    Call from the GUI thread.

    Parameters
    ----------
    function : callable
        Plain function (no widgets).
    *args, **kwargs
        Its arguments.
    on_done : callable, optional
        Called with the return value, on the GUI thread.
    on_failed : callable, optional
        Called with a :class:`JobFailure`, on the GUI thread.
    context : QObject, optional
        If given and destroyed before the job ends, the callbacks are not called.

    Returns
    -------
    int
        The job id.
    """
    job_id = next_job_id()
    job = PoolJob(job_id, function, *args, **kwargs)
    relay = _Relay(on_done, on_failed, context)
    job.signals.sig_done.connect(relay.done)
    job.signals.sig_failed.connect(relay.failed)
    QThreadPool.globalInstance().start(job)
    return job_id
