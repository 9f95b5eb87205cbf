"""Layer 1: the transforms between an image as read and the model input (no TensorFlow, no Qt)."""

from asdesk.preprocess.geometry import Geometry
from asdesk.preprocess.pipeline import ModelInput, Pipeline, build_pipeline, build_step
from asdesk.preprocess.transforms import (
    BACKBONE_NORMALISATION,
    Clahe,
    CropMillimetres,
    HistogramEqualisation,
    Normalise,
    Resize,
    Window,
    to_grayscale,
)

__all__ = [
    "BACKBONE_NORMALISATION",
    "Clahe",
    "CropMillimetres",
    "Geometry",
    "HistogramEqualisation",
    "ModelInput",
    "Normalise",
    "Pipeline",
    "Resize",
    "Window",
    "build_pipeline",
    "build_step",
    "to_grayscale",
]
