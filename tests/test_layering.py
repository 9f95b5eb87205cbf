"""DESIGN.md layering that import-linter cannot express: only asdesk.gui imports Qt widgets or pyqtgraph,
and PySide6 appears outside asdesk.gui only in asdesk.report (QtGui/QtCore, for PDFs)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asdesk"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_gui_imports_widgets_and_pyqtgraph():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "gui":
            continue
        for name in _imports(path):
            if name.startswith(("PySide6.QtWidgets", "pyqtgraph")):
                offenders.append(f"{relative}: {name}")
            elif name.startswith("PySide6") and relative.parts[0] != "report":
                offenders.append(f"{relative}: {name}")
            elif relative.parts[0] == "report" and name.startswith("PySide6.") and not name.startswith(
                    ("PySide6.QtGui", "PySide6.QtCore")):
                offenders.append(f"{relative}: {name}")
    assert offenders == []


def test_the_check_sees_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import pyqtgraph as pg\nfrom PySide6.QtWidgets import QLabel\n", encoding="utf-8")
    assert {"pyqtgraph", "PySide6.QtWidgets", "PySide6.QtWidgets.QLabel"} <= _imports(sample)
