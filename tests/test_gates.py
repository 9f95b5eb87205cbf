"""The metadata gate and pack choice on real files: radiographs that are not knees and MR that is not a coronal
SI-joint STIR are refused by the shipped packs; what they were made for is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_DATA, requires_shared

from asdesk.core import ImageMetadata
from asdesk.inference import discover_packs
from asdesk.io import read_frames, read_series
from asdesk.tasks import (
    NoPackAcceptsError,
    choose_pack,
    metadata_reasons,
    mr_plane,
    mr_sequence,
    pack_for,
    packs_for_each,
)

REPO = Path(__file__).resolve().parents[1]
STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
T1 = SHARED_DATA / "sij-mri-dicom" / "patient1" / "T1"


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return Path(path)


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    packs, errors = discover_packs([REPO / "models"])
    assert not errors, errors
    return {pack.card.id: pack for pack in packs}


@pytest.mark.parametrize(("orientation", "plane"), [
    ((1, 0, 0, 0, 1, 0), "AXIAL"),
    ((1, 0, 0, 0, 0, -1), "CORONAL"),
    ((0, 1, 0, 0, 0, -1), "SAGITTAL"),
    ((1, 0, 0, 0, 0.61977903583791, -0.7847763673403), "CORONAL"),  # the oblique coronal SIJ STIR below
    ((1, 0, 0, 0, 0.8, -0.6), "AXIAL"),  # tilted more than 45 degrees: closest to axial
    (None, ""),
    ((1, 0, 0, 1, 0, 0), ""),  # degenerate: row and column parallel
])
def test_mr_plane_from_image_orientation(orientation, plane):
    assert mr_plane(orientation) == plane


@pytest.mark.parametrize(("tags", "sequence"), [
    ({"scanning_sequence": "SE\\IR", "inversion_time_ms": 140.0}, "STIR"),
    ({"scanning_sequence": "IR", "inversion_time_ms": 2500.0}, "FLAIR"),
    ({"scanning_sequence": "SE", "series_description": "CORO T1"}, "T1"),
    ({"series_description": "cor TIRM fs"}, "STIR"),
    ({"series_description": "Cor STIR"}, "STIR"),
    ({"scanning_sequence": "SE"}, ""),
])
def test_mr_sequence_from_acquisition_tags(tags, sequence):
    assert mr_sequence(ImageMetadata(source=Path("x"), modality="MR", **tags)) == sequence


def test_chest_and_tibia_radiographs_are_refused_by_the_knee_pack(shipped):
    knee = shipped["knee-xray-oa"].card
    for name, part in (("RG1_UNCR.dcm", "CHEST"), ("RG3_UNCR.dcm", "EXTREMITY"), ("RG1_J2KR.dcm", "CHEST"),
                       ("RG3_J2KR.dcm", "EXTREMITY")):
        meta = read_frames(pydicom_file(name))[0].metadata
        reasons = metadata_reasons(knee, meta)
        assert reasons and part in reasons[0], (name, reasons)
        with pytest.raises(NoPackAcceptsError, match=f"no installed model pack was made for {name}"):
            choose_pack(meta, list(shipped.values()))
        # naming the pack does not bypass the gate: the pack is used, and analyze_batch refuses the image
        assert pack_for(meta, list(shipped.values()), "knee-xray-oa").card.id == "knee-xray-oa"


def test_an_axial_mr_without_body_part_is_refused_by_the_stir_pack(shipped):
    meta = read_frames(pydicom_file("MR_small.dcm"))[0].metadata
    reasons = metadata_reasons(shipped["sij-mri-stir-inflammation"].card, meta)
    assert any("axial plane" in reason for reason in reasons), reasons
    assert any("sequence" in reason for reason in reasons), reasons


def test_raster_knee_goes_to_the_knee_packs_and_no_other(shipped):
    meta = read_frames(REPO / "resources" / "samples" / "knee-kl3-9023348L.png")[0].metadata
    chosen = [pack.card.id for pack in packs_for_each(meta, list(shipped.values()))]
    assert "knee-xray-oa" in chosen and all(pack_id.startswith("knee-xray-") for pack_id in chosen)
    assert metadata_reasons(shipped["sij-mri-stir-inflammation"].card, meta)


@requires_shared("data/sij-mri-dicom/patient1")
def test_coronal_stir_is_accepted_and_coronal_t1_refused_by_the_stir_pack(shipped):
    card = shipped["sij-mri-stir-inflammation"].card
    stir, _ = read_series(STIR)
    t1, _ = read_series(T1)
    assert all(mr_sequence(r.metadata) == "STIR" and mr_plane(r.metadata.image_orientation) == "CORONAL"
               for r in stir)
    assert all(metadata_reasons(card, r.metadata) == () for r in stir)
    for record in t1:
        reasons = metadata_reasons(card, record.metadata)
        assert any("T1 sequence" in reason for reason in reasons), reasons
    with pytest.raises(NoPackAcceptsError, match="T1 sequence"):
        choose_pack(t1[0].metadata, list(shipped.values()))


def test_an_empty_card_list_accepts_nothing(shipped):
    import dataclasses

    card = dataclasses.replace(shipped["knee-xray-oa"].card, body_parts=())
    meta = read_frames(REPO / "resources" / "samples" / "knee-kl3-9023348L.png")[0].metadata
    assert metadata_reasons(card, meta) == ("no body part in the file (the model accepts nothing)",)


def test_cli_refuses_a_chest_radiograph_even_with_model_and_force_marks_it(asdesk_home, capsys):
    pytest.importorskip("tensorflow")
    from asdesk.cli import EXIT_OK, EXIT_REFUSED, main

    chest = str(pydicom_file("RG1_UNCR.dcm"))
    assert main(["analyze", chest, "--quiet"]) == EXIT_REFUSED
    assert "REFUSED: no installed model pack was made for RG1_UNCR.dcm" in capsys.readouterr().out
    assert main(["analyze", chest, "--model", "knee-xray-oa", "--quiet", "--json"]) == EXIT_REFUSED
    import json

    image = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"][0]
    assert image["refused"] and image["probability"] is None and image["finding"] is None
    assert "body part CHEST" in image["refusal"]
    assert main(["analyze", chest, "--model", "knee-xray-oa", "--quiet", "--force"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OUTSIDE VALIDATED USE: body part CHEST" in out and "REFUSED" not in out
