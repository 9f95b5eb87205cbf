"""Static checks of the installer files (the bundle itself is built by ``installer/build.sh``, not here).

* what the spec excludes is never imported by the parts of asdesk that the bundle runs;
* the spec copies the package metadata that pylibjpeg's entry points and Help -> About need;
* the scripts parse, the desktop entry names the icon, the icon is a 256 x 256 PNG and a valid SVG.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO

INSTALLER = REPO / "installer"
SPEC = INSTALLER / "asdesk.spec"
PACKAGE = REPO / "asdesk"
# Code the bundle does not run: training (its extras are excluded) and the NIfTI reader used only by training.
NOT_BUNDLED = ("training/", "io/nifti.py")
# The TensorFlow engine, bundled but never run by the bundle (its packs have model.onnx, issue 10): these modules
# import TensorFlow/Keras inside functions only; create_engine refuses a pack without model.onnx when TensorFlow is
# missing, with a message (tests/test_lean_runtime.py checks that the analysis path never imports them).
TENSORFLOW_ENGINE = ("inference/engine.py", "inference/gradcam.py", "inference/runtime.py",
                     "inference/content_gate.py", "inference/pack.py",
                     "inference/stn_layers.py",  # the Spatial Transformer layer: loaded only with model.keras
                     "inference/side_layers.py")  # the oedema U-Net's joint-splitting layers: likewise
TRAINING_STACK = ("tensorflow", "keras")


def _spec_list(name: str) -> list[str]:
    """The literal list assigned to ``name`` at the top level of the spec."""
    tree = ast.parse(SPEC.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{name} is not assigned in {SPEC}")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _excluded(name: str, excludes: list[str]) -> str | None:
    return next((e for e in excludes if name == e or name.startswith(e + ".")), None)


def test_the_spec_excludes_what_the_brief_lists():
    excludes = set(_spec_list("EXCLUDES"))
    required = {"sklearn", "nibabel", "matplotlib", "pytest", "ruff", "importlinter", "tensorboard", "libjpeg",
                "PySide6.QtWebEngineCore", "PySide6.Qt3DCore", "PySide6.QtMultimedia", "PySide6.QtQuick",
                "PySide6.QtQml"}
    assert required <= excludes, sorted(required - excludes)


def test_bundled_code_never_imports_an_excluded_module():
    excludes = _spec_list("EXCLUDES")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(NOT_BUNDLED):
            continue
        offenders += [f"{relative}: {name} (excluded as {hit})" for name in sorted(_imports(path))
                      if (hit := _excluded(name, excludes))
                      and not (relative in TENSORFLOW_ENGINE and hit in TRAINING_STACK)]
    assert offenders == []


def test_the_check_sees_an_excluded_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from scipy import ndimage\nimport PySide6.QtNetwork\n", encoding="utf-8")
    excludes = _spec_list("EXCLUDES")
    assert {n for n in _imports(sample) if _excluded(n, excludes)} >= {"scipy", "PySide6.QtNetwork"}


def test_the_decoders_are_hidden_imports_with_their_metadata():
    hidden = set(_spec_list("HIDDEN_IMPORTS"))
    assert {"openjpeg", "rle", "jpeg_ls", "gdcm", "pylibjpeg", "asdesk.selftest"} <= hidden
    distributions = set(_spec_list("METADATA"))
    # pylibjpeg discovers its decoders through these packages' entry points
    assert {"pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls", "python-gdcm"} <= distributions
    for name in distributions:  # copy_metadata fails the build for a distribution that is not installed
        metadata.distribution(name)
    for name in ("pylibjpeg-openjpeg", "pylibjpeg-rle"):
        assert metadata.distribution(name).entry_points, f"{name} declares no entry points"


def test_about_dialog_libraries_have_their_metadata_bundled():
    pytest.importorskip("PySide6.QtWidgets")
    from asdesk.gui.about import LIBRARIES

    normalise = lambda name: name.lower().replace("_", "-")  # noqa: E731
    bundled = {normalise(name) for name in _spec_list("METADATA")}
    assert {normalise(name) for name, _purpose, _licence in LIBRARIES} <= bundled


def test_the_spec_entry_calls_asdesk_main():
    text = SPEC.read_text(encoding="utf-8")
    assert "from asdesk.__main__ import main" in text and "sys.exit(main())" in text
    assert "(ROOT / \"resources\")" in text and "ROOT / \"models\"" in text


@pytest.mark.parametrize("script", ["build.sh", "install-linux.sh"])
def test_the_shell_scripts_parse(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    completed = subprocess.run([bash, "-n", str(INSTALLER / script)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_desktop_entry_and_icons():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(INSTALLER / "asdesk.desktop", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Icon"] == "asdesk"
    assert section["Exec"].split()[0] == "asdesk" and section["Terminal"] == "false"
    png = (REPO / "resources" / "icons" / "asdesk.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (256, 256)
    svg = ElementTree.parse(REPO / "resources" / "icons" / "asdesk.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"
