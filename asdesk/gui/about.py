"""Help → About: version and intended use, the installed model cards, and the licences of the libraries and
data that asdesk bundles.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTabWidget, QTextBrowser, QVBoxLayout, QWidget

import asdesk
from asdesk.core.formatting import format_probability, join_present
from asdesk.core.paths import resources_dir, user_config_dir, user_log_dir, user_models_dir
from asdesk.gui.card_html import model_card_html

# (distribution, what it is for, licence). The licence is stated here rather than read from the package
# metadata, whose licence field is free text and often empty.
LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("PySide6-Essentials", "Qt for Python: the window", "LGPL-3.0-only (Qt: LGPL-3.0)"),
    ("shiboken6", "PySide6 bindings runtime", "LGPL-3.0-only"),
    ("pyqtgraph", "image viewer and plots", "MIT"),
    ("onnxruntime", "model runtime (model.onnx)", "MIT"),
    ("numpy", "arrays", "BSD-3-Clause"),
    ("pydicom", "DICOM reading", "MIT"),
    ("highdicom", "DICOM export: Secondary Capture and Structured Report", "MIT"),
    ("pylibjpeg", "DICOM decoder framework", "MIT"),
    ("pylibjpeg-openjpeg", "JPEG 2000 decoding (OpenJPEG)", "MIT (OpenJPEG: BSD-2-Clause)"),
    ("pylibjpeg-rle", "RLE decoding", "MIT"),
    ("pyjpegls", "JPEG-LS decoding (CharLS)", "MIT (CharLS: BSD-3-Clause)"),
    ("python-gdcm", "JPEG decoding (GDCM)", "BSD-3-Clause"),
    ("pillow", "PNG/JPEG/TIFF reading", "MIT-CMU (HPND)"),
    ("platformdirs", "settings and log folders", "MIT"),
    ("tqdm", "command-line progress bars", "MIT and MPL-2.0"),
)


def library_rows() -> list[tuple[str, str, str, str]]:
    """(library, installed version or "not installed", purpose, licence) for :data:`LIBRARIES`."""
    rows = []
    for name, purpose, licence in LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append((name, version, purpose, licence))
    return rows


def _value_html(value: Any, depth: int = 0) -> str:  # noqa: ANN401
    if isinstance(value, dict):
        if depth > 2:
            return html.escape(json.dumps(value)[:300])
        items = "".join(f"<li><b>{html.escape(str(k))}</b>: {_value_html(v, depth + 1)}</li>"
                        for k, v in value.items() if v is not None and v != "")
        return f"<ul>{items}</ul>"
    if isinstance(value, list):
        return html.escape(join_present(value[:20]))
    return html.escape(str(value))


def card_html(card: Any) -> str:  # noqa: ANN401 - asdesk.inference.card.ModelCard
    """A model card as HTML: identity, task, input, operating points, performance, training data, use."""
    raw = dict(getattr(card, "raw", {}) or {})
    points = "".join(
        f"<li>{html.escape(name.replace('_', ' '))}: threshold {format_probability(p.threshold)}"
        + (f", sensitivity {float(p.sensitivity):.3f}" if p.sensitivity is not None else "")
        + (f", specificity {float(p.specificity):.3f}" if p.specificity is not None else "") + "</li>"
        for name, p in card.operating_points.items())
    rule = card.study_rule
    parts = [
        f"<h3>{html.escape(card.id)} — version {html.escape(str(card.version))}</h3>",
        f"<p><b>Task:</b> {html.escape(card.task)}<br>",
        f"<b>Labels:</b> {html.escape(card.positive_label)} / {html.escape(card.negative_label)}<br>",
        f"<b>Modalities:</b> {html.escape(join_present(m or 'raster (PNG/JPEG)' for m in card.modalities))}; "
        f"<b>body parts:</b> {html.escape(join_present(card.body_parts) or 'any')}"
        + (" (and images that do not state one)" if "" in card.body_parts and join_present(card.body_parts) else "")
        + "<br>",
        f"<b>Architecture:</b> {html.escape(card.architecture)}, input {card.input_shape}<br>",
        f"<b>SHA-256:</b> <code>{html.escape(card.sha256)}</code><br>",
        f"<b>asdesk version:</b> {html.escape(str(raw.get('asdesk_version', '')))}; "
        f"<b>date:</b> {html.escape(str(raw.get('date', '')))}</p>",
        f"<p><b>Operating points</b> (default {html.escape(card.default_operating_point)}):</p><ul>{points}</ul>",
    ]
    if rule is not None:
        parts.append(f"<p><b>Study rule:</b> {html.escape(rule.description or rule.kind)} "
                     f"(k={rule.k}, threshold {format_probability(rule.threshold)})</p>")
    parts.append(f"<p><b>Measured performance</b></p>{model_card_html(raw)}")
    if raw.get("training_data"):
        parts.append(f"<p><b>Training data, provenance and licence</b></p>{_value_html(raw['training_data'])}")
    parts.append(f"<p><b>Intended use:</b> {html.escape(card.intended_use)}</p>")
    return "".join(parts)


def about_html(device: str = "") -> str:
    """The "About" page: version, intended use, device and folders."""
    return (f"<h2>asdesk {html.escape(asdesk.__version__)}</h2>"
            "<p>Offline diagnostic workstation for ankylosing spondylitis and related spine and joint disease "
            "on MRI and X-ray.</p>"
            f"<p style='color:#8a1c00'><b>{html.escape(asdesk.INTENDED_USE)}</b></p>"
            f"<p><b>Models run on:</b> {html.escape(device or 'not loaded yet')}</p>"
            f"<p><b>User model packs:</b> {html.escape(str(user_models_dir()))}<br>"
            f"<b>Settings:</b> {html.escape(str(user_config_dir()))}<br>"
            f"<b>Log:</b> {html.escape(str(user_log_dir()))}</p>")


def licences_html() -> str:
    """Licences of the bundled libraries and of the data shipped with asdesk."""
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(p)}</td>"
                   f"<td>{html.escape(lic)}</td></tr>" for n, v, p, lic in library_rows())
    notices = ""
    folder = resources_dir()
    files = sorted(folder.glob("licen[cs]es/*")) + sorted(folder.glob("LICEN[CS]E*")) if folder.is_dir() else []
    if files:
        notices = "<p><b>Licence texts shipped in</b> " + html.escape(str(folder)) + ":</p><ul>" + "".join(
            f"<li>{html.escape(f.name)}</li>" for f in files) + "</ul>"
    return ("<h3>Libraries</h3><table border='1' cellspacing='0' cellpadding='3'>"
            "<tr><th>Library</th><th>Version</th><th>Used for</th><th>Licence</th></tr>"
            f"{rows}</table>"
            "<h3>Data</h3><p>The model packs were trained on published data; each card (Model cards tab) names "
            "its training data with provenance and licence. Patient data is never shipped with asdesk.</p>"
            f"{notices}")


class AboutDialog(QDialog):
    """Help → About, with tabs "About", "Model cards" and "Licences".

    Parameters
    ----------
    cards : sequence of ModelCard
        The installed packs' cards.
    device : str
        Where the models run.
    pack_errors : sequence of str
        Packs that could not be used.
    parent : QWidget, optional
    """

    def __init__(self, cards: Sequence[Any], device: str = "", pack_errors: Sequence[str] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About asdesk")
        self.resize(760, 620)
        self.tabs = QTabWidget()
        about = QTextBrowser()
        about.setHtml(about_html(device))
        self.tabs.addTab(about, "About")
        cards_view = QTextBrowser()
        body = "".join(card_html(card) + "<hr>" for card in cards) or (
            "<p>No model pack is installed. Put packs into "
            f"{html.escape(str(user_models_dir()))} (one folder per pack with model.keras and card.json).</p>")
        if pack_errors:
            body += "<h3>Packs that could not be used</h3><ul>" + "".join(
                f"<li>{html.escape(e)}</li>" for e in pack_errors) + "</ul>"
        cards_view.setHtml(body)
        self.tabs.addTab(cards_view, "Model cards")
        licences = QTextBrowser()
        licences.setHtml(licences_html())
        self.tabs.addTab(licences, "Licences")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(buttons)

    def text(self) -> str:
        """All tabs' plain text (for tests)."""
        return "\n".join(self.tabs.widget(i).toPlainText() for i in range(self.tabs.count()))  # type: ignore[attr-defined]
