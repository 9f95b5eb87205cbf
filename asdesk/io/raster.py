"""Read PNG, JPEG, TIFF and BMP images (8- or 16-bit, grayscale or colour) into :class:`ImageRecord`.

A raster radiograph is already windowed by whoever exported it, so ``display`` is the stored value over
the largest value of its type (255 or 65535), never a min-max stretch. Decoding goes through Pillow and gives
what OpenCV's ``cv2.imdecode(..., IMREAD_ANYDEPTH | IMREAD_ANYCOLOR)`` gave (asdesk's decoder until the analysis
runtime dropped OpenCV; ``tests/test_kernels.py`` compares the two): 16-bit data kept (16-bit colour too, which
Pillow itself narrows to 8 bits: see :func:`_sixteen_bit_colour`), palettes expanded, alpha dropped, 1-bit
images as 0/255, the EXIF orientation applied. Bytes are read by numpy so that non-ASCII Windows paths work.
"""

from __future__ import annotations

import io
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from asdesk.core.errors import NotAnImageError, ReadError, TruncatedFileError
from asdesk.core.records import ImageMetadata, ImageRecord
from asdesk.io.detect import raster_format
from asdesk.io.sanity import MAX_FRAME_PIXELS, check_pixel_count, check_values, describe, must_propagate

_TAIL_BYTES = 1 << 16


def _check_complete(path: Path, content: np.ndarray, fmt: str) -> None:
    """PNG must end with an IEND chunk and JPEG with an EOI marker; otherwise the copy was cut short."""
    tail = content[-_TAIL_BYTES:].tobytes()
    if fmt == "PNG" and b"IEND" not in tail:
        raise TruncatedFileError(path, "the PNG file has no IEND chunk: it ends early; copy it again")
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise TruncatedFileError(
            path, "the JPEG file has no end-of-image marker: it ends early; copy it again"
        )


def header_size(path: Path, content: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) from a raster file's header, read by Pillow without decoding any pixel.

    Parameters
    ----------
    path : Path
        The file (named in errors).
    content : bytes
        Its bytes.
    fmt : str
        Its format (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``).

    Returns
    -------
    tuple of int
        Width and height in pixels, checked against :data:`~asdesk.io.sanity.MAX_FRAME_PIXELS`.

    Raises
    ------
    NotAnImageError
        Pillow cannot read the header.
    ReadError
        The size is implausible.
    """
    ihdr = _png_ihdr_size(content) if fmt == "PNG" else None
    try:
        if ihdr is not None:  # a PNG's size is at a fixed place (PNG spec, sec. 11.2.2): no parser needed
            width, height = ihdr
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: our own limit decides
                with Image.open(io.BytesIO(content)) as image:  # reads the header only
                    width, height = image.size
    except Image.DecompressionBombError:
        raise ReadError(path, f"the {fmt} header announces more than the limit of {MAX_FRAME_PIXELS:,} pixels per "
                              "image (a decompression bomb?); it was not decoded") from None
    except BaseException as error:  # noqa: BLE001 - Pillow raises many types on damaged headers
        if must_propagate(error):
            raise
        raise NotAnImageError(path, f"the {fmt} header cannot be read ({describe(error)}); the file is damaged: "
                                    "copy it again or re-export it") from error
    check_pixel_count(path, int(width), int(height), f"the {fmt} header")
    if fmt == "PNG":
        _check_png_data(path, content, int(width), int(height))
    return int(width), int(height)


def _png_ihdr_size(content: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG whose first chunk is a well-formed IHDR with a valid CRC, else ``None`` (then
    Pillow reads the header and reports what is wrong)."""
    if len(content) < 33 or content[12:16] != b"IHDR" or int.from_bytes(content[8:12], "big") != 13:
        return None
    if zlib.crc32(content[12:29]) != int.from_bytes(content[29:33], "big"):
        return None
    width, height = int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    return (width, height) if width > 0 and height > 0 else None


def _check_png_data(path: Path, content: bytes, width: int, height: int) -> None:
    """A PNG's image data must decompress to exactly the size its IHDR announces (PNG spec, sec. 7-8).

    The zlib stream is inflated with a bound of one byte past the announced size, so a damaged header or a
    decompression bomb never allocates more than the image the header claims (which :func:`check_pixel_count`
    has already bounded). Interlaced (Adam7) images are only checked for excess data.
    """
    position = 8
    bit_depth = color_type = interlace = 0
    data = bytearray()
    while position + 8 <= len(content):
        length = int.from_bytes(content[position : position + 4], "big")
        chunk = content[position + 4 : position + 8]
        if chunk == b"IHDR" and length >= 13:
            bit_depth, color_type = content[position + 16], content[position + 17]
            interlace = content[position + 20]
        elif chunk == b"IDAT":
            data += content[position + 8 : position + 8 + length]
        elif chunk == b"IEND":
            break
        position += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color_type, 4)
    raw = height * (1 + (width * channels * max(bit_depth, 1) + 7) // 8)
    bound = raw + raw // 3 + 64 if interlace else raw  # Adam7 adds filter bytes per pass row
    try:
        inflated = zlib.decompressobj().decompress(bytes(data), bound + 1)
    except zlib.error:
        return  # a broken stream: the decoder reports it with its own words
    if len(inflated) > bound:
        raise ReadError(
            path,
            f"the PNG header says {width} x {height} pixels but the file holds more image data than such an image "
            f"has ({raw:,} bytes uncompressed): the header is damaged",
        )
    if not interlace and len(inflated) < raw and len(data) > 0:
        raise ReadError(
            path,
            f"the PNG header says {width} x {height} pixels but the file holds only {len(inflated):,} of the "
            f"{raw:,} bytes of image data such an image needs: the file is truncated or its header is damaged",
        )


#: Pillow raw modes of 16-bit samples: the suffix naming the byte order, and the one naming the other order.
_OTHER_BYTE = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}

#: EXIF orientation (tag 0x0112) -> how to turn the stored array upright (EXIF 2.32, sec. 4.6.5; OpenCV's
#: ``ApplyExifOrientation``). 1 and unknown values: as stored.
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise to view
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise to view
}


def _rawmode(tile: ImageFile._Tile) -> str:
    return tile.args if isinstance(tile.args, str) else str(tile.args[0])


def _with_rawmode(tile: ImageFile._Tile, rawmode: str) -> ImageFile._Tile:
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])
    return tile._replace(args=args)


def _sixteen_bit_colour(content: bytes, image: Image.Image) -> np.ndarray:
    """The 16-bit samples of a 16-bit colour image (RGB, RGBA) that Pillow opens as 8-bit.

    Pillow keeps only the high byte of each sample. Its decoders (PNG defiltering, TIFF strips) work on
    whole pixels, so decoding the same data a second time with the raw mode of the opposite byte order
    gives the low bytes: ``(high << 8) | low`` is the stored value. (16-bit gray + alpha has no such raw mode
    in Pillow: those rare files are refused as undecodable, where OpenCV read them.)
    """
    high = np.asarray(image)
    with Image.open(io.BytesIO(content)) as again:
        tiles = again.tile
        again.tile = [_with_rawmode(tile, _rawmode(tile)[:-1] + _OTHER_BYTE[_rawmode(tile)[-1]]) for tile in tiles]
        low = np.asarray(again)
    return (high.astype(np.uint16) << 8) | low


def _stored_array(content: bytes, image: Image.Image) -> np.ndarray:
    """The stored samples of an opened image: (H, W) gray or (H, W, 3) RGB, alpha dropped."""
    mode = image.mode
    rawmodes = [_rawmode(tile) for tile in image.tile]  # before decoding, which empties ``tile``
    sixteen = bool(rawmodes) and all(";16" in rawmode for rawmode in rawmodes)
    if sixteen and mode in ("RGB", "RGBA", "LA"):  # LA: raises (no low-byte raw mode), see above
        pixels = _sixteen_bit_colour(content, image)
    elif mode == "1":
        pixels = np.asarray(image.convert("L"))  # 0 / 255, as OpenCV expands 1-bit images
    elif mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.uint16)  # native byte order
    elif mode in ("L", "I", "F", "LA", "RGB", "RGBA", "RGBX"):
        pixels = np.asarray(image)
    elif mode == "CMYK":
        pixels = _cmyk_to_rgb(np.asarray(image), image.format or "", rawmodes[0] if rawmodes else "")
    else:  # palettes (P, PA) and anything else with colour: expanded to RGB
        pixels = np.asarray(image.convert("RGB"))
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0] if pixels.shape[2] <= 2 else pixels[:, :, :3]  # gray + alpha, RGB(A)
    return pixels


def _cmyk_to_rgb(cmyk: np.ndarray, fmt: str, rawmode: str) -> np.ndarray:
    """CMYK to RGB as OpenCV's decoders did: JPEG through OpenCV's ``icvCvt_CMYK2BGR_8u_C4C3R`` on the stored
    values (``R = K - ((255 - C) * K >> 8)``; Adobe JPEGs store ``255 -`` Pillow's values), TIFF through
    libtiff's ``TIFFReadRGBA`` (``R = (255 - C) * (255 - K) // 255``)."""
    values = cmyk.astype(np.int32)
    if fmt == "JPEG":
        stored = 255 - values if rawmode == "CMYK;I" else values
        k = stored[:, :, 3]
        rgb = [k - (((255 - stored[:, :, i]) * k) >> 8) for i in range(3)]
    else:
        rgb = [(255 - values[:, :, i]) * (255 - values[:, :, 3]) // 255 for i in range(3)]
    return np.dstack(rgb).astype(np.uint8)


def _decode(content: bytes) -> np.ndarray:
    """Decode raster bytes as OpenCV's ``imdecode(IMREAD_ANYDEPTH | IMREAD_ANYCOLOR)`` did, in RGB order.

    Returns
    -------
    numpy.ndarray
        (H, W) or (H, W, 3) RGB; uint8, uint16, int32 or float32 as stored; upright (EXIF orientation).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(content)) as image:
            pixels = _stored_array(content, image)
            orientation = image.getexif().get(0x0112)  # after decoding: a PNG's eXIf chunk may follow its data
    turn = _ORIENT.get(orientation) if isinstance(orientation, int) else None
    return np.ascontiguousarray(turn(pixels) if turn else pixels)


def _display(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Stored value / largest value of the stored type; float images are shown as they are if in [0, 1]."""
    if np.issubdtype(dtype, np.integer):
        top = float(np.iinfo(dtype).max)
        return np.clip(pixels / top, 0.0, 1.0).astype(np.float32)
    low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if low >= 0.0 and high <= 1.0:
        return np.nan_to_num(pixels).astype(np.float32)
    if high == low:
        return np.zeros(pixels.shape, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def read_raster(path: str | Path) -> ImageRecord:
    """Read a PNG, JPEG, TIFF or BMP file.

    Parameters
    ----------
    path : str or Path
        The image file; its format is found from its signature, not its extension.

    Returns
    -------
    ImageRecord
        ``pixels`` float32 (H, W) for grayscale or (H, W, 3) in RGB order, holding the stored values
        (0-255 or 0-65535); an image whose three channels are identical (a grayscale image saved as RGB,
        a gray palette, gray + alpha) comes back as (H, W). Alpha is dropped and palettes are expanded.
        ``display`` is float32 in [0, 1]: stored value / 255 or / 65535 (floating-point TIFFs already in
        [0, 1] are kept, others scaled by their range). Metadata: ``format`` (``"PNG"``, ``"JPEG"``,
        ``"TIFF"``, ``"BMP"``), ``photometric_interpretation`` (``"MONOCHROME2"`` or ``"RGB"``),
        ``bits_stored`` (8, 16 or 32). Multi-page TIFFs give their first page.

    Raises
    ------
    NotAnImageError
        Empty file, no supported signature, a header Pillow cannot read, or data it cannot decode.
    TruncatedFileError
        A PNG without IEND or a JPEG without an end-of-image marker.
    ReadError
        A header announcing more than :data:`~asdesk.io.sanity.MAX_FRAME_PIXELS` pixels (checked before
        decoding), PNG image data larger than its header's size allows, a decoded size that differs from the
        header's, non-finite values or a flat (blank) image.
    """
    path = Path(path)
    try:
        content = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ReadError(path, f"the file cannot be opened ({error.strerror or error})") from error
    if content.size == 0:
        raise NotAnImageError(path, "the file is empty (0 bytes); copy it again from its source")
    fmt = raster_format(content[:16].tobytes())
    if not fmt:
        raise NotAnImageError(
            path, "not a PNG, JPEG, TIFF or BMP image (unknown file signature); open a DICOM or image file"
        )
    _check_complete(path, content, fmt)
    data = content.tobytes()
    width, height = header_size(path, data, fmt)
    try:
        image = _decode(data)
    except BaseException as error:  # noqa: BLE001 - Pillow's errors, or anything a native codec raises
        if must_propagate(error):
            raise
        image = None
    if image is None or image.size == 0:
        raise NotAnImageError(path, f"the {fmt} data cannot be decoded; the file is damaged or uses an "
                                    "unsupported variant: re-export it as 8- or 16-bit PNG")
    if image.ndim == 3 and (
        np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2])
    ):
        image = image[:, :, 0]
    if image.shape[:2] != (height, width) and image.shape[:2] != (width, height):  # EXIF may rotate
        raise ReadError(path, f"the {fmt} header says {width} x {height} pixels but {image.shape[1]} x "
                              f"{image.shape[0]} were decoded: the file is damaged")
    dtype = image.dtype
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    metadata = ImageMetadata(
        source=path,
        format=fmt,
        photometric_interpretation="RGB" if pixels.ndim == 3 else "MONOCHROME2",
        bits_stored=int(dtype.itemsize * 8),
    )
    display = _display(pixels, dtype)
    check_values(path, pixels, display, f"decoding the {fmt} data")
    return ImageRecord(pixels=pixels, display=display, metadata=metadata)
