"""Start the workstation window: ``asdesk`` with no subcommand, or ``asdesk PATH...``.

The window is on screen before any model runtime is imported: :func:`run_gui` shows it, lets Qt paint it,
and only then asks the model worker thread to choose the device and discover the model packs. Files given on
the command line are read and shown at once; their analysis waits in the worker's queue behind the discovery
and loads the pack it needs first ("Loading model …" in the status bar); the other packs load in the
background afterwards.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

import asdesk
from asdesk.core.logsetup import configure_logging
from asdesk.core.settings import Settings

LOGGER = logging.getLogger(__name__)


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The running ``QApplication``, or a new one named "asdesk".

    Parameters
    ----------
    argv : sequence of str, optional
        Passed to Qt (default ``sys.argv[:1]``).

    Returns
    -------
    QApplication
    """
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setApplicationName("asdesk")
    app.setApplicationDisplayName("asdesk")
    app.setOrganizationName("asdesk")
    app.setApplicationVersion(asdesk.__version__)
    icon = _icon_path()
    if icon is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    return app


def _icon_path() -> Path | None:
    from asdesk.core.paths import resources_dir

    for name in ("asdesk.png", "icon.png", "asdesk.svg", "icons/asdesk.png", "icons/asdesk.svg"):
        candidate = resources_dir() / name
        if candidate.is_file():
            return candidate
    return None


def build_window(paths: Sequence[str] = (), start_models: bool = True,
                 model_directories: Sequence[Path] | None = None) -> object:
    """Create the window and its services (without running the event loop).

    Parameters
    ----------
    paths : sequence of str
        Files or series folders to open once the window is shown.
    start_models : bool
        Start the model worker (TensorFlow import) right after the window is painted.
    model_directories : sequence of Path, optional
        Model folders to use instead of the bundled and user ones.

    Returns
    -------
    asdesk.gui.main_window.MainWindow
        Shown; its ``service`` and ``notifier`` attributes are the model worker and the error notifier.
    """
    from asdesk.gui.main_window import MainWindow
    from asdesk.gui.notifier import Notifier
    from asdesk.gui.worker import ModelService

    app = create_application()
    settings = Settings.load()
    notifier = Notifier(app)
    notifier.install_excepthook()
    preload = [settings.default_model] if settings.default_model else []
    service = ModelService(model_directories, parent=app, preload=preload)
    window = MainWindow(settings, service, notifier)
    window.show()
    window.notifier.info("Loading models…")
    app.processEvents()  # paint the window before the TensorFlow import starts
    if start_models:
        QTimer.singleShot(50, service.start)
    if paths:
        opened = [str(p) for p in paths]
        QTimer.singleShot(0, lambda: window.open_paths(opened))
    return window


def run_gui(paths: list[str]) -> int:
    """Run the workstation window until it is closed.

    Parameters
    ----------
    paths : list of str
        Files or DICOM series folders to open (may be empty).

    Returns
    -------
    int
        The process exit code (0 after a normal close).
    """
    log_file = configure_logging()
    LOGGER.info("asdesk %s window starting (log %s)", asdesk.__version__, log_file)
    app = create_application()
    window = build_window(paths)
    code = int(app.exec())
    window.service.shutdown(5000)  # type: ignore[attr-defined]
    window.notifier.uninstall_excepthook()  # type: ignore[attr-defined]
    QThreadPool.globalInstance().waitForDone(5000)
    LOGGER.info("asdesk window closed (exit code %d)", code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asdesk.gui [PATH...]``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return run_gui(arguments)


if __name__ == "__main__":
    sys.exit(main())
