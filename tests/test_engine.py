"""The inference engine on real images (a knee radiograph PNG and an SI-joint STIR DICOM slice) with a
tiny MobileNetV2 pack written by write_pack."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from conftest import SHARED_DATA, requires_shared  # noqa: E402

from asdesk.core import (  # noqa: E402
    AnalysisResult,
    CancelledError,
    CancelToken,
    CardError,
    ImageRecord,
    ModelHashMismatchError,
    Prediction,
)
from asdesk.inference import InferenceEngine, StudyRule, load_pack, map_on_image, write_pack  # noqa: E402
from asdesk.io import read_image  # noqa: E402
from asdesk.tasks import analyze_batch, judge, study_decision, study_result  # noqa: E402
from asdesk.training.model import build_classifier  # noqa: E402

DATA = SHARED_DATA
KNEE_PNG = DATA / "knee-xray-kl" / "val" / "0" / "9006140L.png"
STIR_DICOM = DATA / "sij-mri-dicom" / "patient1" / "STIR" / "I1000000"  # PACS export: no extension

pytestmark = requires_shared("data/knee-xray-kl", "data/sij-mri-dicom")


def engine_card(**overrides: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "schema_version": 1,
        "id": "mobilenet-test",
        "version": "0.0.1",
        "task": "engine test (random weights)",
        "labels": {"positive": "Finding present", "negative": "No finding"},
        "modalities": ["", "MR", "CR", "DX"],
        "body_parts": ["KNEE", "SIJ", ""],
        "architecture": "MobileNetV2",
        "input": {"height": 32, "width": 32, "channels": 3},
        "preprocessing": [{"name": "window", "mode": "display"},
                          {"name": "resize", "height": 32, "width": 32, "mode": "pad"},
                          {"name": "normalise", "backbone": "mobilenet_v2"}],
        "gradcam_layer": "out_relu",
        "operating_points": {"high_sensitivity": {"threshold": 0.3}, "balanced": {"threshold": 0.5},
                             "high_specificity": {"threshold": 0.7}, "default": "balanced"},
        "performance": {},
        "training_data": {"name": "none: random weights"},
        "intended_use": "Research use only; not a medical device.",
        "asdesk_version": "0.1.0",
        "date": "2025-01-01",
        "study_rule": {"kind": "top_k_mean", "k": 2, "threshold": 0.5, "description": "mean of the top 2"},
    }
    card.update(overrides)
    return card


@pytest.fixture(scope="module")
def records() -> list[ImageRecord]:
    knee = read_image(KNEE_PNG)
    stir = read_image(STIR_DICOM)
    # A non-square image, so that padding and the map back to the image grid are exercised.
    narrow = ImageRecord(knee.pixels[:, 40:200].copy(), knee.display[:, 40:200].copy(), knee.metadata)
    return [knee, stir, narrow]


@pytest.fixture(scope="module")
def pack(tmp_path_factory, records):
    model = build_classifier("MobileNetV2", (32, 32, 3), weights=None, seed=0)
    # Random backbones give huge features; scale the head so the test images get mid-range probabilities
    # (a saturated 0.0/1.0 would make the probability checks trivial).
    from asdesk.preprocess import build_pipeline

    pipeline = build_pipeline(engine_card()["preprocessing"])
    import keras

    batch = np.stack([pipeline(record).tensor for record in records])
    pooled = keras.Model(model.inputs[0], model.get_layer("head_pool").output)(batch).numpy()
    head = model.get_layer("head_output")
    kernel = np.abs(head.get_weights()[0])
    kernel /= max(float(np.abs(pooled @ kernel).max()), 1e-6)
    head.set_weights([kernel * 2.0, np.array([-1.0], np.float32)])
    return write_pack(tmp_path_factory.mktemp("engine") / "mobilenet-test", model, engine_card())


@pytest.fixture(scope="module")
def engine(pack) -> InferenceEngine:
    return InferenceEngine(load_pack(pack.path)).load()


@pytest.fixture(scope="module")
def analysed(engine, records) -> list[AnalysisResult]:
    return analyze_batch(engine, records)


def direct_probabilities(engine: InferenceEngine, records: list[ImageRecord]) -> np.ndarray:
    batch = np.stack([engine.pipeline(record).tensor for record in records])
    return engine.model(batch, training=False).numpy()[:, 0]


def test_analyze_real_png_and_dicom(engine, pack, records, analysed):
    assert len(analysed) == len(records)
    assert engine.device.startswith(("CPU", "GPU"))
    direct = direct_probabilities(engine, records)
    assert (np.abs(direct - 0.5) < 0.49).all()  # mid-range, not saturated
    for result, record, expected in zip(analysed, records, direct, strict=True):
        assert result.record is record
        assert result.model_input.shape == (32, 32) and result.model_input.dtype == np.float32
        np.testing.assert_array_equal(result.model_input, engine.pipeline(record).image)
        prediction = result.prediction
        assert 0.0 <= prediction.probability <= 1.0
        assert prediction.probability == pytest.approx(float(expected), abs=1e-5)
        assert prediction.operating_point == "balanced" and prediction.threshold == 0.5
        assert prediction.positive == (prediction.probability >= 0.5)
        assert prediction.finding == ("Finding present" if prediction.positive else "No finding")
        assert result.model == engine.info
        assert (result.model.pack_id, result.model.version, result.model.sha256) == (
            "mobilenet-test", "0.0.1", pack.card.sha256)
        assert result.heatmap is not None and result.overlay is not None
        assert result.heatmap.shape == record.shape and result.heatmap.dtype == np.float32
        assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= prediction.probability + 1e-6
        assert result.overlay.shape == (*record.shape, 4) and result.overlay.dtype == np.uint8
        assert set(result.timings_ms) == {"preprocess", "classify", "gradcam"}
        assert all(value >= 0.0 and math.isfinite(value) for value in result.timings_ms.values())
    assert records[2].shape == (224, 160)


def test_heatmap_of_a_padded_image_maps_back_to_the_image_grid(engine, records, analysed):
    """A (224, 160) image is padded left and right to 32x32; the map drawn back covers the image only, is
    normalised over the region the model saw (never over the padding) and scaled by the probability."""
    record, result = records[2], analysed[2]
    model_input = engine.pipeline(record)
    assert model_input.geometry.content_box[1] > 0  # there is padding
    _, raw_maps = engine.gradcam().raw(model_input.tensor[None])
    expected = map_on_image(raw_maps[0], model_input.geometry) * result.prediction.probability
    np.testing.assert_allclose(result.heatmap, expected, atol=1e-5)
    if raw_maps[0].max() > 0:
        assert result.heatmap.max() == pytest.approx(result.prediction.probability, abs=1e-4)


def test_heat_map_strength_follows_the_probability(engine, records):
    """The same Grad-CAM shape shown for a weak and a strong finding: the weak one is fainter everywhere."""
    from asdesk.tasks.decision import scaled_heatmap

    output = engine.infer(records[:1])[0]
    weak, strong = judge(engine.card, 0.02), judge(engine.card, 0.98)
    faint, hot = scaled_heatmap(output.heatmap, weak, False), scaled_heatmap(output.heatmap, strong, False)
    assert faint.max() <= 0.02 + 1e-6 and hot.max() > 0.5
    assert scaled_heatmap(output.heatmap, strong, True) is None  # refused: no map


def test_a_spot_comes_back_to_its_image_position_through_crop_pad_and_resize():
    """A bright spot at a known image position, through crop_mm (non-square image) + pad + resize: a map that
    peaks where the spot lands in the model input is drawn back onto the image at the spot."""
    from asdesk.core import ImageMetadata
    from asdesk.preprocess import build_pipeline

    height, width = 300, 200
    pixels = np.zeros((height, width), np.float32)
    spot = (200, 70)
    pixels[spot[0] - 2:spot[0] + 3, spot[1] - 2:spot[1] + 3] = 1000.0
    pixels[0, 0] = 1.0  # a non-flat background
    meta = ImageMetadata(source=Path("spot.dcm"), pixel_spacing_mm=(0.5, 0.5))
    record = ImageRecord(pixels, pixels / 1000.0, meta)
    pipeline = build_pipeline([{"name": "window", "mode": "display"},
                               {"name": "crop_mm", "height_mm": 120.0, "width_mm": 120.0},
                               {"name": "resize", "height": 64, "width": 64, "mode": "pad"},
                               {"name": "normalise", "backbone": "mobilenet_v2"}])
    model_input = pipeline(record)
    geometry = model_input.geometry
    assert geometry.crop_box != (0, 0, height, width) and geometry.content_box != (0, 0, 64, 64)
    landed = np.unravel_index(int(np.argmax(model_input.image)), model_input.image.shape)
    cam = np.zeros((64, 64), np.float32)
    cam[landed] = 1.0
    cam = np.asarray(__import__("cv2").GaussianBlur(cam, (0, 0), 1.5))
    on_image = map_on_image(cam, geometry)
    peak = np.unravel_index(int(np.argmax(on_image)), on_image.shape)
    assert abs(peak[0] - spot[0]) <= 4 and abs(peak[1] - spot[1]) <= 4
    assert on_image.max() > 0.9  # normalised on the model-input grid, then interpolated onto the image
    top, left, bottom, right = geometry.crop_box
    outside = np.ones_like(on_image, dtype=bool)
    outside[top:bottom, left:right] = False
    assert not on_image[outside].any()  # nothing outside what the model saw


def test_batch_results_equal_single_results(engine, records, analysed):
    for record, batched in zip(records, analysed, strict=True):
        single = analyze_batch(engine, [record])[0]
        assert single.prediction.probability == pytest.approx(batched.prediction.probability, abs=1e-5)
        np.testing.assert_allclose(single.heatmap, batched.heatmap, atol=1e-5)
        np.testing.assert_array_equal(single.model_input, batched.model_input)


def test_lazy_load_logs_device_and_chunks_batches(pack, records, analysed, caplog):
    engine = InferenceEngine(pack, batch_size=2)
    assert not engine.loaded and engine.device == ""
    with caplog.at_level(logging.INFO, logger="asdesk.inference"):
        results = analyze_batch(engine, records)
    assert engine.loaded
    assert "loaded model pack mobilenet-test version 0.0.1" in caplog.text
    assert engine.device and engine.device in caplog.text
    for mine, reference in zip(results, analysed, strict=True):
        assert mine.prediction.probability == pytest.approx(reference.prediction.probability, abs=1e-5)
        np.testing.assert_allclose(mine.heatmap, reference.heatmap, atol=1e-5)


def test_probabilities_match_the_model_in_chunks(engine):
    tensors = np.random.default_rng(1).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    direct = engine.model(tensors, training=False).numpy()[:, 0]
    engine.batch_size = 2
    try:
        chunked = engine.probabilities(tensors)
    finally:
        engine.batch_size = 16
    assert chunked.shape == (5,) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, direct, atol=1e-5)
    np.testing.assert_allclose(engine.probabilities(tensors), direct, atol=1e-5)
    assert engine.probabilities(np.zeros((0, 32, 32, 3), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match=r"batch \(N, 32, 32, 3\)"):
        engine.probabilities(tensors[0])


def test_analyze_without_gradcam(engine, records, analysed):
    results = analyze_batch(engine, records, gradcam=False)
    for plain, explained in zip(results, analysed, strict=True):
        assert plain.heatmap is None and plain.overlay is None
        assert plain.timings_ms["gradcam"] == 0.0
        assert plain.prediction.probability == pytest.approx(explained.prediction.probability, abs=1e-5)


def test_operating_points_and_decisions(engine, records):
    result = analyze_batch(engine, records[:1], operating_point="high_sensitivity", gradcam=False)[0]
    assert result.prediction.threshold == 0.3 and result.prediction.operating_point == "high_sensitivity"
    assert judge(engine.card, 0.5) == Prediction(0.5, 0.5, "balanced", True, "Finding present", 0.5, False)
    assert judge(engine.card, 0.49).finding == "No finding"
    assert judge(engine.card, 0.3, "high_sensitivity").positive
    assert not judge(engine.card, 0.69, "high_specificity").positive
    with pytest.raises(CardError, match="no operating point 'youden'"):
        judge(engine.card, 0.5, "youden")
    with pytest.raises(CardError, match="no operating point"):
        analyze_batch(engine, records, operating_point="youden")
    with pytest.raises(ValueError, match="non-finite"):
        judge(engine.card, float("nan"))


def test_cancel_stops_analysis(engine, records):
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        analyze_batch(engine, records, cancel=token)


def test_empty_analysis_does_not_load_the_model(pack):
    engine = InferenceEngine(pack)
    assert analyze_batch(engine, []) == []
    assert not engine.loaded
    with pytest.raises(ValueError, match="batch_size"):
        InferenceEngine(pack, batch_size=0)


def _slices(engine: InferenceEngine, record: ImageRecord, probabilities: list[float]) -> list[AnalysisResult]:
    return [AnalysisResult(record=record, model_input=np.zeros((32, 32), np.float32),
                           prediction=judge(engine.card, p), model=engine.info) for p in probabilities]


def test_study_result_top_k_mean(engine, records):
    values = [0.9, 0.2, 0.7, 0.4]
    score, prediction = study_result(values, StudyRule("top_k_mean", 2, 0.75, ""))
    assert score == pytest.approx(0.8)
    assert prediction == Prediction(pytest.approx(0.8), 0.75, "study", True, "positive", pytest.approx(0.8))
    score, prediction = study_result(values, StudyRule("top_k_mean", 2, 0.85, ""))
    assert not prediction.positive and prediction.finding == "negative"
    score, _ = study_result(values, StudyRule("top_k_mean", 10, 0.5, ""))  # fewer slices than k
    assert score == pytest.approx(0.55)
    score, _ = study_result(values, StudyRule("top_k_mean", 1, 0.5, ""))
    assert score == pytest.approx(0.9)
    with pytest.raises(ValueError, match="at least one"):
        study_result([], StudyRule("top_k_mean", 2, 0.5, ""))

    slices = _slices(engine, records[1], [0.1, 0.6, 0.3, 0.5])
    score, prediction, _text = study_decision(slices, engine.card)  # the card's rule: top 2, threshold 0.5
    assert score == pytest.approx(0.55)
    assert prediction.positive and prediction.finding == "Finding present" and prediction.threshold == 0.5
    score, prediction = study_result([0.1, 0.6, 0.3, 0.5], StudyRule("top_k_mean", 3, 0.5, ""), "Yes", "No")
    assert score == pytest.approx(0.4667, abs=1e-4)
    assert prediction.finding == "No"


def test_study_without_a_rule_is_the_most_probable_slice(pack, tmp_path, records):
    card = engine_card()
    del card["study_rule"]
    folder = shutil.copytree(pack.path, tmp_path / "no-rule")
    card["sha256"] = pack.card.sha256
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")
    engine = InferenceEngine(load_pack(folder))
    slices = _slices(engine, records[1], [0.1, 0.6, 0.3])
    score, prediction, text = study_decision(slices, engine.card)
    assert score == pytest.approx(0.6) and prediction.positive and "not validated at study level" in text


def test_engine_refuses_a_damaged_model(pack, tmp_path):
    folder = shutil.copytree(pack.path, tmp_path / "damaged")
    data = bytearray((folder / "model.keras").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.keras").write_bytes(bytes(data))
    engine = InferenceEngine(load_pack(folder, verify_hash=False))
    with pytest.raises(ModelHashMismatchError, match="reinstall the pack"):
        engine.load()
    assert not engine.loaded


def test_engine_refuses_a_card_that_does_not_fit_the_model(pack, tmp_path):
    steps = engine_card()["preprocessing"]
    steps[1] = {"name": "resize", "height": 48, "width": 48, "mode": "pad"}
    card = engine_card(input={"height": 48, "width": 48, "channels": 3}, preprocessing=steps,
                       sha256=pack.card.sha256)
    folder = shutil.copytree(pack.path, tmp_path / "mismatch")
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(CardError, match=r"card says input \(48, 48, 3\).*expects \(32, 32, 3\)"):
        InferenceEngine(load_pack(folder)).load()
