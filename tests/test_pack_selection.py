"""Two bundled packs for the same radiograph (knee osteoarthritis and knee bone density): without --model
neither wins silently. ``asdesk analyze`` prints each finding; elsewhere the user chooses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import REPO

from asdesk.inference import discover_packs
from asdesk.io import read_frames
from asdesk.tasks import SeveralPacksAcceptError, choose_pack, pack_for, packs_for_each

SAMPLE = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"
KNEE_PACKS = ("knee-xray-oa", "knee-xray-osteoporosis")


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    packs, errors = discover_packs([REPO / "models"])
    assert not errors, errors
    found = {pack.card.id: pack for pack in packs}
    missing = [pack_id for pack_id in KNEE_PACKS if pack_id not in found]
    if missing:
        pytest.fail(f"bundled packs missing: {missing}")
    return found


def test_a_knee_radiograph_goes_to_neither_knee_pack_silently(shipped):
    meta = read_frames(SAMPLE)[0].metadata
    packs = list(shipped.values())
    with pytest.raises(SeveralPacksAcceptError) as raised:
        choose_pack(meta, packs)
    assert raised.value.pack_ids == KNEE_PACKS
    assert "--model" in str(raised.value)
    assert [p.card.id for p in packs_for_each(meta, packs)] == list(KNEE_PACKS)
    for pack_id in KNEE_PACKS:  # naming one chooses exactly that one
        assert pack_for(meta, packs, pack_id).card.id == pack_id
        assert [p.card.id for p in packs_for_each(meta, packs, pack_id)] == [pack_id]


def test_a_user_pack_never_joins_or_beats_a_bundled_one(shipped):
    meta = read_frames(SAMPLE)[0].metadata
    oa = shipped["knee-xray-oa"]
    user = dataclasses.replace(oa, card=dataclasses.replace(oa.card, id="aaa-user-knee"), origin="user")
    assert choose_pack(meta, [oa, user]).card.id == "knee-xray-oa"
    assert [p.card.id for p in packs_for_each(meta, [user, oa])] == ["knee-xray-oa"]


def test_analyze_without_model_prints_both_knee_findings_and_a_report_each(tmp_path, capsys, monkeypatch):
    from asdesk import cli

    monkeypatch.setenv("ASDESK_HOME", str(tmp_path / "home"))  # the bundled packs only
    report = tmp_path / "r.pdf"
    status = cli.main(["analyze", str(SAMPLE), "--report", str(report), "-q"])
    out = capsys.readouterr().out
    assert status in (0, 3), out
    assert "2 model packs were made for this image" in out
    for pack_id in KNEE_PACKS:
        assert f"{pack_id} " in out
        pdf = tmp_path / f"r-{pack_id}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not report.exists()
    assert Path(tmp_path / "r-knee-xray-oa.pdf").stat().st_size > 10_000
