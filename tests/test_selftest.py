"""``asdesk --self-test`` (:func:`asdesk.selftest.run_self_test`): the headless check the installer runs.

The tests use the tiny real model pack of ``conftest.py``; where the real ``knee-xray-oa`` pack is installed
(``models/``), the default choice is checked against it instead.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_PACK_ID

import asdesk
from asdesk import selftest
from asdesk.core import paths
from asdesk.selftest import PREFERRED_MODEL_ID, SAMPLE_NAME, SelfTestError, run_self_test, summary_fields
from asdesk.tasks import EngineCache, analyze_path


def _self_test(**kwargs) -> tuple[int, str]:
    out = io.StringIO()
    status = run_self_test(stream=out, **kwargs)
    return status, out.getvalue()


def _expected_default_model() -> str:
    packs, _errors = EngineCache().packs()
    ids = {pack.card.id for pack in packs}
    return PREFERRED_MODEL_ID if PREFERRED_MODEL_ID in ids else TINY_PACK_ID


def _program() -> list[str]:
    """The installed ``asdesk`` console command next to this Python, else ``python -m asdesk``."""
    script = Path(sys.executable).with_name("asdesk")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "asdesk"]


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([*_program(), *argv], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)


# ------------------------------------------------------------------------------------------ in process
def test_self_test_analyses_the_sample_and_writes_a_pdf(installed_pack, tmp_path, capsys):
    status, line = _self_test(model_id=TINY_PACK_ID, output_dir=tmp_path)
    assert status == 0, capsys.readouterr().err
    fields = summary_fields(line.strip())
    card = json.loads((installed_pack / "card.json").read_text(encoding="utf-8"))
    assert fields["ok"] and line.count("\n") == 1
    assert fields["model"] == TINY_PACK_ID and fields["version"] == card["version"]
    assert fields["sha256"] == card["sha256"][:12]
    assert fields["device"].startswith(("CPU", "GPU"))
    assert "(source)" in line and SAMPLE_NAME in line
    report = tmp_path / "asdesk-self-test.pdf"
    assert report.read_bytes()[:5] == b"%PDF-" and report.stat().st_size == fields["pdf_bytes"]
    # the self-test runs the same flow as ``asdesk analyze``: same probability for the sample
    expected = analyze_path(REPO / "resources" / "samples" / SAMPLE_NAME, model_id=TINY_PACK_ID,
                            gradcam=False, engines=EngineCache())
    assert 0.0 <= fields["probability"] <= 1.0
    assert fields["probability"] == pytest.approx(expected.prediction.probability, abs=6e-4)


def test_default_model_prefers_the_knee_pack_else_the_one_accepting_the_sample(tiny_pack, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_pack.path, folder / TINY_PACK_ID)
    assert selftest.choose_model(EngineCache([folder])) is None  # routed by the sample's modality
    knee = folder / PREFERRED_MODEL_ID
    shutil.copytree(tiny_pack.path, knee)
    card = json.loads((knee / "card.json").read_text(encoding="utf-8"))
    card["id"] = PREFERRED_MODEL_ID
    (knee / "card.json").write_text(json.dumps(card), encoding="utf-8")
    assert selftest.choose_model(EngineCache([folder])) == PREFERRED_MODEL_ID
    assert selftest.choose_model(EngineCache([folder]), TINY_PACK_ID) == TINY_PACK_ID


def test_default_run_uses_the_preferred_or_an_accepting_pack(installed_pack):
    status, line = _self_test()
    assert status == 0
    assert summary_fields(line)["model"] == _expected_default_model()


def test_an_unknown_model_fails_with_status_2_and_names_the_installed_packs(installed_pack, capsys):
    status, line = _self_test(model_id="no-such-pack")
    error = capsys.readouterr().err
    assert status == 2 and line == ""
    assert error.startswith("asdesk self-test: FAILED:") and "no-such-pack" in error and TINY_PACK_ID in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_no_installed_pack_fails_clearly(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(paths, "bundled_models_dir", lambda: tmp_path / "no-models")
    status, _line = _self_test()
    error = capsys.readouterr().err
    assert status == 2 and "no model pack is installed" in error and str(tmp_path / "no-models") in error


def test_a_missing_sample_fails_clearly(installed_pack, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(selftest, "resources_dir", lambda: tmp_path)
    status, _line = _self_test(model_id=TINY_PACK_ID)
    error = capsys.readouterr().err
    assert status == 2 and SAMPLE_NAME in error and "is missing" in error


def test_a_report_that_is_not_a_pdf_fails(installed_pack, monkeypatch, tmp_path, capsys):
    import asdesk.report

    def not_a_pdf(path, *args, **kwargs):
        Path(path).write_text("hello", encoding="utf-8")
        return Path(path)

    monkeypatch.setattr(asdesk.report, "write_pdf_report", not_a_pdf)
    status, _line = _self_test(model_id=TINY_PACK_ID, output_dir=tmp_path)
    assert status == 2 and "is not a PDF" in capsys.readouterr().err


def test_dicom_decoder_plugins_are_checked(monkeypatch):
    found = selftest.check_dicom_decoders()
    assert len(found) == len(selftest.REQUIRED_DECODERS)
    assert any("JPEG 2000" in line and "pylibjpeg" in line for line in found)
    monkeypatch.setattr(selftest, "REQUIRED_DECODERS", (("1.2.840.10008.1.2.5", "RLE lossless", "no-such-plugin"),))
    with pytest.raises(SelfTestError, match="no-such-plugin"):
        selftest.check_dicom_decoders()


def test_window_modules_are_checked(installed_pack, monkeypatch, capsys):
    selftest.check_window_modules()  # the real modules import
    monkeypatch.setattr(selftest, "WINDOW_MODULES", ("asdesk.gui.no_such_module",))
    status, _line = _self_test(model_id=TINY_PACK_ID)
    error = capsys.readouterr().err
    assert status == 2 and "the window cannot start" in error and "asdesk.gui.no_such_module" in error


def test_a_frozen_bundle_layout_is_found_through_meipass(tiny_pack, monkeypatch, tmp_path):
    """A PyInstaller bundle: ``resources/`` and ``models/`` under ``sys._MEIPASS``, not the checkout."""
    bundle = tmp_path / "_internal"
    (bundle / "resources" / "samples").mkdir(parents=True)
    shutil.copy(REPO / "resources" / "samples" / SAMPLE_NAME, bundle / "resources" / "samples")
    shutil.copytree(tiny_pack.path, bundle / "models" / TINY_PACK_ID)
    # a bundled pack must match the pins compiled into asdesk (asdesk.inference.pins): pin the test pack
    from asdesk.inference import pins
    from asdesk.inference.trust import compute_pins

    monkeypatch.setitem(pins.BUNDLED_PINS, TINY_PACK_ID, compute_pins(bundle / "models" / TINY_PACK_ID))
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert paths.install_root() == bundle and paths.bundled_models_dir() == bundle / "models"
    status, line = _self_test()
    assert status == 0 and "(frozen)" in line and summary_fields(line)["model"] == TINY_PACK_ID


def test_install_root_of_other_freezers_is_the_executable_folder(monkeypatch, tmp_path):
    monkeypatch.delattr(sys, "_MEIPASS", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "asdesk.exe"))
    assert paths.install_root() == tmp_path.resolve()
    monkeypatch.delattr(sys, "frozen")
    assert paths.install_root() == REPO


# ------------------------------------------------------------------------------------------ the command
def test_self_test_command_in_a_fresh_process(installed_pack):
    completed = _run("--self-test")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("asdesk self-test: OK: asdesk " + asdesk.__version__)
    fields = summary_fields(lines[0])
    assert fields["model"] == _expected_default_model() and 0.0 <= fields["probability"] <= 1.0
    assert "Traceback" not in completed.stderr


def test_self_test_with_a_command_is_a_usage_error():
    completed = _run("--self-test", "models", timeout=120)
    assert completed.returncode == 2 and "--self-test takes no command" in completed.stderr
    assert completed.stdout == ""


def test_version_command():
    completed = _run("--version", timeout=120)
    assert completed.returncode == 0 and completed.stdout == f"asdesk {asdesk.__version__}\n"
