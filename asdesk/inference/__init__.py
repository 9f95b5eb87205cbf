"""Layer 2: model packs and cards, the TensorFlow runtime, classification, Grad-CAM and overlays.

Importing this package does not import TensorFlow: it is imported on first use (loading a model,
:func:`configure_device`, :class:`GradCam`), so the GUI can start first.
"""

from asdesk.inference.card import OPERATING_POINTS, ModelCard, OperatingPoint, StudyRule
from asdesk.inference.engine import InferenceEngine, ModelOutput
from asdesk.inference.gradcam import GradCam, map_on_image, upsample_and_normalise
from asdesk.inference.overlay import blend, colourise, overlay_rgba
from asdesk.inference.pack import (
    USER_ID_PREFIX,
    ModelPack,
    PackProblem,
    PackScan,
    default_pack_directories,
    discover_packs,
    find_pack,
    find_user_pack,
    load_pack,
    scan_packs,
    sha256_file,
    write_pack,
)
from asdesk.inference.runtime import configure_device, load_model
from asdesk.inference.trust import PackSignatureError, PackVerificationError, sign_pack

__all__ = [
    "OPERATING_POINTS",
    "USER_ID_PREFIX",
    "GradCam",
    "InferenceEngine",
    "ModelCard",
    "ModelOutput",
    "ModelPack",
    "PackProblem",
    "PackScan",
    "PackSignatureError",
    "PackVerificationError",
    "OperatingPoint",
    "StudyRule",
    "blend",
    "colourise",
    "configure_device",
    "default_pack_directories",
    "discover_packs",
    "find_pack",
    "find_user_pack",
    "load_model",
    "load_pack",
    "map_on_image",
    "overlay_rgba",
    "scan_packs",
    "sha256_file",
    "sign_pack",
    "upsample_and_normalise",
    "write_pack",
]
