"""The image viewer: pyqtgraph, row-major, with window/level, slice navigation and the Grad-CAM overlay.

Mouse and keyboard (as on a radiology workstation):

* wheel: zoom about the cursor; left drag: pan (or draw, with a measurement tool); right drag: window
  (horizontal) and level (vertical);
* Ctrl + wheel, Up/Down, Page Up/Page Down, Home/End and the slider: move through the slices of a series;
* F: fit to window; 1: one image pixel per screen pixel; G (from the main window): overlay on/off;
* with a measurement tool (:meth:`ImageViewer.set_tool`: ruler, ellipse or rectangle ROI), left drag draws;
  Esc leaves the tool, Delete removes the selected measurement, Ctrl+Z the last one of the slice.

Over the image, fixed to the viewport: corner annotations (patient, study, series, slice and position, window,
zoom; :func:`asdesk.viewing.corner_text`) and orientation markers at the edges
(:func:`asdesk.viewing.edge_labels`); :meth:`ImageViewer.set_annotations_visible` hides them.
:meth:`ImageViewer.set_inverted` inverts the grey scale.

The image shown is :attr:`ImageRecord.pixels` (modality-LUT values, e.g. HU or MR signal) through a linear
window that starts from the DICOM window tags (0028,1050)/(0028,1051), so the value readout and the window
numbers are in the image's own units. MONOCHROME1 images use an inverted grey ramp.

Both the image and the Grad-CAM heat map (``AnalysisResult.heatmap``, already at the image's size) are
drawn with their pixel (row 0, column 0) at the top left and one unit per pixel, so the overlay lies exactly
on the anatomy it refers to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from asdesk.core import ImageRecord
from asdesk.gui.annotation_layer import AnnotationLayer
from asdesk.gui.measurements import MeasurementLayer
from asdesk.viewing import ViewState, corner_text, edge_labels, format_window

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)

OVERLAY_COLOUR_MAP = "turbo"
"""pyqtgraph colour map of the Grad-CAM overlay (perceptually ordered, low = blue, high = red)."""


@dataclass(frozen=True)
class WindowLevel:
    """A linear display window, in the image's modality-LUT units.

    Attributes
    ----------
    centre, width : float
        Window centre and width; the displayed range is ``centre ± width / 2``. ``width > 0``.
    """

    centre: float
    width: float

    @property
    def levels(self) -> tuple[float, float]:
        """(low, high) values mapped to black and white."""
        return (self.centre - self.width / 2.0, self.centre + self.width / 2.0)


def window_presets(record: ImageRecord) -> dict[str, WindowLevel]:
    """Window presets for an image, the first being the default.

    Parameters
    ----------
    record : ImageRecord
        The image.

    Returns
    -------
    dict
        Ordered ``{name: WindowLevel}``: "From file" (the DICOM window tags) when present, then "Auto
        (1–99 %)" (percentiles of the non-background values), "Full range", and CT bone/soft-tissue
        windows for CT.
    """
    values = record.pixels if record.pixels.ndim == 2 else record.pixels.mean(axis=2)
    presets: dict[str, WindowLevel] = {}
    meta = record.metadata
    if meta.window_centre is not None and meta.window_width is not None and meta.window_width > 0:
        presets["From file"] = WindowLevel(float(meta.window_centre), float(meta.window_width))
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        finite = np.zeros(1, dtype=np.float32)
    low_all, high_all = float(finite.min()), float(finite.max())
    foreground = finite[finite > low_all]
    sample = foreground if foreground.size > 0.05 * finite.size else finite
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    if high <= low:
        low, high = low_all, max(high_all, low_all + 1.0)
    presets["Auto (1–99 %)"] = WindowLevel((low + high) / 2.0, high - low)
    width = max(high_all - low_all, 1e-6)
    presets["Full range"] = WindowLevel((low_all + high_all) / 2.0, width)
    if meta.modality.upper() == "CT":
        presets["Bone (CT)"] = WindowLevel(400.0, 1800.0)
        presets["Soft tissue (CT)"] = WindowLevel(40.0, 400.0)
    return presets


def holds_integers(pixels: np.ndarray) -> bool:
    """Whether an image's finite values are all whole numbers (e.g. MR signal, CT HU), whatever its dtype.

    Parameters
    ----------
    pixels : numpy.ndarray
        (H, W) or (H, W, C) values.

    Returns
    -------
    bool
    """
    values = np.asarray(pixels)
    if np.issubdtype(values.dtype, np.integer):
        return True
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def overlay_lookup_table(colour_map: str = OVERLAY_COLOUR_MAP) -> np.ndarray:
    """RGBA lookup table for the heat map: the colour map, with alpha rising with the value.

    Low Grad-CAM values are transparent so the anatomy under them stays visible; the overlay's global
    opacity (slider) multiplies this alpha.

    Returns
    -------
    numpy.ndarray
        uint8 (256, 4).
    """
    table = pg.colormap.get(colour_map).getLookupTable(0.0, 1.0, 256, alpha=True)
    ramp = np.clip(np.linspace(0.0, 1.0, 256) / 0.35, 0.0, 1.0)
    table = np.asarray(table, dtype=np.float64)
    table[:, 3] = 255.0 * ramp
    return table.astype(np.uint8)


class _ViewBox(pg.ViewBox):
    """A ViewBox where right drag sets window/level, Ctrl + wheel moves through slices and, with a measurement
    tool chosen, left drag draws (``sig_tool_drag(start, point, phase)`` in image coordinates, phase
    ``"start"``, ``"move"`` or ``"finish"``)."""

    sig_window_drag = Signal(float, float)
    sig_window_drag_finished = Signal()
    sig_slice_step = Signal(int)
    sig_tool_drag = Signal(object, object, str)
    sig_background_clicked = Signal()

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.setMouseMode(pg.ViewBox.PanMode)
        self.drawing_tool = False

    def mouseDragEvent(self, ev: object, axis: int | None = None) -> None:  # noqa: N802 - Qt API
        """Right button: window/level; left with a tool: draw; others: the default (left pans)."""
        if ev.button() == Qt.MouseButton.RightButton:  # type: ignore[attr-defined]
            ev.accept()  # type: ignore[attr-defined]
            delta = ev.screenPos() - ev.lastScreenPos()  # type: ignore[attr-defined]
            self.sig_window_drag.emit(float(delta.x()), float(delta.y()))
            if ev.isFinish():  # type: ignore[attr-defined]
                self.sig_window_drag_finished.emit()
            return
        if ev.button() == Qt.MouseButton.LeftButton and self.drawing_tool:  # type: ignore[attr-defined]
            ev.accept()  # type: ignore[attr-defined]
            start = self.mapSceneToView(ev.buttonDownScenePos())  # type: ignore[attr-defined]
            point = self.mapSceneToView(ev.scenePos())  # type: ignore[attr-defined]
            phase = "start" if ev.isStart() else "finish" if ev.isFinish() else "move"  # type: ignore[attr-defined]
            self.sig_tool_drag.emit(start, point, phase)
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev: object) -> None:  # noqa: N802 - Qt API
        """A left click beside every measurement deselects them."""
        if ev.button() == Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            ev.accept()  # type: ignore[attr-defined]
            self.sig_background_clicked.emit()
            return
        super().mouseClickEvent(ev)

    def wheelEvent(self, ev: object, axis: int | None = None) -> None:  # noqa: N802 - Qt API
        """Ctrl + wheel: next/previous slice; plain wheel: zoom."""
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:  # type: ignore[attr-defined]
            ev.accept()  # type: ignore[attr-defined]
            delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()  # type: ignore[attr-defined]
            if delta:
                self.sig_slice_step.emit(-1 if delta > 0 else 1)
            return
        super().wheelEvent(ev, axis)


class ImageViewer(QWidget):
    """The main image view with its slice bar, window/level controls and readout.

    Signals
    -------
    sig_slice_changed(int)
        The slice shown changed (0-based index into the series).
    sig_window_changed(object)
        The display window changed (a :class:`WindowLevel`).
    sig_records_changed()
        Another image or series is shown (:meth:`set_records`).
    sig_activated()
        The user clicked or focused this viewer (the active viewport of a side-by-side view).
    sig_tool_changed(object)
        The measurement tool changed (its name, or ``None`` for none).
    """

    sig_slice_changed = Signal(int)
    sig_window_changed = Signal(object)
    sig_records_changed = Signal()
    sig_activated = Signal()
    sig_tool_changed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._records: list[ImageRecord] = []
        self._heatmaps: list[np.ndarray | None] = []
        self._index = 0
        self._window: WindowLevel | None = None
        self._presets: dict[str, WindowLevel] = {}
        self._overlay_visible = True
        self._overlay_opacity = 0.45
        self._mouse_scene_pos: QPointF | None = None
        self._inverted = False
        self._annotations_visible = True
        self._integer_data = False

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("k")
        self.graphics.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.view = _ViewBox()
        self.graphics.addItem(self.view, row=0, col=0, rowspan=2)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setAutoDownsample(True)
        self.view.addItem(self.image_item)
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.overlay_item.setLookupTable(overlay_lookup_table())
        self.overlay_item.setLevels((0.0, 1.0))
        self.overlay_item.setOpacity(self._overlay_opacity)
        self.view.addItem(self.overlay_item)
        # Where the model's crop lies (e.g. the 170 mm square of the SI-joint pack): a dashed outline instead
        # of the heat map's hard edge.
        self.crop_item = QGraphicsRectItem()
        self.crop_item.setPen(pg.mkPen("#ffd24d", width=1.5, style=Qt.PenStyle.DashLine, cosmetic=True))
        self.crop_item.setZValue(11)
        self.crop_item.setVisible(False)
        self.view.addItem(self.crop_item)
        self._crop_boxes: list[tuple[int, int, int, int] | None] = []
        self.colour_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get(OVERLAY_COLOUR_MAP),
                                          interactive=False, width=14, colorMapMenu=False)
        self.colour_bar_title = pg.LabelItem("Grad-CAM × p", color="#dddddd", size="9pt")
        self.colour_bar_title.setMaximumWidth(96)
        self.colour_bar_title.setMaximumHeight(22)
        self.graphics.addItem(self.colour_bar_title, row=0, col=1)
        self.graphics.addItem(self.colour_bar, row=1, col=1)
        self.graphics.ci.layout.setRowStretchFactor(0, 0)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)
        self.graphics.ci.layout.setColumnStretchFactor(0, 1)
        self.graphics.ci.layout.setColumnStretchFactor(1, 0)
        self.colour_bar.setVisible(False)
        self.colour_bar_title.setVisible(False)
        self.placeholder = pg.TextItem("Open a file (Ctrl+O) or a DICOM folder (Ctrl+Shift+O),\n"
                                       "or drop files or folders here.", color=(200, 200, 200),
                                       anchor=(0.5, 0.5))
        self.view.addItem(self.placeholder)
        self.placeholder.setPos(0, 0)
        self.view.setRange(xRange=(-1, 1), yRange=(-1, 1))

        self.view.sig_window_drag.connect(self._on_window_drag)
        self.view.sig_slice_step.connect(self.step_slice)
        self.annotations = AnnotationLayer(self.view)
        self.measurements = MeasurementLayer(self.view, self._current_slice)
        self.view.sig_tool_drag.connect(self._on_tool_drag)
        self.view.sig_background_clicked.connect(lambda: self.measurements.select(None))
        self.view.sigRangeChanged.connect(lambda *_args: self._update_annotations())
        self.view.sigResized.connect(lambda *_args: self._update_annotations())
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.setMaximum(0)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Slice (Up/Down, Page Up/Down, Ctrl + wheel)")
        self.slider.valueChanged.connect(self.set_slice)
        self.slice_label = QLabel("")
        self.slice_label.setMinimumWidth(260)
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Fit the image to the window (F)")
        self.fit_button.clicked.connect(self.fit)
        self.one_to_one_button = QToolButton()
        self.one_to_one_button.setText("1:1")
        self.one_to_one_button.setToolTip("One image pixel per screen pixel (1)")
        self.one_to_one_button.clicked.connect(self.one_to_one)
        self.preset_box = QComboBox()
        self.preset_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # "Auto (1–99 %)" whole
        self.preset_box.setToolTip("Window presets (right drag: horizontal = width, vertical = level)")
        self.preset_box.activated.connect(self._on_preset)
        self.window_label = QLabel("")
        self.readout = QLabel("")
        # Never widens the row (side by side, each viewer is half as wide): long texts are shortened instead.
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.readout.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        bar.addWidget(QLabel("Slice"))
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.slice_label)
        tools = QHBoxLayout()
        tools.setContentsMargins(4, 2, 4, 2)
        tools.addWidget(self.fit_button)
        tools.addWidget(self.one_to_one_button)
        tools.addWidget(QLabel("Window"))
        tools.addWidget(self.preset_box)
        tools.addWidget(self.window_label)
        tools.addSpacing(12)
        tools.addWidget(self.readout, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(tools)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(bar)

        self._keys = {
            Qt.Key.Key_Up: lambda: self.step_slice(-1),
            Qt.Key.Key_Left: lambda: self.step_slice(-1),
            Qt.Key.Key_Down: lambda: self.step_slice(1),
            Qt.Key.Key_Right: lambda: self.step_slice(1),
            Qt.Key.Key_PageUp: lambda: self.step_slice(-5),
            Qt.Key.Key_PageDown: lambda: self.step_slice(5),
            Qt.Key.Key_Home: lambda: self.set_slice(0),
            Qt.Key.Key_End: lambda: self.set_slice(len(self._records) - 1),
            Qt.Key.Key_F: self.fit,
            Qt.Key.Key_1: self.one_to_one,
        }
        self.graphics.installEventFilter(self)
        self.slider.installEventFilter(self)

    NAVIGATION_KEYS = frozenset({Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right,
                                 Qt.Key.Key_PageUp, Qt.Key.Key_PageDown, Qt.Key.Key_Home, Qt.Key.Key_End})
    """The slice navigation keys, which the main window routes to the viewer wherever the focus is."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        """Keyboard navigation and tool keys while the image (or the slice slider) has the focus."""
        kind = event.type()
        if kind == QEvent.Type.ShortcutOverride and self.wants_key(event.key(), event.modifiers()):  # type: ignore[attr-defined]
            event.accept()  # Esc / Delete / Ctrl+Z here, before a window shortcut takes them
            return True
        if kind == QEvent.Type.KeyPress and self.handle_key(event.key(), event.modifiers()):  # type: ignore[attr-defined]
            return True
        if kind == QEvent.Type.FocusIn:
            self.sig_activated.emit()
        return super().eventFilter(watched, event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        """Keyboard navigation when the viewer itself has the focus."""
        if not self.handle_key(event.key(), event.modifiers()):
            super().keyPressEvent(event)

    def wants_key(self, key: int, modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> bool:
        """Whether :meth:`handle_key` would act on ``key`` now (without acting).

        Slice navigation, F and 1 always; Esc while a measurement tool is chosen; Delete/Backspace while a
        measurement is selected; Ctrl+Z while the slice has a measurement.
        """
        key = Qt.Key(key)
        control = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        if key == Qt.Key.Key_Z and control and not modifiers & Qt.KeyboardModifier.AltModifier:
            current = self._current_slice()
            return current is not None and bool(self.measurements.measurements(current[0]))
        if modifiers & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            return False
        if key == Qt.Key.Key_Escape:
            return self.measurements.tool is not None or self.measurements.drawing
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            return self.measurements.selected is not None
        return key in self._keys

    def handle_key(self, key: int, modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> bool:
        """Run the action bound to ``key`` (see :meth:`wants_key`); True if there was one."""
        if not self.wants_key(key, modifiers):
            return False
        key = Qt.Key(key)
        if key == Qt.Key.Key_Z:
            self.measurements.undo()
        elif key == Qt.Key.Key_Escape:
            self.set_tool(None)
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.measurements.remove_selected()
        else:
            self._keys[key]()
        return True

    # ---------------------------------------------------------------------------------- measurements
    @property
    def tool(self) -> str | None:
        """The measurement tool the left button draws with (``"ruler"``, ``"ellipse"``, ``"rectangle"``), or
        ``None`` when the left button pans."""
        return self.measurements.tool

    def set_tool(self, tool: str | None) -> None:
        """Choose a measurement tool (``None``: back to panning; also cancels a shape being drawn).

        Raises
        ------
        ValueError
            If ``tool`` is unknown.
        """
        if tool == self.measurements.tool and not self.measurements.drawing:
            return
        self.measurements.set_tool(tool)
        self.view.drawing_tool = tool is not None
        self.graphics.setCursor(Qt.CursorShape.CrossCursor if tool else Qt.CursorShape.ArrowCursor)
        self.sig_tool_changed.emit(tool)

    def _current_slice(self) -> tuple[int, ImageRecord] | None:
        return (self._index, self._records[self._index]) if self._records else None

    def _on_tool_drag(self, start: QPointF, point: QPointF, phase: str) -> None:
        if phase == "start":
            if self.measurements.begin(start):
                self.measurements.drag(point)
        elif phase == "finish":
            self.measurements.finish(point)
        else:
            self.measurements.drag(point)

    # ---------------------------------------------------------------------------- display options
    @property
    def inverted(self) -> bool:
        """The user inverted the grey scale (on top of MONOCHROME1's own inversion)."""
        return self._inverted

    def set_inverted(self, inverted: bool) -> None:
        """Invert the grey scale of grayscale images (I); the corner text says "Inverted"."""
        self._inverted = bool(inverted)
        if self._records:
            self._apply_lookup_table()
        self._update_annotations()

    @property
    def annotations_visible(self) -> bool:
        """Whether the corner texts and orientation markers are shown."""
        return self._annotations_visible

    def set_annotations_visible(self, visible: bool) -> None:
        """Show or hide the corner texts and orientation markers (A)."""
        self._annotations_visible = bool(visible)
        self.annotations.setVisible(self._annotations_visible)
        self._update_annotations()

    def corner_texts(self) -> dict[str, tuple[str, ...]]:
        """The corner lines shown, by corner (``"top_left"``, ...); empty when hidden."""
        if not self._annotations_visible or not self._records:
            return {"top_left": (), "top_right": (), "bottom_left": (), "bottom_right": ()}
        corners = self.annotations.corners
        return {"top_left": corners.top_left, "top_right": corners.top_right,
                "bottom_left": corners.bottom_left, "bottom_right": corners.bottom_right}

    def _update_annotations(self) -> None:
        record = self.current_record
        if record is None or not self._annotations_visible:
            self.annotations.setVisible(False)
            return
        window = self._window
        zoom = self.zoom_factor() if self.view.sceneBoundingRect().width() > 0 else None
        state = ViewState(self._index, len(self._records), window.centre if window else None,
                          window.width if window else None, zoom, self._inverted)
        self.annotations.set_content(corner_text(record.metadata, state), edge_labels(record.metadata))
        self.annotations.setVisible(True)

    # ----------------------------------------------------------------------------------------- content
    @property
    def records(self) -> list[ImageRecord]:
        """The images shown (one, or the slices of a series in order)."""
        return list(self._records)

    @property
    def current_index(self) -> int:
        """0-based index of the slice shown."""
        return self._index

    @property
    def current_record(self) -> ImageRecord | None:
        """The image shown, or ``None``."""
        return self._records[self._index] if self._records else None

    @property
    def window(self) -> WindowLevel | None:
        """The current display window."""
        return self._window

    def set_records(self, records: list[ImageRecord] | tuple[ImageRecord, ...]) -> None:
        """Show a new image or series (clears the overlay).

        Parameters
        ----------
        records : sequence of ImageRecord
            One image, or the slices of a series in order.
        """
        self.measurements.clear()
        self._records = list(records)
        self._heatmaps = [None] * len(self._records)
        self._crop_boxes = [None] * len(self._records)
        self._index = 0
        self.placeholder.setVisible(not self._records)
        self.overlay_item.clear()
        self.colour_bar.setVisible(False)
        self.colour_bar_title.setVisible(False)
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(0, len(self._records) - 1))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(len(self._records) > 1)
        if not self._records:
            self.image_item.clear()
            self.preset_box.clear()
            self.slice_label.setText("")
            self.window_label.setText("")
            self.readout.setText("")
            self._update_annotations()
            self.sig_records_changed.emit()
            return
        self._presets = window_presets(self._records[0])
        # Integer data (stored values through an integer rescale) gets an integer window readout.
        self._integer_data = holds_integers(self._records[0].pixels)
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItems(list(self._presets))
        self.preset_box.blockSignals(False)
        self._window = next(iter(self._presets.values()))
        self._show_current()
        self.fit()
        self.sig_records_changed.emit()
        self.sig_slice_changed.emit(self._index)
        self.sig_window_changed.emit(self._window)

    def set_heatmaps(self, heatmaps: list[np.ndarray | None] | tuple[np.ndarray | None, ...]) -> None:
        """Attach Grad-CAM maps, one per record (``None`` where there is none).

        Parameters
        ----------
        heatmaps : sequence of numpy.ndarray or None
            float32 (H, W) in [0, 1] at each image's size.

        Raises
        ------
        ValueError
            If the number of maps differs from the number of images, or a map's shape differs from its
            image's (the overlay would be misaligned).
        """
        if len(heatmaps) != len(self._records):
            raise ValueError(f"got {len(heatmaps)} heat maps for {len(self._records)} images; "
                             "give one per image (None where there is none)")
        for heatmap, record in zip(heatmaps, self._records, strict=True):
            if heatmap is not None and tuple(heatmap.shape[:2]) != record.shape:
                raise ValueError(f"heat map of shape {heatmap.shape} does not match its image "
                                 f"{record.shape}; Grad-CAM maps must be at the image's size")
        self._heatmaps = list(heatmaps)
        self._show_overlay()

    def set_map_name(self, name: str) -> None:
        """Name the heat map in the colour bar and the readout: ``"Grad-CAM"`` (scaled by the probability) or
        ``"oedema map"`` (a segmentation model's per-pixel probability, shown as it is)."""
        self._map_name = name
        self.colour_bar_title.setText("oedema p" if name == "oedema map" else "Grad-CAM × p")

    def set_crop_boxes(self, boxes: Sequence[tuple[int, int, int, int] | None]) -> None:
        """Outline the region each model input was cropped from, one box per record.

        Parameters
        ----------
        boxes : sequence of (top, left, bottom, right) or None
            In image pixels (``AnalysisResult.crop_box``); ``None`` where the model saw the whole image.
        """
        self._crop_boxes = list(boxes) + [None] * max(0, len(self._records) - len(boxes))
        self._show_overlay()

    def crop_outline(self) -> tuple[float, float, float, float] | None:
        """(x, y, width, height) of the crop outline shown, or ``None`` when none is shown."""
        if not self.crop_item.isVisible():
            return None
        rect = self.crop_item.rect()
        return (rect.x(), rect.y(), rect.width(), rect.height())

    def clear_heatmaps(self) -> None:
        """Remove the Grad-CAM overlay."""
        self._heatmaps = [None] * len(self._records)
        self._show_overlay()

    # ------------------------------------------------------------------------------------------ slices
    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the series)."""
        if not self._records:
            return
        index = int(min(max(index, 0), len(self._records) - 1))
        if index == self._index and self.slider.value() == index and self.image_item.image is not None:
            return
        self._index = index
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self._show_current()
        self.sig_slice_changed.emit(index)

    def step_slice(self, step: int) -> None:
        """Move ``step`` slices (negative: towards the first)."""
        self.set_slice(self._index + int(step))

    # ---------------------------------------------------------------------------------- window/level
    def set_window(self, window: WindowLevel) -> None:
        """Set the display window (width is kept > 0)."""
        self._window = WindowLevel(float(window.centre), max(float(window.width), 1e-6))
        self._apply_levels()
        self.sig_window_changed.emit(self._window)

    def apply_preset(self, name: str) -> None:
        """Apply the window preset ``name`` (see :func:`window_presets`).

        Raises
        ------
        KeyError
            If the current image has no such preset.
        """
        self.set_window(self._presets[name])
        index = self.preset_box.findText(name)
        if index >= 0:
            self.preset_box.setCurrentIndex(index)

    def preset_names(self) -> list[str]:
        """Names of the presets of the current image."""
        return list(self._presets)

    def _on_preset(self, index: int) -> None:
        name = self.preset_box.itemText(index)
        if name in self._presets:
            self.set_window(self._presets[name])

    def _on_window_drag(self, dx: float, dy: float) -> None:
        if self._window is None:
            return
        span = self._presets.get("Full range", self._window).width
        step = max(span, self._window.width) / 500.0
        width = max(self._window.width + dx * step, span / 1000.0)
        centre = self._window.centre - dy * step
        self.set_window(WindowLevel(centre, width))

    def _apply_levels(self) -> None:
        if self._window is None or self.image_item.image is None:
            return
        self.image_item.setLevels(self._window.levels)
        self.window_label.setText(format_window(self._window.centre, self._window.width))
        self._update_annotations()

    # ----------------------------------------------------------------------------------------- overlay
    def set_overlay_visible(self, visible: bool) -> None:
        """Show or hide the Grad-CAM overlay and its colour bar."""
        self._overlay_visible = bool(visible)
        self._show_overlay()

    @property
    def overlay_visible(self) -> bool:
        """Whether the overlay is switched on."""
        return self._overlay_visible

    def set_overlay_opacity(self, opacity: float) -> None:
        """Set the overlay opacity in [0, 1]."""
        self._overlay_opacity = min(1.0, max(0.0, float(opacity)))
        self.overlay_item.setOpacity(self._overlay_opacity)

    @property
    def overlay_opacity(self) -> float:
        """The overlay opacity in [0, 1]."""
        return self._overlay_opacity

    def has_overlay(self) -> bool:
        """Whether the current slice has a heat map drawn."""
        return bool(self._heatmaps) and self._heatmaps[self._index] is not None and self.overlay_item.isVisible()

    def _show_overlay(self) -> None:
        heatmap = self._heatmaps[self._index] if self._heatmaps else None
        box = self._crop_boxes[self._index] if self._index < len(self._crop_boxes) else None
        if box is not None and heatmap is not None:
            top, left, bottom, right = box
            self.crop_item.setRect(float(left), float(top), float(right - left), float(bottom - top))
        self.crop_item.setVisible(box is not None and heatmap is not None and self._overlay_visible)
        if heatmap is None:
            self.overlay_item.clear()
            self.overlay_item.setVisible(False)
            self.colour_bar.setVisible(False)
            self.colour_bar_title.setVisible(False)
            return
        self.overlay_item.setImage(np.clip(heatmap, 0.0, 1.0).astype(np.float32), autoLevels=False,
                                   levels=(0.0, 1.0))
        self.overlay_item.setRect(0, 0, heatmap.shape[1], heatmap.shape[0])
        self.overlay_item.setOpacity(self._overlay_opacity)
        self.overlay_item.setVisible(self._overlay_visible)
        self.colour_bar.setVisible(self._overlay_visible)
        self.colour_bar_title.setVisible(self._overlay_visible)

    # ----------------------------------------------------------------------------------------- display
    def _show_current(self) -> None:
        record = self._records[self._index]
        pixels = record.pixels
        image = pixels if pixels.ndim == 2 else pixels[:, :, :3]
        levels = self._window.levels if self._window else None
        self.image_item.setImage(image, autoLevels=False, levels=levels)
        self.image_item.setRect(0, 0, record.shape[1], record.shape[0])
        self._apply_lookup_table()
        self._apply_levels()
        self._show_overlay()
        self.measurements.show_slice(self._index)
        self._update_slice_label()
        self._update_readout()
        self._update_annotations()

    def _apply_lookup_table(self) -> None:
        """Grey ramp, reversed for MONOCHROME1 (low values bright) and again when the user inverted it."""
        record = self._records[self._index]
        lut = None
        if record.pixels.ndim == 2 and record.inverted != self._inverted:
            lut = np.repeat(np.arange(255, -1, -1, dtype=np.uint8)[:, None], 3, axis=1)
        self.image_item.setLookupTable(lut)

    def _update_slice_label(self) -> None:
        if not self._records:
            self.slice_label.setText("")
            return
        meta = self._records[self._index].metadata
        parts = [f"{self._index + 1} / {len(self._records)}"]
        if meta.instance_number is not None:
            parts.append(f"instance {meta.instance_number}")
        if meta.frame_index is not None:
            parts.append(f"frame {meta.frame_index + 1}")
        if meta.slice_position_mm is not None:
            parts.append(f"position {meta.slice_position_mm:.1f} mm")
        self.slice_label.setText(" · ".join(parts))

    def slice_text(self) -> str:
        """The slice label (index, instance number, slice position)."""
        return self.slice_label.text()

    def fit(self) -> None:
        """Fit the whole image in the view."""
        record = self.current_record
        if record is None:
            return
        height, width = record.shape
        self.view.setRange(xRange=(0, width), yRange=(0, height), padding=0.02)

    def one_to_one(self) -> None:
        """Zoom so one image pixel covers one screen pixel, keeping the view centre."""
        if self.current_record is None:
            return
        rect = self.view.sceneBoundingRect()
        ratio = self.graphics.devicePixelRatioF() or 1.0
        view_w, view_h = rect.width() / ratio, rect.height() / ratio
        (x0, x1), (y0, y1) = self.view.viewRange()
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        self.view.setRange(xRange=(cx - view_w / 2.0, cx + view_w / 2.0),
                           yRange=(cy - view_h / 2.0, cy + view_h / 2.0), padding=0)

    def zoom_factor(self) -> float:
        """Screen pixels per image pixel (horizontal)."""
        (x0, x1), _ = self.view.viewRange()
        span = x1 - x0
        return self.view.sceneBoundingRect().width() / span if span > 0 else math.nan

    # ----------------------------------------------------------------------------------------- readout
    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        self._mouse_scene_pos = scene_pos
        self._update_readout()

    def pixel_readout(self, x: float, y: float) -> str:
        """The readout text for image coordinates ``(x, y)`` = (column, row), in pixels.

        Returns
        -------
        str
            ``"x 12  y 40  value 531"`` plus the position in mm when the pixel spacing is known and the
            Grad-CAM value when a heat map is shown; empty outside the image.
        """
        record = self.current_record
        if record is None:
            return ""
        col, row = int(math.floor(x)), int(math.floor(y))
        height, width = record.shape
        if not (0 <= row < height and 0 <= col < width):
            return ""
        value = record.pixels[row, col]
        if np.ndim(value) == 0:
            value_text = f"{float(value):.6g}"
        else:
            value_text = "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(value)[:3]) + ")"
        text = f"x {col}  y {row}  value {value_text}"
        spacing = record.metadata.pixel_spacing_mm
        if spacing is not None:
            text += f"  ({col * spacing[1]:.1f}, {row * spacing[0]:.1f}) mm"
        heatmap = self._heatmaps[self._index] if self._heatmaps else None
        if heatmap is not None and self._overlay_visible:
            text += f"  {getattr(self, '_map_name', 'Grad-CAM')} {float(heatmap[row, col]):.2f}"
        return text

    def _update_readout(self) -> None:
        if self._mouse_scene_pos is None or self.current_record is None:
            return
        if not self.view.sceneBoundingRect().contains(self._mouse_scene_pos):
            self.readout.setText("")
            return
        point = self.view.mapSceneToView(self._mouse_scene_pos)
        text = self.pixel_readout(point.x(), point.y())
        self.readout.setToolTip(text)
        metrics = self.readout.fontMetrics()
        if metrics.horizontalAdvance(text) > self.readout.width():
            text = re.sub(r"  \([^)]*\) mm", "", text)  # without the position in mm
            text = metrics.elidedText(text, Qt.TextElideMode.ElideRight, self.readout.width())
        self.readout.setText(text)
