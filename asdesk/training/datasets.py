"""Labelled training and evaluation data: folders of labelled images and the SIJ STIR NIfTI set.

Every sample carries its patient id, because splits and confidence intervals are by patient, never by
file (DESIGN.md: "Metrics come from patients the model never saw").
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdesk.core import AsdeskError, ImageRecord, NullProgress, ProgressSink, ReadError
from asdesk.preprocess import Pipeline

LOGGER = logging.getLogger(__name__)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ""}


class DatasetError(AsdeskError, ValueError):
    """A training or evaluation data set is empty, unlabelled or inconsistent."""


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes
    ----------
    key : str
        Unique name (file path, or ``<volume>#<slice>``), used in prediction tables.
    patient : str
        Patient id: the unit of splitting and of bootstrap resampling.
    label : int
        1 positive, 0 negative.
    load : callable
        Returns the :class:`~asdesk.core.ImageRecord`.
    """

    key: str
    patient: str
    label: int
    load: Callable[[], ImageRecord]


def _parse_labels(text: str | Sequence[str] | None) -> set[str]:
    if text is None:
        return set()
    if isinstance(text, str):
        return {part.strip() for part in text.split(",") if part.strip()}
    return {str(part) for part in text}


def _patient_ids_from_csv(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "patient_id"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: a patient CSV needs the columns 'file' and 'patient_id'")
        return {Path(row["file"]).name: row["patient_id"] for row in reader}


def load_folder_dataset(root: str | Path, positive_labels: str | Sequence[str] | None = None,
                        negative_labels: str | Sequence[str] | None = None,
                        patient_pattern: str | None = None, patient_csv: str | Path | None = None) -> list[Sample]:
    """Index a folder of labelled images, ``<root>/<label>/<image>``.

    Parameters
    ----------
    root : str or Path
        One sub-folder per label (e.g. Kellgren-Lawrence grades ``0``-``4``).
    positive_labels, negative_labels : str or sequence of str, optional
        Sub-folder names (comma-separated string or list) of each class, e.g. ``"2,3,4"`` and ``"0,1"`` for
        radiographic knee OA (KL >= 2). With exactly two sub-folders and neither given, the second in sort
        order is positive. Sub-folders in neither set are ignored.
    patient_pattern : str, optional
        Regular expression whose first group, searched in the file name, is the patient id (e.g.
        ``r"^(\\d+)"`` for OAI names ``9001695L.png``). Used when a file has no DICOM PatientID.
    patient_csv : str or Path, optional
        CSV with columns ``file`` (file name) and ``patient_id``; takes precedence over the pattern.

    Returns
    -------
    list of Sample
        Sorted by path. The patient id is taken, in order, from the CSV, the DICOM PatientID (read lazily
        only for DICOM files), the pattern, or the file stem (each file its own patient, with a warning).

    Raises
    ------
    DatasetError
        If the folder has no labelled images or the labels are ambiguous.
    """
    from asdesk.io import is_dicom, read_image

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected <root>/<label>/<images>")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    positives, negatives = _parse_labels(positive_labels), _parse_labels(negative_labels)
    if not positives and not negatives:
        if len(folders) != 2:
            raise DatasetError(f"{root}: {len(folders)} label folders ({', '.join(folders)}); say which are "
                               "positive with --positive-labels and negative with --negative-labels")
        negatives, positives = {folders[0]}, {folders[1]}
    elif not negatives:
        negatives = set(folders) - positives
    elif not positives:
        positives = set(folders) - negatives
    if positives & negatives:
        raise DatasetError(f"labels {sorted(positives & negatives)} are both positive and negative")
    by_file = _patient_ids_from_csv(Path(patient_csv)) if patient_csv else {}
    pattern = re.compile(patient_pattern) if patient_pattern else None
    samples: list[Sample] = []
    unnamed = 0
    for folder in folders:
        if folder not in positives and folder not in negatives:
            continue
        label = 1 if folder in positives else 0
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            patient = by_file.get(path.name, "")
            if not patient and path.suffix.lower() in ("", ".dcm") and is_dicom(path):
                patient = _dicom_patient_id(path)
            if not patient and pattern is not None:
                match = pattern.search(path.name)
                patient = match.group(1) if match else ""
            if not patient:
                unnamed += 1
                patient = path.stem
            samples.append(Sample(str(path), patient, label, _loader(read_image, path)))
    if not samples:
        raise DatasetError(f"{root}: no images under the label folders {sorted(positives | negatives)}")
    if unnamed:
        LOGGER.warning("%d files have no patient id (no CSV entry, DICOM tag or pattern match): each is "
                       "treated as its own patient, which leaks if a patient has several files", unnamed)
    return samples


def _loader(read: Callable[[Path], ImageRecord], path: Path) -> Callable[[], ImageRecord]:
    return lambda: read(path)


def _dicom_patient_id(path: Path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("PatientID", "") or "")
    except Exception:  # noqa: BLE001 - any unreadable header simply has no id
        return ""


def load_sij_stir_dataset(root: str | Path, min_readers: int = 2,
                          include_unlabelled: bool = False) -> list[Sample]:
    """Index the SIJ STIR NIfTI set: one sample per coronal slice, labelled by reader agreement.

    A slice is positive (active inflammation: bone-marrow oedema) when at least ``min_readers`` of the
    readers' inflammation masks mark a voxel on it, as ``../shared/data/README.md`` defines (Hepburn et al.,
    "Volume of hyperintense inflammation (VHI)", Bone_MRI supplementary data).

    Parameters
    ----------
    root : str or Path
        Folder holding ``stir/**/<id>_STIR.nii.gz`` and
        ``inflammation_masks/<reader>/<id>_inflammation_<reader>.nii.gz``.
    min_readers : int
        Readers that must agree on a slice.
    include_unlabelled : bool
        Also return slices of patients without masks, labelled -1.

    Returns
    -------
    list of Sample
        Keys ``<id>#<slice index>``; patient = the id in the file name.

    Raises
    ------
    DatasetError
        If no STIR volume is found.
    """
    from asdesk.io import nifti_slices

    root = Path(root)
    volumes = sorted(root.glob("stir/**/*_STIR.nii*"))
    if not volumes:
        raise DatasetError(f"{root}: no stir/**/<id>_STIR.nii.gz volumes; is this the sij-mri-spa folder?")
    samples: list[Sample] = []
    for volume in volumes:
        patient = volume.name.split("_")[0]
        masks = sorted(root.glob(f"inflammation_masks/*/{patient}_inflammation_*.nii*"))
        if not masks and not include_unlabelled:
            continue
        slices = nifti_slices(volume)
        if masks:
            votes = np.zeros(len(slices), dtype=int)
            for mask in masks:
                mask_slices = nifti_slices(mask)
                if len(mask_slices) != len(slices):
                    raise DatasetError(f"{mask}: {len(mask_slices)} slices but {volume} has {len(slices)}")
                votes += np.array([int(np.any(m.pixels > 0)) for m in mask_slices])
            labels = (votes >= min_readers).astype(int)
        else:
            labels = np.full(len(slices), -1)
        for index, record in enumerate(slices):
            samples.append(Sample(f"{patient}#{index}", patient, int(labels[index]), _constant(record)))
    return samples


def _constant(record: ImageRecord) -> Callable[[], ImageRecord]:
    return lambda: record


def prepare_images(samples: Sequence[Sample], pipeline: Pipeline,
                   progress: ProgressSink | None = None) -> tuple[np.ndarray, list[str]]:
    """Read and preprocess every sample up to the model-input image (before normalisation).

    Parameters
    ----------
    samples : sequence of Sample
    pipeline : Pipeline
        The model's pipeline; its window, crop, CLAHE / equalisation and resize are applied.
    progress : ProgressSink, optional

    Returns
    -------
    images : numpy.ndarray
        float32 (N, h, w) in [0, 1]; rows of unreadable files are zero.
    errors : list of str
        ``"<key>: <reason>"`` for each unreadable sample (it is kept with a zero image only if the caller
        wants; :func:`drop_failed` removes them).
    """
    sink = progress or NullProgress()
    height, width, _ = pipeline.input_shape
    images = np.zeros((len(samples), height, width), dtype=np.float32)
    errors: list[str] = []
    sink.start(len(samples), "preprocessing")
    try:
        for index, sample in enumerate(samples):
            try:
                images[index] = pipeline(sample.load()).image
            except ReadError as error:
                errors.append(f"{sample.key}: {error.reason}")
            sink.advance(1)
    finally:
        sink.finish()
    return images, errors
