"""Screen a folder from the real window's File menu on a real X server (Xvfb), and check the CSV.

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python tests/gui_xvfb/run_screening.py --model knee-xray-oa --out-dir shots/ \\
        ../shared/data/knee-xray-kl/val

What a person would do, through the window's own objects, once the models are loaded: File → Screen folder…
(the folder dialog answers with FOLDER), choose the model, press *Start screening*. While it runs, a 20 ms Qt
timer records how late the event loop answers (the window's responsiveness); a screenshot is taken part-way
and at the end. Then ``asdesk.tasks.screen_folder`` (what ``asdesk screen`` runs) screens the same folder into
a second CSV, and the two are compared row by row (all columns but the timestamp). A JSON summary is printed;
the exit status is 0 when the run finished, the CSVs are equal and the event loop never stalled for more than
``--max-gap-ms``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def csv_content(path: Path) -> list[tuple[str, ...]]:
    """The CSV's rows without the timestamp column, sorted."""
    with path.open(encoding="utf-8", newline="") as stream:
        return sorted(tuple(v for k, v in row.items() if k != "timestamp") for row in csv.DictReader(stream))


def main(argv: list[str] | None = None) -> int:
    """Run the screening through the window; return 0 when every check holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", required=True, help="model pack id")
    parser.add_argument("--out-dir", type=Path, required=True, help="screenshots and CSVs go here")
    parser.add_argument("--max-gap-ms", type=float, default=250.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    from event_loop import EventLoopGapMeter
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QFileDialog

    from asdesk.core.logsetup import configure_logging
    from asdesk.gui.app import build_window, create_application

    configure_logging()
    app = create_application()
    window = build_window([])
    window.resize(1560, 960)
    window.move(10, 10)
    gui_csv = args.out_dir / "gui-screen.csv"
    gui_csv.unlink(missing_ok=True)
    summary: dict[str, object] = {"folder": str(args.folder), "model": args.model}
    rows: list[object] = []
    meter = EventLoopGapMeter(20)
    started = time.perf_counter()

    def start_from_the_menu() -> None:
        # File → Screen folder…: the folder dialog answers with the folder, as a user choosing it would.
        original = QFileDialog.getExistingDirectory
        QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(args.folder))  # type: ignore[method-assign]
        try:
            window.screen_action.trigger()
        finally:
            QFileDialog.getExistingDirectory = original  # type: ignore[method-assign]
        window.screening.csv_edit.setText(str(gui_csv))
        index = window.screening.model_box.findData(args.model)
        if index < 0:
            summary["error"] = f"model {args.model!r} is not offered in the screening view"
            app.quit()
            return
        window.screening.model_box.setCurrentIndex(index)
        meter.start()
        window.screening.start_button.click()

    def on_row(row: object) -> None:
        rows.append(row)
        if len(rows) == 300:
            window.grab().save(str(args.out_dir / "screening-running.png"))

    def on_done(outcome: object) -> None:
        meter.stop()
        summary.update({
            "seconds": round(time.perf_counter() - started, 1),
            "cancelled": outcome.cancelled,  # type: ignore[attr-defined]
            "message": outcome.message,  # type: ignore[attr-defined]
            "table_rows": window.screening.table_model.rowCount(),
            "rows_signalled": len(rows),
        })
        QTimer.singleShot(500, finish)

    def finish() -> None:
        window.grab().save(str(args.out_dir / "screening-done.png"))
        window.close()
        app.quit()

    window.service.sig_screen_row.connect(on_row)
    window.service.sig_screen_done.connect(on_done)
    # The packs are listed once the model worker has loaded TensorFlow and the cards.
    window.service.sig_models_ready.connect(lambda *_: QTimer.singleShot(200, start_from_the_menu))
    QTimer.singleShot(int(args.timeout * 1000), app.quit)
    app.exec()
    window.service.shutdown(10_000)
    if meter.gaps:
        ordered = sorted(meter.gaps)
        summary["event_loop_gap_ms"] = {"median": ordered[len(ordered) // 2], "max": ordered[-1],
                                        "ticks": len(ordered)}
    ok = "error" not in summary and summary.get("cancelled") is False and gui_csv.is_file()
    if ok:
        from asdesk.tasks import screen_folder

        with tempfile.TemporaryDirectory() as scratch:
            reference = Path(scratch) / "cli-screen.csv"
            screen_folder(args.folder, reference, model_id=args.model)
            summary["csv_rows"] = len(csv_content(gui_csv))
            summary["csv_equal_to_asdesk_screen"] = csv_content(gui_csv) == csv_content(reference)
        ok = bool(summary["csv_equal_to_asdesk_screen"]) and summary["event_loop_gap_ms"]["max"] < args.max_gap_ms  # type: ignore[index]
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
