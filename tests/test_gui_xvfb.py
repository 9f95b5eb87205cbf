"""The real window on a real X server (Xvfb): open the SI-joint STIR series, analyse, screenshot.

Runs ``tests/gui_xvfb/run_window.py`` under ``xvfb-run`` (apt package ``xvfb`` and Qt's xcb libraries, e.g.
``libxcb-cursor0``). The model is a tiny REAL pack with random weights (TEST DATA) unless packs are
installed. The screenshot is checked for the Grad-CAM overlay (coloured pixels over the image) and kept in
``$ASDESK_SCREENSHOT_DIR`` when that variable is set, so a person can look at it.
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

REPO = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA
STIR_DIR = DATA / "sij-mri-dicom" / "patient1" / "STIR"
T1_DIR = DATA / "sij-mri-dicom" / "patient1" / "T1"
KNEE_KL4 = DATA / "knee-xray-kl" / "val" / "4" / "9693806R.png"  # held-out KL 4 knee: OA at p > 0.99, accepted
DRIVER = REPO / "tests" / "gui_xvfb" / "run_window.py"

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed (apt install xvfb)"),
    requires_shared("data/sij-mri-dicom", "data/knee-xray-kl"),
]


def _drive_window(tmp_path: Path, path: Path, out: Path, default_model: str = "") -> dict:
    env = {key: value for key, value in os.environ.items() if key != "QT_QPA_PLATFORM"}
    env.update(ASDESK_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(DRIVER), "--out", str(out),
               "--timeout", "240", "--default-model", default_model, str(path)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, check=False)
    stdout = completed.stdout
    assert completed.returncode == 0, f"driver failed ({completed.returncode}):\n{stdout}\n{completed.stderr[-3000:]}"
    return json.loads(stdout[stdout.index("{"):])


def test_a_refused_series_shows_no_map_and_says_why(tmp_path: Path):
    """The T1 series of the SI-joint study with the SIJ pack as the reader's default model: the pack reads STIR,
    so the window shows the images, no heat map, and the refusal."""
    summary = _drive_window(tmp_path, T1_DIR, tmp_path / "t1-window.png", "sij-mri-stir-inflammation")
    assert summary["platform"] == "xcb" and summary["images"] == 15 and not summary["overlay_visible"]
    assert any("refused by sij-mri-stir-inflammation" in notice for notice in summary["notices"]), summary


def test_the_stir_series_shows_the_oedema_map(tmp_path: Path):
    """Its STIR series passes the SIJ pack's gate: the window shows the study's result with the oedema map."""
    summary = _drive_window(tmp_path, STIR_DIR, tmp_path / "stir-window.png")
    assert summary["platform"] == "xcb" and summary["images"] == 15 and summary["overlay_visible"]
    assert not summary["notices"], summary["notices"]


def test_real_window_under_xvfb_shows_the_overlay(tmp_path: Path):
    out = tmp_path / "knee-window.png"
    summary = _drive_window(tmp_path, KNEE_KL4, out)
    assert summary["platform"] == "xcb" and summary["images"] == 1 and summary["overlay_visible"]
    assert summary["window_shown_s"] < summary["result_s"]  # the window was up before the first result
    assert not summary["notices"], summary["notices"]
    from PIL import Image

    image = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    height, width, _ = image.shape
    assert width >= 1400 and height >= 900
    # The viewer (left ~60 % of the window, below the toolbar) holds the image with the coloured heat map.
    viewer = image[int(height * 0.15):int(height * 0.85), int(width * 0.15):int(width * 0.6)]
    saturation = viewer.max(axis=2) - viewer.min(axis=2)
    assert (saturation > 60).mean() > 0.05, "no Grad-CAM colours over the image"
    grey = saturation < 12
    assert grey.mean() > 0.02, "no grey-scale anatomy visible"
    keep = os.environ.get("ASDESK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)


KNEE_VAL = DATA / "knee-xray-kl" / "val"
KNEE_PACK = REPO / "models" / "knee-xray-oa"
SCREEN_DRIVER = REPO / "tests" / "gui_xvfb" / "run_screening.py"


@requires_shared("data/knee-xray-kl")
@pytest.mark.skipif(not (KNEE_PACK / "card.json").is_file(), reason="needs the shipped knee-xray-oa pack")
def test_screening_the_knee_val_set_from_the_file_menu(tmp_path: Path):
    """File → Screen folder… over all 826 held-out knees: the table fills, the event loop keeps answering
    (no gap over 250 ms), and the CSV equals what `asdesk screen` writes for the same folder."""
    env = {key: value for key, value in os.environ.items() if key != "QT_QPA_PLATFORM"}
    env.update(ASDESK_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(SCREEN_DRIVER),
               "--model", "knee-xray-oa", "--out-dir", str(tmp_path / "out"), "--max-gap-ms", "250",
               str(KNEE_VAL)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    stdout = completed.stdout
    assert completed.returncode == 0, f"driver failed ({completed.returncode}):\n{stdout}\n{completed.stderr[-3000:]}"
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["table_rows"] == summary["rows_signalled"] == summary["csv_rows"] == 826
    assert summary["csv_equal_to_asdesk_screen"] and summary["cancelled"] is False
    assert summary["event_loop_gap_ms"]["max"] < 250
    keep = os.environ.get("ASDESK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in (tmp_path / "out").glob("*.png"):
            shutil.copy(shot, Path(keep) / shot.name)
