"""The model packs shipped in models/: valid, untampered, and measuring on real data what their cards say."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_shared

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
PACKS = sorted(p.name for p in MODELS.iterdir() if (p / "card.json").is_file()) if MODELS.is_dir() else []


@pytest.mark.parametrize("pack_id", PACKS)
def test_shipped_pack_loads_with_its_hash(pack_id):
    from asdesk.inference import load_pack

    pack = load_pack(MODELS / pack_id, verify_hash=True)
    card = json.loads((MODELS / pack_id / "card.json").read_text())
    assert pack.card.id == pack_id
    performance = card["performance"]
    assert performance["dataset"] and performance["protocol"]
    auc = performance["metrics"]["auc"]
    assert 0.0 <= auc["ci95"][0] <= auc["value"] <= auc["ci95"][1] <= 1.0


def test_expected_packs_are_shipped():
    assert {"knee-xray-oa", "sij-mri-stir-inflammation"} <= set(PACKS)


@requires_shared("data/knee-xray-kl")
def test_screening_the_knee_val_set_reproduces_the_cards_auc(tmp_path, shared_data):
    """`asdesk screen` over the held-out knee patients gives the AUC that the card states."""
    from sklearn.metrics import roc_auc_score

    from asdesk.tasks import screen_folder

    val = shared_data / "knee-xray-kl" / "val"
    card = json.loads((MODELS / "knee-xray-oa" / "card.json").read_text())
    out = tmp_path / "val.csv"
    summary = screen_folder(val, out, model_id="knee-xray-oa")
    assert summary.n_errors == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == card["performance"]["n_images"] == 826
    labels = np.array([int(Path(r["file"]).parent.name) >= 2 for r in rows], dtype=int)
    probabilities = np.array([float(r["probability"]) for r in rows])
    assert {r["model_id"] for r in rows} == {"knee-xray-oa"}
    assert roc_auc_score(labels, probabilities) == pytest.approx(card["performance"]["metrics"]["auc"]["value"],
                                                                 abs=6e-4)


@requires_shared("data/sij-mri-dicom")
def test_stir_series_gets_a_study_result_from_the_sij_pack(shared_data):
    from asdesk.core import SeriesResult
    from asdesk.tasks import analyze_path

    result = analyze_path(shared_data / "sij-mri-dicom" / "patient1" / "STIR")
    assert isinstance(result, SeriesResult)
    assert len(result.slices) == 15
    assert {s.model.pack_id for s in result.slices} == {"sij-mri-stir-inflammation"}
    top3 = sorted((s.prediction.probability for s in result.slices), reverse=True)[:3]
    assert result.study_probability == pytest.approx(float(np.mean(top3)), abs=1e-6)
    for analysis in result.slices:
        assert analysis.heatmap is not None and analysis.heatmap.shape == analysis.record.shape
