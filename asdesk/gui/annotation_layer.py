"""Corner annotations and orientation markers drawn over a viewport, fixed to its corners and edges.

The texts come from :mod:`asdesk.viewing` (no Qt there); this item only paints them: white text with a dark
halo (legible on any grey level), each corner line elided so that a corner never reaches the marker at the
middle of its edge, the markers (R/L, A/P, H/F) in bold at the middle of each edge.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter
from PySide6.QtWidgets import QGraphicsObject, QStyleOptionGraphicsItem, QWidget

from asdesk.viewing import CornerText, EdgeLabels

MARGIN = 6.0
"""Pixels between the texts and the viewport's edges."""

TEXT_COLOUR = QColor("#f2f2f2")
MARKER_COLOUR = QColor("#ffd24d")
HALO_COLOUR = QColor(0, 0, 0, 220)


class AnnotationLayer(QGraphicsObject):
    """Paints :class:`CornerText` and :class:`EdgeLabels` over a ``pyqtgraph.ViewBox``.

    A child of the ViewBox (not of its view group), so it stays put while the image is zoomed and panned, and
    takes no mouse button: clicks, drags and the wheel reach the image as before.

    Parameters
    ----------
    view : pyqtgraph.ViewBox
        The viewport to draw over.
    """

    def __init__(self, view: pg.ViewBox) -> None:
        super().__init__(view)
        self._view = view
        self._corners = CornerText((), (), (), ())
        self._edges: EdgeLabels | None = None
        self.setZValue(1_000)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setAcceptHoverEvents(False)
        self.text_font = QFont()
        self.text_font.setPointSizeF(9.5)
        self.marker_font = QFont()
        self.marker_font.setPointSizeF(12.0)
        self.marker_font.setBold(True)
        view.sigResized.connect(self._on_resized)

    # ------------------------------------------------------------------------------------------- content
    def set_content(self, corners: CornerText, edges: EdgeLabels | None) -> None:
        """Show these corner texts and markers (``edges=None``: no markers)."""
        if corners == self._corners and edges == self._edges:
            return
        self._corners = corners
        self._edges = edges
        self.update()

    @property
    def corners(self) -> CornerText:
        """The corner texts shown (before eliding)."""
        return self._corners

    @property
    def edges(self) -> EdgeLabels | None:
        """The orientation markers shown, or ``None``."""
        return self._edges

    def _on_resized(self) -> None:
        self.prepareGeometryChange()
        self.update()

    # ------------------------------------------------------------------------------------------ geometry
    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        """The viewport's rectangle, in its own coordinates."""
        return QRectF(self._view.rect())

    def corner_width(self) -> float:
        """The widest a corner line beside an edge marker may be: half the viewport minus half the marker."""
        return max(0.0, self.boundingRect().width() / 2.0 - self._marker_width() / 2.0 - 2.0 * MARGIN)

    def _marker_width(self) -> float:
        if self._edges is None:
            return 0.0
        metrics = QFontMetricsF(self.marker_font)
        return max(metrics.horizontalAdvance(self._edges.top), metrics.horizontalAdvance(self._edges.bottom))

    def elided_corners(self) -> CornerText:
        """The corner lines as painted: elided with "…" only where a line would reach the line beside it.

        On the row of the top (bottom) marker each side gets :meth:`corner_width`; on other rows the two sides
        share the viewport's width, the shorter line keeping its length.
        """
        metrics = QFontMetricsF(self.text_font)
        full = max(0.0, self.boundingRect().width() - 3.0 * MARGIN)
        beside_marker = self.corner_width()

        def fit(left: tuple[str, ...], right: tuple[str, ...], marker_row: int) -> tuple[tuple[str, ...], ...]:
            rows = max(len(left), len(right))
            out_left, out_right = list(left), list(right)
            for row in range(rows):
                a = left[row] if row < len(left) else ""
                b = right[row] if row < len(right) else ""
                wa, wb = metrics.horizontalAdvance(a), metrics.horizontalAdvance(b)
                if row == marker_row and self._edges is not None:
                    limit_a = limit_b = beside_marker
                elif wa + wb <= full:
                    continue
                else:
                    half = full / 2.0
                    limit_a = wa if wa <= half else max(half, full - wb)
                    limit_b = wb if wb <= half else max(half, full - wa)
                if row < len(left):
                    out_left[row] = metrics.elidedText(a, Qt.TextElideMode.ElideRight, limit_a)
                if row < len(right):
                    out_right[row] = metrics.elidedText(b, Qt.TextElideMode.ElideRight, limit_b)
            return tuple(out_left), tuple(out_right)

        corners = self._corners
        top_left, top_right = fit(corners.top_left, corners.top_right, 0)
        # Bottom corners are drawn upwards from the bottom edge: align them by their last line.
        depth = max(len(corners.bottom_left), len(corners.bottom_right))
        pad_left = ("",) * (depth - len(corners.bottom_left)) + corners.bottom_left
        pad_right = ("",) * (depth - len(corners.bottom_right)) + corners.bottom_right
        bottom_left, bottom_right = fit(pad_left, pad_right, depth - 1)
        return CornerText(top_left, top_right, bottom_left[depth - len(corners.bottom_left):],
                          bottom_right[depth - len(corners.bottom_right):])

    # ------------------------------------------------------------------------------------------- painting
    def paint(self, painter: QPainter, _option: QStyleOptionGraphicsItem,  # noqa: D102 - Qt API
              _widget: QWidget | None = None) -> None:
        rect = self.boundingRect()
        if rect.width() < 40 or rect.height() < 40:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        painter.setFont(self.text_font)
        metrics = QFontMetricsF(self.text_font)
        line_height = metrics.height()
        corners = self.elided_corners()
        for lines, right, bottom in ((corners.top_left, False, False), (corners.top_right, True, False),
                                     (corners.bottom_left, False, True), (corners.bottom_right, True, True)):
            for number, line in enumerate(lines):
                row = len(lines) - 1 - number if bottom else number
                y = (rect.bottom() - MARGIN - (row + 1) * line_height if bottom
                     else rect.top() + MARGIN + row * line_height) + metrics.ascent()
                x = rect.right() - MARGIN - metrics.horizontalAdvance(line) if right else rect.left() + MARGIN
                _draw_text(painter, QPointF(x, y), line, TEXT_COLOUR)
        if self._edges is not None:
            painter.setFont(self.marker_font)
            marks = QFontMetricsF(self.marker_font)
            centre_x, centre_y = rect.center().x(), rect.center().y()
            edges = self._edges
            _draw_text(painter, QPointF(centre_x - marks.horizontalAdvance(edges.top) / 2.0,
                                        rect.top() + MARGIN + marks.ascent()), edges.top, MARKER_COLOUR)
            _draw_text(painter, QPointF(centre_x - marks.horizontalAdvance(edges.bottom) / 2.0,
                                        rect.bottom() - MARGIN - marks.descent()), edges.bottom, MARKER_COLOUR)
            baseline = centre_y + (marks.ascent() - marks.descent()) / 2.0
            _draw_text(painter, QPointF(rect.left() + MARGIN, baseline), edges.left, MARKER_COLOUR)
            _draw_text(painter, QPointF(rect.right() - MARGIN - marks.horizontalAdvance(edges.right), baseline),
                       edges.right, MARKER_COLOUR)
        painter.restore()


def _draw_text(painter: QPainter, origin: QPointF, text: str, colour: QColor) -> None:
    """Text with a one-pixel dark halo, legible over bright and dark pixels alike."""
    if not text:
        return
    painter.setPen(HALO_COLOUR)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)):
        painter.drawText(origin + QPointF(dx, dy), text)
    painter.setPen(colour)
    painter.drawText(origin, text)
