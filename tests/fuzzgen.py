"""A seeded mutation generator of hostile DICOM and PNG files, for the screening fuzz test and larger runs.

Sources are real files: pydicom's test files (``pydicom.data``), pydicom-data's ``RG*`` radiographs, the
bundled sample PNG (``resources/samples``) and, when present, the real scans under ``../shared/data``.
Only single-frame sources are used, so that every generated file must give exactly one image row.

Each generated file's name starts with its mutation class (``00042__slope_nan__CT_small.dcm``).
:data:`BROKEN` lists the classes whose files are broken by construction: no row of theirs may carry a
probability. The other classes (byte flips, truncations) may or may not still hold a readable image.

Run ``python tests/fuzzgen.py OUT_DIR --count 3000 --seed 1 [--max-source-bytes N]`` for a larger corpus.
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pydicom.config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Classes broken by construction: their rows must never hold a probability.
BROKEN: frozenset[str] = frozenset({
    "slope_zero", "slope_nan", "slope_inf", "bits_stored_1", "frames_junk", "frames_huge", "rows_lie",
    "columns_lie", "png_ihdr_tiny", "png_ihdr_huge", "empty",
})
#: Classes that may or may not still be readable.
MAYBE: tuple[str, ...] = ("flip", "truncate")


def _dicom_sources(max_bytes: int) -> list[Path]:
    from pydicom.data import get_testdata_file

    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    rg = get_testdata_file("RG1_UNCR.dcm")
    if rg:
        folders.append(Path(str(rg)).parent)
    if SHARED_DATA.is_dir():
        folders.append(SHARED_DATA)
    found: list[Path] = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.stat().st_size > max_bytes or path.suffix.lower() in (".png", ".jpg"):
                continue
            if path.suffix.lower() not in ("", ".dcm") and "shared" not in str(path):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    header = pydicom.dcmread(path, stop_before_pixels=True)
                frames = int(header.get("NumberOfFrames", 1) or 1)
            except Exception:  # noqa: BLE001 - not a clean DICOM source
                continue
            if ("Rows" in header and frames == 1 and int(header.get("SamplesPerPixel", 1)) == 1
                    and int(header.get("BitsAllocated", 16)) > 1):
                found.append(path)
    return found


def _png_sources() -> list[Path]:
    sources = sorted((REPO / "resources" / "samples").glob("*.png"))
    if SHARED_DATA.is_dir():
        sources += sorted(SHARED_DATA.rglob("*.png"))[:40]
    return sources


def _save(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _edit(path: Path, change: Callable[[Dataset], None]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
    change(dataset)
    return _save(dataset)


def _set(dataset: Dataset, keyword: str, vr: str, value: object) -> None:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset[tag] = DataElement(tag, vr, value)


def _png_with_size(content: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width and height replaced and the chunk's CRC recomputed."""
    start = 8
    length = int.from_bytes(content[start : start + 4], "big")
    body = bytearray(content[start + 4 : start + 8 + length])  # b"IHDR" + data
    body[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
    return content[:start] + content[start : start + 4] + bytes(body) + crc + content[start + 12 + length :]


def _flip(content: bytes, rng: random.Random) -> bytes:
    data = bytearray(content)
    for _ in range(rng.choice((1, 2, 4, 16, 64))):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncate(content: bytes, rng: random.Random) -> bytes:
    return content[: rng.randrange(1, len(content))]


def _native(path: Path) -> bool:
    """Native pixel data of exactly the length its header gives (a lie about the size must be a lie)."""
    from pydicom.pixels.utils import get_expected_length

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
        uid = getattr(dataset, "file_meta", Dataset()).get("TransferSyntaxUID")
        if uid is not None and pydicom.uid.UID(str(uid)).is_compressed or "PixelData" not in dataset:
            return False
        try:
            expected = get_expected_length(dataset, "bytes")
        except Exception:  # noqa: BLE001
            return False
        return len(dataset.PixelData) in (expected, expected + 1)


def _dicom_mutation(kind: str, path: Path, rng: random.Random) -> bytes:
    if kind == "flip":
        return _flip(path.read_bytes(), rng)
    if kind == "truncate":
        return _truncate(path.read_bytes(), rng)
    if kind == "slope_zero":
        return _edit(path, lambda d: _set(d, "RescaleSlope", "DS", "0"))
    if kind == "slope_nan":
        return _edit(path, lambda d: _set(d, "RescaleSlope", "DS", "NaN"))
    if kind == "slope_inf":
        return _edit(path, lambda d: _set(d, "RescaleSlope", "DS", rng.choice(("inf", "-inf", "1e999"))))
    if kind == "bits_stored_1":
        return _edit(path, lambda d: (_set(d, "BitsStored", "US", 1), _set(d, "HighBit", "US", 0)))
    if kind == "frames_junk":
        return _edit(path, lambda d: _set(d, "NumberOfFrames", "LO", rng.choice(("1A", "x", "-3", "0", "2.5"))))
    if kind == "frames_huge":
        return _edit(path, lambda d: _set(d, "NumberOfFrames", "IS", str(rng.choice((2, 7, 2000, 99999)))))
    if kind == "rows_lie":
        delta = rng.choice((-1, 1, 0.5))

        def lie(d: Dataset) -> None:
            _set(d, "Rows", "US", max(1, int(d.Rows * delta) if delta == 0.5 else int(d.Rows + delta)))

        return _edit(path, lie)
    if kind == "columns_lie":
        return _edit(path, lambda d: _set(d, "Columns", "US", max(1, int(d.Columns) + rng.choice((-1, 1, 7)))))
    raise ValueError(kind)


def _png_mutation(kind: str, path: Path, rng: random.Random) -> bytes:
    content = path.read_bytes()
    if kind == "flip":
        return _flip(content, rng)
    if kind == "truncate":
        return _truncate(content, rng)
    if kind == "png_ihdr_tiny":
        return _png_with_size(content, rng.choice((1, 2)), rng.choice((1, 2)))
    if kind == "png_ihdr_huge":
        return _png_with_size(content, 20000, 20000)
    raise ValueError(kind)


DICOM_KINDS = ("flip", "truncate", "slope_zero", "slope_nan", "slope_inf", "bits_stored_1", "frames_junk",
               "frames_huge", "rows_lie", "columns_lie")
NATIVE_ONLY = frozenset({"rows_lie", "columns_lie", "frames_huge"})
PNG_KINDS = ("flip", "truncate", "png_ihdr_tiny", "png_ihdr_huge")


def generate(out: Path, count: int, seed: int = 0, max_source_bytes: int = 1 << 20) -> dict[str, str]:
    """Write ``count`` mutated files into ``out``.

    Parameters
    ----------
    out : Path
        Folder (created).
    count : int
        Files to write (one in 40 is an empty file).
    seed : int
        Same seed, same files.
    max_source_bytes : int
        Largest source file used.

    Returns
    -------
    dict of str to str
        File name -> mutation class.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    dicoms = _dicom_sources(max_source_bytes)
    natives = [p for p in dicoms if _native(p)]
    pngs = [p for p in _png_sources() if p.stat().st_size <= max_source_bytes]
    written: dict[str, str] = {}
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    index = 0
    while len(written) < count:
        index += 1
        roll = rng.random()
        if roll < 0.025:
            kind, data, suffix, stem = "empty", b"", "", "empty"
        elif roll < 0.30 and pngs:
            source = rng.choice(pngs)
            kind = rng.choice(PNG_KINDS)
            data, suffix, stem = _png_mutation(kind, source, rng), ".png", source.stem
        else:
            kind = rng.choice(DICOM_KINDS)
            source = rng.choice(natives if kind in NATIVE_ONLY else dicoms)
            try:
                data = _dicom_mutation(kind, source, rng)
            except Exception:  # noqa: BLE001 - pydicom cannot write this edit of this source: pick another
                continue
            suffix, stem = rng.choice(("", ".dcm")), source.stem
        name = f"{index:05d}__{kind}__{stem}{suffix}"
        (out / name).write_bytes(data)
        written[name] = kind
    return written


def main() -> None:
    """Command line: write a corpus."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-source-bytes", type=int, default=8 << 20)
    args = parser.parse_args()
    written = generate(args.out, args.count, args.seed, args.max_source_bytes)
    counts: dict[str, int] = {}
    for kind in written.values():
        counts[kind] = counts.get(kind, 0) + 1
    print(f"{len(written)} files in {args.out}: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
