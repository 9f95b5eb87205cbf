"""Read DICOM images (PS3.10 files, with or without preamble) into :class:`ImageRecord` objects.

Pixels are decoded through pydicom 3's decoder plugins (pylibjpeg-openjpeg for JPEG 2000, pyjpegls for
JPEG-LS, python-gdcm for JPEG lossless, pylibjpeg-rle or pydicom for RLE), then passed through the
grayscale pipeline of :mod:`asdesk.io.grayscale` (PS3.3 C.11). Every failure becomes one of the
:class:`~asdesk.core.errors.ReadError` subclasses, naming the file and what to do; no pydicom exception
escapes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from asdesk.core.errors import (
    DicomDecodeError,
    NoPixelDataError,
    NotAnImageError,
    ReadError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from asdesk.core.records import ImageRecord
from asdesk.io.dicom_meta import build_metadata, frame_dataset
from asdesk.io.grayscale import display_values, modality_values
from asdesk.io.sanity import MAX_FRAMES, check_pixel_count, check_values, describe, must_propagate

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: (7FE0,0010) Pixel Data tag as it appears in little- and big-endian files.
_PIXEL_TAG_BYTES = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")

#: Which pip package decodes which transfer syntax family (BSD/MIT plugins only, per DESIGN.md).
_DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "python-gdcm (or pillow)",
    "1.2.840.10008.1.2.4.51": "python-gdcm (or pillow)",
    "1.2.840.10008.1.2.4.57": "python-gdcm",
    "1.2.840.10008.1.2.4.70": "python-gdcm",
    "1.2.840.10008.1.2.4.80": "pyjpegls (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pyjpegls (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.92": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.93": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom's warnings (invalid VR values, odd lengths) while reading and converting values.

    Real PACS exports are full of small standard violations that do not stop reading; pydicom converts
    values lazily, so attribute access needs the same silence as ``dcmread``.

    Yields
    ------
    None
        Inside the block, warnings are ignored (``warnings.catch_warnings`` is process-wide, not
        per-thread, in Python 3.11).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _has_pixels(dataset: Dataset) -> bool:
    return any(keyword in dataset for keyword in _PIXEL_KEYWORDS)


def _is_image_storage(dataset: Dataset) -> bool:
    """Whether the SOP class is an image storage class (whose files must carry pixel data)."""
    meta = getattr(dataset, "file_meta", Dataset())
    uid = dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
    return bool(uid) and "Image Storage" in UID(str(uid)).name


def _file_has_pixel_tag(path: Path) -> bool:
    try:
        content = path.read_bytes()
    except OSError:
        return False
    return any(tag in content for tag in _PIXEL_TAG_BYTES)


def _ensure_transfer_syntax(dataset: Dataset) -> UID:
    """The transfer syntax, inferred from the parsed encoding for preamble-less files that lack one."""
    meta = getattr(dataset, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid))
    implicit, little = dataset.original_encoding
    if implicit or implicit is None:
        inferred = ImplicitVRLittleEndian
    else:
        inferred = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if meta is None:
        dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = inferred
    return inferred


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ReadError(path, f"the file cannot be opened ({error.strerror or error})") from error
    if size == 0:
        raise NotAnImageError(path, "the file is empty (0 bytes); copy it again from its source")


def _parse(path: Path, stop_before_pixels: bool) -> tuple[Dataset, bool]:
    """dcmread with force=True, warnings silenced; returns (dataset, whether the file ended early)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    ended_early = any("end of file" in str(w.message).lower() for w in caught)
    return dataset, ended_early


def read_header(path: str | Path) -> Dataset:
    """Read a DICOM file's attributes without its pixel data.

    Parameters
    ----------
    path : str or Path
        A DICOM file (any name; preamble optional).

    Returns
    -------
    pydicom.dataset.Dataset
        The dataset up to (not including) the pixel data.

    Raises
    ------
    NotAnImageError
        When the file is empty or cannot be parsed as DICOM at all.
    ReadError
        When the file does not exist or cannot be opened.
    """
    path = Path(path)
    _check_not_empty(path)
    try:
        dataset, _ = _parse(path, stop_before_pixels=True)
    except BaseException as error:  # noqa: BLE001 - pydicom raises many types on bad input
        if must_propagate(error):
            raise
        raise NotAnImageError(
            path, f"cannot be parsed as DICOM ({type(error).__name__}); is it really a DICOM file?"
        ) from error
    return dataset


def load_dataset(path: str | Path) -> Dataset:
    """Read a whole DICOM file and check that it holds complete, decodable pixel data.

    Parameters
    ----------
    path : str or Path
        A DICOM file (any name; preamble optional).

    Returns
    -------
    pydicom.dataset.Dataset
        The dataset, with ``file_meta.TransferSyntaxUID`` set (inferred for preamble-less files).

    Raises
    ------
    NotAnImageError
        Empty file, or not parseable as DICOM.
    TruncatedFileError
        The file ends before its pixel data is complete.
    NoPixelDataError
        A complete DICOM object without (7FE0,0010) Pixel Data (structured report, RT plan, ...).
    UnsupportedTransferSyntaxError
        No decoder plugin for the pixel data's transfer syntax is installed.
    DicomDecodeError
        The header cannot be parsed.
    ReadError
        The file does not exist or cannot be opened.
    """
    path = Path(path)
    _check_not_empty(path)
    try:
        dataset, ended_early = _parse(path, stop_before_pixels=False)
    except EOFError as error:
        raise TruncatedFileError(
            path, f"the file ends in the middle of a DICOM element ({error}); copy it again from its source"
        ) from error
    except OSError as error:
        raise ReadError(path, f"the file cannot be opened ({error.strerror or error})") from error
    except BaseException as error:  # noqa: BLE001
        if must_propagate(error):
            raise
        raise DicomDecodeError(
            path, f"the DICOM header cannot be parsed ({type(error).__name__}: {error}); the file is damaged"
        ) from error

    if not _has_pixels(dataset):
        looks_cut = (
            ended_early
            or len(dataset) == 0
            or _is_image_storage(dataset)
            or "Rows" in dataset
            or _file_has_pixel_tag(path)
        )
        if looks_cut:
            raise TruncatedFileError(
                path,
                "this image file has no complete pixel data: it ends early (an interrupted copy or "
                "download); copy it again from its source",
            )
        kind = UID(str(dataset.get("SOPClassUID", ""))).name if "SOPClassUID" in dataset else "DICOM object"
        raise NoPixelDataError(
            path,
            f"this {kind or 'DICOM object'} holds no image (no (7FE0,0010) Pixel Data); open an image file",
        )

    frames = check_header(path, dataset)
    transfer_syntax = _ensure_transfer_syntax(dataset)
    _check_decoder(path, transfer_syntax)
    if "PixelData" not in dataset:
        return dataset
    if not transfer_syntax.is_compressed:
        expected = get_expected_length(dataset, "bytes")
        actual = len(dataset.PixelData)
        if actual < expected:
            raise TruncatedFileError(
                path,
                f"the pixel data has {actual} of the {expected} bytes its header announces: the file ends "
                "early (an interrupted copy or download); copy it again from its source",
            )
        if actual > expected + expected % 2 + 1:
            raise DicomDecodeError(
                path,
                f"the pixel data has {actual} bytes but Rows x Columns x frames x samples x bits in the header "
                f"give {expected}: the header does not describe these pixels (it would be read scrambled); "
                "re-export the file from the PACS",
            )
    elif frames > 1:
        fragments = _fragment_count(path, dataset)
        if fragments < frames:
            raise DicomDecodeError(
                path,
                f"the header claims {frames} frames but the compressed pixel data holds only {fragments} "
                "fragment(s): the header is damaged; re-export the file from the PACS",
            )
    return dataset


def _fragment_count(path: Path, dataset: Dataset) -> int:
    """Number of fragments of encapsulated pixel data (each frame needs at least one)."""
    try:
        data = dataset.PixelData
        # 8 bytes of Basic Offset Table item header, then its content, then the fragments.
        offset_length = int.from_bytes(data[4:8], "little")
        return int(parse_fragments(data[8 + offset_length :])[0])
    except BaseException as error:  # noqa: BLE001
        if must_propagate(error):
            raise
        raise DicomDecodeError(
            path, f"the compressed pixel data is not a valid fragment sequence ({describe(error)}); "
            "the file is damaged"
        ) from error


def _whole_number(path: Path, dataset: Dataset, keyword: str, default: int | None) -> int:
    """An integer attribute, with a clear error when it is missing or not a whole number."""
    try:
        value = dataset.get(keyword)
    except BaseException as error:  # noqa: BLE001 - pydicom converts lazily and may raise here
        if must_propagate(error):
            raise
        raise DicomDecodeError(path, f"{keyword} cannot be read ({describe(error)}): the header is damaged") from error
    if value is None or (isinstance(value, str | bytes) and not str(value).strip()):
        if default is None:
            raise DicomDecodeError(path, f"the header has no {keyword}: the file is damaged")
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise DicomDecodeError(path, f"{keyword} is {str(value)[:40]!r}, not a whole number: the header is damaged")
    return int(number)


def check_header(path: str | Path, dataset: Dataset) -> int:
    """Check the image attributes of a DICOM header before any pixel is decoded.

    Parameters
    ----------
    path : str or Path
        The file (named in the errors).
    dataset : pydicom.dataset.Dataset
        Its dataset (pixel data not needed).

    Returns
    -------
    int
        The number of frames (1 when Number of Frames is absent).

    Raises
    ------
    DicomDecodeError
        Rows, Columns, Number of Frames, Samples per Pixel, Bits Allocated or Bits Stored missing, not whole
        numbers or inconsistent (Bits Stored 1 with Bits Allocated above 1; Bits Stored above Bits
        Allocated); more than :data:`~asdesk.io.sanity.MAX_FRAMES` frames; a non-finite or zero Rescale
        Slope, or a non-finite Rescale Intercept.
    ReadError
        More than :data:`~asdesk.io.sanity.MAX_FRAME_PIXELS` pixels per frame (nothing is decoded).
    """
    path = Path(path)
    rows = _whole_number(path, dataset, "Rows", None)
    columns = _whole_number(path, dataset, "Columns", None)
    check_pixel_count(path, columns, rows, "the DICOM header (Rows, Columns)")
    frames = _whole_number(path, dataset, "NumberOfFrames", 1)
    if not 1 <= frames <= MAX_FRAMES:
        raise DicomDecodeError(
            path, f"the header claims {frames} frames (accepted: 1 to {MAX_FRAMES}): the header is damaged"
        )
    samples = _whole_number(path, dataset, "SamplesPerPixel", 1)
    if samples not in (1, 3, 4):
        raise DicomDecodeError(path, f"Samples per Pixel is {samples} (1 or 3 expected): the header is damaged")
    if "PixelData" in dataset or "BitsAllocated" in dataset:
        allocated = _whole_number(path, dataset, "BitsAllocated", None)
        stored = _whole_number(path, dataset, "BitsStored", allocated)
        if allocated not in (1, 8, 16, 32, 64):
            raise DicomDecodeError(path, f"Bits Allocated is {allocated}: the header is damaged")
        if not 1 <= stored <= allocated or (stored == 1 and allocated > 1):
            raise DicomDecodeError(
                path,
                f"Bits Stored is {stored} with Bits Allocated {allocated}: the header is inconsistent (the "
                "image would be read as blank); re-export the file from the PACS",
            )
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in dataset:
            continue
        try:
            value = float(dataset.get(keyword))
        except BaseException as error:  # noqa: BLE001
            if must_propagate(error):
                raise
            raise DicomDecodeError(path, f"{keyword} cannot be read as a number: the header is damaged") from error
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
            raise DicomDecodeError(
                path,
                f"{keyword} is {value!r}: the modality LUT would give a blank or non-finite image; the header "
                "is damaged",
            )
    return frames


def _check_decoder(path: Path, transfer_syntax: UID) -> None:
    name = transfer_syntax.name or str(transfer_syntax)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as error:
        raise UnsupportedTransferSyntaxError(
            path,
            f"pixel data is encoded as '{name}', which no installed pydicom decoder reads; convert the file "
            "to an uncompressed transfer syntax (e.g. 'gdcmconv --raw' or dcmtk 'dcmdjpeg') and open it "
            "again",
        ) from error
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(transfer_syntax), "a pydicom decoder plugin")
        raise UnsupportedTransferSyntaxError(
            path, f"no decoder for '{name}' pixel data is installed; install it with: pip install {package}"
        )


def _one_line(error: BaseException, limit: int = 400) -> str:
    """An exception as one line (decoder plugins report one line per plugin), shortened."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(path: Path, dataset: Dataset, index: int | None) -> np.ndarray:
    """Decoded stored values: (H, W[, 3]) for one frame, (F, H, W[, 3]) for ``index=None``."""
    name = UID(str(dataset.file_meta.TransferSyntaxUID)).name
    try:
        return pixel_array(dataset, index=index)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except ValueError as error:
        if "less than expected" in str(error):
            raise TruncatedFileError(
                path, "the pixel data is shorter than its header announces; copy the file again"
            ) from error
        raise DicomDecodeError(
            path, f"the '{name}' pixel data cannot be decoded ({_one_line(error)}); the file may be damaged: "
            "re-export it from the PACS"
        ) from error
    except BaseException as error:  # noqa: BLE001 - decoder plugins raise RuntimeError, panics, ...
        if must_propagate(error):
            raise
        raise DicomDecodeError(
            path,
            f"the '{name}' pixel data cannot be decoded ({type(error).__name__}: {_one_line(error)}); "
            "the file may be damaged: re-export it from the PACS",
        ) from error


def _palette_to_rgb(stored: np.ndarray, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """PALETTE COLOR (PS3.3 C.7.6.3.1.5) → (pixels, display) as float32 RGB."""
    rgb = apply_color_lut(stored, dataset)
    top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else float(rgb.max() or 1)
    pixels = rgb.astype(np.float32)
    return pixels, np.clip(pixels / top, 0.0, 1.0).astype(np.float32)


def _frame_record(
    path: Path, dataset: Dataset, stored: np.ndarray, index: int, multi_frame: bool
) -> ImageRecord:
    frame = frame_dataset(dataset, index)
    photometric = str(frame.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR" and stored.ndim == 2:
        pixels, display = _palette_to_rgb(stored, dataset)
    else:
        pixels = modality_values(stored, frame)
        display = display_values(pixels, frame)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise DicomDecodeError(
            path, f"the decoded frame has shape {pixels.shape}, not (H, W) or (H, W, 3): the header is damaged"
        )
    check_values(path, pixels, display, "the modality LUT / rescale")
    metadata = build_metadata(path, dataset, frame, index if multi_frame else None)
    return ImageRecord(pixels=pixels, display=display, metadata=metadata)


def _read(path: str | Path, which: int | None) -> list[ImageRecord]:
    """Records of frame ``which`` (0-based) or, for ``None``, of every frame."""
    path = Path(path)
    try:
        with quiet():
            return _read_records(path, which)
    except ReadError:
        raise
    except BaseException as error:  # noqa: BLE001 - never let a raw pydicom/numpy/decoder error escape
        if must_propagate(error):
            raise
        raise DicomDecodeError(
            path, f"the image cannot be built from this DICOM file ({describe(error)})"
        ) from error


def _read_records(path: Path, which: int | None) -> list[ImageRecord]:
    dataset = load_dataset(path)
    frames = check_header(path, dataset)
    multi_frame = frames > 1
    if which is None:
        stored = _decode(path, dataset, None)
        stack = stored if multi_frame else stored[np.newaxis]
        return [_frame_record(path, dataset, stack[i], i, multi_frame) for i in range(stack.shape[0])]
    if not 0 <= which < frames:
        raise ReadError(path, f"frame {which} asked for, but the file has {frames} frame(s) (0-based)")
    stored = _decode(path, dataset, which if multi_frame else None)
    return [_frame_record(path, dataset, stored, which, multi_frame)]


def read_dicom_image(path: str | Path) -> ImageRecord:
    """Read the first (or only) frame of a DICOM file.

    The grayscale chain is DICOM PS3.3 C.11: stored values → Modality LUT / Rescale Slope-Intercept
    (``pixels``) → VOI LUT Sequence, else the first Window Center/Width, else the frame's value range →
    [0, 1] → ``1 - x`` for MONOCHROME1 (``display``). YBR colour data is converted to RGB by pydicom and
    PALETTE COLOR through its lookup tables.

    Parameters
    ----------
    path : str or Path
        A DICOM file, whatever its name (PACS exports have no extension); the preamble is optional.

    Returns
    -------
    ImageRecord
        ``pixels`` float32 (H, W) in modality units, or (H, W, 3) RGB stored values; ``display`` float32 in
        [0, 1], same shape; ``metadata.format == "DICOM"``, ``frame_index`` 0 for multi-frame files.

    Raises
    ------
    NotAnImageError, TruncatedFileError, NoPixelDataError, UnsupportedTransferSyntaxError, DicomDecodeError
        Each names the file and says what to do.
    """
    return _read(path, 0)[0]


def read_dicom_frames(path: str | Path) -> list[ImageRecord]:
    """Read every frame of a DICOM file, one :class:`ImageRecord` per frame.

    Parameters
    ----------
    path : str or Path
        A single- or multi-frame DICOM file (classic or enhanced; functional groups are honoured for
        per-frame spacing, position, rescale and window).

    Returns
    -------
    list of ImageRecord
        In frame order; ``metadata.frame_index`` is the 0-based frame for multi-frame files and ``None``
        for a single-frame file (a list of one).

    Raises
    ------
    NotAnImageError, TruncatedFileError, NoPixelDataError, UnsupportedTransferSyntaxError, DicomDecodeError
        As :func:`read_dicom_image`.
    """
    return _read(path, None)


def read_dicom_frame(path: str | Path, index: int) -> ImageRecord:
    """Read one frame of a DICOM file, decoding only that frame.

    Parameters
    ----------
    path : str or Path
        A DICOM file.
    index : int
        0-based frame number (0 for a single-frame file).

    Returns
    -------
    ImageRecord
        As :func:`read_dicom_image`, with ``metadata.frame_index == index`` for multi-frame files.

    Raises
    ------
    ReadError
        ``index`` outside the file's frames, plus the errors of :func:`read_dicom_image`.
    """
    return _read(path, index)[0]
