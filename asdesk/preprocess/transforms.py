"""Image transforms, each with its parameters in ``__init__`` and a pure ``__call__`` (MONAI style).

Every transform works on float32 images in [0, 1] of shape (H, W), except :class:`Window`, which turns an
:class:`~asdesk.core.ImageRecord` into one, and :class:`Normalise`, which produces the backbone's (h, w, 3)
input. Geometric transforms also update a :class:`~asdesk.preprocess.geometry.Geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asdesk.core import ImageRecord, PreprocessError
from asdesk.preprocess import kernels
from asdesk.preprocess.geometry import Geometry

# ITU-R BT.601 luma weights, the ones OpenCV and PIL use for RGB → gray.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Convert (H, W, 3) RGB to (H, W) luma (ITU-R BT.601); (H, W) passes through.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) or (H, W, 3), any float or integer dtype.

    Returns
    -------
    numpy.ndarray
        float32 (H, W).

    Raises
    ------
    PreprocessError
        If the array is neither (H, W) nor (H, W, 3).
    """
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    if image.ndim == 3 and image.shape[2] == 3:
        return (image.astype(np.float32) @ _LUMA).astype(np.float32)
    raise PreprocessError(f"expected a (H, W) or (H, W, 3) image, got shape {image.shape}")


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def tissue_reference(values: np.ndarray, low: float = 20.0) -> float:
    """Median of an image's tissue values: those above the ``low``-th percentile of its non-zero values.

    Parameters
    ----------
    values : numpy.ndarray
        float32 (H, W), modality-LUT values (e.g. STIR signal).
    low : float
        Percentile (0-100) of the non-zero values below which pixels count as air or background.

    Returns
    -------
    float
        The reference, > 0 (1.0 for an image without positive values, so that dividing by it is safe).
    """
    nonzero = values[values > 0]
    if nonzero.size == 0:
        return 1.0
    tissue = nonzero[nonzero > np.percentile(nonzero, low)]
    reference = float(np.median(tissue)) if tissue.size else float(np.median(nonzero))
    return reference if np.isfinite(reference) and reference > 0 else 1.0


@dataclass(frozen=True)
class Window:
    """Map an image record to [0, 1] grayscale: the VOI step of the model's pipeline.

    Parameters
    ----------
    mode : str
        ``"display"``: the record's own display image (DICOM modality LUT → VOI LUT / window centre-width →
        MONOCHROME1 inversion, DICOM PS3.3 C.11; raster files as stored).
        ``"percentile"``: a linear window from the ``low``-th to the ``high``-th percentile of the
        record's non-zero values (robust for MRI, whose intensities have no absolute scale).
        ``"fixed"``: a linear window of ``centre``/``width`` in modality-LUT units (DICOM C.11.2.1.2.1
        "LINEAR" function, simplified to centre ± width / 2).
        ``"reference"``: intensity relative to the image's own tissue: ``values / (high * reference)``
        clipped to [0, 1], where ``reference`` is the median of the values above the ``low``-th
        percentile of the non-zero values (the tissue, not the air). STIR has no absolute scale; the VHI
        method (Hepburn et al., "Volume of hyperintense inflammation", the SIJ data's paper) divides by a
        normal-marrow reference, which this median tracks within 0.81-1.42x on the SIJ training patients
        (per slice, SD <= 0.11) without needing a reader to draw it; ``high`` is then the brightest
        multiple of that reference kept (e.g. 4.0).
        MONOCHROME1 images are inverted after the window in every mode.
    low, high : float
        Percentiles for ``"percentile"``, in [0, 100]; for ``"reference"``, ``low`` is the percentile
        (0-100) above which values count as tissue and ``high`` (> 0) the multiple of the reference mapped
        to 1.
    centre, width : float
        Window for ``"fixed"``, in the image's modality-LUT units; width > 0.
    """

    mode: str = "display"
    low: float = 1.0
    high: float = 99.5
    centre: float | None = None
    width: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("display", "percentile", "fixed", "reference"):
            raise PreprocessError("window mode must be 'display', 'percentile', 'fixed' or 'reference', "
                                  f"got {self.mode!r}")
        if self.mode == "reference" and not (0.0 <= self.low < 100.0 and self.high > 0):
            raise PreprocessError(f"a reference window needs 0 <= low < 100 and high > 0, got {self.low}, {self.high}")
        if self.mode == "percentile" and not 0.0 <= self.low < self.high <= 100.0:
            raise PreprocessError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")
        if self.mode == "fixed" and (self.centre is None or self.width is None or self.width <= 0):
            raise PreprocessError("a fixed window needs a centre and a width > 0")

    def __call__(self, record: ImageRecord) -> np.ndarray:
        """Return float32 (H, W) in [0, 1]."""
        if self.mode == "display":
            return np.clip(to_grayscale(record.display), 0.0, 1.0)
        values = to_grayscale(record.pixels)
        if self.mode == "reference":
            out = np.clip(values / np.float32(self.high * tissue_reference(values, self.low)), 0.0, 1.0)
            out = out.astype(np.float32)
            return 1.0 - out if record.inverted else out
        if self.mode == "percentile":
            foreground = values[values > values.min()]
            sample = foreground if foreground.size > 0.05 * values.size else values.ravel()
            lower, upper = np.percentile(sample, [self.low, self.high])
        else:
            lower = float(self.centre) - float(self.width) / 2.0  # type: ignore[arg-type]
            upper = float(self.centre) + float(self.width) / 2.0  # type: ignore[arg-type]
        scale = float(upper - lower)
        if scale <= 0:
            out = np.zeros_like(values, dtype=np.float32)
        else:
            out = np.clip((values - float(lower)) / scale, 0.0, 1.0).astype(np.float32)
        return 1.0 - out if record.inverted else out


@dataclass(frozen=True)
class CropMillimetres:
    """Keep a centred region of fixed physical size, so scanners with different fields of view agree.

    Parameters
    ----------
    height_mm, width_mm : float
        Size of the region in mm. Where the image is smaller, the whole extent is kept. Images without
        pixel spacing are left whole.
    """

    height_mm: float
    width_mm: float

    def box(self, shape: tuple[int, int], spacing_mm: tuple[float, float] | None) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) in pixels of the region to keep."""
        height, width = shape
        if spacing_mm is None or spacing_mm[0] <= 0 or spacing_mm[1] <= 0:
            return (0, 0, height, width)
        rows = min(height, int(round(self.height_mm / spacing_mm[0])))
        cols = min(width, int(round(self.width_mm / spacing_mm[1])))
        top, left = (height - rows) // 2, (width - cols) // 2
        return (top, left, top + rows, left + cols)

    def __call__(self, image: np.ndarray, spacing_mm: tuple[float, float] | None) -> np.ndarray:
        """Return the centred region of a (H, W) image given its (row, column) spacing in mm."""
        top, left, bottom, right = self.box(image.shape[:2], spacing_mm)
        return image[top:bottom, left:right]


@dataclass(frozen=True)
class Clahe:
    """Contrast Limited Adaptive Histogram Equalisation (Zuiderveld, Graphics Gems IV, 1994), as OpenCV's.

    Computed by :func:`asdesk.preprocess.kernels.clahe`, bit-exact with ``cv2.createCLAHE(clip_limit,
    (columns, rows)).apply``.

    The CLAHE + VGG16 MRI reference applies it before the CNN.

    Parameters
    ----------
    clip_limit : float
        Contrast limit per tile (OpenCV's ``clipLimit``), > 0.
    tile_grid : tuple of int
        Number of tiles (rows, columns).
    """

    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)

    def __post_init__(self) -> None:
        if self.clip_limit <= 0 or min(self.tile_grid) < 1:
            raise PreprocessError(f"CLAHE needs clip_limit > 0 and tiles >= 1, got {self.clip_limit}, {self.tile_grid}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return float32 (H, W) in [0, 1]; the input is quantised to 8 bits first."""
        out = kernels.clahe(_as_uint8(image), float(self.clip_limit), (int(self.tile_grid[0]), int(self.tile_grid[1])))
        return out.astype(np.float32) / 255.0


@dataclass(frozen=True)
class HistogramEqualisation:
    """Global histogram equalisation (as in the cervical foraminal-stenosis reference), as OpenCV's.

    Computed by :func:`asdesk.preprocess.kernels.equalize_hist`, bit-exact with ``cv2.equalizeHist``.
    """

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return float32 (H, W) in [0, 1]; the input is quantised to 8 bits first."""
        return kernels.equalize_hist(_as_uint8(image)).astype(np.float32) / 255.0


@dataclass(frozen=True)
class Resize:
    """Resize to the model's input size.

    Parameters
    ----------
    height, width : int
        Output size in pixels.
    mode : str
        ``"stretch"`` (ignore aspect ratio), ``"pad"`` (keep aspect ratio, centre, pad with 0) or
        ``"crop"`` (keep aspect ratio, centre-crop the longer side).
    """

    height: int
    width: int
    mode: str = "pad"

    def __post_init__(self) -> None:
        if self.mode not in ("stretch", "pad", "crop"):
            raise PreprocessError(f"resize mode must be 'stretch', 'pad' or 'crop', got {self.mode!r}")
        if self.height < 8 or self.width < 8:
            raise PreprocessError(f"model input must be at least 8x8 pixels, got {self.height}x{self.width}")

    def apply(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
        """Resize a (H, W) image and update its geometry."""
        height, width = image.shape[:2]
        if self.mode == "crop":
            scale = max(self.height / height, self.width / width)
            keep_h = min(height, int(round(self.height / scale)))
            keep_w = min(width, int(round(self.width / scale)))
            top, left = (height - keep_h) // 2, (width - keep_w) // 2
            image = image[top:top + keep_h, left:left + keep_w]
            geometry = geometry.cropped(top, left, top + keep_h, left + keep_w)
            height, width = keep_h, keep_w
        if self.mode == "stretch" or self.mode == "crop":
            out = _resize(image, self.height, self.width)
            box = (0, 0, self.height, self.width)
        else:
            scale = min(self.height / height, self.width / width)
            inner_h = max(1, min(self.height, int(round(height * scale))))
            inner_w = max(1, min(self.width, int(round(width * scale))))
            top, left = (self.height - inner_h) // 2, (self.width - inner_w) // 2
            out = np.zeros((self.height, self.width), dtype=np.float32)
            out[top:top + inner_h, left:left + inner_w] = _resize(image, inner_h, inner_w)
            box = (top, left, top + inner_h, left + inner_w)
        return out, geometry.resized(box, (self.height, self.width))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return float32 (height, width)."""
        return self.apply(image, Geometry.identity(image.shape[:2]))[0]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV's ``INTER_AREA`` when either axis shrinks (both may not), else ``INTER_LINEAR``."""
    shrinking = height < image.shape[0] or width < image.shape[1]
    return kernels.resize(image, height, width, "area" if shrinking else "linear")


# ImageNet statistics used by keras.applications' "caffe" and "torch" preprocessing modes.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BACKBONE_NORMALISATION = {
    "mobilenet_v2": "tf",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "densenet121": "torch",
    "unit": "unit",
}


@dataclass(frozen=True)
class Normalise:
    """Grayscale → 3 channels, then the backbone's own input normalisation.

    Reproduces ``keras.applications.<arch>.preprocess_input`` in NumPy (so preprocessing needs no
    TensorFlow): ``"tf"`` scales to [-1, 1] (MobileNetV2); ``"caffe"`` converts RGB→BGR and subtracts the
    ImageNet mean on the 0-255 scale (VGG16, ResNet50); ``"torch"`` scales to [0, 1] and standardises with
    the ImageNet mean/std (DenseNet121); ``"unit"`` keeps [0, 1].

    Parameters
    ----------
    backbone : str
        One of ``mobilenet_v2``, ``resnet50``, ``vgg16``, ``densenet121``, ``unit``.
    """

    backbone: str = "unit"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_NORMALISATION:
            raise PreprocessError(
                f"unknown backbone normalisation {self.backbone!r}; use one of {sorted(BACKBONE_NORMALISATION)}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Map float32 (h, w) in [0, 1] to float32 (h, w, 3)."""
        rgb = np.repeat(image.astype(np.float32)[:, :, None], 3, axis=2)
        mode = BACKBONE_NORMALISATION[self.backbone]
        if mode == "tf":
            return rgb * 2.0 - 1.0
        if mode == "caffe":
            return rgb[:, :, ::-1] * 255.0 - _CAFFE_MEAN_BGR
        if mode == "torch":
            return (rgb - _TORCH_MEAN_RGB) / _TORCH_STD_RGB
        return rgb
