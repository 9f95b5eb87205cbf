"""The ``asdesk`` command end to end on real files, with the tiny model pack installed in the user's model
folder (``$ASDESK_HOME/data/models``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_PACK_ID, TINY_STUDY_K, skip_without_shared

from asdesk import cli
from asdesk.report import ScreeningCsv

pytestmark = pytest.mark.usefixtures("installed_pack")


@pytest.fixture(scope="module")
def stir(shared_data) -> Path:
    skip_without_shared("data/sij-mri-dicom")
    return shared_data / "sij-mri-dicom" / "patient1" / "STIR"


@pytest.fixture(scope="module")
def knee_png(shared_data) -> Path:
    skip_without_shared("data/knee-xray-kl")
    return sorted((shared_data / "knee-xray-kl" / "val" / "3").glob("*.png"))[0]


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m asdesk ARGV`` in a fresh process (the console command's path), without installing."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "asdesk", *argv], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- analyze
def test_analyze_json_on_an_extensionless_dicom_file_in_a_fresh_process(stir):
    completed = _run("analyze", str(stir / "I1000000"), "--model", TINY_PACK_ID, "--json")
    assert completed.returncode == 0, completed.stderr
    (document,) = _json_lines(completed.stdout)  # stdout holds only the JSON
    (image,) = document["images"]
    assert document["kind"] == "image" and document["study"] is None
    assert image["file"].endswith("I1000000") and image["frame"] is None and image["instance_number"] is not None
    assert 0.0 <= image["probability"] <= 1.0
    assert image["finding"] in ("Test positive", "Test negative")
    assert image["operating_point"] == "balanced" and image["threshold"] == 0.5
    assert document["model"]["id"] == TINY_PACK_ID and len(document["model"]["sha256"]) == 64
    assert "not a medical device" in document["intended_use"]
    assert "Traceback" not in completed.stderr


def test_analyze_json_on_a_series_folder(stir, capsys):
    assert cli.main(["analyze", str(stir), "--model", TINY_PACK_ID, "--json", "--no-gradcam", "-q"]) == 0
    (document,) = _json_lines(capsys.readouterr().out)
    assert document["kind"] == "series" and len(document["images"]) == 15
    instances = [image["instance_number"] for image in document["images"]]
    assert instances == sorted(instances)
    probabilities = np.array([image["probability"] for image in document["images"]])
    study = document["study"]
    assert study["probability"] == pytest.approx(np.sort(probabilities)[::-1][:TINY_STUDY_K].mean(), abs=1e-5)
    assert study["n_slices"] == 15 and study["operating_point"] == "study" and study["rule"]


def test_analyze_prints_the_finding_and_writes_a_pdf(knee_png, tmp_path, capsys):
    report = tmp_path / "report.pdf"
    assert (
        cli.main(
            [
                "analyze",
                str(knee_png),
                "--model",
                TINY_PACK_ID,
                "--report",
                str(report),
                "--operating-point",
                "high_specificity",
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert report.read_bytes()[:5] == b"%PDF-"
    assert "finding: Test" in out and re.search(r"probability [\d.]+ % (≥|<) threshold 80\.0 % \(operating point "
                                                r"high_specificity\)", out), out  # percent, as in the PDF and window
    assert f"{TINY_PACK_ID} 0.0.1 (sha256 " in out and "measured AUC 0.500 (95% CI 0.400-0.600)" in out
    assert "not a medical device" in out


def test_several_paths_give_numbered_reports_and_json_lines(knee_png, stir, tmp_path, capsys):
    report = tmp_path / "r.pdf"
    argv = [
        "analyze",
        str(knee_png),
        str(stir / "I2000000"),
        "--model",
        TINY_PACK_ID,
        "--report",
        str(report),
        "--json",
        "-q",
    ]
    assert cli.main(argv) == 0
    documents = _json_lines(capsys.readouterr().out)
    assert [Path(d["input"]).name for d in documents] == [knee_png.name, "I2000000"]
    written = sorted(p.name for p in tmp_path.glob("r-*.pdf"))
    assert written == [f"r-1-{knee_png.name}.pdf", "r-2-I2000000.pdf"]
    assert [Path(d["report"]).name for d in documents] == written


def test_analyze_without_path_runs_on_the_bundled_sample(capsys):
    assert cli.main(["analyze", "--model", TINY_PACK_ID, "--json", "-q"]) == 0
    captured = capsys.readouterr()
    (document,) = _json_lines(captured.out)
    assert Path(document["input"]).parent == REPO / "resources" / "samples"
    assert "bundled sample" in captured.err


# ------------------------------------------------------------------------------------------- screen
def test_screen_writes_the_csv_and_resumes(knee_png, stir, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copyfile(knee_png, folder / knee_png.name)
    shutil.copyfile(stir / "I1000000", folder / "I1000000")
    shutil.copyfile(stir / "I3000000", folder / "I3000000")
    (folder / "cut.png").write_bytes(knee_png.read_bytes()[:300])
    csv_path = tmp_path / "screen.csv"
    argv = ["screen", str(folder), "--csv", str(csv_path), "--model", TINY_PACK_ID]
    assert cli.main(argv) == 3                                  # finished, but a file failed
    captured = capsys.readouterr()
    assert ("4 file(s) or frame(s), 4 image(s) found, 3 analysed, 1 error(s), 0 not an image, 1 study row(s) "
            "(0 without result), 0 already in the CSV") in captured.out
    assert "1 file(s) and 0 series could not be analysed" in captured.err
    rows = ScreeningCsv.read_rows(csv_path)
    assert len(rows) == 5 and sum(bool(row["error"]) for row in rows) == 1
    study = [row for row in rows if row["row_kind"] == "study"]
    assert len(study) == 1 and study[0]["status"] == "result" and study[0]["operating_point"] == "study"
    assert cli.main(argv) == 3                                  # the error row still stands (not retried)
    assert ("0 analysed, 0 error(s), 0 not an image, 0 study row(s) (0 without result), 4 already in the CSV "
            "(skipped, 1 of them errors)") in capsys.readouterr().out
    assert len(ScreeningCsv.read_rows(csv_path)) == 5
    (folder / "cut.png").write_bytes(knee_png.read_bytes())     # repaired: --retry-errors analyses it again
    assert cli.main([*argv, "--retry-errors"]) == 0
    assert "1 analysed, 0 error(s)" in capsys.readouterr().out
    assert ScreeningCsv.completed(csv_path, include_errors=False) == ScreeningCsv.completed(csv_path)


def _pydicom_folders() -> list[Path]:
    import pydicom.data
    from pydicom.data import get_testdata_file

    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    rg = get_testdata_file("RG1_UNCR.dcm")
    if rg:
        folders.append(Path(str(rg)).parent)
    return folders


@pytest.mark.parametrize("which", [0, 1], ids=["pydicom-test-files", "pydicom-data"])
def test_screen_of_pydicom_test_files_gives_every_file_a_row(which, tmp_path, capsys):
    """Every file the walk visits (hundreds of odd DICOM objects) has exactly one row per frame, and the
    summary line and exit status agree with the CSV."""
    from asdesk.io.discover import discover_all

    folders = _pydicom_folders()
    if which >= len(folders):
        pytest.skip("pydicom-data files are not installed")
    folder = folders[which]
    csv_path = tmp_path / "pydicom.csv"
    status = cli.main(["screen", str(folder), "--csv", str(csv_path), "--model", TINY_PACK_ID, "--batch-size", "64"])
    out = capsys.readouterr().out
    rows = ScreeningCsv.read_rows(csv_path)
    images = [row for row in rows if row["row_kind"] == "image"]
    keys = [(row["file"], row["frame"]) for row in images]
    found = discover_all(folder)
    assert len(keys) == len(set(keys)) == len(found.items)       # every visited file (frame) one row
    visited = {str(item.path) for item in found.items}
    assert {row["file"] for row in images} == visited
    counts = {s: sum(row["status"] == s for row in images) for s in ("result", "refused", "error", "skipped")}
    studies = [row for row in rows if row["row_kind"] == "study"]
    analysed = counts["result"] + counts["refused"]  # refused: read and run, but outside the pack's gates
    assert all(not row["probability"] for row in images if row["status"] == "refused")
    assert (f"{len(found.items)} file(s) or frame(s), {found.n_images} image(s) found, {analysed} analysed, "
            f"{counts['error']} error(s), {counts['skipped']} not an image, {len(studies)} study row(s)") in out
    assert status == (3 if counts["error"] or any(r["status"] == "error" for r in studies) else 0)
    assert counts["result"] > 0
    for row in images:
        if row["status"] == "error":
            assert row["file"] in row["error"] or Path(row["file"]).name in row["error"]


def test_screen_of_a_folder_without_images_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    csv_path = tmp_path / "screen.csv"
    assert cli.main(["screen", str(empty), "--csv", str(csv_path), "--model", TINY_PACK_ID]) == 2
    err = capsys.readouterr().err
    assert "no image found here" in err and str(empty) in err and "1 ignored by name" in err
    assert not csv_path.exists()


def test_screen_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        cli.main(["screen", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 every image analysed" in text and "3 finished, but some files" in text
    assert "--retry-errors" in text


# ------------------------------------------------------------------------------------------- models
def test_models_lists_the_installed_pack_and_broken_ones(asdesk_home, capsys):
    broken = asdesk_home / "data" / "models" / "broken-pack"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(TINY_PACK_ID))
    assert "0.0.1" in line and "MobileNetV2" in line and "0.500 (95% CI 0.400-0.600)" in line
    assert "raster,MR,CR,DX" in line and str(asdesk_home / "data" / "models") in line
    assert "broken or unused model packs" in out and "broken-pack" in out
    assert cli.main(["models", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert TINY_PACK_ID in [pack["id"] for pack in document["packs"]] and document["broken"]


# ------------------------------------------------------------------------------------------- errors
def test_a_bad_path_exits_2_with_one_line():
    completed = _run("analyze", "/no/such/scan.dcm")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "asdesk: error: /no/such/scan.dcm: no such file or folder; check the path"
    ]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["analyze", "{knee}", "--model", "no-such-pack"], "no model pack with id 'no-such-pack'"),
        (["analyze", str(REPO / "pyproject.toml"), "--model", TINY_PACK_ID], "neither DICOM"),
        (["screen", "/no/such/folder", "--csv", "x.csv"], "no such folder"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, expected, knee_png, capsys):
    argv = [arg.replace("{knee}", str(knee_png)) for arg in argv]
    assert cli.main([*argv, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("asdesk: error: ")
    assert expected in err and "Traceback" not in err


def test_an_internal_error_is_one_line_and_logged(monkeypatch, asdesk_home, capsys):
    def explode(_args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "command_models", explode)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("asdesk:")]
    assert "RuntimeError: boom" in err and "Traceback" not in err
    assert "Traceback" in (asdesk_home / "logs" / "asdesk.log").read_text()


# ------------------------------------------------------------------------------------------- other commands
def test_no_command_opens_the_window(monkeypatch):
    import asdesk.gui.app

    opened: list[list[str]] = []
    monkeypatch.setattr(asdesk.gui.app, "run_gui", lambda paths: opened.append(paths) or 0)
    assert cli.main([]) == 0
    assert opened == [[]]


def test_paths_without_a_command_open_in_the_window(monkeypatch, capsys):
    import asdesk.gui.app

    opened: list[list[str]] = []
    monkeypatch.setattr(asdesk.gui.app, "run_gui", lambda paths: opened.append(paths) or 0)
    stir = str(REPO / "resources" / "samples")  # a folder of scans shipped with asdesk
    assert cli.main([stir]) == 0
    assert opened == [[stir]]
    assert cli.main(["/no/such/scan.dcm"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_no_command_without_a_window_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "asdesk.gui.app", None)  # import fails
    assert cli.main([]) == 2
    assert "window is not available" in capsys.readouterr().err


def test_train_and_evaluate_hand_their_arguments_to_training(monkeypatch, tmp_path):
    import asdesk.training.evaluate
    import asdesk.training.train

    seen: dict[str, object] = {}
    monkeypatch.setattr(asdesk.training.train, "main_train", lambda args, progress=None: seen.update(train=args) or 0)
    monkeypatch.setattr(
        asdesk.training.evaluate, "main_evaluate", lambda args, progress=None: seen.update(evaluate=args) or 0
    )
    assert (
        cli.main(
            [
                "train",
                "data/knee",
                "--architecture",
                "VGG16",
                "--positive-labels",
                "2,3,4",
                "--negative-labels",
                "0,1",
                "--pack-id",
                "knee-test",
                "--out",
                str(tmp_path),
                "--epochs",
                "1",
                "--seed",
                "7",
                "-q",
            ]
        )
        == 0
    )
    train = seen["train"]
    assert (train.data, train.architecture, train.positive_labels, train.pack_id, train.epochs, train.seed) == (
        "data/knee",
        "VGG16",
        "2,3,4",
        "knee-test",
        1,
        7,
    )
    assert cli.main(["evaluate", "data/val", "--model", "knee-test", "--out", str(tmp_path), "-q"]) == 0
    assert (seen["evaluate"].data, seen["evaluate"].model) == ("data/val", "knee-test")


def test_train_without_the_training_extra_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a))
    code = cli.main(["train", "data/knee", "--pack-id", "k", "--out", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("asdesk: error:") and "scikit-learn" in error and "asdesk[train]" in error
