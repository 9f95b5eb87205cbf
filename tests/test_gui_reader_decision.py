"""The reader's decision in the window (pytest-qt, offscreen): confirm or override the AI finding, add a note;
saved at once, restored in a new window, in the PDF and in the DICOM Structured Report.

The window tests run the shipped knee pack on a real knee radiograph; the panel tests use TEST DATA predictions
on real images (see test_report_pdf.py). Reader names and notes are TEST DATA.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pydicom  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from conftest import SHARED_DATA, requires_shared  # noqa: E402
from test_report_pdf import analysis, knee_record  # noqa: E402

from asdesk.core import GateVerdict  # noqa: E402
from asdesk.core.reader_decision import ReaderDecisionStore, decisions_dir  # noqa: E402
from asdesk.core.settings import Settings  # noqa: E402
from asdesk.gui.reader_decision import NOTE_SAVE_DELAY_MS, ReaderDecisionPanel, ask_reader_name  # noqa: E402

KNEE = sorted((SHARED_DATA / "knee-xray-kl" / "val" / "3").glob("*.png"))[:1] if SHARED_DATA.exists() else []
REPO = Path(__file__).resolve().parents[1]
WAIT_MS = 120_000

pytestmark = [pytest.mark.gui, requires_shared("data/knee-xray-kl", "data/sij-mri-dicom")]


def panel(qtbot, name: str = "TEST Reader") -> ReaderDecisionPanel:
    widget = ReaderDecisionPanel(name_provider=lambda _force: name, reader_name=name)
    qtbot.addWidget(widget)
    return widget


# ---------------------------------------------------------------------------------------------- the panel
def test_a_choice_is_saved_at_once_and_a_new_panel_restores_it(qtbot):
    result = analysis(knee_record(), 0.81)          # TEST DATA: the AI says positive
    first = panel(qtbot)
    first.set_result(result, "knee.png")
    assert first.isEnabled() and not first.buttons["positive"].isEnabled()   # disagreeing "positive" = agreeing
    assert first.buttons["agree"].text() == "Agree with the AI (positive)"
    with qtbot.waitSignal(first.sig_decision_saved, timeout=5000):
        first.buttons["negative"].click()
    files = list(decisions_dir().glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("sha256-")
    data = json.loads(files[0].read_text(encoding="utf-8"))
    assert data["conclusion"] == "negative" and data["agreement"] == "disagree" and data["reader"] == "TEST Reader"
    assert data["ai"]["positive"] is True and data["source"] == "knee.png"
    with qtbot.waitSignal(first.sig_decision_saved, timeout=5000):
        qtbot.keyClicks(first.note_edit, "TEST note")          # saved once typing stops
    assert ReaderDecisionStore().load(first.key).note == "TEST note"
    assert "Disagrees with the AI finding: negative" in first.status_label.text()

    second = panel(qtbot)                                         # as after a restart
    second.set_result(result, "knee.png")
    assert second.buttons["negative"].isChecked() and second.note_edit.toPlainText() == "TEST note"
    assert second.decision().conclusion == "negative"


def test_a_note_typed_just_before_the_case_changes_is_not_lost(qtbot):
    result = analysis(knee_record(), 0.3)           # TEST DATA: negative
    widget = panel(qtbot)
    widget.set_result(result)
    widget.note_edit.setPlainText("TEST unfinished thought")
    assert ReaderDecisionStore().load(widget.key) is None      # the autosave has not fired yet ...
    key = widget.key
    widget.clear_case()                                        # ... but leaving the case saves it
    saved = ReaderDecisionStore().load(key)
    assert saved.note == "TEST unfinished thought" and saved.conclusion == "" and not saved.decided
    assert NOTE_SAVE_DELAY_MS <= 1000


def test_a_refused_image_has_no_agree_option(qtbot):
    result = analysis(knee_record(), 0.7)
    refused = type(result)(record=result.record, model_input=result.model_input, prediction=result.prediction,
                           model=result.model, gate=GateVerdict(reasons=("TEST reason",)))
    widget = panel(qtbot)
    widget.set_result(refused)
    assert not widget.buttons["agree"].isEnabled()
    assert [widget.buttons[c].isEnabled() for c in ("positive", "negative", "indeterminate")] == [True] * 3
    assert widget.buttons["positive"].text().startswith("positive")
    with pytest.raises(ValueError, match="cannot choose 'agree'"):
        widget.choose("agree")
    assert widget.choose("indeterminate").agreement == "no_ai_finding"


def test_the_reader_name_is_asked_once_and_kept_in_the_settings(qtbot, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    asked: list[str] = []

    def fake_get_text(*args, **kwargs):
        asked.append(kwargs.get("text", ""))
        return ("Dr TEST Asked", True)

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(fake_get_text))
    settings = Settings.load()
    widget = ReaderDecisionPanel(name_provider=lambda force: ask_reader_name(None, settings, force, True))
    qtbot.addWidget(widget)
    widget.set_result(analysis(knee_record(), 0.9))
    widget.choose("agree")
    widget.choose("indeterminate")
    assert len(asked) == 1 and Settings.load().reader_name == "Dr TEST Asked"
    assert ReaderDecisionStore().load(widget.key).reader == "Dr TEST Asked"
    assert ask_reader_name(None, settings, dialogs=False) == "Dr TEST Asked" and len(asked) == 1


# --------------------------------------------------------------------------------------------- the window
def make_window(qtbot, reader: str = "Dr TEST Window") -> Any:  # noqa: ANN401
    from asdesk.gui.main_window import MainWindow
    from asdesk.gui.notifier import Notifier
    from asdesk.gui.worker import ModelService

    if not (REPO / "models" / "knee-xray-oa" / "card.json").is_file():
        pytest.skip("the shipped knee pack is not in models/")
    settings = Settings.load()
    settings.default_model = "knee-xray-oa"
    settings.reader_name = reader
    service = ModelService()
    window = MainWindow(settings, service, Notifier())
    window.show_dialogs = False
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(service.sig_models_ready, timeout=WAIT_MS):
        service.start()
    return window


def open_and_analyse(qtbot, window, path: Path) -> Any:  # noqa: ANN401
    with qtbot.waitSignal(window.sig_analysis_shown, timeout=WAIT_MS) as blocker:
        window.open_paths([str(path)])
    return blocker.args[0]


def test_override_survives_a_new_window_and_reaches_the_pdf_and_the_sr(qtbot, tmp_path):
    (knee,) = KNEE
    window = make_window(qtbot)
    outcome = open_and_analyse(qtbot, window, knee)
    ai_positive = outcome.results[0].prediction.positive
    assert not outcome.results[0].refused and window.reader_panel.isEnabled()
    override = "negative" if ai_positive else "positive"
    window.reader_panel.choose(override)
    qtbot.keyClicks(window.reader_panel.note_edit, "TEST override note")
    window.close()                                         # closed before the note's autosave fired
    assert not window.service._thread.isRunning()

    again = make_window(qtbot)                             # a new window instance, as after a restart
    try:
        open_and_analyse(qtbot, again, knee)
        panel_ = again.reader_panel
        assert panel_.buttons[override].isChecked()
        assert panel_.note_edit.toPlainText() == "TEST override note"
        assert "Disagrees with the AI finding" in panel_.status_label.text()
        pdf = tmp_path / "report.pdf"
        with qtbot.waitSignal(again.sig_file_written, timeout=WAIT_MS):
            again.export_report(str(pdf))
        if shutil.which("pdftotext") is not None:
            text = " ".join(subprocess.run(["pdftotext", "-layout", "-f", "1", "-l", "1", str(pdf), "-"],
                                           capture_output=True, text=True, check=True).stdout.split())
            assert f"Reader's conclusion Disagrees with the AI finding: {override}" in text
            assert "Reader: Dr TEST Window · recorded" in text and "TEST override note" in text
            assert "AI finding (decision support)" in text          # the AI finding is shown apart from it
        out = tmp_path / "dicom"
        out.mkdir()
        with qtbot.waitSignal(again.sig_file_written, timeout=WAIT_MS):
            again.export_dicom(str(out))
        (report,) = out.glob("*-sr.dcm")
        names = [str(item.PersonName) for item in _walk(pydicom.dcmread(report).ContentSequence)
                 if item.ValueType == "PNAME"]
        assert names == ["Dr TEST Window^"]
        assert len(list(out.glob("*-sc-*.dcm"))) == 1
    finally:
        again.close()


def test_export_dicom_action_is_in_the_file_menu(qtbot):
    window = make_window(qtbot)
    try:
        assert window.export_dicom_action.shortcut().toString() == "Ctrl+Shift+D"
        file_menu = window.menuBar().actions()[0].menu()
        assert window.export_dicom_action in file_menu.actions()
        window.export_dicom_dialog()                        # no case: a message, no dialog
        assert "Analyse a case before exporting its DICOM" in window.status_label.text()
        assert not window.reader_panel.isEnabled()
    finally:
        window.close()


def _walk(sequence):
    for item in sequence:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)
