"""The real window on a real X server (Xvfb) as a reading room: the SI-joint STIR and T1 series side by side,
slices linked, a ruler and an ROI drawn with the mouse, keys pressed with the study browser focused; then a CR
radiograph with its PatientOrientation markers. Runs ``tests/gui_xvfb/run_reading_room.py`` under ``xvfb-run``;
the screenshots are kept in ``$ASDESK_SCREENSHOT_DIR`` when that variable is set, so a person can look at them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared
from pydicom.data import get_testdata_file

REPO = Path(__file__).resolve().parents[1]
PATIENT1 = SHARED_DATA / "sij-mri-dicom" / "patient1"
DRIVER = REPO / "tests" / "gui_xvfb" / "run_reading_room.py"

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed (apt install xvfb)"),
    requires_shared("data/sij-mri-dicom"),
]


def test_reading_stir_and_t1_side_by_side_in_the_real_window(tmp_path: Path):
    radiograph = get_testdata_file("RG3_UNCR.dcm")
    env = {key: value for key, value in os.environ.items() if key != "QT_QPA_PLATFORM"}
    env.update(ASDESK_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(DRIVER),
               "--out-dir", str(tmp_path / "shots"), str(PATIENT1 / "STIR"), str(PATIENT1 / "T1")]
    if radiograph is not None:
        command += ["--radiograph", radiograph]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    stdout = completed.stdout
    assert completed.returncode == 0, f"driver failed ({completed.returncode}):\n{stdout}\n{completed.stderr[-3000:]}"
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["platform"] == "xcb" and summary["status"] == "ok"
    # Down with the study browser focused moved the slice (7 -> 8), not the case.
    assert summary["focus_for_keys"] == "CaseBrowser"
    assert summary["case_after_down"] == "STIR" and summary["slice_after_down"] == 8
    linked = summary["linked"]
    assert linked["t1_position_mm"] == pytest.approx(linked["stir_position_mm"], abs=1e-3)
    assert "linked by position" in linked["label"]
    (ruler,) = summary["measurements"]["stir"]
    (roi,) = summary["measurements"]["t1"]
    assert ruler.endswith(" mm") and 100.0 < float(ruler.split()[0]) < 125.0  # ~116 px of 0.977 mm
    assert roi.startswith("mean ") and "mm²" in roi
    assert summary["tool_after_escape"] is None
    assert summary["markers"] == ["R", "L", "HA", "FP"]
    assert summary["tree"] == ["02-01 · 2008-02-22 · 050 (2 series)"]
    for corners in summary["corners"].values():
        assert corners["bottom_left"][0].startswith("Slice 8 / 15") and corners["bottom_right"][0].startswith("W ")
    if radiograph is not None:
        assert summary["radiograph"]["markers"] == ["L", "R", "H", "F", "PatientOrientation"]
        assert summary["radiograph"]["measurements"][0].endswith(" px (no pixel spacing)")
    from PIL import Image

    shot = Path(summary["side_by_side_png"])
    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    height, width, _ = image.shape
    assert width >= 1400 and height >= 900
    # Two viewports of grey anatomy, each with the yellow orientation markers.
    for left, right in ((0.12, 0.40), (0.40, 0.68)):
        part = image[int(height * 0.12):int(height * 0.95), int(width * left):int(width * right)]
        saturation = part.max(axis=2) - part.min(axis=2)
        grey = (saturation < 12) & (part.mean(axis=2) > 40)
        assert grey.mean() > 0.05, "no grey-scale anatomy in a viewport"
        yellow = (part[..., 0] > 200) & (part[..., 1] > 170) & (part[..., 2] < 120)
        assert yellow.sum() > 30, "no orientation markers painted"
    keep = os.environ.get("ASDESK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shot.parent.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
