"""One place where every error of the window goes (napari-style notifier).

Worker failures, background-job failures and uncaught exceptions (``sys.excepthook``) all end here: the
message goes to the status bar and to the log, and a dialog opens only when the reader has to act (a file
that cannot be opened, no model installed) or when something unexpected happened.
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType

from PySide6.QtCore import QObject, Signal

LOGGER = logging.getLogger("asdesk.gui")


@dataclass(frozen=True)
class Notice:
    """A message for the reader.

    Attributes
    ----------
    message : str
        One or two sentences: what happened and what to do.
    level : str
        ``"info"``, ``"warning"`` or ``"error"``.
    action_needed : bool
        Open a dialog (the reader must do something), not only the status bar.
    detail : str
        Technical detail (traceback) shown under "Show details" and logged.
    """

    message: str
    level: str = "info"
    action_needed: bool = False
    detail: str = ""


class Notifier(QObject):
    """Routes notices to the status bar, the log and (when needed) a dialog.

    The window connects :attr:`sig_notice`; tests can connect to it too. Safe to call from any thread: the
    signal is queued to the GUI thread.

    Signals
    -------
    sig_notice(Notice)
        Every notice, in order.
    """

    sig_notice = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.history: list[Notice] = []
        self._previous_hook = None

    def info(self, message: str) -> None:
        """A status message."""
        self._send(Notice(message, "info"))

    def warning(self, message: str, action_needed: bool = False, detail: str = "") -> None:
        """A warning (a file skipped, a modified pipeline)."""
        self._send(Notice(message, "warning", action_needed, detail))

    def error(self, message: str, action_needed: bool = True, detail: str = "") -> None:
        """An error: logged, shown in the status bar, and in a dialog when ``action_needed``."""
        self._send(Notice(message, "error", action_needed, detail))

    def _send(self, notice: Notice) -> None:
        level = {"info": logging.INFO, "warning": logging.WARNING}.get(notice.level, logging.ERROR)
        LOGGER.log(level, "%s%s", notice.message, f"\n{notice.detail}" if notice.detail else "")
        self.history.append(notice)
        del self.history[:-200]
        self.sig_notice.emit(notice)

    def install_excepthook(self) -> None:
        """Route uncaught exceptions (GUI thread and Qt slots) here instead of a silent stderr trace."""
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook

    def uninstall_excepthook(self) -> None:
        """Restore the previous ``sys.excepthook``."""
        if self._previous_hook is not None:
            sys.excepthook = self._previous_hook
            self._previous_hook = None

    def _excepthook(self, kind: type[BaseException], value: BaseException,
                    trace: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            if self._previous_hook is not None:
                self._previous_hook(kind, value, trace)
            return
        detail = "".join(traceback.format_exception(kind, value, trace))
        self.error(f"Unexpected error: {kind.__name__}: {value}. The window keeps working; the details are "
                   "in the log.", action_needed=True, detail=detail)
