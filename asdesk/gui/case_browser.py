"""The study browser: opened files and series, grouped as study → series when several series of one study are
open (StudyInstanceUID, :func:`asdesk.viewing.group_by_study`).

It keeps the small part of ``QListWidget``'s interface the main window uses (``item(row).setText``,
``setCurrentRow``, ``currentRowChanged``, ``count``): a *row* is a case, numbered in the order opened,
wherever it sits in the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from asdesk.core.records import ImageMetadata
from asdesk.viewing import group_by_study
from asdesk.viewing.annotations import series_title, study_title

_ROW_ROLE = Qt.ItemDataRole.UserRole


@dataclass
class _Entry:
    text: str
    tooltip: str
    study_uid: str
    study_title: str
    series_title: str


class CaseRow:
    """One case's line in the browser (what ``QListWidget.item(row)`` gave: ``text``/``setText``)."""

    def __init__(self, browser: CaseBrowser, row: int) -> None:
        self._browser = browser
        self._row = row

    def text(self) -> str:
        """The case's text (name, then its result when analysed)."""
        return self._browser._entries[self._row].text

    def setText(self, text: str) -> None:  # noqa: N802 - QListWidgetItem's name
        """Change the case's text."""
        self._browser._set_text(self._row, text)

    def toolTip(self) -> str:  # noqa: N802 - QListWidgetItem's name
        """The case's tooltip (its full name and source, then its result when analysed)."""
        return self._browser._entries[self._row].tooltip

    def setToolTip(self, text: str) -> None:  # noqa: N802 - QListWidgetItem's name
        """Change the case's tooltip."""
        self._browser._entries[self._row].tooltip = text
        item = self._browser._items.get(self._row)
        if item is not None:
            item.setToolTip(0, text)


class CaseBrowser(QTreeWidget):
    """Opened cases; the series of one study under a study node.

    Signals
    -------
    currentRowChanged(int)
        The case selected (its row: the order opened); not emitted for a study node.
    """

    currentRowChanged = Signal(int)  # noqa: N815 - QListWidget's name, so the main window's wiring stays

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setColumnCount(1)
        self.setRootIsDecorated(True)
        self.setUniformRowHeights(True)
        self.setToolTip("Opened files and series, by study; click one to show it")
        self._entries: list[_Entry] = []
        self._items: dict[int, QTreeWidgetItem] = {}
        self.currentItemChanged.connect(self._on_current_item)

    # ----------------------------------------------------------------------------- QListWidget subset
    def add_case(self, text: str, tooltip: str = "", metadata: ImageMetadata | None = None) -> int:
        """Add a case (its first image's metadata places it in its study); returns its row."""
        study_uid = metadata.study_uid if metadata is not None else ""
        self._entries.append(_Entry(text, tooltip, study_uid, study_title(metadata) if metadata else "",
                                    series_title(metadata) if metadata else ""))
        self._rebuild()
        return len(self._entries) - 1

    def count(self) -> int:
        """Number of cases (study nodes not counted)."""
        return len(self._entries)

    def item(self, row: int) -> CaseRow:
        """The case at ``row``.

        Raises
        ------
        IndexError
            If there is no such case.
        """
        if not 0 <= row < len(self._entries):
            raise IndexError(f"no case at row {row}; {len(self._entries)} case(s) are open")
        return CaseRow(self, row)

    def currentRow(self) -> int:  # noqa: N802 - QListWidget's name
        """The selected case's row, or -1 (none, or a study node)."""
        item = self.currentItem()
        row = item.data(0, _ROW_ROLE) if item is not None else None
        return int(row) if row is not None else -1

    def setCurrentRow(self, row: int) -> None:  # noqa: N802 - QListWidget's name
        """Select the case at ``row`` (its study node is expanded)."""
        item = self._items.get(row)
        if item is not None:
            self.setCurrentItem(item)

    def study_nodes(self) -> list[QTreeWidgetItem]:
        """The study nodes (top-level items that hold several series)."""
        return [self.topLevelItem(i) for i in range(self.topLevelItemCount())
                if self.topLevelItem(i).data(0, _ROW_ROLE) is None]

    # ------------------------------------------------------------------------------------------ internals
    def _set_text(self, row: int, text: str) -> None:
        self._entries[row].text = text
        item = self._items.get(row)
        if item is not None:
            item.setText(0, self._item_text(row))

    def _item_text(self, row: int) -> str:
        return self._entries[row].text

    def _rebuild(self) -> None:
        current = self.currentRow()
        blocked = self.blockSignals(True)
        try:
            self.clear()
            self._items = {}
            for group in group_by_study([entry.study_uid for entry in self._entries]):
                parent: QTreeWidgetItem | None = None
                if group.is_study:
                    first = self._entries[group.members[0]]
                    parent = QTreeWidgetItem([f"{first.study_title} ({len(group.members)} series)"])
                    parent.setToolTip(0, f"{first.study_title}\nStudy Instance UID {group.study_uid}")
                    parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
                    self.addTopLevelItem(parent)
                for row in group.members:
                    item = QTreeWidgetItem([self._item_text(row)])
                    item.setData(0, _ROW_ROLE, row)
                    item.setToolTip(0, self._entries[row].tooltip)
                    if parent is None:
                        self.addTopLevelItem(item)
                    else:
                        parent.addChild(item)
                    self._items[row] = item
                if parent is not None:
                    parent.setExpanded(True)
            if current >= 0:
                self.setCurrentRow(current)
        finally:
            self.blockSignals(blocked)

    def _on_current_item(self, item: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        row = item.data(0, _ROW_ROLE) if item is not None else None
        if row is not None:
            self.currentRowChanged.emit(int(row))
