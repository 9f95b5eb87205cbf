"""The model card (card.json): validation and round trip. No TensorFlow needed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from asdesk.core import CardError, ModelInfo
from asdesk.inference import ModelCard
from asdesk.inference.card import _REQUIRED


def valid_card(**overrides: Any) -> dict[str, Any]:
    """A complete, valid card document for a 32x32 MobileNetV2 pack."""
    card: dict[str, Any] = {
        "schema_version": 1,
        "id": "test-sij-stir",
        "version": "1.2.0",
        "task": "active sacroiliitis on a coronal STIR slice (test card)",
        "labels": {"positive": "Active inflammation", "negative": "No active inflammation"},
        "modalities": ["mr"],
        "body_parts": ["sij", "PELVIS", ""],
        "architecture": "MobileNetV2",
        "input": {"height": 32, "width": 32, "channels": 3},
        "preprocessing": [
            {"name": "window", "mode": "percentile", "low": 1.0, "high": 99.5},
            {"name": "clahe", "clip_limit": 2.0, "tile_grid": [4, 4]},
            {"name": "resize", "height": 32, "width": 32, "mode": "pad"},
            {"name": "normalise", "backbone": "mobilenet_v2"},
        ],
        "gradcam_layer": "out_relu",
        "operating_points": {
            "high_sensitivity": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.4},
            "balanced": {"threshold": 0.5, "sensitivity": 0.8, "specificity": 0.8},
            "high_specificity": {"threshold": 0.8, "sensitivity": 0.5, "specificity": 0.95},
            "default": "balanced",
        },
        "performance": {"metrics": {"auc": {"value": 0.81, "ci95": [0.7, 0.9]}}, "dataset": "test"},
        "training_data": {"name": "synthetic", "provenance": "made in the test", "licence": "CC0"},
        "intended_use": "Research use only; not a medical device.",
        "sha256": "ab" * 32,
        "asdesk_version": "0.1.0",
        "date": "2025-01-01",
        "study_rule": {"kind": "top_k_mean", "k": 3, "threshold": 0.5, "description": "mean of top 3"},
    }
    card.update(overrides)
    return card


def test_valid_card_parses():
    card = ModelCard.from_dict(valid_card())
    assert card.id == "test-sij-stir" and card.version == "1.2.0"
    assert card.modalities == ("MR",)
    assert card.body_parts == ("SIJ", "PELVIS", "")
    assert card.input_shape == (32, 32, 3)
    assert card.positive_label == "Active inflammation"
    assert card.default_operating_point == "balanced"
    assert card.threshold() == ("balanced", 0.5)
    assert card.threshold("high_sensitivity") == ("high_sensitivity", 0.2)
    assert card.operating_points["high_specificity"].specificity == 0.95
    assert card.study_rule is not None and card.study_rule.k == 3
    assert card.pipeline().input_shape == (32, 32, 3)
    assert card.model_info() == ModelInfo("test-sij-stir", "1.2.0", "ab" * 32, card.task,
                                          "Active inflammation", "No active inflammation")
    assert card.performance["metrics"]["auc"]["value"] == 0.81


def test_card_round_trips_through_json(tmp_path):
    document = valid_card()
    original = copy.deepcopy(document)
    card = ModelCard.from_dict(document)
    assert document == original  # parsing does not modify the document
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card.raw), encoding="utf-8")
    again = ModelCard.load(path)
    assert again == card
    assert json.loads(json.dumps(again.raw)) == original


@pytest.mark.parametrize("field", _REQUIRED)
def test_each_missing_field_is_named(field):
    document = valid_card()
    del document[field]
    with pytest.raises(CardError, match=f"missing required field.*{field}"):
        ModelCard.from_dict(document, source="pack/card.json")


@pytest.mark.parametrize("threshold", [1.5, -0.1])
def test_threshold_outside_unit_interval(threshold):
    document = valid_card()
    document["operating_points"]["balanced"]["threshold"] = threshold
    with pytest.raises(CardError, match=r"threshold of balanced is .* outside \[0, 1\]"):
        ModelCard.from_dict(document)


def test_threshold_not_a_number():
    document = valid_card()
    document["operating_points"]["balanced"]["threshold"] = "high"
    with pytest.raises(CardError, match="malformed"):
        ModelCard.from_dict(document)


def test_default_operating_point_must_be_defined():
    document = valid_card()
    document["operating_points"]["default"] = "high_specificity"
    del document["operating_points"]["high_specificity"]
    with pytest.raises(CardError, match="default operating point 'high_specificity' is not defined"):
        ModelCard.from_dict(document)


def test_unknown_operating_point_at_use():
    card = ModelCard.from_dict(valid_card())
    with pytest.raises(CardError, match="no operating point 'youden'.*balanced"):
        card.threshold("youden")


def test_pipeline_resize_must_match_input():
    document = valid_card()
    document["preprocessing"][2] = {"name": "resize", "height": 64, "width": 64}
    with pytest.raises(CardError, match=r"resizes to \(64, 64, 3\) but input is \(32, 32, 3\)"):
        ModelCard.from_dict(document)


def test_invalid_pipeline_step():
    document = valid_card()
    document["preprocessing"].insert(1, {"name": "sharpen"})
    with pytest.raises(CardError, match="invalid preprocessing.*unknown preprocessing step 'sharpen'"):
        ModelCard.from_dict(document)


def test_pipeline_order():
    document = valid_card()
    document["preprocessing"] = document["preprocessing"][::-1]
    with pytest.raises(CardError, match="invalid preprocessing"):
        ModelCard.from_dict(document)


@pytest.mark.parametrize(("override", "message"), [
    ({"architecture": "EfficientNetB0"}, "architecture 'EfficientNetB0' is not one of"),
    ({"sha256": "1234"}, "sha256 must be 64 hex digits"),
    ({"sha256": "g" * 64}, "sha256 must be 64 hex digits"),
    ({"schema_version": 2}, "schema_version 2 is not supported"),
    ({"input": {"height": 32, "width": 32}}, "malformed input"),
    ({"labels": {"positive": "yes"}}, "malformed input/labels"),
    ({"study_rule": {"kind": "top_k_mean", "k": 0, "threshold": 0.5}}, "study_rule kind must be"),
    ({"study_rule": {"kind": "majority", "k": 3, "threshold": 0.5}}, "study_rule kind must be"),
    ({"study_rule": {"kind": "top_k_mean"}}, "malformed study_rule"),
])
def test_inconsistent_fields(override, message):
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(valid_card(**override))


def test_study_rule_is_optional():
    document = valid_card()
    del document["study_rule"]
    assert ModelCard.from_dict(document).study_rule is None


def test_load_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(CardError, match="no card.json"):
        ModelCard.load(tmp_path / "card.json")
    path = tmp_path / "card.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CardError, match="not valid JSON"):
        ModelCard.load(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CardError, match="JSON object"):
        ModelCard.load(path)


def test_card_error_is_a_value_error():
    with pytest.raises(ValueError):
        ModelCard.from_dict({})
