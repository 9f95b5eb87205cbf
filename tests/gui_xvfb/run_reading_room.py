"""Read a study in the real window on a real X server (Xvfb): STIR and T1 side by side, measured, screenshot.

Usage (what ``tests/test_gui_xvfb_reading_room.py`` runs)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tests/gui_xvfb/run_reading_room.py \\
        --out-dir shots/ STIR_FOLDER T1_FOLDER [--radiograph FILE]

The window is built as ``run_gui`` builds it (:func:`asdesk.gui.app.build_window`: models load in the
background, the series are read on the thread pool and analysed when the models are ready). When both series
are open, the driver does what a reader would, through real mouse and key events: select the STIR series in the
study browser, press S (side by side: the T1 appears beside it, slices linked by position), press Down with the
study browser focused (the slice moves, not the case), press M and drag a ruler across the sacrum, press R and
drag an ellipse ROI on the T1. It then waits for the analysis to be on screen (or refused), saves
``QWidget.grab()`` of the window as ``viewer-side-by-side.png`` and, with ``--radiograph``, opens that file and
saves ``viewer-radiograph.png`` (orientation from PatientOrientation, a ruler without pixel spacing). It prints a
JSON summary (what the window showed: corner texts, markers, linked slices, measurements) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0915 - one scripted session
    """Drive the window; return 0 when every step ran."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stir", type=Path)
    parser.add_argument("t1", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--radiograph", type=Path)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--width", type=int, default=1560)
    parser.add_argument("--height", type=int, default=960)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QPointF, Qt, QTimer
    from PySide6.QtTest import QTest

    from asdesk.core.logsetup import configure_logging
    from asdesk.gui.app import build_window, create_application

    configure_logging()
    app = create_application()
    window = build_window([str(args.stir), str(args.t1)])
    window.resize(args.width, args.height)
    window.move(10, 10)
    summary: dict[str, object] = {"platform": app.platformName()}
    started = time.perf_counter()

    def wait_until(condition, timeout: float) -> bool:  # noqa: ANN001
        end = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > end:
                return False
            QTest.qWait(50)
        return True

    def drag(viewer, start: tuple[float, float], end: tuple[float, float]) -> None:  # noqa: ANN001
        port = viewer.graphics.viewport()

        def at(x: float, y: float):  # noqa: ANN202
            return viewer.graphics.mapFromScene(viewer.view.mapViewToScene(QPointF(x, y)))

        a, b = at(*start), at(*end)
        QTest.mousePress(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
        for step in range(1, 16):
            QTest.qWait(20)
            QTest.mouseMove(port, a + (b - a) * (step / 15))
        QTest.mouseRelease(port, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
        QTest.qWait(50)

    def key(code: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
        """Press a key as the keyboard does: into the widget that has the focus."""
        QTest.keyClick(app.focusWidget() or window, code, modifier)
        QTest.qWait(30)

    def session() -> None:
        try:
            run()
            summary["status"] = "ok"
        except Exception as error:  # noqa: BLE001 - reported in the summary, exit status 1
            summary["error"] = f"{type(error).__name__}: {error}"
        summary["notices"] = [n.message for n in window.notifier.history if n.level == "error"]
        window.close()
        app.quit()

    def run() -> None:
        if not wait_until(lambda: len(window.cases) == 2, args.timeout):
            raise TimeoutError("the two series were not open in time")
        window.activateWindow()  # Xvfb has no window manager: make the window active as a click would
        if not QTest.qWaitForWindowActive(window, 5000):
            raise RuntimeError("the window did not become active (window shortcuts need it)")
        browser = window.case_list
        stir_row = next(i for i, case in enumerate(window.cases) if Path(case.source) == args.stir)
        # Read as a reader does: once the result (or the refusal) is on screen, which also moves the viewer to
        # the series' most telling slice and may resize the docks.
        wait_until(lambda: window.cases[stir_row].outcome is not None and not window.service.busy, args.timeout)
        QTest.qWait(500)
        browser.setCurrentRow(stir_row)
        wait_until(lambda: window.case is window.cases[stir_row], 10)
        browser.setFocus()
        QTest.qWait(30)
        summary["focus_for_keys"] = type(app.focusWidget()).__name__
        key(Qt.Key.Key_S)  # side by side
        pane = window.viewer_pane
        if not pane.side_by_side:
            raise RuntimeError("S did not show the T1 beside the STIR")
        window.viewer.set_slice(6)
        browser.setFocus()
        key(Qt.Key.Key_Down)  # the case list is focused: the slice moves
        primary, secondary = window.viewer, pane.secondary
        summary["slice_after_down"] = primary.current_index + 1
        summary["case_after_down"] = window.case.name
        summary["linked"] = {"stir_slice": primary.current_index + 1, "t1_slice": secondary.current_index + 1,
                             "stir_position_mm": primary.current_record.metadata.slice_position_mm,
                             "t1_position_mm": secondary.current_record.metadata.slice_position_mm,
                             "label": pane.link_label.text()}
        key(Qt.Key.Key_M)  # ruler
        drag(primary, (70.5, 150.5), (186.5, 150.5))
        key(Qt.Key.Key_R)  # ellipse ROI
        drag(secondary, (150.5, 160.5), (185.5, 190.5))
        summary["focus_after_drawing"] = type(app.focusWidget()).__name__
        key(Qt.Key.Key_Escape)  # leave the tool
        summary["measurements"] = {"stir": [m.text() for m in primary.measurements.measurements()],
                                   "t1": [m.text() for m in secondary.measurements.measurements()]}
        summary["tool_after_escape"] = primary.tool
        QTest.qWait(800)
        summary["corners"] = {"stir": primary.corner_texts(), "t1": secondary.corner_texts()}
        edges = primary.annotations.edges
        summary["markers"] = None if edges is None else [edges.left, edges.right, edges.top, edges.bottom]
        summary["tree"] = [browser.topLevelItem(i).text(0) for i in range(browser.topLevelItemCount())]
        out = args.out_dir / "viewer-side-by-side.png"
        window.grab().save(str(out))
        summary["side_by_side_png"] = str(out)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        if args.radiograph is not None:
            window.viewer_actions.side_by_side_action.trigger()
            count = len(window.cases)
            window.open_paths([str(args.radiograph)])
            if not wait_until(lambda: len(window.cases) == count + 1 and window.case is window.cases[-1], 60):
                raise TimeoutError("the radiograph was not open in time")
            key(Qt.Key.Key_M)
            height, width = window.viewer.current_record.shape
            drag(window.viewer, (width * 0.3, height * 0.55), (width * 0.7, height * 0.55))
            key(Qt.Key.Key_Escape)
            QTest.qWait(800)
            edges = window.viewer.annotations.edges
            summary["radiograph"] = {
                "markers": None if edges is None else [edges.left, edges.right, edges.top, edges.bottom,
                                                       edges.source],
                "corners": window.viewer.corner_texts(),
                "measurements": [m.text() for m in window.viewer.measurements.measurements()]}
            out = args.out_dir / "viewer-radiograph.png"
            window.grab().save(str(out))
            summary["radiograph_png"] = str(out)

    QTimer.singleShot(0, session)
    app.exec()
    window.service.shutdown(10_000)
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
