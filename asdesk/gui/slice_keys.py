"""Slice navigation keys belong to the viewer wherever the focus is (as in Weasis and OHIF).

With the case list, a dock or a toolbar control focused, Up/Down, Left/Right, Page Up/Down and Home/End still
move through the slices of the series shown (not through the case list), and Esc, Delete and Ctrl+Z still act on
the measurements, while the viewer tab is shown. Text entry widgets (line edits, spin boxes, editable combo
boxes, text edits) keep their keys, and so do dialogs, menus and the screening tab.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QTextEdit,
    QWidget,
)

from asdesk.gui.viewer import ImageViewer

ROUTED_KEYS = frozenset(ImageViewer.NAVIGATION_KEYS | {Qt.Key.Key_Escape, Qt.Key.Key_Delete, Qt.Key.Key_Backspace,
                                                       Qt.Key.Key_Z})
"""Keys sent to the viewer from anywhere in the window (each only when the viewer would act on it)."""


def is_text_entry(widget: QWidget | None) -> bool:
    """Whether ``widget`` takes typed text (its arrow keys move a cursor or a value)."""
    if widget is None:
        return False
    if isinstance(widget, QLineEdit | QTextEdit | QPlainTextEdit | QAbstractSpinBox):
        return True
    return isinstance(widget, QComboBox) and widget.isEditable()


class SliceKeyRouter(QObject):
    """An application event filter that gives a window's slice keys to its viewer.

    Parameters
    ----------
    window : QWidget
        The main window: only key events for its widgets are routed.
    target : callable
        Returns the viewer that takes the keys now, or ``None`` (e.g. the screening tab is shown).
    """

    def __init__(self, window: QWidget, target: Callable[[], ImageViewer | None]) -> None:
        super().__init__(window)
        self._window = window
        self._target = target
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        """Route a key to the viewer when it applies; every other event passes."""
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            return False
        key = event.key()  # type: ignore[attr-defined]
        if key not in ROUTED_KEYS or not isinstance(watched, QWidget):
            return False
        focus = QApplication.focusWidget()
        if focus is not None and watched is not focus:
            return False  # the same key passed on to a parent (e.g. a line edit ignored Up): not ours to take
        if watched.window() is not self._window or is_text_entry(watched):
            return False
        if QApplication.activePopupWidget() is not None or QApplication.activeModalWidget() is not None:
            return False
        viewer = self._target()
        modifiers = event.modifiers()  # type: ignore[attr-defined]
        if viewer is None or not viewer.wants_key(key, modifiers):
            return False
        if kind == QEvent.Type.ShortcutOverride:
            event.accept()  # the key press comes next, instead of a window shortcut (Esc: cancel analysis)
            return True
        viewer.handle_key(key, modifiers)
        return True
