"""The metadata panel: the DICOM attributes that matter for reading and reporting an image."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from asdesk.core import ImageRecord


def _format_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def metadata_rows(record: ImageRecord) -> list[tuple[str, str]]:
    """The (attribute, value) rows shown for an image.

    Parameters
    ----------
    record : ImageRecord
        The image.

    Returns
    -------
    list of (str, str)
        Patient, study, series, modality, body part, instance, slice position, size, pixel spacing, window,
        photometric interpretation, bits stored, transfer syntax, manufacturer, format and source file.
        Unknown values are shown as "—".
    """
    meta = record.metadata
    dash = "—"

    def text(value: object) -> str:
        return dash if value is None or value == "" else str(value)

    patient = " ".join(part for part in (meta.patient_name.replace("^", " ").strip(),
                                         f"({meta.patient_id})" if meta.patient_id else "") if part)
    study = " · ".join(part for part in (_format_date(meta.study_date), meta.study_description) if part)
    series = " · ".join(part for part in (_format_date(meta.series_date), meta.series_description) if part)
    spacing = (f"{meta.pixel_spacing_mm[0]:.4g} × {meta.pixel_spacing_mm[1]:.4g} mm"
               if meta.pixel_spacing_mm else dash)
    window = (f"C {meta.window_centre:.6g} / W {meta.window_width:.6g}"
              if meta.window_centre is not None and meta.window_width is not None else dash)
    height, width = record.shape
    channels = "" if record.pixels.ndim == 2 else f" × {record.pixels.shape[2]}"
    return [
        ("Patient", text(patient)),
        ("Study", text(study)),
        ("Study UID", text(meta.study_uid)),
        ("Series", text(series)),
        ("Series UID", text(meta.series_uid)),
        ("Modality", text(meta.modality)),
        ("Body part", text(meta.body_part)),
        ("Instance", text(meta.instance_number)),
        ("Frame", text(None if meta.frame_index is None else meta.frame_index + 1)),
        ("Slice position", dash if meta.slice_position_mm is None else f"{meta.slice_position_mm:.2f} mm"),
        ("Image size", f"{width} × {height}{channels} px"),
        ("Pixel spacing", spacing),
        ("Window (file)", window),
        ("Photometric", text(meta.photometric_interpretation)),
        ("Bits stored", text(meta.bits_stored)),
        ("Transfer syntax", text(meta.transfer_syntax)),
        ("Manufacturer", text(meta.manufacturer)),
        ("Format", text(meta.format)),
        ("File", str(meta.source)),
    ]


class MetadataPanel(QWidget):
    """A two-column table of :func:`metadata_rows` for the image shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Attribute", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)

    def set_record(self, record: ImageRecord | None) -> None:
        """Show the attributes of ``record`` (``None`` clears the table)."""
        rows = metadata_rows(record) if record is not None else []
        self.table.setRowCount(len(rows))
        for row, (name, value) in enumerate(rows):
            name_item = QTableWidgetItem(name)
            name_item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            value_item = QTableWidgetItem(value)
            value_item.setToolTip(value)
            value_item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            self.table.setItem(row, 0, name_item)
            self.table.setItem(row, 1, value_item)

    def value(self, attribute: str) -> str:
        """The value shown for ``attribute`` (e.g. ``"Modality"``), or empty if absent."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == attribute:
                return self.table.item(row, 1).text()
        return ""
