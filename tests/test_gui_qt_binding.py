"""The Qt binding does not corrupt Python's reference counts when signals reach Python slots.

PySide6-Essentials 6.12.0 dropped one reference to ``True`` on every emission to a Python slot; the window
emits thousands of signals a minute (pyqtgraph's view box alone emits several per zoom step), so a long
session ended in ``Fatal Python error: bool_dealloc``. ``pyproject.toml`` excludes that release; this test
catches it, or a release with the same defect, in whatever binding is installed.
"""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QObject, Signal  # noqa: E402

pytestmark = [pytest.mark.gui]


class _Emitter(QObject):
    sig_object = Signal(object)
    sig_flag = Signal(bool)


@pytest.mark.parametrize("signal_name", ["sig_object", "sig_flag"])
def test_emitting_to_a_python_slot_keeps_the_reference_count_of_true(qapp, signal_name):
    emitter = _Emitter()
    calls = [0]

    def slot(value: object) -> None:  # keeps no reference to the value
        calls[0] += 1

    signal = getattr(emitter, signal_name)
    signal.connect(slot)
    signal.emit(True)  # warm up any one-time caches
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(500):
        signal.emit(True)
        signal.emit(False)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert calls[0] == 1001
    assert after == before, f"500 emissions changed the reference counts of (True, False) by " \
                            f"{after[0] - before[0]:+d}, {after[1] - before[1]:+d}"


def test_pyqtgraph_view_range_changes_keep_the_reference_count_of_true(qapp):
    import pyqtgraph as pg

    view = pg.ViewBox()
    view.setRange(xRange=(0, 10), yRange=(0, 10), padding=0)
    before = sys.getrefcount(True)
    for step in range(200):
        view.setRange(xRange=(0, 10 + step % 7), yRange=(0, 10), padding=0)
    assert abs(sys.getrefcount(True) - before) < 20  # a few cached values may change; 3 per call did not
