"""The analysis path needs no TensorFlow and no OpenCV: ``asdesk analyze``, ``screen``, the window's modules and
``--self-test`` run a pack with ``model.onnx`` in ONNX Runtime, checked in a fresh interpreter (``sys.modules``).
OpenCV (``cv2``) is for training and tests only: the installer leaves it out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("onnxruntime", reason="needs onnxruntime (a runtime dependency)")

TRAINING_ONLY = ("tensorflow", "keras", "tf2onnx", "onnx", "cv2")

SCRIPT = """
import json, sys
from asdesk.cli import main
status = main(sys.argv[1:])
import asdesk.gui.app, asdesk.gui.main_window, asdesk.gui.worker  # the window's modules, imported by the window
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(TRAINING_ONLY))
print("MODULES " + json.dumps({"status": status, "loaded": loaded}))
""".replace("TRAINING_ONLY", repr(TRAINING_ONLY))


def _run(tmp_path: Path, *arguments: str) -> dict:
    env = {**os.environ, "ASDESK_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ASDESK_RUNTIME", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, *arguments], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, f"no result (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(lines[-1][len("MODULES "):]) | {"stdout": done.stdout}


def test_analyze_of_the_bundled_sample_imports_no_tensorflow_nor_opencv(tmp_path):
    result = _run(tmp_path, "analyze", "--json", "-q")
    assert result["status"] == 0
    document = json.loads(next(line for line in result["stdout"].splitlines() if line.startswith("{")))
    assert document["model"]["device"].startswith("CPU (onnxruntime ")
    assert 0.0 <= document["images"][0]["probability"] <= 1.0
    assert result["loaded"] == [], f"the analysis imported {result['loaded']}"


def test_screen_and_self_test_import_no_tensorflow_nor_opencv(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for sample in (REPO / "resources" / "samples").glob("*.png"):
        (folder / sample.name).write_bytes(sample.read_bytes())
    screened = _run(tmp_path, "screen", str(folder), "--csv", str(tmp_path / "out.csv"), "-q")
    assert screened["status"] == 0 and (tmp_path / "out.csv").read_text(encoding="utf-8").count("\n") >= 2
    assert screened["loaded"] == [], f"screening imported {screened['loaded']}"
    tested = _run(tmp_path, "--self-test")
    assert tested["status"] == 0 and "onnxruntime" in tested["stdout"]
    assert tested["loaded"] == [], f"the self-test imported {tested['loaded']}"


def test_a_pack_without_model_onnx_needs_tensorflow_and_says_so(tiny_pack, monkeypatch):
    import importlib.util

    from asdesk.core import CardError
    from asdesk.inference import InferenceEngine
    from asdesk.inference.onnx_engine import OnnxEngine, create_engine

    assert type(create_engine(tiny_pack)) is InferenceEngine  # no model.onnx: the TensorFlow engine
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(CardError, match="has no model.onnx and this installation has no TensorFlow"):
        create_engine(tiny_pack)
    with pytest.raises(CardError, match="ASDESK_RUNTIME=tensorflow"):
        create_engine(tiny_pack, runtime="tensorflow")
    with pytest.raises(CardError, match="no usable 'onnx' block"):
        OnnxEngine(tiny_pack)
    with pytest.raises(ValueError, match="runtime must be"):
        create_engine(tiny_pack, runtime="openvino")
