"""An image with its Grad-CAM map and the finding's text burned in: the pixels of a DICOM Secondary Capture.

A PACS shows a Secondary Capture to anyone who opens the study, without asdesk: what the model found must be
readable in the pixels themselves. The image (with its heat map blended over it) is enlarged when small, so
that text stays legible, and the text goes into a black band *below* the image, never over the anatomy.

Only numpy and ``PySide6.QtGui``/``QtCore`` are used (no widgets); text is drawn with ``QPainter`` on an
offscreen ``QImage``, so a ``QGuiApplication`` must exist (:func:`asdesk.report.pdf.ensure_gui_application`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter

from asdesk.report.images import array_to_qimage, blend_overlay, display_to_gray_uint8

__all__ = ["BurnInLine", "burn_in", "MIN_LONG_SIDE_PX"]

MIN_LONG_SIDE_PX = 640
"""Images whose longer side is shorter are enlarged by a whole factor to at least this size."""

WHITE = "#ffffff"
POSITIVE = "#ff6b5e"
NEGATIVE = "#6fdc8c"
CAUTION = "#ffd24d"
MUTED = "#c8c8c8"


@dataclass(frozen=True)
class BurnInLine:
    """One line of text for the band below the image.

    Attributes
    ----------
    text : str
        Wrapped to the image width when too long.
    colour : str
        ``#rrggbb``.
    bold : bool
    scale : float
        Font size relative to the band's base size.
    """

    text: str
    colour: str = WHITE
    bold: bool = False
    scale: float = 1.0


def _to_array(image: QImage) -> np.ndarray:
    """An RGB888 QImage as a (H, W, 3) uint8 array that owns its pixels."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    buffer = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.bytesPerLine() * height)
    return buffer.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def burn_in(display: np.ndarray, overlay: np.ndarray | None, lines: Sequence[BurnInLine],
            min_long_side: int = MIN_LONG_SIDE_PX) -> np.ndarray:
    """Blend the heat map over the image, enlarge a small image, and write ``lines`` in a band below it.

    Parameters
    ----------
    display : numpy.ndarray
        float in [0, 1], shape (H, W) or (H, W, 3): ``ImageRecord.display`` (shown as grayscale).
    overlay : numpy.ndarray or None
        uint8 RGBA (H, W, 4): ``AnalysisResult.overlay``, alpha-blended over the image
        (:func:`~asdesk.report.images.blend_overlay`); ``None`` for no map (a refused image).
    lines : sequence of BurnInLine
        Text for the band, top to bottom; long lines wrap.
    min_long_side : int
        An image whose longer side is shorter is enlarged by the smallest whole factor that reaches it (smooth
        scaling), so that text drawn at a legible size fits beside it.

    Returns
    -------
    numpy.ndarray
        uint8, shape (k·H + band, k·W, 3), RGB: the image at the top, the text band (black) below.

    Raises
    ------
    ValueError
        If ``display`` or ``overlay`` have the wrong shape (see :func:`blend_overlay`).
    """
    if overlay is not None:
        rgb = blend_overlay(display, overlay)
    else:
        gray = display_to_gray_uint8(display)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    height, width = rgb.shape[:2]
    factor = max(1, math.ceil(min_long_side / max(height, width)))
    picture = array_to_qimage(np.ascontiguousarray(rgb))
    if factor > 1:
        picture = picture.scaled(width * factor, height * factor, Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
    out_width, image_height = picture.width(), picture.height()
    base_px = max(12.0, out_width / 48.0)
    margin = base_px * 0.6

    def font_for(line: BurnInLine) -> QFont:
        font = QFont()
        font.setFamilies(["DejaVu Sans", "Segoe UI", "Helvetica Neue", "Arial", "Sans Serif"])
        font.setStyleHint(QFont.StyleHint.SansSerif)
        font.setPixelSize(max(8, round(base_px * line.scale)))
        font.setBold(line.bold)
        return font

    text_width = out_width - 2 * margin
    flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)
    heights = []
    for line in lines:
        metrics = QFontMetricsF(font_for(line))
        heights.append(metrics.boundingRect(QRectF(0, 0, text_width, 10_000), flags, line.text).height()
                       + 0.25 * metrics.height())
    band = int(math.ceil(sum(heights) + 2 * margin)) if lines else 0
    canvas = QImage(out_width, image_height + band, QImage.Format.Format_RGB888)
    canvas.fill(QColor("#000000"))
    painter = QPainter(canvas)
    try:
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        painter.drawImage(0, 0, picture)
        y = image_height + margin
        for line, line_height in zip(lines, heights, strict=True):
            painter.setFont(font_for(line))
            painter.setPen(QColor(line.colour))
            painter.drawText(QRectF(margin, y, text_width, line_height + 1), flags, line.text)
            y += line_height
    finally:
        painter.end()
    return _to_array(canvas)
