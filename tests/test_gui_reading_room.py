"""The main window as a reading room (pytest-qt, offscreen): the study browser, STIR and T1 side by side with
slices linked by position, slice keys that belong to the viewer wherever the focus is, the viewer's actions.

Real data: the STIR and T1 series of one SI-joint study (../shared/data/sij-mri-dicom/patient1). No model runs:
the window's automatic analysis of an opened case is switched off here (these tests are about reading; the
analysis path has its own tests in test_gui_window.py), so no model pack loads.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from conftest import SHARED_DATA, requires_shared  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QLineEdit, QSpinBox  # noqa: E402

PATIENT1 = SHARED_DATA / "sij-mri-dicom" / "patient1"
WAIT_MS = 60_000

pytestmark = [pytest.mark.gui, requires_shared("data/sij-mri-dicom")]


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: ANN401
    from asdesk.core.settings import Settings
    from asdesk.gui.main_window import MainWindow
    from asdesk.gui.notifier import Notifier
    from asdesk.gui.worker import ModelService

    monkeypatch.setenv("ASDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(MainWindow, "analyse_current", lambda self, force=False: None)
    main = MainWindow(Settings.load(), ModelService(), Notifier())
    main.show_dialogs = False
    qtbot.addWidget(main)
    main.resize(1400, 900)
    main.show()
    qtbot.waitExposed(main)
    yield main
    main.close()


def open_series(qtbot, window, *names: str) -> None:
    for name in names:
        with qtbot.waitSignal(window.sig_case_shown, timeout=WAIT_MS):
            window.open_paths([PATIENT1 / name])


def case_row(window, name: str) -> int:
    return next(i for i, case in enumerate(window.cases) if case.name == name)


def test_study_browser_groups_the_series_of_one_study(qtbot, window):
    open_series(qtbot, window, "STIR")
    browser = window.case_list
    assert browser.count() == 1 and browser.study_nodes() == []  # one series: no study node yet
    open_series(qtbot, window, "T1")
    assert browser.count() == 2
    (study,) = browser.study_nodes()
    assert study.childCount() == 2 and study.text(0).startswith("02-01 · 2008-02-22") and "2 series" in study.text(0)
    assert {study.child(i).text(0) for i in range(2)} == {"STIR", "T1"}
    # Rows are cases in the order opened, wherever they sit in the tree; the window's text updates reach them.
    browser.item(case_row(window, "STIR")).setText("STIR — TEST 0.50")
    assert "STIR — TEST 0.50" in {study.child(i).text(0) for i in range(2)}
    assert browser.currentRow() == case_row(window, "T1") and window.case.name == "T1"  # the last opened
    with qtbot.waitSignal(window.sig_case_shown, timeout=WAIT_MS):
        browser.setCurrentItem(next(study.child(i) for i in range(2) if study.child(i).text(0).startswith("STIR")))
    assert window.case is window.cases[case_row(window, "STIR")] and window.viewer.records == window.case.records


def test_stir_and_t1_side_by_side_with_slices_linked_by_position(qtbot, window):
    open_series(qtbot, window, "STIR", "T1")
    # Order T1 backwards and drop its first four slices: linking by index would now be wrong.
    t1 = window.cases[case_row(window, "T1")]
    t1.records = list(reversed(t1.records[4:]))
    with qtbot.waitSignal(window.sig_case_shown, timeout=WAIT_MS):
        window.case_list.setCurrentRow(case_row(window, "STIR"))
    pane = window.viewer_pane
    window.viewer_actions.side_by_side_action.trigger()
    assert pane.side_by_side and window.viewer_actions.side_by_side_action.isChecked()
    assert pane.secondary.isVisible() and pane.secondary.records == t1.records
    assert pane.series_box.currentText() == "11: CORO T1"
    stir = window.viewer.records
    for k in (5, 9, 14, 2):
        window.viewer.set_slice(k)
        shown = pane.secondary.current_record.metadata
        nearest = min(t1.records, key=lambda r: abs(r.metadata.slice_position_mm - stir[k].metadata.slice_position_mm))
        assert shown.sop_instance_uid == nearest.metadata.sop_instance_uid
        if k >= 4:
            assert shown.slice_position_mm == pytest.approx(stir[k].metadata.slice_position_mm, abs=1e-3)
            assert "0.0 mm apart" in pane.link_label.text()
    # Scrolling the T1 moves the STIR to the same position.
    pane.secondary.set_slice(0)  # T1 reversed: its last slice
    assert window.viewer.current_record.metadata.slice_position_mm == pytest.approx(
        t1.records[0].metadata.slice_position_mm, abs=1e-3)
    # Both viewports carry corner text and markers; tools and invert apply to both.
    assert pane.secondary.corner_texts()["top_right"][-1] == "Se 11: CORO T1"
    assert pane.secondary.annotations.edges.bottom == "FP"
    window.viewer_actions.invert_action.trigger()
    assert window.viewer.inverted and pane.secondary.inverted
    window.viewer_actions.ruler_action.trigger()
    assert window.viewer.tool == pane.secondary.tool == "ruler"
    # Showing the T1 case in the main viewer puts the STIR beside it.
    with qtbot.waitSignal(window.sig_case_shown, timeout=WAIT_MS):
        window.case_list.setCurrentRow(case_row(window, "T1"))
    assert window.viewer.records == t1.records and pane.secondary.records == stir
    window.viewer_actions.side_by_side_action.trigger()
    assert not pane.side_by_side and not pane.secondary.isVisible()


def test_side_by_side_needs_a_second_series_of_the_study(qtbot, window):
    open_series(qtbot, window, "STIR")
    with qtbot.waitSignal(window.notifier.sig_notice, timeout=5000) as blocker:
        window.viewer_actions.side_by_side_action.trigger()
    assert "another series of the same study" in blocker.args[0].message
    assert not window.viewer_pane.side_by_side and not window.viewer_actions.side_by_side_action.isChecked()


def test_slice_keys_move_the_slice_with_the_case_list_focused(qtbot, window):
    open_series(qtbot, window, "STIR", "T1")
    shown = window.case
    browser = window.case_list
    browser.setFocus()
    window.viewer.set_slice(3)
    qtbot.keyClick(browser, Qt.Key.Key_Down)
    assert window.viewer.current_index == 4 and window.case is shown  # the slice moved, not the case
    qtbot.keyClick(browser, Qt.Key.Key_Up)
    qtbot.keyClick(browser, Qt.Key.Key_Up)
    assert window.viewer.current_index == 2 and window.case is shown
    qtbot.keyClick(browser, Qt.Key.Key_PageDown)
    assert window.viewer.current_index == 7
    qtbot.keyClick(browser, Qt.Key.Key_End)
    assert window.viewer.current_index == 14
    qtbot.keyClick(browser, Qt.Key.Key_Home)
    assert window.viewer.current_index == 0 and window.case is shown
    # Text entry keeps its keys (a line edit and a spin box placed in the window for the test), even those it
    # does not use itself (a line edit passes Up/Down on to its parent).
    window.viewer.set_slice(5)
    line_edit, spin_box = QLineEdit("text"), QSpinBox()
    for entry in (line_edit, spin_box):
        window.statusBar().addWidget(entry)
        entry.show()
    line_edit.setFocus()
    qtbot.waitUntil(line_edit.hasFocus, timeout=2000)
    for key in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageDown, Qt.Key.Key_End):
        qtbot.keyClick(line_edit, key)
    assert window.viewer.current_index == 5
    spin_box.setFocus()
    qtbot.waitUntil(spin_box.hasFocus, timeout=2000)
    qtbot.keyClick(spin_box, Qt.Key.Key_Up)
    assert spin_box.value() == 1 and window.viewer.current_index == 5  # the spin box took the Up key
    # Esc leaves a measurement tool (rather than cancelling the analysis) wherever the focus is.
    window.viewer_actions.ruler_action.trigger()
    browser.setFocus()
    qtbot.keyClick(browser, Qt.Key.Key_Escape)
    assert window.viewer.tool is None and not window.viewer_actions.ruler_action.isChecked()
    # The screening tab keeps the keys for its own table.
    window.tabs.setCurrentWidget(window.screening)
    browser.setFocus()
    qtbot.keyClick(browser, Qt.Key.Key_Down)
    assert window.viewer.current_index == 5


def test_viewer_actions_annotations_and_tools(qtbot, window):
    open_series(qtbot, window, "STIR")
    window.viewer.graphics.setFocus()
    actions = window.viewer_actions
    assert window.viewer.annotations.isVisible()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_A)
    assert not window.viewer.annotations.isVisible() and not actions.annotations_action.isChecked()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_A)
    assert window.viewer.annotations.isVisible()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_I)
    assert window.viewer.inverted and "Inverted" in window.viewer.corner_texts()["bottom_right"]
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_M)
    assert window.viewer.tool == "ruler" and actions.ruler_action.isChecked()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_R)
    assert window.viewer.tool == "ellipse" and not actions.ruler_action.isChecked()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_R, Qt.KeyboardModifier.ShiftModifier)
    assert window.viewer.tool == "rectangle" and actions.rectangle_action.isChecked()
    actions.rectangle_action.trigger()  # unchecking the tool: back to panning
    assert window.viewer.tool is None
