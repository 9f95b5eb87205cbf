"""The preprocessing panel: the selected model's pipeline, editable, with a live (debounced) preview.

The model card's ``preprocessing`` list is the pipeline the model was trained and validated with. The
panel shows each step's parameters (window, crop, CLAHE clip limit and tile grid, histogram equalisation,
resize mode), lets the reader change them, and says clearly when the pipeline departs from the card's:
a result obtained that way is outside the model's validation. "Reset to model defaults" restores the card.

Edits are debounced: :attr:`PreprocessingPanel.sig_pipeline_changed` fires once, ~200 ms after the last
edit, with a :class:`PipelineState`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from asdesk.preprocess import build_pipeline, build_step

DEBOUNCE_MS = 200
"""Delay between the last edit and the preview/pipeline update."""

_STEP_TITLES = {
    "window": "Window (VOI)",
    "crop_mm": "Crop (mm)",
    "clahe": "CLAHE",
    "histogram_equalisation": "Histogram equalisation",
    "resize": "Resize to model input",
    "normalise": "Backbone normalisation",
}
_OPTIONAL_STEPS = ("crop_mm", "clahe", "histogram_equalisation")


def canonical_steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalise a pipeline spec so two specs compare equal when they preprocess identically.

    Parameters
    ----------
    steps : sequence of mapping
        A card's ``preprocessing`` list.

    Returns
    -------
    list of dict
        Each step as ``{"name": ..., <all parameters with defaults filled in>}``.

    Raises
    ------
    asdesk.core.PreprocessError
        If a step is unknown or badly parameterised.
    """
    out = []
    for step in steps:
        built = build_step(step)
        params = asdict(built)  # type: ignore[call-overload]
        for key, value in params.items():
            if isinstance(value, tuple):
                params[key] = list(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                params[key] = float(value)
        if step["name"] == "window":
            unused = {"display": ("low", "high", "centre", "width"), "percentile": ("centre", "width"),
                      "reference": ("centre", "width"), "fixed": ("low", "high")}.get(str(params.get("mode")), ())
            for key in unused:
                params.pop(key, None)
        out.append({"name": step["name"], **params})
    return out


def describe_departures(card_steps: Sequence[Mapping[str, Any]],
                        steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """Human-readable differences between the card's pipeline and ``steps``.

    Returns
    -------
    list of str
        E.g. ``["CLAHE clip_limit 2 → 3", "Histogram equalisation added"]``; empty when identical.
    """
    card = {step["name"]: step for step in canonical_steps(card_steps)}
    current = {step["name"]: step for step in canonical_steps(steps)}
    notes = []
    for name in _STEP_TITLES:
        title = _STEP_TITLES[name]
        if name in card and name not in current:
            notes.append(f"{title} removed")
        elif name in current and name not in card:
            notes.append(f"{title} added")
        elif name in card:
            for key in card[name]:
                if key != "name" and card[name][key] != current[name].get(key):
                    notes.append(f"{title} {key} {_short(card[name][key])} → {_short(current[name].get(key))}")
    card_order = [step["name"] for step in canonical_steps(card_steps)]
    order = [step["name"] for step in canonical_steps(steps)]
    common = [name for name in order if name in card_order]
    if not notes and common != [name for name in card_order if name in order]:
        notes.append("steps reordered")
    return notes


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "×".join(_short(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class PipelineState:
    """The pipeline as the panel currently describes it.

    Attributes
    ----------
    steps : tuple of dict
        A valid ``preprocessing`` list (same format as the card's).
    modified : bool
        True when it departs from the card's pipeline.
    departures : tuple of str
        What differs (see :func:`describe_departures`).
    """

    steps: tuple[dict[str, Any], ...]
    modified: bool
    departures: tuple[str, ...] = ()


class _StepEditor(QGroupBox):
    """Editors for one step's parameters."""

    def __init__(self, name: str, spec: Mapping[str, Any], optional: bool, on_edit: Any) -> None:  # noqa: ANN401
        super().__init__(_STEP_TITLES.get(name, name))
        self.name = name
        self.form = QFormLayout(self)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.editors: dict[str, QWidget] = {}
        self.on_edit = on_edit
        if optional:
            self.setCheckable(True)
            self.toggled.connect(lambda _checked: on_edit())
        self._build(spec)

    def _double(self, key: str, value: float, low: float, high: float, step: float, decimals: int = 2,
                suffix: str = "") -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setDecimals(decimals)
        box.setSingleStep(step)
        box.setSuffix(suffix)
        box.setValue(float(value))
        box.valueChanged.connect(lambda _v: self.on_edit())
        self.editors[key] = box
        return box

    def _int(self, key: str, value: int, low: int, high: int, enabled: bool = True) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(int(value))
        box.setEnabled(enabled)
        box.valueChanged.connect(lambda _v: self.on_edit())
        self.editors[key] = box
        return box

    def _combo(self, key: str, items: Sequence[str], value: str) -> QComboBox:
        box = QComboBox()
        box.addItems(list(items))
        box.setCurrentText(str(value))
        box.currentTextChanged.connect(lambda _t: (self._sync_visibility(), self.on_edit()))
        self.editors[key] = box
        return box

    def _build(self, spec: Mapping[str, Any]) -> None:
        name = self.name
        if name == "window":
            self.form.addRow("Mode", self._combo("mode", ("display", "percentile", "fixed", "reference"),
                                                 spec.get("mode", "display")))
            self.form.addRow("Low percentile", self._double("low", spec.get("low", 1.0), 0.0, 100.0, 0.5,
                                                             suffix=" %"))
            self.form.addRow("High percentile", self._double("high", spec.get("high", 99.5), 0.0, 100.0, 0.5,
                                                              suffix=" %"))
            self.form.addRow("Centre", self._double("centre", spec.get("centre") or 0.0, -1e6, 1e6, 10.0, 1))
            self.form.addRow("Width", self._double("width", spec.get("width") or 1.0, 1e-3, 1e7, 10.0, 1))
            self._sync_visibility()
        elif name == "crop_mm":
            self.form.addRow("Height", self._double("height_mm", spec.get("height_mm", 200.0), 1.0, 2000.0, 5.0,
                                                    1, " mm"))
            self.form.addRow("Width", self._double("width_mm", spec.get("width_mm", 200.0), 1.0, 2000.0, 5.0,
                                                   1, " mm"))
        elif name == "clahe":
            grid = spec.get("tile_grid", (8, 8))
            grid = (grid, grid) if isinstance(grid, int) else grid
            self.form.addRow("Clip limit", self._double("clip_limit", spec.get("clip_limit", 2.0), 0.1, 40.0, 0.1))
            self.form.addRow("Tile rows", self._int("tile_rows", grid[0], 1, 64))
            self.form.addRow("Tile columns", self._int("tile_cols", grid[1], 1, 64))
        elif name == "histogram_equalisation":
            self.form.addRow(QLabel("Global histogram equalisation (8-bit)."))
        elif name == "resize":
            self.form.addRow("Height", self._int("height", spec.get("height", 224), 8, 4096, enabled=False))
            self.form.addRow("Width", self._int("width", spec.get("width", 224), 8, 4096, enabled=False))
            self.form.addRow("Aspect", self._combo("mode", ("pad", "stretch", "crop"), spec.get("mode", "pad")))
            note = QLabel("The input size is fixed by the model.")
            note.setWordWrap(True)
            self.form.addRow(note)
        elif name == "normalise":
            self.backbone = str(spec.get("backbone", "unit"))
            self.form.addRow("Backbone", QLabel(self.backbone))

    def _sync_visibility(self) -> None:
        if self.name != "window":
            return
        mode = self.editors["mode"].currentText()  # type: ignore[attr-defined]
        # "reference" (tissue-referenced STIR): low = the tissue percentile, high = the multiple of the reference
        scaled = mode in ("percentile", "reference")
        for key, visible in (("low", scaled), ("high", scaled),
                             ("centre", mode == "fixed"), ("width", mode == "fixed")):
            editor = self.editors[key]
            editor.setVisible(visible)
            label = self.form.labelForField(editor)
            if label is not None:
                label.setVisible(visible)

    def set_values(self, spec: Mapping[str, Any] | None) -> None:
        """Load ``spec`` (``None``: an optional step that is off)."""
        for editor in self.editors.values():
            editor.blockSignals(True)
        self.blockSignals(True)
        if self.isCheckable():
            self.setChecked(spec is not None)
        spec = spec or {}
        for key, editor in self.editors.items():
            if key in ("tile_rows", "tile_cols"):
                grid = spec.get("tile_grid", (8, 8))
                grid = (grid, grid) if isinstance(grid, int) else grid
                editor.setValue(int(grid[0 if key == "tile_rows" else 1]))  # type: ignore[attr-defined]
            elif key not in spec or spec[key] is None:
                continue
            elif isinstance(editor, QComboBox):
                editor.setCurrentText(str(spec[key]))
            elif isinstance(editor, QSpinBox):
                editor.setValue(int(spec[key]))
            elif isinstance(editor, QDoubleSpinBox):
                editor.setValue(float(spec[key]))
        for editor in self.editors.values():
            editor.blockSignals(False)
        self.blockSignals(False)
        self._sync_visibility()

    def spec(self) -> dict[str, Any] | None:
        """The step as a card entry, or ``None`` if it is an optional step switched off."""
        if self.isCheckable() and not self.isChecked():
            return None
        name = self.name
        values = {key: (e.currentText() if isinstance(e, QComboBox) else e.value())  # type: ignore[attr-defined]
                  for key, e in self.editors.items()}
        if name == "window":
            mode = values["mode"]
            if mode in ("percentile", "reference"):
                return {"name": name, "mode": mode, "low": values["low"], "high": values["high"]}
            if mode == "fixed":
                return {"name": name, "mode": mode, "centre": values["centre"], "width": values["width"]}
            return {"name": name, "mode": mode}
        if name == "crop_mm":
            return {"name": name, "height_mm": values["height_mm"], "width_mm": values["width_mm"]}
        if name == "clahe":
            return {"name": name, "clip_limit": values["clip_limit"],
                    "tile_grid": [int(values["tile_rows"]), int(values["tile_cols"])]}
        if name == "histogram_equalisation":
            return {"name": name}
        if name == "resize":
            return {"name": name, "height": int(values["height"]), "width": int(values["width"]),
                    "mode": values["mode"]}
        return {"name": name, "backbone": self.backbone}


class PreprocessingPanel(QWidget):
    """Editors for the selected model's preprocessing pipeline.

    Signals
    -------
    sig_pipeline_changed(PipelineState)
        Debounced (:data:`DEBOUNCE_MS`) after edits, and at once after :meth:`set_card_steps` or a reset.
    """

    sig_pipeline_changed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._card_steps: tuple[dict[str, Any], ...] = ()
        self._editors: list[_StepEditor] = []
        self._model_label = QLabel("No model selected yet.")
        self._model_label.setWordWrap(True)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        self.banner.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; border: 2px solid #e0a800;"
                                  " border-radius: 4px; padding: 6px; font-weight: bold; }")
        self.banner.setVisible(False)
        self.reset_button = QPushButton("Reset to model defaults")
        self.reset_button.setEnabled(False)
        self.reset_button.clicked.connect(self.reset_to_defaults)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b02a37;")
        self.error_label.setWordWrap(True)
        self._steps_box = QWidget()
        self._steps_layout = QVBoxLayout(self._steps_box)
        self._steps_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._steps_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._model_label)
        layout.addWidget(self.banner)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(self.reset_button)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._emit_state)

    # ------------------------------------------------------------------------------------------- model
    def set_card_steps(self, steps: Sequence[Mapping[str, Any]], model_name: str = "") -> None:
        """Show the pipeline of a model card (its defaults).

        Parameters
        ----------
        steps : sequence of mapping
            The card's ``preprocessing`` list.
        model_name : str
            Shown above the editors, e.g. ``"sij-mri-stir-inflammation 1.0"``.
        """
        self._card_steps = tuple(dict(step) for step in steps)
        self._model_label.setText(f"Pipeline of <b>{model_name}</b>, as trained and validated."
                                  if model_name else "Pipeline of the selected model.")
        for editor in self._editors:
            editor.setParent(None)
            editor.deleteLater()
        self._editors = []
        while self._steps_layout.count():
            self._steps_layout.takeAt(0)
        names = [str(step["name"]) for step in self._card_steps]
        middle = names[1:-2]
        extra = [name for name in _OPTIONAL_STEPS if name not in names and name != "crop_mm"]
        order = names[:1] + middle + extra + names[-2:]
        by_name = {str(step["name"]): step for step in self._card_steps}
        for name in order:
            editor = _StepEditor(name, by_name.get(name, {}), optional=name in _OPTIONAL_STEPS,
                                 on_edit=self._on_edit)
            editor.set_values(by_name.get(name))
            self._editors.append(editor)
            self._steps_layout.addWidget(editor)
        self._steps_layout.addStretch(1)
        self.reset_button.setEnabled(True)
        self._timer.stop()
        self._emit_state()

    def card_steps(self) -> list[dict[str, Any]]:
        """The card's pipeline."""
        return [dict(step) for step in self._card_steps]

    def editor(self, name: str) -> _StepEditor | None:
        """The editor group of step ``name`` (for tests and shortcuts)."""
        return next((editor for editor in self._editors if editor.name == name), None)

    # ----------------------------------------------------------------------------------------- state
    def current_steps(self) -> list[dict[str, Any]]:
        """The pipeline as edited (a ``preprocessing`` list)."""
        return [spec for spec in (editor.spec() for editor in self._editors) if spec is not None]

    def state(self) -> PipelineState:
        """The current :class:`PipelineState`.

        Raises
        ------
        asdesk.core.PreprocessError
            If the edited parameters do not make a valid pipeline (e.g. low ≥ high percentile).
        """
        steps = self.current_steps()
        build_pipeline(steps)
        departures = describe_departures(self._card_steps, steps) if self._card_steps else []
        return PipelineState(tuple(steps), bool(departures), tuple(departures))

    def is_modified(self) -> bool:
        """Whether the edited pipeline departs from the card's."""
        try:
            return self.state().modified
        except ValueError:
            return True

    def reset_to_defaults(self) -> None:
        """Restore the card's parameters."""
        by_name = {str(step["name"]): step for step in self._card_steps}
        for editor in self._editors:
            editor.set_values(by_name.get(editor.name))
        self._timer.stop()
        self._emit_state()

    def _on_edit(self) -> None:
        self._timer.start()

    def flush(self) -> None:
        """Apply a pending debounced edit now."""
        if self._timer.isActive():
            self._timer.stop()
            self._emit_state()

    def _emit_state(self) -> None:
        try:
            state = self.state()
        except ValueError as error:
            self.error_label.setText(f"Invalid parameters: {error}")
            self.banner.setText("⚠ These parameters do not make a valid pipeline; the model defaults are "
                                "used until they are fixed.")
            self.banner.setVisible(True)
            return
        self.error_label.setText("")
        if state.modified:
            items = "".join(f"<li>{note}</li>" for note in state.departures)
            self.banner.setText("⚠ Preprocessing differs from the pipeline this model was trained and "
                                "validated with. Results obtained with it are <u>outside the model's "
                                f"validation</u>.<ul style='margin:0'>{items}</ul>")
        self.banner.setVisible(state.modified)
        self.sig_pipeline_changed.emit(state)
