"""How late the Qt event loop answers: the measure of a window's responsiveness used by the GUI tests.

A timer asks to fire every ``interval_ms``; each firing records the time since the previous one. While the
event loop is free the gaps stay near the interval; a blocked loop shows as one long gap.

The meter collects garbage before it starts and freezes the surviving objects while it runs: in a test suite
the heap holds what hundreds of earlier tests left behind, and a full collection of it, triggered on any thread,
holds the interpreter lock for hundreds of milliseconds (one CI run: a 624 ms gap in an analysis that stalls for
at most 43 ms alone). What is measured is the code under test, not the garbage of other tests.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QElapsedTimer, QTimer


class EventLoopGapMeter:
    """Record the gaps between firings of a repeating Qt timer.

    Parameters
    ----------
    interval_ms : int
        The timer's interval in milliseconds.

    Attributes
    ----------
    gaps : list of float
        Milliseconds between consecutive firings (and from :meth:`start` to the first firing).
    """

    def __init__(self, interval_ms: int = 20) -> None:
        self.gaps: list[float] = []
        self._clock = QElapsedTimer()
        self._last = 0
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        """Start measuring (the gap to the first firing counts from here)."""
        gc.collect()
        gc.freeze()  # the objects alive now are never scanned again while measuring
        self._clock.start()
        self._last = self._clock.elapsed()
        self._timer.start()

    def stop(self) -> None:
        """Stop the timer; the gaps recorded so far stay."""
        self._timer.stop()
        gc.unfreeze()

    @property
    def max_gap(self) -> float:
        """The longest gap in milliseconds (0 before the first firing)."""
        return max(self.gaps, default=0.0)

    def _tick(self) -> None:
        now = self._clock.elapsed()
        self.gaps.append(now - self._last)
        self._last = now
