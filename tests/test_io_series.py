"""asdesk.io series folders and folder discovery.

A small series built here from pydicom's ``MR_small.dcm`` (one file per slice, new UIDs and positions) tests
the core rules without the shared folder; copies of the real SI-joint PACS export in ``<repo>/../shared/data``
add the real series where it is present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, requires_shared
from pydicom.data import get_testdata_file

from asdesk.core.errors import CancelledError, EmptySeriesError, TruncatedFileError
from asdesk.core.progress import CancelToken
from asdesk.io import ScanItem, discover, group_series, read_image, read_item, read_series

STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
T1 = SHARED_DATA / "sij-mri-dicom" / "patient1" / "T1"
KNEE = SHARED_DATA / "knee-xray-kl" / "val"
needs_sij_dicom = requires_shared("data/sij-mri-dicom")


class RecordingProgress:
    """A ProgressSink that remembers what it was told."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.finished = False

    def start(self, total: int | None, label: str = "") -> None:
        self.total = total

    def advance(self, n: int = 1, message: str = "") -> None:
        self.done += n

    def finish(self) -> None:
        self.finished = True


def copy_series(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        shutil.copy(path, target / path.name)
    return target


def write_junk(path: Path, size: int = 4096) -> Path:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_series(folder: Path, count: int, source: str = "MR_small.dcm", step_mm: float = 4.0) -> str:
    """``count`` slices of one series from a pydicom test file, named in REVERSE instance order.

    Each slice gets its own SOP Instance UID, instance number (1..count), position along the slice normal
    and pixel values (the source plus the instance number), so the order read back can be checked.

    Returns
    -------
    str
        The Series Instance UID.
    """
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file(source))
    series_uid = pydicom.uid.generate_uid()
    origin = np.array(template.ImagePositionPatient, dtype=float)
    for number in range(1, count + 1):
        dataset = pydicom.dcmread(get_testdata_file(source))
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        dataset.InstanceNumber = number
        dataset.ImagePositionPatient = [float(v) for v in origin + [0.0, 0.0, step_mm * number]]
        dataset.SliceLocation = step_mm * number
        dataset.PixelData = (dataset.pixel_array + number).astype(dataset.pixel_array.dtype).tobytes()
        dataset.save_as(folder / f"IM{count - number:04d}")
    return series_uid


def test_series_is_read_in_instance_order_not_name_order(tmp_path):
    uid = write_series(tmp_path / "MR", 6)
    records, errors = read_series(tmp_path / "MR")
    assert errors == []
    assert [r.metadata.instance_number for r in records] == list(range(1, 7))
    assert {r.metadata.series_uid for r in records} == {uid}
    assert np.diff([r.metadata.slice_position_mm for r in records]) == pytest.approx([4.0] * 5)
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32)
    for number, record in enumerate(records, start=1):
        np.testing.assert_array_equal(record.pixels, reference + number)


def test_series_with_junk_and_a_truncated_slice_reads_the_rest_and_reports_both(tmp_path):
    folder = tmp_path / "MR"
    write_series(folder, 6)
    junk = write_junk(folder / "IM9999")
    victim = folder / "IM0002"  # instance 4
    victim.write_bytes(victim.read_bytes()[:5000])
    progress = RecordingProgress()
    records, errors = read_series(folder, progress=progress)
    assert [r.metadata.instance_number for r in records] == [1, 2, 3, 5, 6]
    assert len(errors) == 2
    assert any(e.startswith(str(junk)) for e in errors) and any(str(victim) in e for e in errors)
    assert progress.total == 7 and progress.done == 7 and progress.finished


def test_folder_with_two_series_reads_the_largest_and_reports_the_other_one(tmp_path):
    folder = tmp_path / "mixed"
    mr_uid = write_series(folder / "mr", 5)
    ct_uid = write_series(folder / "ct", 2, source="CT_small.dcm")
    for path in sorted((folder / "ct").iterdir()) + sorted((folder / "mr").iterdir()):
        path.rename(folder / f"{path.parent.name}_{path.name}")
    groups = group_series(folder)
    assert list(groups) == [mr_uid, ct_uid] and [len(files) for files in groups.values()] == [5, 2]
    records, errors = read_series(folder)
    assert len(records) == 5 and {r.metadata.series_uid for r in records} == {mr_uid}
    assert len(errors) == 1 and "skipped" in errors[0] and "2 file(s)" in errors[0]


@needs_sij_dicom
@pytest.mark.parametrize("folder", [STIR, T1], ids=["STIR", "T1"])
def test_real_series_is_read_in_instance_order(folder):
    records, errors = read_series(folder)
    assert errors == []
    assert len(records) == 15
    assert [r.metadata.instance_number for r in records] == list(range(1, 16))
    assert len({r.metadata.series_uid for r in records}) == 1
    assert all(r.metadata.window_centre is not None and r.metadata.window_width is not None for r in records)
    positions = np.array([r.metadata.slice_position_mm for r in records])
    steps = np.diff(positions)
    assert np.all(steps < 0) or np.all(steps > 0)  # instance order is spatial order
    assert np.allclose(np.abs(steps), 5.0, atol=0.01)  # SpacingBetweenSlices 5 mm
    assert all(r.shape == (256, 256) for r in records)


@needs_sij_dicom
def test_file_names_do_not_decide_the_order(tmp_path):
    folder = tmp_path / "renamed"
    folder.mkdir()
    for index, path in enumerate(sorted(STIR.iterdir(), reverse=True)):
        shutil.copy(path, folder / f"{(index * 7919) % 101:05d}")
    records, errors = read_series(folder)
    assert errors == []
    assert [r.metadata.instance_number for r in records] == list(range(1, 16))


@needs_sij_dicom
def test_series_with_one_junk_file_reads_15_images_and_reports_the_junk(tmp_path):
    folder = copy_series(STIR, tmp_path / "STIR")
    junk = write_junk(folder / "I9999999")
    progress = RecordingProgress()
    records, errors = read_series(folder, progress=progress)
    assert len(records) == 15
    assert len(errors) == 1 and errors[0].startswith(str(junk))
    assert progress.total == 16 and progress.done == 16 and progress.finished


@needs_sij_dicom
def test_truncated_file_is_reported_and_the_rest_is_read(tmp_path):
    folder = copy_series(STIR, tmp_path / "STIR")
    victim = folder / "I5000000"
    content = victim.read_bytes()
    victim.write_bytes(content[: len(content) // 2])
    records, errors = read_series(folder)
    assert len(records) == 14
    assert 5 not in [r.metadata.instance_number for r in records]
    assert len(errors) == 1 and str(victim) in errors[0]
    with pytest.raises(TruncatedFileError):
        read_image(victim)


@needs_sij_dicom
def test_folder_with_two_series_reads_the_largest_and_reports_the_other(tmp_path):
    folder = copy_series(STIR, tmp_path / "mixed")
    t1_files = sorted(T1.iterdir())[:5]
    for path in t1_files:
        shutil.copy(path, folder / f"T1_{path.name}")
    groups = group_series(folder)
    assert [len(files) for files in groups.values()] == [15, 5]
    stir_uid = read_image(STIR / "I1000000").metadata.series_uid
    assert next(iter(groups)) == stir_uid
    records, errors = read_series(folder)
    assert len(records) == 15 and {r.metadata.series_uid for r in records} == {stir_uid}
    assert len(errors) == 1 and "skipped" in errors[0] and "5 file(s)" in errors[0]


def test_empty_folder_and_junk_only_folder_raise_empty_series(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptySeriesError) as error:
        read_series(empty)
    assert str(empty) in str(error.value)
    junk_only = tmp_path / "junk"
    junk_only.mkdir()
    write_junk(junk_only / "BLOB")
    (junk_only / "notes.txt").write_text("not an image")
    with pytest.raises(EmptySeriesError):
        read_series(junk_only)


def test_cancel_stops_reading_a_series(tmp_path):
    write_series(tmp_path / "MR", 3)
    token = CancelToken()
    token.cancel()
    progress = RecordingProgress()
    with pytest.raises(CancelledError):
        read_series(tmp_path / "MR", progress=progress, cancel=token)
    assert progress.finished


@needs_sij_dicom
def test_group_series_of_the_real_folder():
    groups = group_series(STIR)
    assert len(groups) == 1
    assert sorted(next(iter(groups.values()))) == sorted(STIR.iterdir())


# --- discover --------------------------------------------------------------------------------------------


def build_tree(root: Path) -> dict[str, list[Path]]:
    """A screening folder: a PACS export, knee PNGs, a multi-frame DICOM, an RT plan and junk."""
    stir = copy_series(STIR, root / "patient1" / "study" / "STIR")
    knees = []
    for path in sorted(KNEE.glob("*/*.png"))[:3]:
        knees.append(root / "knees" / path.name)
        knees[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, knees[-1])
    multi = root / "other" / "MULTI0001"
    multi.parent.mkdir(parents=True)
    shutil.copy(get_testdata_file("emri_small.dcm"), multi)
    shutil.copy(get_testdata_file("rtplan.dcm"), root / "other" / "PLAN0001")
    (root / "notes.txt").write_text("referral letter")
    (root / "results.csv").write_text("a,b\n1,2\n")
    (root / "report.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".hidden").mkdir()
    shutil.copy(STIR / "I1000000", root / ".hidden" / "I1000000")
    write_junk(root / "other" / "BLOB")
    shutil.copy(STIR / "I1000000", root / "patient1" / "DICOMDIR")
    return {"stir": sorted(stir.iterdir()), "knees": knees, "multi": [multi]}


@requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")
def test_discover_finds_dicom_by_content_and_rasters_in_a_mixed_tree(tmp_path):
    expected = build_tree(tmp_path)
    progress = RecordingProgress()
    items = discover(tmp_path, progress=progress)
    dicom = [i for i in items if i.kind == "dicom"]
    raster = [i for i in items if i.kind == "raster"]
    stir_uid = read_image(STIR / "I1000000").metadata.series_uid
    stir_items = [i for i in dicom if i.series_uid == stir_uid]
    assert sorted(i.path for i in stir_items) == expected["stir"]
    assert all(i.frame is None for i in stir_items)
    multi_items = [i for i in dicom if i.path == expected["multi"][0]]
    assert [i.frame for i in multi_items] == list(range(10))
    assert len(dicom) == 15 + 10  # no RT plan, no DICOMDIR, nothing from the hidden folder
    assert sorted(i.path for i in raster) == sorted(expected["knees"])
    assert items == sorted(items, key=lambda i: (str(i.path), -1 if i.frame is None else i.frame))
    assert discover(tmp_path) == items  # deterministic
    assert progress.finished and progress.done == progress.total
    assert isinstance(items[0], ScanItem)


@requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")
def test_read_item_reads_the_frame_an_item_points_to(tmp_path):
    build_tree(tmp_path)
    items = discover(tmp_path)
    frame_item = next(i for i in items if i.frame == 3)
    assert read_item(frame_item).metadata.frame_index == 3
    raster_item = next(i for i in items if i.kind == "raster")
    assert read_item(raster_item).metadata.format == "PNG"
    dicom_item = next(i for i in items if i.kind == "dicom" and i.frame is None)
    assert read_item(dicom_item).metadata.instance_number is not None


@requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")
def test_discover_can_be_cancelled(tmp_path):
    build_tree(tmp_path)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        discover(tmp_path, cancel=token)
