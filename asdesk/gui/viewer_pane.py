"""The viewer tab: one viewport, or two series of one study side by side with their slices linked.

STIR shows bone-marrow oedema, T1 erosions and fat metaplasia: a reader judges an SI joint on both at the same
level. The side-by-side view shows the series of the main viewer on the left and another series of the same
study (StudyInstanceUID) on the right; moving through one moves the other to the slice nearest the same
position along the plane normal (:func:`asdesk.viewing.linked_slice`, by ImagePositionPatient, never by
index). Series whose planes differ, or without positions, are shown unlinked, and the header says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QToolBar, QVBoxLayout, QWidget

from asdesk.core import ImageRecord
from asdesk.gui.viewer import ImageViewer
from asdesk.viewing import linked_slice
from asdesk.viewing.annotations import series_title


@dataclass(frozen=True)
class SeriesChoice:
    """An opened series that can be shown beside another.

    Attributes
    ----------
    name : str
        As the case list names it.
    records : sequence of ImageRecord
        Its slices, in series order.
    """

    name: str
    records: Sequence[ImageRecord]

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID of its first image ("" when unknown)."""
        return self.records[0].metadata.study_uid if self.records else ""

    @property
    def key(self) -> str:
        """What tells two series apart: the SeriesInstanceUID, else the first file."""
        if not self.records:
            return ""
        meta = self.records[0].metadata
        return meta.series_uid or str(meta.source)


def _key(records: Sequence[ImageRecord]) -> str:
    return SeriesChoice("", records).key


class ViewerPane(QWidget):
    """The main viewer, and a second viewport for side by side reading.

    Parameters
    ----------
    primary : ImageViewer
        The main viewer (it shows the case analysed; the main window owns it).
    series : callable
        Returns the opened series (:class:`SeriesChoice`), e.g. the main window's cases.

    Signals
    -------
    sig_side_by_side_changed(bool)
        The second viewport was shown or hidden.
    sig_tool_changed(object)
        The measurement tool of the viewers changed (name or ``None``).
    """

    sig_side_by_side_changed = Signal(bool)
    sig_tool_changed = Signal(object)

    def __init__(self, primary: ImageViewer, series: Callable[[], Sequence[SeriesChoice]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.primary = primary
        self.secondary = ImageViewer()
        self._series = series
        self._choices: list[SeriesChoice] = []
        self._active = primary
        self._syncing = False
        self._previous_primary: Sequence[ImageRecord] = ()

        self.series_box = QComboBox()
        self.series_box.setToolTip("Another series of the same study (StudyInstanceUID)")
        self.series_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.series_box.activated.connect(self._on_series_chosen)
        self.link_label = QLabel("")
        self.link_label.setToolTip("Slices are linked by their position along the plane normal "
                                   "(ImagePositionPatient), not by their number")
        self.beside_panel = QWidget()
        beside = QHBoxLayout(self.beside_panel)
        beside.setContentsMargins(12, 0, 4, 0)
        beside.addWidget(QLabel("Beside:"))
        beside.addWidget(self.series_box)
        beside.addWidget(self.link_label)
        self.beside_panel.setVisible(False)
        self.secondary.setVisible(False)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(primary)
        self.splitter.addWidget(self.secondary)
        self.toolbar = QToolBar("Viewer tools")
        self.toolbar.setObjectName("viewer_tools")
        self.toolbar.setMovable(False)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.toolbar)
        bar.addWidget(self.beside_panel)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)

        primary.sig_slice_changed.connect(lambda _index: self._follow(self.primary, self.secondary))
        self.secondary.sig_slice_changed.connect(lambda _index: self._follow(self.secondary, self.primary))
        primary.sig_records_changed.connect(self._on_primary_records)
        for viewer in (primary, self.secondary):
            viewer.sig_activated.connect(lambda v=viewer: self._set_active(v))
            viewer.sig_tool_changed.connect(self._on_tool_changed)

    # ---------------------------------------------------------------------------------------- queries
    @property
    def side_by_side(self) -> bool:
        """Whether the second viewport is shown."""
        return not self.secondary.isHidden()

    def viewers(self) -> list[ImageViewer]:
        """The viewports shown: the main viewer, and the second one when side by side."""
        return [self.primary, self.secondary] if self.side_by_side else [self.primary]

    def active_viewer(self) -> ImageViewer:
        """The viewport the keyboard drives: the one last clicked (the main viewer by default)."""
        return self._active if self._active in self.viewers() else self.primary

    def partners(self) -> list[SeriesChoice]:
        """Opened series of the main viewer's study, other than the one it shows."""
        records = self.primary.records
        if not records or not records[0].metadata.study_uid:
            return []
        study, own = records[0].metadata.study_uid, _key(records)
        out: list[SeriesChoice] = []
        seen = {own}
        for choice in self._series():
            if choice.study_uid == study and choice.key not in seen:
                seen.add(choice.key)
                out.append(choice)
        return out

    # ---------------------------------------------------------------------------------------- actions
    def set_side_by_side(self, on: bool) -> bool:
        """Show (or hide) another series of the same study beside the main viewer.

        Returns
        -------
        bool
            Whether the second viewport is shown: False when asked to show it but no other series of the study
            is open.
        """
        if not on:
            if self.side_by_side:
                self.secondary.setVisible(False)
                self.beside_panel.setVisible(False)
                self.secondary.set_records([])
                self._active = self.primary
                self.sig_side_by_side_changed.emit(False)
            return False
        choices = self.partners()
        if not choices:
            return False
        self._fill_choices(choices)
        shown = self.side_by_side
        self.secondary.setVisible(True)
        self.beside_panel.setVisible(True)
        if not shown:
            half = max(1, self.splitter.width() // 2)
            self.splitter.setSizes([half, half])
        self.show_series(choices[0])
        if not shown:
            self.sig_side_by_side_changed.emit(True)
        return True

    def show_series(self, choice: SeriesChoice) -> None:
        """Show ``choice`` in the second viewport, at the slice linked to the main viewer's."""
        self.secondary.set_records(list(choice.records))
        for viewer in (self.primary, self.secondary):
            if viewer.tool != self.primary.tool:
                viewer.set_tool(self.primary.tool)
        self.secondary.set_inverted(self.primary.inverted)
        self.secondary.set_annotations_visible(self.primary.annotations_visible)
        index = next((i for i, c in enumerate(self._choices) if c.key == choice.key), -1)
        if index >= 0:
            self.series_box.setCurrentIndex(index)
        self._follow(self.primary, self.secondary)

    def set_tool(self, tool: str | None) -> None:
        """Choose the measurement tool of every viewport (``None``: pan)."""
        for viewer in (self.primary, self.secondary):
            viewer.set_tool(tool)

    def set_inverted(self, inverted: bool) -> None:
        """Invert the grey scale of every viewport."""
        for viewer in (self.primary, self.secondary):
            viewer.set_inverted(inverted)

    def set_annotations_visible(self, visible: bool) -> None:
        """Show or hide the corner texts and orientation markers of every viewport."""
        for viewer in (self.primary, self.secondary):
            viewer.set_annotations_visible(visible)

    # --------------------------------------------------------------------------------------- internals
    def _fill_choices(self, choices: list[SeriesChoice]) -> None:
        self._choices = list(choices)
        self.series_box.blockSignals(True)
        self.series_box.clear()
        for choice in self._choices:
            title = series_title(choice.records[0].metadata) if choice.records else ""
            self.series_box.addItem(title or choice.name)
            self.series_box.setItemData(self.series_box.count() - 1, choice.name, Qt.ItemDataRole.ToolTipRole)
        self.series_box.blockSignals(False)

    def _on_series_chosen(self, index: int) -> None:
        if 0 <= index < len(self._choices):
            self.show_series(self._choices[index])

    def _set_active(self, viewer: ImageViewer) -> None:
        self._active = viewer

    def _on_tool_changed(self, tool: object) -> None:
        for viewer in (self.primary, self.secondary):
            if viewer.tool != tool:
                viewer.set_tool(tool)  # type: ignore[arg-type]
        self.sig_tool_changed.emit(tool)

    def _on_primary_records(self) -> None:
        previous, self._previous_primary = self._previous_primary, tuple(self.primary.records)
        if not self.side_by_side:
            return
        choices = self.partners()
        if not choices:
            self.set_side_by_side(False)
            return
        self._fill_choices(choices)
        keys = [choice.key for choice in choices]
        shown = _key(self.secondary.records) if self.secondary.records else ""
        # Keep the series beside; when the main viewer now shows it, put the one it showed before beside it.
        wanted = shown if shown in keys else _key(previous) if previous and _key(previous) in keys else keys[0]
        self.show_series(choices[keys.index(wanted)])

    def _follow(self, source: ImageViewer, target: ImageViewer) -> None:
        if self._syncing or not self.side_by_side or source.current_record is None or not target.records:
            return
        link = linked_slice(source.current_record, target.records)
        if link is None:
            self.link_label.setText("not linked: no common plane or position")
            return
        self._syncing = True
        try:
            target.set_slice(link.index)
        finally:
            self._syncing = False
        self.link_label.setText(f"linked by position · {link.distance_mm:.1f} mm apart")
