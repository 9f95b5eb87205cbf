"""Two bundled packs for the same radiograph (knee osteoarthritis and knee bone density): without --model
neither wins silently. ``asdesk analyze`` prints each finding; elsewhere (screening, the window) the user chooses.

The second knee pack is the shipped ``knee-xray-oa`` under the id ``knee-xray-osteoporosis`` (same files, same
gates), so the rule is tested whether or not the osteoporosis pack is bundled; a last test checks the bundled
pair when both are there."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import REPO

from asdesk.inference import discover_packs
from asdesk.io import read_frames
from asdesk.tasks import EngineCache, SeveralPacksAcceptError, choose_pack, pack_for, packs_for_each

SAMPLE = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"
KNEE_PACKS = ("knee-xray-oa", "knee-xray-osteoporosis")


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    packs, errors = discover_packs([REPO / "models"])
    assert not errors, errors
    return {pack.card.id: pack for pack in packs}


@pytest.fixture(scope="module")
def two_knee_packs(shipped) -> list[object]:
    """The shipped packs, with a second bundled knee pack (knee-xray-oa's files under another id)."""
    oa = shipped["knee-xray-oa"]
    twin = dataclasses.replace(oa, card=dataclasses.replace(oa.card, id="knee-xray-osteoporosis"))
    return [pack for pack_id, pack in shipped.items() if pack_id != "knee-xray-osteoporosis"] + [twin]


def test_a_knee_radiograph_goes_to_neither_knee_pack_silently(two_knee_packs):
    meta = read_frames(SAMPLE)[0].metadata
    with pytest.raises(SeveralPacksAcceptError) as raised:
        choose_pack(meta, two_knee_packs)
    assert raised.value.pack_ids == KNEE_PACKS
    assert "--model" in str(raised.value)
    assert [p.card.id for p in packs_for_each(meta, two_knee_packs)] == list(KNEE_PACKS)
    for pack_id in KNEE_PACKS:  # naming one chooses exactly that one
        assert pack_for(meta, two_knee_packs, pack_id).card.id == pack_id
        assert [p.card.id for p in packs_for_each(meta, two_knee_packs, pack_id)] == [pack_id]


def test_one_bundled_knee_pack_is_still_chosen_alone_and_a_user_pack_never_joins(shipped):
    meta = read_frames(SAMPLE)[0].metadata
    oa = shipped["knee-xray-oa"]
    user = dataclasses.replace(oa, card=dataclasses.replace(oa.card, id="aaa-user-knee"), origin="user")
    assert choose_pack(meta, [oa, user]).card.id == "knee-xray-oa"
    assert [p.card.id for p in packs_for_each(meta, [user, oa])] == ["knee-xray-oa"]


class _Packs(EngineCache):
    """An engine cache over a fixed list of packs."""

    def __init__(self, packs: list[object]) -> None:
        super().__init__(directories=[])
        self._fixed = packs

    def packs(self):  # noqa: ANN201
        return list(self._fixed), []

    def refresh(self) -> None:  # the CLI refreshes; the list stays
        return None


def test_analyze_without_model_prints_both_knee_findings_and_a_report_each(two_knee_packs, tmp_path, capsys,
                                                                          monkeypatch):
    from asdesk import cli

    monkeypatch.setattr(cli, "_engines", lambda: _Packs(two_knee_packs))
    report = tmp_path / "r.pdf"
    status = cli.main(["analyze", str(SAMPLE), "--report", str(report), "-q"])
    out = capsys.readouterr().out
    assert status in (0, 3), out
    assert "2 model packs were made for this image" in out
    for pack_id in KNEE_PACKS:
        assert f"{pack_id} " in out
        assert (tmp_path / f"r-{pack_id}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not report.exists()
    status = cli.main(["analyze", str(SAMPLE), "--model", "knee-xray-oa", "--json", "-q"])
    documents = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(documents) == 1 and '"knee-xray-oa"' in documents[0]


def test_screening_without_model_asks_for_a_choice(two_knee_packs, tmp_path):
    import csv
    import shutil

    from asdesk.tasks import screen_folder

    folder = tmp_path / "knees"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    screen_folder(folder, tmp_path / "out.csv", engines=_Packs(two_knee_packs))
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert [row["status"] for row in rows] == ["error"]
    assert "several model packs" in rows[0]["error"] and "knee-xray-osteoporosis" in rows[0]["error"]


@pytest.mark.skipif(not (REPO / "models" / "knee-xray-osteoporosis" / "card.json").is_file(),
                    reason="the knee-xray-osteoporosis pack is not bundled")
def test_the_bundled_knee_packs_both_accept_a_knee_radiograph(shipped):
    meta = read_frames(SAMPLE)[0].metadata
    assert [p.card.id for p in packs_for_each(meta, list(shipped.values()))] == list(KNEE_PACKS)
