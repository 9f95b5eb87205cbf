"""asdesk.io NIfTI reading: the sij-mri-spa STIR volumes and masks, and orientation against the DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared, skip_without_shared

from asdesk.core.errors import NotAnImageError, TruncatedFileError
from asdesk.io import nifti_orientation, nifti_slices, read_nifti_volume, read_series

nibabel = pytest.importorskip("nibabel")

SPA = SHARED_DATA / "sij-mri-spa"
STIR_DICOM = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"


def stir_volume(patient: str) -> Path:
    skip_without_shared("data/sij-mri-spa")
    found = sorted((SPA / "stir").glob(f"*/{patient}_STIR.nii.gz"))
    if not found:
        pytest.skip(f"no STIR volume for patient {patient} under {SPA}")
    return found[0]


def masks_of(patient: str) -> list[Path]:
    return sorted((SPA / "inflammation_masks").glob(f"*/{patient}_inflammation_*.nii.gz"))


def test_stir_volume_shape_spacing_and_dtype():
    volume, spacing = read_nifti_volume(stir_volume("1003"))
    assert volume.dtype == np.float32 and volume.shape == (23, 336, 336)
    assert spacing == pytest.approx((3.3, 0.5952381, 0.5952381))


def test_slices_equal_the_volume_and_carry_metadata():
    path = stir_volume("1003")
    volume, _ = read_nifti_volume(path)
    slices = nifti_slices(path)
    assert len(slices) == volume.shape[0]
    for index, record in enumerate(slices):
        np.testing.assert_array_equal(record.pixels, volume[index])
        assert record.metadata.instance_number == index and record.metadata.format == "NIfTI"
        assert record.metadata.pixel_spacing_mm == pytest.approx((0.5952381, 0.5952381))
        assert 0.0 <= record.display.min() and record.display.max() <= 1.0
    positions = np.diff([r.metadata.slice_position_mm for r in slices])
    assert np.allclose(positions, 3.3, atol=1e-3)


@pytest.mark.parametrize("patient", ["1003", "1013"])
def test_masks_align_with_their_stir_slices(patient):
    image = nifti_slices(stir_volume(patient))
    masks = masks_of(patient)
    assert len(masks) == 4
    for mask_path in masks:
        mask = nifti_slices(mask_path)
        assert len(mask) == len(image)
        assert all(m.shape == i.shape for m, i in zip(mask, image, strict=True))
        assert set(np.unique(np.stack([m.pixels for m in mask]))) <= {0.0, 1.0}
    # oedema is bright on STIR: if the mask were flipped or transposed it would land on dark tissue
    volume = np.stack([r.pixels for r in image])
    mask = np.stack([r.pixels for r in nifti_slices(masks[0])]) > 0
    assert volume[mask].mean() > 1.5 * volume[~mask].mean()


def world_coordinate_volume(affine: np.ndarray, path: Path, shape=(12, 10, 5)) -> None:
    """A small volume with the real file's affine whose voxels hold their RAS+ x and z in mm (x*1000+z)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    world = nibabel.affines.apply_affine(affine, ijk).reshape(*shape, 3)
    encoded = np.round(world[..., 0]) * 1000.0 + world[..., 2]
    nibabel.save(nibabel.Nifti1Image(encoded.astype(np.float32), affine), path)


@pytest.mark.parametrize("patient", ["1003", "1007", "1012", "1013", "2014", "4386"])
def test_stir_slices_show_head_up_and_patient_right_on_the_image_left(tmp_path, patient):
    # nibabel's closest axis codes differ between these files (LSP for most, LAS for 1013 and 4386: the
    # oblique coronal plane is tilted about 40-50 degrees), the display orientation must not
    affine = nibabel.load(stir_volume(patient)).affine
    path = tmp_path / "coordinates.nii.gz"
    world_coordinate_volume(affine, path)
    for record in nifti_slices(path):
        x = np.round(record.pixels / 1000.0)  # RAS+ x: larger = patient's right
        z = record.pixels - x * 1000.0  # RAS+ z: larger = head
        assert np.all(np.diff(z, axis=0) < 0)  # going down the rows goes to the feet: head at the top
        assert np.all(np.diff(x, axis=1) <= 0) and x[:, 0].mean() > x[:, -1].mean()  # right on the left
    slice_code, row_code, column_code = nifti_orientation(stir_volume(patient))
    assert column_code == "L" and row_code in ("I", "P") and slice_code in ("P", "S")


def dicom_series_as_nifti(path: Path, flip_rows: bool) -> list:
    """Write the STIR DICOM series as NIfTI the way converters do (LPS → RAS), optionally rows reversed."""
    records, _ = read_series(STIR_DICOM)
    import pydicom

    first = pydicom.dcmread(records[0].metadata.source, stop_before_pixels=True)
    second = pydicom.dcmread(records[1].metadata.source, stop_before_pixels=True)
    row_cosine = np.array(first.ImageOrientationPatient[:3], dtype=float)
    column_cosine = np.array(first.ImageOrientationPatient[3:], dtype=float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.array(first.ImagePositionPatient, dtype=float)
    step = np.array(second.ImagePositionPatient, dtype=float) - origin
    data = np.stack([r.pixels for r in records], axis=-1).transpose(1, 0, 2)  # (column, row, slice)
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    if flip_rows:
        data = data[:, ::-1, :]
        lps[:3, 3] = origin + (data.shape[1] - 1) * lps[:3, 1]
        lps[:3, 1] = -lps[:3, 1]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    nibabel.save(nibabel.Nifti1Image(data.astype(np.int16), ras), path)
    return records


@requires_shared("data/sij-mri-dicom")
@pytest.mark.parametrize("flip_rows", [False, True], ids=["as-dicom", "rows-reversed"])
def test_nifti_made_from_the_dicom_series_displays_like_the_dicom(tmp_path, flip_rows):
    path = tmp_path / "stir_from_dicom.nii.gz"
    records = dicom_series_as_nifti(path, flip_rows)
    slices = nifti_slices(path)
    assert len(slices) == len(records) == 15
    for dicom, nifti in zip(records, slices, strict=True):
        np.testing.assert_array_equal(nifti.pixels, dicom.pixels)
    assert nifti_orientation(path)[1:] == ("I", "L")


def test_axis_by_plane_name_and_other_axes():
    path = stir_volume("1003")
    coronal, _ = read_nifti_volume(path, axis="coronal")
    acquired, _ = read_nifti_volume(path)
    assert coronal.shape == acquired.shape == (23, 336, 336)
    sagittal, spacing = read_nifti_volume(path, axis=0)
    assert sagittal.shape[0] == 336 and sorted(sagittal.shape[1:]) == [23, 336]
    with pytest.raises(ValueError, match="axis"):
        read_nifti_volume(path, axis="oblique")


def test_bad_nifti_files(tmp_path):
    text = tmp_path / "volume.nii.gz"
    text.write_text("not a volume")
    with pytest.raises((NotAnImageError, TruncatedFileError)) as error:
        read_nifti_volume(text)
    assert str(text) in str(error.value)
    content = stir_volume("1003").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(content[: len(content) // 2])
    with pytest.raises(TruncatedFileError) as error:
        read_nifti_volume(cut)
    assert str(cut) in str(error.value)
    plain = tmp_path / "plain.nii"
    plain.write_bytes(b"\x00" * 100)
    with pytest.raises(NotAnImageError):
        read_nifti_volume(plain)
