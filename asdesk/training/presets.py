"""Preprocessing pipelines and card texts for the tasks the trainer knows.

A pipeline here becomes the card's ``preprocessing`` list and therefore the one implementation used by
training, analysis, screening and the viewer.
"""

from __future__ import annotations

from typing import Any

from asdesk.training.model import NORMALISATION


def preprocessing_spec(task: str, enhancement: str, input_size: int, architecture: str) -> list[dict[str, Any]]:
    """The preprocessing steps of a task.

    Parameters
    ----------
    task : str
        ``"folder"`` (radiographs or any labelled image folder: the image as displayed, i.e. the DICOM VOI
        window or the stored 8/16-bit values) or ``"sij-stir"`` (coronal STIR MRI: a 1-99.5 percentile
        window, since MRI intensities have no absolute scale, and a centred 170 x 170 mm crop so scanners with
        different fields of view present the sacroiliac joints at the same scale).
    enhancement : str
        ``"clahe"`` (clip limit 2.0, 8 x 8 tiles: the CLAHE + VGG16 MRI reference), ``"histeq"`` (global
        histogram equalisation: the cervical foraminal-stenosis reference) or ``"none"``.
    input_size : int
        Model input height and width in pixels (aspect ratio kept, zero padding).
    architecture : str
        Chooses the backbone normalisation.

    Returns
    -------
    list of dict
    """
    steps: list[dict[str, Any]]
    if task == "sij-stir":
        steps = [{"name": "window", "mode": "percentile", "low": 1.0, "high": 99.5},
                 {"name": "crop_mm", "height_mm": 170.0, "width_mm": 170.0}]
    elif task == "folder":
        steps = [{"name": "window", "mode": "display"}]
    else:
        raise ValueError(f"unknown task {task!r}; use 'folder' or 'sij-stir'")
    if enhancement == "clahe":
        steps.append({"name": "clahe", "clip_limit": 2.0, "tile_grid": [8, 8]})
    elif enhancement == "histeq":
        steps.append({"name": "histogram_equalisation"})
    elif enhancement != "none":
        raise ValueError(f"unknown enhancement {enhancement!r}; use clahe, histeq or none")
    steps.append({"name": "resize", "height": input_size, "width": input_size, "mode": "pad"})
    steps.append({"name": "normalise", "backbone": NORMALISATION[architecture]})
    return steps
