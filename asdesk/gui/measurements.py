"""Rulers and ROIs drawn on the viewer's image: per slice, editable, with their numbers beside them.

The numbers come from :mod:`asdesk.viewing.measure` (length in mm from the pixel spacing; mean, SD and area of
the modality values inside an ellipse or rectangle). Each measurement belongs to one slice of the series
shown; they are all dropped when the viewer shows another case. The shapes are pyqtgraph ROIs in the image's
coordinates (x = column, y = row), so their handles can be dragged afterwards and the numbers follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Qt, Signal

from asdesk.core import ImageRecord
from asdesk.viewing import LineMeasurement, RoiStatistics, measure_line, measure_roi

Tool = Literal["ruler", "ellipse", "rectangle"]
TOOLS: tuple[str, ...] = ("ruler", "ellipse", "rectangle")

PEN = pg.mkPen("#ffd24d", width=2, cosmetic=True)
SELECTED_PEN = pg.mkPen("#4dd2ff", width=2.5, cosmetic=True)
HOVER_PEN = pg.mkPen("#ffffff", width=2.5, cosmetic=True)
LABEL_FILL = pg.mkBrush(0, 0, 0, 170)
MIN_SIZE = 1e-3


class _ScaledEllipse(pg.EllipseROI):
    """An ellipse resized from two opposite corners (no rotation handle: the numbers assume none)."""

    def _addHandles(self) -> None:  # noqa: N802 - pyqtgraph API
        self.addScaleHandle([1.0, 1.0], [0.0, 0.0])
        self.addScaleHandle([0.0, 0.0], [1.0, 1.0])


class _ScaledRectangle(pg.ROI):
    """A rectangle resized from two opposite corners."""

    def __init__(self, pos: tuple[float, float], size: tuple[float, float], **options: object) -> None:
        super().__init__(pos, size, **options)
        self.addScaleHandle([1.0, 1.0], [0.0, 0.0])
        self.addScaleHandle([0.0, 0.0], [1.0, 1.0])


@dataclass(eq=False)
class Measurement:
    """One ruler or ROI on one slice.

    Attributes
    ----------
    kind : {"ruler", "ellipse", "rectangle"}
    slice_index : int
        The slice it was drawn on (0-based).
    roi : pyqtgraph.ROI
        The shape, in image coordinates.
    label : pyqtgraph.TextItem
        The numbers shown beside it.
    result : LineMeasurement or RoiStatistics or None
        The latest numbers.
    """

    kind: str
    slice_index: int
    roi: pg.ROI
    label: pg.TextItem
    result: LineMeasurement | RoiStatistics | None = None

    def text(self) -> str:
        """The label's text."""
        return self.result.text() if self.result is not None else ""

    def points(self) -> list[tuple[float, float]]:
        """Ruler: its two ends; ROI: its corner and opposite corner, (x, y) in image pixels."""
        if self.kind == "ruler":
            return [(float(p.x()), float(p.y())) for p in
                    (self.roi.mapToParent(handle.pos()) for handle in self.roi.getHandles())]
        pos, size = self.roi.pos(), self.roi.size()
        return [(float(pos.x()), float(pos.y())), (float(pos.x() + size.x()), float(pos.y() + size.y()))]


class MeasurementLayer(QObject):
    """The measurements of one viewer.

    Parameters
    ----------
    view : pyqtgraph.ViewBox
        The viewer's view (image coordinates).
    current : callable
        Returns ``(slice index, ImageRecord)`` of the image shown, or ``None``.

    Signals
    -------
    sig_changed()
        A measurement was added, changed, selected or removed.
    """

    sig_changed = Signal()

    def __init__(self, view: pg.ViewBox, current: Callable[[], tuple[int, ImageRecord] | None]) -> None:
        super().__init__(view)
        self._view = view
        self._current = current
        self._items: list[Measurement] = []
        self._drawing: Measurement | None = None
        self._start: QPointF | None = None
        self._selected: Measurement | None = None
        self.tool: str | None = None
        view.sigRangeChanged.connect(lambda *_args: self._place_labels())
        view.sigResized.connect(lambda *_args: self._place_labels())

    # ---------------------------------------------------------------------------------------- queries
    def measurements(self, slice_index: int | None = None) -> list[Measurement]:
        """Measurements, in the order drawn (of one slice when ``slice_index`` is given)."""
        return [m for m in self._items if slice_index is None or m.slice_index == slice_index]

    @property
    def selected(self) -> Measurement | None:
        """The selected measurement (the last drawn, or the last clicked), or ``None``."""
        return self._selected

    @property
    def drawing(self) -> bool:
        """A shape is being drawn (the mouse button is down)."""
        return self._drawing is not None

    # ---------------------------------------------------------------------------------------- drawing
    def set_tool(self, tool: str | None) -> None:
        """Choose the tool the left button draws with (``None``: the left button pans).

        Raises
        ------
        ValueError
            If ``tool`` is not one of :data:`TOOLS`.
        """
        if tool is not None and tool not in TOOLS:
            raise ValueError(f"unknown measurement tool {tool!r}; use one of {', '.join(TOOLS)}")
        self.cancel_drawing()
        self.tool = tool

    def begin(self, point: QPointF) -> bool:
        """Start drawing with the current tool at ``point`` (image coordinates). False without a tool/image."""
        current = self._current()
        if self.tool is None or current is None:
            return False
        self.cancel_drawing()
        index, _record = current
        x, y = float(point.x()), float(point.y())
        options = {"pen": PEN, "hoverPen": HOVER_PEN, "movable": True, "removable": False}
        if self.tool == "ruler":
            roi: pg.ROI = pg.LineSegmentROI([[x, y], [x, y]], **options)
        elif self.tool == "ellipse":
            roi = _ScaledEllipse((x, y), (MIN_SIZE, MIN_SIZE), **options)
        else:
            roi = _ScaledRectangle((x, y), (MIN_SIZE, MIN_SIZE), **options)
        roi.setZValue(20)
        roi.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        label = pg.TextItem("", color="#ffffff", fill=LABEL_FILL, anchor=(0.0, 0.0))
        label.setZValue(21)
        self._view.addItem(roi, ignoreBounds=True)
        self._view.addItem(label, ignoreBounds=True)
        measurement = Measurement(self.tool, index, roi, label)
        roi.sigRegionChanged.connect(lambda _roi, m=measurement: self._update(m))
        roi.sigClicked.connect(lambda _roi, _event, m=measurement: self.select(m))
        self._drawing = measurement
        self._start = QPointF(x, y)
        self._update(measurement)
        return True

    def drag(self, point: QPointF) -> None:
        """Move the free end (ruler) or the opposite corner (ROI) of the shape being drawn to ``point``."""
        measurement, start = self._drawing, self._start
        if measurement is None or start is None:
            return
        if measurement.kind == "ruler":
            measurement.roi.movePoint(measurement.roi.getHandles()[1], point, finish=False)
        else:
            x0, y0 = min(start.x(), point.x()), min(start.y(), point.y())
            width = max(abs(point.x() - start.x()), MIN_SIZE)
            height = max(abs(point.y() - start.y()), MIN_SIZE)
            measurement.roi.setPos((x0, y0), update=False, finish=False)
            measurement.roi.setSize((width, height), finish=False)
        self._update(measurement)

    def finish(self, point: QPointF) -> Measurement | None:
        """End the drawing at ``point``; a shape of no extent (a click) is dropped. Returns the measurement."""
        measurement = self._drawing
        if measurement is None:
            return None
        self.drag(point)
        self._drawing, self._start = None, None
        (x0, y0), (x1, y1) = measurement.points()
        if abs(x1 - x0) < 0.5 and abs(y1 - y0) < 0.5:  # less than half a pixel: a click, not a measurement
            self._discard(measurement)
            return None
        self._items.append(measurement)
        self.select(measurement)
        return measurement

    def cancel_drawing(self) -> bool:
        """Drop the shape being drawn; True if there was one."""
        measurement = self._drawing
        self._drawing, self._start = None, None
        if measurement is None:
            return False
        self._discard(measurement)
        return True

    # ------------------------------------------------------------------------------------ management
    def select(self, measurement: Measurement | None) -> None:
        """Select a measurement (drawn highlighted; Delete removes it), or none."""
        if self._selected is not None and self._selected in self._items:
            self._selected.roi.setPen(PEN)
        self._selected = measurement
        if measurement is not None:
            measurement.roi.setPen(SELECTED_PEN)
        self.sig_changed.emit()

    def remove_selected(self) -> bool:
        """Remove the selected measurement (Delete); True if one was removed."""
        measurement = self._selected
        if measurement is None or measurement not in self._items:
            return False
        self._remove(measurement)
        return True

    def undo(self) -> bool:
        """Remove the measurement drawn last on the slice shown (Ctrl+Z); True if one was removed."""
        current = self._current()
        if current is None:
            return False
        mine = self.measurements(current[0])
        if not mine:
            return False
        self._remove(mine[-1])
        return True

    def clear(self) -> None:
        """Remove every measurement (a new case is shown)."""
        self.cancel_drawing()
        for measurement in list(self._items):
            self._discard(measurement)
        self._items.clear()
        self._selected = None
        self.sig_changed.emit()

    def show_slice(self, index: int) -> None:
        """Show the measurements of slice ``index`` only (each was measured on its own slice's pixels)."""
        self.cancel_drawing()
        if self._selected is not None and self._selected.slice_index != index:
            self.select(None)
        for measurement in self._items:
            visible = measurement.slice_index == index
            measurement.roi.setVisible(visible)
            measurement.label.setVisible(visible)

    def _remove(self, measurement: Measurement) -> None:
        self._items.remove(measurement)
        if self._selected is measurement:
            self._selected = None
        self._discard(measurement)
        self.sig_changed.emit()

    def _discard(self, measurement: Measurement) -> None:
        for item in (measurement.roi, measurement.label):
            if item.scene() is not None:
                self._view.removeItem(item)

    def _update(self, measurement: Measurement) -> None:
        current = self._current()
        if current is None or current[0] != measurement.slice_index:
            return
        record = current[1]
        if measurement.kind == "ruler":
            start, end = measurement.points()
            measurement.result = measure_line(start, end, record.metadata)
        else:
            pos, size = measurement.roi.pos(), measurement.roi.size()
            measurement.result = measure_roi(record.pixels, measurement.kind, (pos.x(), pos.y()),
                                             (size.x(), size.y()), record.metadata, measurement.roi.angle())
        measurement.label.setText(measurement.text())
        self._place_label(measurement)
        if not self.drawing or measurement is not self._drawing:
            self.sig_changed.emit()

    def _place_labels(self) -> None:
        for measurement in self._items:
            if measurement.label.isVisible():
                self._place_label(measurement)

    def _place_label(self, measurement: Measurement) -> None:
        """Put the numbers beside the shape (right of it, below an ROI), on the other side when they would
        leave the viewport."""
        (x0, y0), (x1, y1) = measurement.points()
        left, right = min(x0, x1), max(x0, x1)
        label = measurement.label
        if measurement.kind == "ruler":
            end = (x0, y0) if (x0, y0) > (x1, y1) else (x1, y1)
            start = (x1, y1) if end == (x0, y0) else (x0, y0)
            choices = [((end[0], end[1]), (0.0, 0.5), 2.0), ((start[0], start[1]), (1.0, 0.5), -2.0)]
        else:
            top, bottom = min(y0, y1), max(y0, y1)
            choices = [((right, bottom), (0.0, 0.0), 1.0), ((left, bottom), (1.0, 0.0), -1.0),
                       ((right, top), (0.0, 1.0), 1.0), ((left, top), (1.0, 1.0), -1.0)]
        view_rect = self._view.sceneBoundingRect()
        for (x, y), anchor, offset in choices:
            label.setAnchor(anchor)
            label.setPos(x + offset, y)
            if view_rect.contains(label.sceneBoundingRect()):
                return
        (x, y), anchor, offset = choices[0]
        label.setAnchor(anchor)
        label.setPos(x + offset, y)
