"""Layer 2: model packs and cards, the TensorFlow runtime, classification, Grad-CAM and overlays.

Importing this package does not import TensorFlow: it is imported on first use (loading a model,
:func:`configure_device`, :class:`GradCam`), so the GUI can start first.
"""

from asdesk.inference.card import OPERATING_POINTS, ModelCard, OperatingPoint, StudyRule
from asdesk.inference.engine import InferenceEngine, ModelOutput
from asdesk.inference.gradcam import GradCam, map_on_image, upsample_and_normalise
from asdesk.inference.overlay import blend, colourise, overlay_rgba
from asdesk.inference.pack import (
    ModelPack,
    default_pack_directories,
    discover_packs,
    find_pack,
    load_pack,
    sha256_file,
    write_pack,
)
from asdesk.inference.runtime import configure_device, load_model

__all__ = [
    "OPERATING_POINTS",
    "GradCam",
    "InferenceEngine",
    "ModelCard",
    "ModelOutput",
    "ModelPack",
    "OperatingPoint",
    "StudyRule",
    "blend",
    "colourise",
    "configure_device",
    "default_pack_directories",
    "discover_packs",
    "find_pack",
    "load_model",
    "load_pack",
    "map_on_image",
    "overlay_rgba",
    "sha256_file",
    "upsample_and_normalise",
    "write_pack",
]
