"""Time from launch to the first result on screen in the real window (what a clinician waits for).

Usage (on a display, or under Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/first_result.py PATH [--runs 3]

Each run is a fresh process that starts the window exactly as ``asdesk PATH`` does
(:func:`asdesk.gui.app.build_window`: window shown, models loading on the model worker, ``PATH`` read and
analysed) and reports, measured from the first line of the process (before PySide6, pyqtgraph or asdesk
are imported):

* ``window_s``: the window is on screen;
* ``result_s``: the first analysis result is on screen (``MainWindow.sig_analysis_shown``);
* ``status``: the status bar's messages, in order (what the reader was told meanwhile).

``ASDESK_RUNTIME=tensorflow`` measures the TensorFlow runtime instead of ONNX Runtime. A private
``ASDESK_HOME`` is used per run (no saved default model, so the run starts as a first launch does).
"""

from __future__ import annotations

import time

LAUNCHED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_run(path: str, timeout_s: float) -> dict[str, object]:
    """Start the window on ``path`` in this process and return the timings (call in a fresh process)."""
    sys.path.insert(0, str(REPO))
    from PySide6.QtCore import QTimer

    from asdesk.gui.app import build_window, create_application

    app = create_application()
    window = build_window([path])
    summary: dict[str, object] = {"window_s": round(time.perf_counter() - LAUNCHED, 3), "status": []}
    messages: list[str] = summary["status"]  # type: ignore[assignment]
    window.notifier.sig_notice.connect(lambda notice: messages.append(notice.message))

    def shown(_outcome: object) -> None:
        summary["result_s"] = round(time.perf_counter() - LAUNCHED, 3)
        QTimer.singleShot(200, app.quit)

    window.sig_analysis_shown.connect(shown)
    QTimer.singleShot(int(timeout_s * 1000), app.quit)
    app.exec()
    window.close()
    window.service.shutdown(10_000)  # type: ignore[attr-defined]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the measurement ``--runs`` times, each in a fresh process; print the runs and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.path, args.timeout)))
        return 0
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            env = dict(os.environ, ASDESK_HOME=home)
            completed = subprocess.run([sys.executable, __file__, "--child", "--timeout", str(args.timeout),
                                        args.path], env=env, capture_output=True, text=True, check=False)
        line = next((text for text in reversed(completed.stdout.splitlines()) if text.startswith("{")), "")
        if not line:
            print(completed.stdout, completed.stderr, file=sys.stderr)
            return 2
        run = json.loads(line)
        run["stderr_lines"] = len([text for text in completed.stderr.splitlines() if text.strip()])
        runs.append(run)
        print(json.dumps(run))
    results = [float(run["result_s"]) for run in runs if "result_s" in run]
    windows = [float(run["window_s"]) for run in runs]
    print(f"median window {statistics.median(windows):.2f} s; median first result "
          + (f"{statistics.median(results):.2f} s ({min(results):.2f}-{max(results):.2f})" if results
             else "never (timeout)") + f" over {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
