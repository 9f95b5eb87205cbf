"""The viewer's commands as actions: menu entries, shortcuts and the viewer tab's tool bar.

A: corner annotations and orientation markers on/off; I: invert; M: ruler; R: ellipse ROI; Shift+R: rectangle
ROI; S: side by side (another series of the same study, slices linked). Esc (leave the tool), Delete (remove the
selected measurement) and Ctrl+Z (remove the last measurement of the slice) reach the viewer through
:class:`asdesk.gui.slice_keys.SliceKeyRouter`; the menu shows them.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QToolBar, QWidget

from asdesk.gui.viewer_pane import ViewerPane


class ViewerActions(QObject):
    """Create the viewer's actions on ``window`` and keep them in step with ``pane``.

    Parameters
    ----------
    window : QWidget
        Where the shortcuts live (the main window).
    pane : ViewerPane
        The viewports they act on.
    notify : callable, optional
        Called with a message when a command cannot run (e.g. side by side with one series of the study).
    """

    def __init__(self, window: QWidget, pane: ViewerPane, notify: Callable[[str], None] | None = None) -> None:
        super().__init__(window)
        self._window = window
        self._pane = pane
        self._notify = notify or (lambda _message: None)
        self._syncing = False

        self.annotations_action = self._action("Corner &annotations and markers", "A",
                                               "Patient, series, slice, window and zoom in the corners; "
                                               "orientation markers at the edges", checkable=True)
        self.annotations_action.setChecked(True)
        self.annotations_action.toggled.connect(pane.set_annotations_visible)
        self.invert_action = self._action("&Invert grey scale", "I", "Invert the grey scale", checkable=True)
        self.invert_action.toggled.connect(pane.set_inverted)
        self.ruler_action = self._action("&Ruler (mm)", "M", "Draw a line: its length in mm (drag on the image)",
                                         checkable=True, data="ruler")
        self.ellipse_action = self._action("&Ellipse ROI", "R", "Draw an ellipse: mean, SD and area of the pixel "
                                           "values inside", checkable=True, data="ellipse")
        self.rectangle_action = self._action("Rectan&gle ROI", "Shift+R", "Draw a rectangle: mean, SD and area of "
                                             "the pixel values inside", checkable=True, data="rectangle")
        self.tool_group = QActionGroup(self)
        self.tool_group.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
        for action in (self.ruler_action, self.ellipse_action, self.rectangle_action):
            self.tool_group.addAction(action)
            action.toggled.connect(lambda checked, a=action: self._on_tool_toggled(a, checked))
        self.delete_action = self._action("&Delete measurement\tDel", None, "Remove the selected measurement")
        self.delete_action.triggered.connect(lambda: pane.active_viewer().measurements.remove_selected())
        self.undo_action = self._action("&Undo measurement\tCtrl+Z", None,
                                        "Remove the last measurement of the slice")
        self.undo_action.triggered.connect(lambda: pane.active_viewer().measurements.undo())
        self.side_by_side_action = self._action("&Side by side (same study)", "S",
                                                "Show another series of the same study beside this one, slices "
                                                "linked by position", checkable=True)
        self.side_by_side_action.toggled.connect(self._on_side_by_side)
        pane.sig_side_by_side_changed.connect(self._on_pane_side_by_side)
        pane.sig_tool_changed.connect(self._on_pane_tool)
        self.add_to_toolbar(pane.toolbar)

    def _action(self, text: str, shortcut: str | None, tip: str, checkable: bool = False,
                data: str | None = None) -> QAction:
        action = QAction(text, self._window)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.setToolTip(tip + (f" ({shortcut})" if shortcut else ""))
        action.setCheckable(checkable)
        if data is not None:
            action.setData(data)
        self._window.addAction(action)
        return action

    # ---------------------------------------------------------------------------------------- placement
    def add_to_menu(self, menu: QMenu) -> None:
        """Add the commands to a menu (the View menu)."""
        menu.addSeparator()
        for action in (self.annotations_action, self.invert_action, self.side_by_side_action):
            menu.addAction(action)
        tools = menu.addMenu("&Measure")
        for action in (self.ruler_action, self.ellipse_action, self.rectangle_action):
            tools.addAction(action)
        tools.addSeparator()
        tools.addAction(self.delete_action)
        tools.addAction(self.undo_action)

    def add_to_toolbar(self, toolbar: QToolBar) -> None:
        """Add the commands as tool buttons with short texts (done for the pane's own tool bar)."""
        for action, text in ((self.ruler_action, "Ruler"), (self.ellipse_action, "Ellipse"),
                             (self.rectangle_action, "Rectangle"), (None, ""), (self.invert_action, "Invert"),
                             (self.annotations_action, "Annotations"), (None, ""),
                             (self.side_by_side_action, "Side by side")):
            if action is None:
                toolbar.addSeparator()
                continue
            action.setIconText(text)
            toolbar.addAction(action)

    # ---------------------------------------------------------------------------------------- reactions
    def _on_tool_toggled(self, action: QAction, checked: bool) -> None:
        if self._syncing:
            return
        if checked:
            self._pane.set_tool(str(action.data()))
            self._pane.active_viewer().graphics.setFocus()
        elif self.tool_group.checkedAction() is None:
            self._pane.set_tool(None)

    def _on_pane_tool(self, tool: object) -> None:
        self._syncing = True
        try:
            for action in (self.ruler_action, self.ellipse_action, self.rectangle_action):
                action.setChecked(action.data() == tool)
        finally:
            self._syncing = False

    def _on_side_by_side(self, checked: bool) -> None:
        if self._syncing or checked == self._pane.side_by_side:
            return
        if checked and not self._pane.set_side_by_side(True):
            self._syncing = True
            try:
                self.side_by_side_action.setChecked(False)
            finally:
                self._syncing = False
            self._notify("Side by side needs another series of the same study: open it too (e.g. the T1 "
                         "folder beside the STIR one).")
        elif not checked:
            self._pane.set_side_by_side(False)

    def _on_pane_side_by_side(self, shown: bool) -> None:
        self._syncing = True
        try:
            self.side_by_side_action.setChecked(shown)
        finally:
            self._syncing = False
