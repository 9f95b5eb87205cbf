"""Screenshots of the reading-room defects (issue 13) in the real window, for a person to look at.

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tests/gui_xvfb/run_defects.py --prefix shots/defects-after

What a reader does, through the window's own objects: open a knee radiograph (results panel at the top,
then scrolled down), open the SI-joint STIR series (refused by the bundled pack's content gate; "Analyse
anyway"), go to the knee case and back to the series (slice 1 shown), look at an intermediate stage of the
model input, hover a menu entry (a status-bar tip), choose the "Auto" window preset, then screen 27 knee
radiographs and start a second run. Each step is saved as ``<prefix>-<step>.png``; a JSON summary is printed.
Needs the bundled packs (knee-xray-oa, sij-mri-stir-inflammation) and ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
DATA = HERE.parents[2] / "shared" / "data"
KNEE = DATA / "knee-xray-kl" / "val" / "0" / "9006140L.png"
STIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"


def main(argv: list[str] | None = None) -> int:
    """Drive the window through the steps; return 0 when every step ran."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="screenshots are <prefix>-<step>.png")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    Path(args.prefix).parent.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QScrollArea

    from asdesk.core.logsetup import configure_logging
    from asdesk.gui.app import build_window, create_application

    configure_logging()
    app = create_application()
    window = build_window([str(KNEE)])
    window.resize(1560, 960)
    window.move(10, 10)
    window.show_dialogs = False
    scratch = Path(tempfile.mkdtemp(prefix="asdesk-defects-"))
    summary: dict[str, object] = {"shots": []}
    steps: list = []
    scroll = window.results_panel.findChild(QScrollArea)

    def shot(name: str, widget: object = None) -> None:
        path = f"{args.prefix}-{name}.png"
        (widget or window).grab().save(path)  # type: ignore[union-attr]
        summary["shots"].append(path)  # type: ignore[union-attr]

    def next_step(delay_ms: int = 700) -> None:
        QTimer.singleShot(delay_ms, lambda: steps.pop(0)() if steps else None)

    def on_shown(_outcome: object) -> None:
        summary.setdefault("first_result_s", round(time.perf_counter() - STARTED, 2))
        next_step()

    def knee_shown() -> None:
        shot("knee-top", window.results_dock)
        scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
        app.processEvents()
        shot("knee-scrolled", window.results_dock)
        window.open_paths([str(STIR)])

    def stir_refused() -> None:
        shot("stir-refused", window.results_dock)
        window.analyse_current(force=True)  # "Analyse anyway"

    def stir_forced() -> None:
        shot("stir-forced", window.results_dock)
        shot("window-stir")
        window.sig_analysis_shown.disconnect(on_shown)  # showing a case again re-emits it
        window.case_list.setCurrentRow(0)
        app.processEvents()
        window.case_list.setCurrentRow(1)
        app.processEvents()
        next_step(500)

    def stir_back() -> None:
        shot("stir-back", window.results_dock)
        shot("stir-back-full", scroll.widget())
        summary["finding"] = window.results_panel.finding_label.text()
        window.model_input_view.stage_box.setCurrentIndex(0)
        app.processEvents()
        shot("model-input-stage0", window.model_input_dock)
        window.statusBar().showMessage("Open image files (DICOM with or without extension, PNG, JPEG, TIFF)")
        app.processEvents()
        shot("statusbar-tip", window.statusBar())
        window.statusBar().clearMessage()
        window.viewer.apply_preset("Auto (1–99 %)")
        app.processEvents()
        shot("viewer", window.viewer)
        shot("cases", window.cases_dock)
        folder = scratch / "knees"
        folder.mkdir()
        for file in sorted((DATA / "knee-xray-kl" / "val" / "2").glob("*.png"))[:27]:
            shutil.copy(file, folder)
        window.screening.csv_edit.setText(str(scratch / "screen.csv"))
        window.screen_folder(folder)
        window.screening.model_box.setCurrentIndex(window.screening.model_box.findData("knee-xray-oa"))
        window.service.sig_screen_done.connect(lambda _outcome: next_step(400))
        window.screening.start_button.click()

    def screened() -> None:
        shot("screening-finished")
        summary["button_after_run"] = window.screening.start_button.text()
        window.screening.start_button.click()  # a second run
        app.processEvents()
        shot("screening-second-run", window.screening)
        summary["progress_at_second_start"] = window.screening.progress.text()

    def second_done() -> None:
        summary["status"] = window.status_label.text()
        window.close()
        app.quit()

    steps.extend([knee_shown, stir_refused, stir_forced, stir_back, screened, second_done])
    window.sig_analysis_shown.connect(on_shown)
    QTimer.singleShot(int(args.timeout * 1000), app.quit)
    app.exec()
    window.service.shutdown(10_000)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0 if not steps else 1


if __name__ == "__main__":
    sys.exit(main())
