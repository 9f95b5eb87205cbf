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
    outputs = np.array([float(r["model_output"]) for r in rows])  # the raw output, refused images included
    assert {r["model_id"] for r in rows} == {"knee-xray-oa"}
    assert roc_auc_score(labels, outputs) == pytest.approx(card["performance"]["metrics"]["auc"]["value"], abs=6e-4)
    # the content gate accepts held-out knees at about the rate the card states (95% of validation images)
    accepted = np.array([r["status"] == "result" for r in rows])
    assert summary.n_refused == int((~accepted).sum())
    assert abs(accepted.mean() - card["content_gate"]["validation_acceptance"]) < 0.03, accepted.mean()
    grades = np.array([int(Path(r["file"]).parent.name) for r in rows])
    by_grade = {grade: float(accepted[grades == grade].mean()) for grade in range(5)}
    assert min(by_grade.values()) >= 0.8, by_grade  # severe OA (KL 4) is not the grade the gate refuses
    # the probability shown (calibrated, monotone) ranks accepted images exactly as the raw output does
    shown = np.array([float(r["probability"]) for r, ok in zip(rows, accepted, strict=True) if ok])
    assert roc_auc_score(labels[accepted], shown) == pytest.approx(roc_auc_score(labels[accepted], outputs[accepted]))
    assert all(not r["probability"] and r["finding"] == "refused" for r, ok in zip(rows, accepted, strict=True)
               if not ok)


@requires_shared("data/sij-mri-dicom")
def test_stir_series_gets_a_study_result_from_the_sij_pack(shared_data):
    from asdesk.core import SeriesResult
    from asdesk.tasks import analyze_path

    study = shared_data / "sij-mri-dicom" / "patient1"
    # The T1 series of the same study is not what the pack reads: refused as a whole, slice by slice.
    refused = analyze_path(study / "T1", model_id="sij-mri-stir-inflammation", gradcam=False)
    assert isinstance(refused, SeriesResult) and refused.refused and refused.n_refused == 15
    assert all("T1" in " ".join(s.gate.reasons) for s in refused.slices)
    forced = analyze_path(study / "T1", model_id="sij-mri-stir-inflammation", gradcam=False, force=True)
    assert not forced.refused and all(s.gate.overridden for s in forced.slices)  # the reader's override, marked
    # Its STIR series (another site than the training data) passes the 3.0.0 content gate on every slice
    # (benchmarks/refusal-results.txt) and gets a study result without an override.
    result = analyze_path(study / "STIR")
    assert isinstance(result, SeriesResult) and not result.refused
    assert len(result.slices) == 15 and not any(s.gate.overridden for s in result.slices)
    assert {s.model.pack_id for s in result.slices} == {"sij-mri-stir-inflammation"}
    top3 = sorted((s.prediction.raw_probability for s in result.slices), reverse=True)[:3]
    assert result.study_probability == pytest.approx(float(np.mean(top3)), abs=1e-6)
    # the slices show calibrated probabilities, the rule works on raw outputs: the rule text says which scale
    assert any(abs(s.prediction.raw_probability - s.prediction.probability) > 0.01 for s in result.slices)
    assert "uncalibrated slice outputs" in result.study_rule
    for analysis in result.slices:
        assert analysis.heatmap is not None and analysis.heatmap.shape == analysis.record.shape


@requires_shared("data/knee-xray-kl/val")
def test_a_confident_negative_knee_shows_no_hot_map_and_a_positive_does(shared_data):
    """KL 0 knee at a low probability: its Grad-CAM overlay is invisible (a map scaled by the probability stays
    below the overlay's transparency floor); a KL 4 knee at a high probability shows a strong one. Both peak
    inside the region the model saw, never in the padding."""
    from asdesk.tasks import analyze_path

    negative = analyze_path(shared_data / "knee-xray-kl" / "val" / "0" / "9006140L.png", model_id="knee-xray-oa")
    assert not negative.refused and negative.prediction.probability < 0.1
    assert negative.heatmap.max() <= negative.prediction.probability + 1e-6
    assert int(negative.overlay[..., 3].max()) == 0  # nothing drawn
    folder = shared_data / "knee-xray-kl" / "val" / "4"
    positive = max((analyze_path(path, model_id="knee-xray-oa") for path in sorted(folder.glob("*.png"))[:6]),
                   key=lambda r: -1.0 if r.refused else r.prediction.probability)
    assert positive.prediction.probability > 0.8
    assert positive.heatmap.max() == pytest.approx(positive.prediction.probability, abs=0.02)
    assert int(positive.overlay[..., 3].max()) > 80
