"""Property-based tests of the readers (Hypothesis): whatever a DICOM header or PNG header says, a reader
returns a sane image or raises a ReadError naming the file; it never scores garbage and never escapes with
another exception."""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement

from asdesk.core.errors import ReadError
from asdesk.io import read_frames
from asdesk.io.sanity import MAX_FRAME_PIXELS

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PNG = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(dataset: pydicom.Dataset, path: Path) -> None:
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(buffer, enforce_file_format=False)
    path.write_bytes(buffer.getvalue())


def _check_outcome(path: Path) -> list:
    """Read the file; return the records, or [] after checking the error names the file."""
    try:
        records = read_frames(path)
    except ReadError as error:
        assert str(path) in str(error) and error.reason
        return []
    for record in records:
        assert np.isfinite(record.pixels).all() and np.isfinite(record.display).all()
        assert float(record.pixels.max()) > float(record.pixels.min())
        assert 0.0 <= float(record.display.min()) and float(record.display.max()) <= 1.0
    return records


numbers = st.one_of(
    st.sampled_from(["0", "NaN", "inf", "-inf", "1e999", "", "abc", "1A", "-1", "2.5"]),
    st.integers(-5, 70000).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:g}"),
)


@PROPERTY_SETTINGS
@given(field=st.sampled_from(["RescaleSlope", "RescaleIntercept", "NumberOfFrames", "WindowWidth",
                              "WindowCenter"]), value=numbers)
def test_dicom_header_numbers(tmp_path_factory, field, value):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tag = pydicom.datadict.tag_for_keyword(field)
        dataset[tag] = DataElement(tag, "LO", value)      # LO: any text reaches the file, as in the wild
    path = tmp_path_factory.mktemp("h") / "file.dcm"
    _write(dataset, path)
    records = _check_outcome(path)
    if field == "RescaleSlope" and records:
        assert math.isfinite(float(value)) and float(value) != 0.0
    if field == "NumberOfFrames":
        assert len(records) <= 1                    # one frame of pixel data is never read as more


@PROPERTY_SETTINGS
@given(rows=st.integers(1, 300), columns=st.integers(1, 300), bits_stored=st.integers(1, 16),
       samples=st.sampled_from([1, 3]))
def test_dicom_geometry_lies(tmp_path_factory, rows, columns, bits_stored, samples):
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))   # 64 x 64, 16 bits, native
    dataset.Rows, dataset.Columns, dataset.BitsStored, dataset.SamplesPerPixel = rows, columns, bits_stored, samples
    dataset.HighBit = bits_stored - 1
    path = tmp_path_factory.mktemp("g") / "file.dcm"
    _write(dataset, path)
    records = _check_outcome(path)
    if records:                                     # only the true geometry (or one giving the same bytes)
        assert rows * columns * samples == 64 * 64 and bits_stored > 1


@PROPERTY_SETTINGS
@given(width=st.integers(0, 70000), height=st.integers(0, 70000))
def test_png_ihdr_size_edits(tmp_path_factory, width, height):
    content = SAMPLE_PNG.read_bytes()
    body = bytearray(content[12:29])
    body[4:12] = struct.pack(">II", width, height)
    edited = content[:12] + bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))) + content[33:]
    path = tmp_path_factory.mktemp("p") / "edited.png"
    path.write_bytes(edited)
    records = _check_outcome(path)
    original = read_frames(SAMPLE_PNG)[0].pixels.shape[:2]
    if records:
        assert records[0].pixels.shape[:2] == original == (height, width)


def test_a_png_bomb_is_refused_before_decoding(tmp_path):
    """20000 x 20000 (400 million pixels) is refused from the header; the limit is in the message."""
    content = SAMPLE_PNG.read_bytes()
    body = bytearray(content[12:29])
    body[4:12] = struct.pack(">II", 20000, 20000)
    path = tmp_path / "bomb.png"
    path.write_bytes(content[:12] + bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))) + content[33:])
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ReadError, match=f"limit of {MAX_FRAME_PIXELS:,} pixels") as caught:
        read_frames(path)
    assert str(path) in str(caught.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000   # KiB: nothing allocated


def test_a_decoder_panic_becomes_the_files_error(tmp_path, monkeypatch):
    """A BaseException from a decoder plugin (what pyo3 raises on a Rust panic) is this file's ReadError."""
    import asdesk.io.dicom as dicom_module

    class PanicException(BaseException):  # pyo3_runtime.PanicException derives from BaseException
        pass

    def panic(*_args, **_kwargs):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(dicom_module, "pixel_array", panic)
    path = Path(get_testdata_file("MR_small_RLE.dcm"))
    with pytest.raises(ReadError, match="PanicException") as caught:
        read_frames(path)
    assert str(path) in str(caught.value)

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dicom_module, "pixel_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        read_frames(path)
