"""The workstation window (PySide6 + pyqtgraph): the only package that imports Qt widgets.

Importing this package does not import Qt; :func:`run_gui` does.
"""

from __future__ import annotations

__all__ = ["run_gui"]


def run_gui(paths: list[str]) -> int:
    """Open the workstation window (see :func:`asdesk.gui.app.run_gui`)."""
    from asdesk.gui.app import run_gui as _run_gui

    return _run_gui(paths)
