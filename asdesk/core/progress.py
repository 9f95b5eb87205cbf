"""Progress and cancellation handles for long work.

Long work is a plain function taking ``progress`` and ``cancel``; the CLI passes a tqdm-backed sink, the
GUI a Qt-signal-backed one, tests a mock. Cancellation is cooperative: work checks the token between files
and batches.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from asdesk.core.errors import CancelledError


@runtime_checkable
class ProgressSink(Protocol):
    """Receives progress of long work.

    ``start(total, label)`` once (``total`` may be ``None`` when unknown), ``advance(n, message)`` after
    each unit of work, ``finish()`` at the end (also after an error or a cancel).
    """

    def start(self, total: int | None, label: str = "") -> None: ...

    def advance(self, n: int = 1, message: str = "") -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """A :class:`ProgressSink` that ignores everything."""

    def start(self, total: int | None, label: str = "") -> None:  # noqa: D102
        return None

    def advance(self, n: int = 1, message: str = "") -> None:  # noqa: D102
        return None

    def finish(self) -> None:  # noqa: D102
        return None


class CancelToken:
    """A thread-safe cooperative cancellation flag.

    Examples
    --------
    >>> token = CancelToken()
    >>> token.cancel()
    >>> token.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~asdesk.core.errors.CancelledError` if cancelled.

        Raises
        ------
        CancelledError
            When :meth:`cancel` was called.
        """
        if self._event.is_set():
            raise CancelledError("cancelled by the user")
