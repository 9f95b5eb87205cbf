"""The model's preprocessing pipeline, built from its card: the one implementation that training,
analysis, screening and the viewer's "model input" view all use.

A card lists the steps in order, e.g.::

    [{"name": "window", "mode": "percentile", "low": 1.0, "high": 99.5},
     {"name": "crop_mm", "height_mm": 200, "width_mm": 200},
     {"name": "clahe", "clip_limit": 2.0, "tile_grid": [8, 8]},
     {"name": "resize", "height": 224, "width": 224, "mode": "pad"},
     {"name": "normalise", "backbone": "vgg16"}]

``window`` comes first, ``resize`` and ``normalise`` last, each exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asdesk.core import ImageRecord, PreprocessError
from asdesk.preprocess.geometry import Geometry
from asdesk.preprocess.transforms import (
    Clahe,
    CropMillimetres,
    HistogramEqualisation,
    Normalise,
    Resize,
    Window,
)

_STEP_NAMES = ("window", "crop_mm", "clahe", "histogram_equalisation", "resize", "normalise")


@dataclass(frozen=True, eq=False)
class ModelInput:
    """What the model receives for one image.

    Attributes
    ----------
    tensor : numpy.ndarray
        float32 (h, w, 3): normalised for the backbone; add a batch axis to classify.
    image : numpy.ndarray
        float32 (h, w) in [0, 1]: the same image before channel replication and normalisation (the viewer's
        "model input" view).
    geometry : Geometry
        Maps model-input pixels back to the original image (for Grad-CAM overlays).
    """

    tensor: np.ndarray
    image: np.ndarray
    geometry: Geometry


class Pipeline:
    """An ordered list of transforms from an :class:`~asdesk.core.ImageRecord` to a :class:`ModelInput`.

    Parameters
    ----------
    window : Window
        The VOI step.
    intensity_steps : sequence
        Steps between window and resize, applied in order: :class:`CropMillimetres`, :class:`Clahe`,
        :class:`HistogramEqualisation`.
    resize : Resize
    normalise : Normalise
    """

    def __init__(self, window: Window, intensity_steps: Sequence[object], resize: Resize,
                 normalise: Normalise) -> None:
        self.window = window
        self.intensity_steps = tuple(intensity_steps)
        self.resize = resize
        self.normalise = normalise

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the model input."""
        return (self.resize.height, self.resize.width, 3)

    def stages(self, record: ImageRecord) -> list[tuple[str, np.ndarray]]:
        """Every intermediate image, for display: ``[(step name, float32 (H, W) in [0, 1]), ...]``."""
        trace: list[tuple[str, np.ndarray]] = []
        self._run(record, trace)
        return trace

    def __call__(self, record: ImageRecord) -> ModelInput:
        """Preprocess one image.

        Parameters
        ----------
        record : ImageRecord
            As read by :mod:`asdesk.io`.

        Returns
        -------
        ModelInput
        """
        return self._run(record, None)

    def _run(self, record: ImageRecord, trace: list[tuple[str, np.ndarray]] | None) -> ModelInput:
        image = self.window(record)
        geometry = Geometry.identity(image.shape[:2])
        if trace is not None:
            trace.append(("window", image))
        for step in self.intensity_steps:
            if isinstance(step, CropMillimetres):
                box = step.box(image.shape[:2], record.metadata.pixel_spacing_mm)
                image = image[box[0]:box[2], box[1]:box[3]]
                geometry = geometry.cropped(*box)
                name = "crop_mm"
            else:
                image = step(image)  # type: ignore[operator]
                name = "clahe" if isinstance(step, Clahe) else "histogram_equalisation"
            if trace is not None:
                trace.append((name, image))
        image, geometry = self.resize.apply(image, geometry)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        if trace is not None:
            trace.append(("resize", image))
        return ModelInput(tensor=self.normalise(image), image=image, geometry=geometry)


def _tuple2(value: Any) -> tuple[int, int]:  # noqa: ANN401
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def build_step(spec: Mapping[str, Any]) -> object:
    """Build one transform from its card entry.

    Raises
    ------
    PreprocessError
        On an unknown step name or bad parameters.
    """
    params = {key: value for key, value in spec.items() if key != "name"}
    name = spec.get("name")
    try:
        if name == "window":
            return Window(**params)
        if name == "crop_mm":
            return CropMillimetres(**params)
        if name == "clahe":
            if "tile_grid" in params:
                params["tile_grid"] = _tuple2(params["tile_grid"])
            return Clahe(**params)
        if name == "histogram_equalisation":
            return HistogramEqualisation(**params)
        if name == "resize":
            return Resize(**params)
        if name == "normalise":
            return Normalise(**params)
    except TypeError as error:
        raise PreprocessError(f"bad parameters for preprocessing step {name!r}: {error}") from error
    raise PreprocessError(f"unknown preprocessing step {name!r}; known steps: {', '.join(_STEP_NAMES)}")


def build_pipeline(steps: Sequence[Mapping[str, Any]]) -> Pipeline:
    """Build the preprocessing pipeline a model card describes.

    Parameters
    ----------
    steps : sequence of mapping
        The card's ``preprocessing`` list (see the module docstring).

    Returns
    -------
    Pipeline

    Raises
    ------
    PreprocessError
        If ``window`` is not first, ``resize`` and ``normalise`` are not the last two, or a step is
        unknown or badly parameterised.
    """
    built = [build_step(step) for step in steps]
    if len(built) < 3 or not isinstance(built[0], Window):
        raise PreprocessError("a pipeline starts with a 'window' step")
    if not (isinstance(built[-2], Resize) and isinstance(built[-1], Normalise)):
        raise PreprocessError("a pipeline ends with 'resize' then 'normalise'")
    middle = built[1:-2]
    for step in middle:
        if isinstance(step, Window | Resize | Normalise):
            raise PreprocessError("'window', 'resize' and 'normalise' appear once each, in that order")
    return Pipeline(built[0], middle, built[-2], built[-1])  # type: ignore[arg-type]
