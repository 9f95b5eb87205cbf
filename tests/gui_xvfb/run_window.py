"""Drive the real asdesk window on a real X server (Xvfb) and screenshot it with the Grad-CAM overlay.

Usage (what ``tests/test_gui_xvfb.py`` runs)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tests/gui_xvfb/run_window.py \\
        --out window.png [--root-out screen.png] PATH...

The window is built exactly as ``run_gui`` builds it (:func:`asdesk.gui.app.build_window`: window shown,
then TensorFlow loaded on the model worker, the paths read on the thread pool and analysed when the models
are ready). When the analysis is on screen, the driver shows the slice with the highest probability with
the overlay on, lets Qt paint, saves ``QWidget.grab()`` of the window (and, with ``--root-out``, the whole
X screen through ImageMagick's ``import -window root``), prints a JSON summary and closes the window.

If no model pack is installed (bundled or in ``$ASDESK_HOME/data/models``), a tiny REAL pack (MobileNetV2,
random weights, 128 x 128, TEST DATA) is written into the user model folder first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def ensure_pack(size: int) -> str:
    """Install the tiny pack unless some pack is installed; return a description."""
    from asdesk.core.paths import user_models_dir
    from asdesk.inference import discover_packs

    packs, _errors = discover_packs()
    if packs:
        return ", ".join(pack.card.id for pack in packs)
    from tiny_pack import build_tiny_pack

    build_tiny_pack(user_models_dir() / "xvfb-tiny-pack", "xvfb-tiny-pack", size)
    return "xvfb-tiny-pack (built)"


def main(argv: list[str] | None = None) -> int:
    """Run the window, screenshot it, return 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--out", required=True, type=Path, help="PNG of the window (QWidget.grab)")
    parser.add_argument("--root-out", type=Path, help="PNG of the whole X screen (import -window root)")
    parser.add_argument("--pack-size", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--width", type=int, default=1560)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--default-model", default="",
                        help="save this pack as the default model first (as the reader would in the window)")
    args = parser.parse_args(argv)

    from asdesk.core.logsetup import configure_logging

    configure_logging()
    packs = ensure_pack(args.pack_size)
    if args.default_model:
        from asdesk.core.settings import Settings

        Settings(default_model=args.default_model).save()
    from PySide6.QtCore import QTimer

    from asdesk.gui.app import build_window, create_application

    started = time.perf_counter()
    app = create_application()
    window = build_window(args.paths)
    shown_after = time.perf_counter() - started
    window.resize(args.width, args.height)
    window.move(10, 10)
    summary: dict[str, object] = {"packs": packs, "platform": app.platformName(),
                                  "window_shown_s": round(shown_after, 2)}
    exit_code = [2]

    def finish() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(args.out)):
            summary["error"] = f"could not save {args.out}"
        elif args.root_out is not None and shutil.which("import"):
            subprocess.run(["import", "-window", "root", str(args.root_out)], check=False, timeout=60)
        summary["status"] = window.status_label.text()
        summary["notices"] = [n.message for n in window.notifier.history if n.level != "info"]
        exit_code[0] = 0 if "error" not in summary else 1
        window.close()
        app.quit()

    def on_analysis(outcome: object) -> None:
        results = outcome.results  # type: ignore[attr-defined]
        best = max(range(len(results)), key=lambda i: results[i].prediction.probability)
        window.viewer.set_slice(best)
        if not window.overlay_action.isChecked():
            window.overlay_action.trigger()
        series = outcome.series  # type: ignore[attr-defined]
        summary.update({
            "result_s": round(time.perf_counter() - started, 2),
            "model": f"{outcome.card.id} {outcome.card.version}",  # type: ignore[attr-defined]
            "device": outcome.device,  # type: ignore[attr-defined]
            "images": len(results),
            "slice_shown": best + 1,
            "slice_probability": round(results[best].prediction.probability, 4),
            "slice_finding": results[best].prediction.finding,
            "study_probability": None if series is None else round(series.study_probability, 4),
            "study_finding": None if series is None else series.study_prediction.finding,
            "overlay_visible": window.viewer.has_overlay(),
        })
        QTimer.singleShot(1500, finish)

    def on_timeout() -> None:
        summary["error"] = f"no analysis on screen after {args.timeout} s"
        summary["notices"] = [n.message for n in window.notifier.history]
        window.close()
        app.quit()

    window.sig_analysis_shown.connect(on_analysis)
    QTimer.singleShot(int(args.timeout * 1000), on_timeout)
    app.exec()
    window.service.shutdown(10_000)
    print(json.dumps(summary, indent=2))
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
