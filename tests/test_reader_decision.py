"""Reader decisions on disk: keyed by the images' UIDs or SHA-256, written at once, restored, with history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DATA, requires_shared

from asdesk.core import ImageMetadata
from asdesk.core.reader_decision import (
    AiFindingRef,
    ReaderDecision,
    ReaderDecisionStore,
    case_key,
    decisions_dir,
    file_sha256,
    format_timestamp,
)

STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"
AI_POSITIVE = AiFindingRef(finding="TEST positive finding", positive=True, probability=0.734, threshold=0.6,
                           operating_point="balanced", model_id="test-pack", model_version="0.0.1",
                           model_sha256="ab" * 32)


def test_store_lives_under_asdesk_home(asdesk_home):
    assert decisions_dir() == asdesk_home / "data" / "reader-decisions"
    assert ReaderDecisionStore().path_for("sop-1.2.3").parent == decisions_dir()


def test_a_decision_is_saved_at_once_and_restored_by_a_new_store(asdesk_home):
    saved = ReaderDecisionStore().record("sop-1.2.3", "negative", "TEST note: artefact", "Lovelace, Ada",
                                         AI_POSITIVE, "/data/case")
    path = decisions_dir() / "sop-1.2.3.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["conclusion"] == "negative" and data["agreement"] == "disagree" and data["reader"] == "Lovelace, Ada"
    assert data["ai"]["model_id"] == "test-pack" and data["recorded_at"] == saved.recorded_at
    restored = ReaderDecisionStore().load("sop-1.2.3")          # another store: as after a restart
    assert restored == saved
    assert restored.summary("OA", "no OA") == "Disagrees with the AI finding: negative (no OA)"
    assert restored.signed().startswith("Lovelace, Ada, ")
    assert [p.name for p in path.parent.iterdir()] == ["sop-1.2.3.json"]   # no temporary file left


def test_changes_keep_the_earlier_versions(asdesk_home):
    store = ReaderDecisionStore()
    store.record("k", "", "draft note", "", AI_POSITIVE)
    store.record("k", "positive", "draft note, then agreed", "R", AI_POSITIVE)
    store.record("k", "indeterminate", "changed my mind", "R", AI_POSITIVE)
    assert store.load("k").conclusion == "indeterminate"
    assert [item.conclusion for item in store.history("k")] == ["", "positive"]
    assert store.load("k").agreement == "disagree"


def test_agreement_and_refusal():
    agree = ReaderDecision(key="k", conclusion="positive", ai=AI_POSITIVE)
    assert agree.agreement == "agree" and agree.summary() == "Agrees with the AI finding: positive"
    refused = AiFindingRef(finding="Not analysed: outside ...", positive=None)
    own = ReaderDecision(key="k", conclusion="indeterminate", ai=refused)
    assert own.agreement == "no_ai_finding" and "the AI gave no finding" in own.summary()
    assert ReaderDecision(key="k").summary() == "No conclusion recorded yet" and not ReaderDecision(key="k").decided
    with pytest.raises(ValueError, match="one of positive, negative, indeterminate"):
        ReaderDecision(key="k", conclusion="maybe")


def test_a_damaged_file_is_ignored_not_fatal(asdesk_home):
    store = ReaderDecisionStore()
    store.path_for("k").parent.mkdir(parents=True)
    store.path_for("k").write_text("{not json", encoding="utf-8")
    assert store.load("k") is None
    store.path_for("k").write_text(json.dumps({"key": "k", "conclusion": "maybe"}), encoding="utf-8")
    assert store.load("k") is None
    assert store.record("k", "positive", "", "R", None).conclusion == "positive"   # and it can be replaced


def test_timestamps_read_as_people_write_them():
    assert format_timestamp("2025-03-01T14:05:09+01:00") == "2025-03-01 14:05 (UTC+01:00)"
    assert format_timestamp("") == ""


@requires_shared("data/sij-mri-dicom", "data/knee-xray-kl")
def test_keys_follow_the_images_not_their_paths(tmp_path):
    from asdesk.io import read_image, read_series

    records, _ = read_series(STIR)
    series_key = case_key([record.metadata for record in records])
    assert series_key == f"series-{records[0].metadata.series_uid}"
    single = read_image(STIR / "I1000000").metadata
    assert case_key([single]) == f"sop-{single.sop_instance_uid}"
    copy = tmp_path / "renamed"
    shutil.copytree(STIR, copy)
    copied, _ = read_series(copy)
    assert case_key([record.metadata for record in copied]) == series_key     # the same case wherever it is
    knee = sorted((SHARED_DATA / "knee-xray-kl" / "val" / "0").glob("*.png"))[0]
    moved = tmp_path / "other-name.png"
    shutil.copy(knee, moved)
    assert case_key([ImageMetadata(source=knee, format="PNG")]) == f"sha256-{file_sha256(knee)}"
    assert case_key([ImageMetadata(source=moved, format="PNG")]) == case_key([ImageMetadata(source=knee)])
    with pytest.raises(ValueError):
        case_key([])


def test_unwritable_folder_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        ReaderDecisionStore(Path(blocker) / "sub").record("k", "positive", "", "R", None)
