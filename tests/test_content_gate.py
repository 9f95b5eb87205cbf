"""Content gate (PPCA Mahalanobis), Platt calibration, training-patient hashes and the shipped packs' gates."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asdesk.inference.calibration import calibrate, logit
from asdesk.inference.content_gate import METHOD, ContentGate, load_pack_gate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
KNEE_PACK = REPO / "models" / "knee-xray-oa"
SIJ_PACK = REPO / "models" / "sij-mri-stir-inflammation"


def _gaussian(n: int = 600, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.5, d)
    return rng.normal(size=(n, d)) * scales + 3.0


def test_ppca_distance_is_zero_at_the_mean_and_large_far_away():
    from asdesk.training.gatefit import gate_from_features

    x = _gaussian()
    gate = gate_from_features(x, n_components=5, threshold=1.0)
    assert gate.distance(gate.mean[None])[0] == pytest.approx(0.0, abs=1e-9)
    far = gate.mean + 100.0 * np.ones(gate.n_features)
    assert gate.distance(far[None])[0] > 20 * np.median(gate.distance(x))
    assert gate.accepts(gate.mean[None]).tolist() == [True]
    assert gate.accepts(far[None]).tolist() == [False]


def test_ppca_distance_equals_mahalanobis_under_the_ppca_covariance():
    from asdesk.training.gatefit import gate_from_features

    x = _gaussian(d=12)
    gate = gate_from_features(x, n_components=4)
    u, lam, s2 = gate.components, gate.explained_variance, gate.noise_variance
    # W W^T + s2 I with W = U^T (Lambda - s2 I)^(1/2) (Tipping & Bishop 1999, eq. 7)
    covariance = u.T @ np.diag(lam - s2) @ u + s2 * np.eye(gate.n_features)
    probe = _gaussian(n=7, d=12, seed=5) * 1.5
    centred = probe - gate.mean
    expected = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(covariance), centred))
    np.testing.assert_allclose(gate.distance(probe), expected, rtol=1e-8)


def test_gate_save_load_round_trip_keeps_distances(tmp_path):
    from asdesk.training.gatefit import gate_from_features

    x = _gaussian()
    gate = gate_from_features(x, n_components=6, threshold=4.5)
    gate.save(tmp_path / "content_gate.npz")
    back = ContentGate.load(tmp_path / "content_gate.npz", threshold=4.5, feature_layer="head_pool")
    assert (back.method, back.feature_layer, back.threshold, back.n_components) == (METHOD, "head_pool", 4.5, 6)
    np.testing.assert_array_equal(back.distance(x[:50]), gate.distance(x[:50]))


def test_gate_rejects_wrong_feature_dimension_and_bad_arrays():
    from asdesk.training.gatefit import gate_from_features

    gate = gate_from_features(_gaussian(), n_components=3)
    with pytest.raises(ValueError, match="expects features"):
        gate.distance(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="variances"):
        ContentGate(METHOD, "head_pool", 1.0, gate.mean, gate.components, -gate.explained_variance, 1.0)


def test_fit_gate_threshold_lets_the_target_fraction_of_validation_through():
    from asdesk.training.gatefit import acceptance_threshold, fit_gate

    train, validation = _gaussian(seed=1), _gaussian(n=203, seed=2)
    gate, info = fit_gate(train, validation)
    accepted = gate.accepts(validation).mean()
    assert accepted >= 0.95 and accepted == pytest.approx(info["validation_acceptance"], abs=1e-4)
    assert info["n_components"] in (4, 8, 16)
    assert acceptance_threshold([3.0, 1.0, 2.0, 4.0], 0.75) == 3.0
    shifted = _gaussian(n=200, seed=3) + 8.0
    assert gate.accepts(shifted).mean() < 0.2


def test_nested_gate_holds_each_patient_out():
    from asdesk.training.gatefit import nested_gate

    x = _gaussian(n=300, seed=4)
    groups = np.repeat([f"p{i}" for i in range(6)], 50)
    gate, info = nested_gate(x, groups, n_components=4)
    assert set(info["per_patient_acceptance"]) == {f"p{i}" for i in range(6)}
    assert info["validation_acceptance"] >= 0.95 and gate.n_components == 4


def test_platt_calibration_is_monotone_and_fits_a_known_miscalibration():
    from asdesk.training.calibration import expected_calibration_error, fit_platt

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0.0, 2.0, size=20000)
    labels = (rng.random(true_logit.size) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 1 / (1 + np.exp(-(2.0 * true_logit - 1.0)))  # slope 2, shift -1
    slope, intercept = fit_platt(labels, overconfident)
    assert slope == pytest.approx(0.5, abs=0.03) and intercept == pytest.approx(0.5, abs=0.06)
    calibrated = calibrate(overconfident, slope, intercept)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(labels, overconfident) / 3
    order = np.argsort(overconfident)
    assert np.all(np.diff(calibrated[order]) >= 0)
    np.testing.assert_allclose(calibrate([0.2, 0.7], 1.0, 0.0), [0.2, 0.7])
    assert np.isfinite(logit([0.0, 1.0])).all()
    with pytest.raises(ValueError, match="slope"):
        calibrate([0.5], -1.0, 0.0)


def test_ece_of_a_perfect_and_a_constant_forecast():
    from asdesk.training.calibration import expected_calibration_error

    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0
    assert expected_calibration_error([1, 1, 1, 1], [0.25, 0.25, 0.25, 0.25]) == pytest.approx(0.75)


def test_training_patient_hashes_are_salted_and_sorted():
    from asdesk.training.gatefit import hash_patient, training_patients_block

    block = training_patients_block(["9001", "9002", "9001"], salt="ab")
    assert block["salt"] == "ab" and len(block["sha256"]) == 2
    assert hash_patient("ab", "9001") in block["sha256"] and block["sha256"] == sorted(block["sha256"])
    other = training_patients_block(["9001"])
    assert other["salt"] != "ab" and hash_patient("ab", "9001") not in other["sha256"]


# ---------------------------------------------------------------------------------------------------------
# evaluate --write-card refuses training patients


def _evaluate_args(data: Path, out: Path, pack_id: str) -> argparse.Namespace:
    return argparse.Namespace(data=str(data), model=pack_id, out=str(out), positive_labels="2,3,4",
                              negative_labels="0,1", patient_pattern=r"^(\d+)", patient_csv=None,
                              dataset_name=None, write_card=True)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)


def test_evaluate_write_card_refuses_a_folder_with_a_training_patient(installed_pack, tmp_path, shared_data):
    from asdesk.training.datasets import DatasetError
    from asdesk.training.evaluate import main_evaluate
    from asdesk.training.gatefit import training_patients_block

    knee = shared_data / "knee-xray-kl"
    trained = sorted((knee / "train" / "3").glob("*.png"))[0]
    new = sorted((knee / "val" / "0").glob("*.png"))[:3]
    data = tmp_path / "data"
    _copy(trained, data / "3" / trained.name)
    for path in new:
        _copy(path, data / "0" / path.name)
    card_path = installed_pack / "card.json"
    card = json.loads(card_path.read_text())
    card["training_patients"] = training_patients_block([trained.name[:7], "9999999"])
    card_path.write_text(json.dumps(card))
    before = card_path.read_text()
    with pytest.raises(DatasetError, match=rf"1 of the \d+ patients .*\(1 files\).*{trained.name}"):
        main_evaluate(_evaluate_args(data, tmp_path / "out", card["id"]))
    assert card_path.read_text() == before

    (data / "3" / trained.name).unlink()
    untrained = sorted((knee / "val" / "3").glob("*.png"))[0]
    _copy(untrained, data / "3" / untrained.name)
    assert main_evaluate(_evaluate_args(data, tmp_path / "out", card["id"])) == 0
    assert json.loads(card_path.read_text())["performance"]["n_images"] == 4


def test_evaluate_write_card_needs_training_patients(installed_pack, tmp_path, shared_data):
    from asdesk.training.datasets import DatasetError
    from asdesk.training.evaluate import main_evaluate

    data = tmp_path / "data"
    for grade in ("0", "3"):
        for path in sorted((shared_data / "knee-xray-kl" / "val" / grade).glob("*.png"))[:2]:
            _copy(path, data / grade / path.name)
    card = json.loads((installed_pack / "card.json").read_text())
    card.pop("training_patients", None)
    (installed_pack / "card.json").write_text(json.dumps(card))
    with pytest.raises(DatasetError, match="no training_patients"):
        main_evaluate(_evaluate_args(data, tmp_path / "out", card["id"]))


# ---------------------------------------------------------------------------------------------------------
# the shipped packs


@pytest.mark.parametrize("pack_dir", [KNEE_PACK, SIJ_PACK], ids=["knee", "sij"])
def test_shipped_cards_carry_gate_calibration_and_patient_hashes(pack_dir):
    from asdesk.inference import load_pack

    card = load_pack(pack_dir).card
    gate = load_pack_gate(pack_dir, card.content_gate)
    # the knee classifier's GlobalAveragePooling (1280); the SIJ U-Net's pooled block_6_expand_relu (192)
    assert gate.feature_layer == "head_pool" and gate.n_features == (192 if pack_dir == SIJ_PACK else 1280)
    assert card.content_gate["validation_acceptance"] >= card.content_gate["target_acceptance"] == 0.95
    slope, _ = card.calibration
    assert slope > 0 and (pack_dir / card.raw["calibration"]["plot"]).stat().st_size > 10000
    salt, hashes = card.training_patients
    assert len(hashes) == card.raw["training_data"]["n_patients"] and len(salt) >= 16
    assert (card.mr_sequences == ("STIR",)) == (pack_dir == SIJ_PACK)


def test_sij_card_study_level_is_nested():
    card = json.loads((SIJ_PACK / "card.json").read_text())
    study = card["performance"]["study_level"]
    assert "nested" in study["protocol"] and all("threshold" in row for row in study["studies"])
    assert study["sensitivity"] == sum(r["positive"] for r in study["studies"]) / study["n_studies"]


def test_knee_training_patients_match_the_training_folder(shared_data):
    from asdesk.training.datasets import load_folder_dataset
    from asdesk.training.gatefit import hash_patient

    card = json.loads((KNEE_PACK / "card.json").read_text())
    salt, hashes = card["training_patients"]["salt"], set(card["training_patients"]["sha256"])
    root = shared_data / "knee-xray-kl"
    train = {s.patient for s in load_folder_dataset(root / "train", "2,3,4", "0,1", r"^(\d+)")}
    test = {s.patient for s in load_folder_dataset(root / "val", "2,3,4", "0,1", r"^(\d+)")}
    assert {hash_patient(salt, p) for p in train} == hashes
    assert not {hash_patient(salt, p) for p in test} & hashes


def _features(pack_dir: Path, records: list) -> np.ndarray:
    """head_pool features through the runtime path: card pipeline -> tensor -> model."""
    from asdesk.inference import load_pack
    from asdesk.inference.content_gate import feature_model
    from asdesk.inference.runtime import load_model

    pack = load_pack(pack_dir)
    pipeline = pack.card.pipeline()
    if pack.card.explanation == "oedema_map":  # a segmentation pack: pooled features come from its ONNX graph
        from asdesk.inference.onnx_engine import OnnxEngine

        engine = OnnxEngine(pack).load()
        return engine._run(np.stack([pipeline(record).tensor for record in records]))[1]
    model = feature_model(load_model(pack.model_path), pack.card.content_gate["feature_layer"])
    batch = np.stack([pipeline(record).tensor for record in records])
    return np.asarray(model(batch, training=False)[0])


def _testdata(*names: str) -> list[Path]:
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    paths = [get_testdata_file(name) for name in names]
    if not all(paths):
        pytest.skip("pydicom-data test files not installed (pip install pydicom-data)")
    return [Path(p) for p in paths]


def test_knee_gate_refuses_chest_and_tibia_radiographs_and_accepts_knees(shared_data):
    from asdesk.inference import load_pack
    from asdesk.io import read_frames

    card = load_pack(KNEE_PACK).card
    gate = load_pack_gate(KNEE_PACK, card.content_gate)
    others = _testdata("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG3_UNCR.dcm", "RG3_J2KR.dcm", "CT_small.dcm", "MR_small.dcm")
    knees = sorted((shared_data / "knee-xray-kl" / "val").rglob("*.png"))[::40]
    records = [r for p in others for r in read_frames(p)] + [r for p in knees for r in read_frames(p)]
    accepted = gate.accepts(_features(KNEE_PACK, records))
    assert not accepted[:len(others)].any()
    assert accepted[len(others):].mean() >= 0.85, f"{accepted[len(others):].mean():.2f} of {len(knees)} knees"


def test_sij_gate_refuses_radiographs_and_mr_small(shared_data):
    from asdesk.inference import load_pack
    from asdesk.io import read_frames

    card = load_pack(SIJ_PACK).card
    gate = load_pack_gate(SIJ_PACK, card.content_gate)
    others = _testdata("MR_small.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm")
    knees = sorted((shared_data / "knee-xray-kl" / "val").rglob("*.png"))[::100]
    records = [r for p in [*others, *knees] for r in read_frames(p)]
    assert not gate.accepts(_features(SIJ_PACK, records)).any()


# ------------------------------------------------------------------------------------------------ k-NN gate
def test_knn_gate_distance_is_one_minus_the_kth_cosine_similarity(tmp_path):
    from asdesk.inference.content_gate import KNN_METHOD, KnnGate, load_pack_gate

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 16))
    gate = KnnGate.fit(train, k=3, threshold=0.2, feature_layer="head_pool")
    assert gate.method == KNN_METHOD and gate.n_features == 16 and gate.n_components == 40
    # a training image scaled by any positive factor: its own nearest neighbour at similarity 1
    assert KnnGate.fit(train, 1, 0.2, "head_pool").distance(5.0 * train[:4]) == pytest.approx(np.zeros(4), abs=1e-6)
    query = rng.normal(size=(5, 16))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = 1.0 - np.sort(unit(query) @ unit(train).T, axis=1)[:, -3]
    assert gate.distance(query) == pytest.approx(expected, abs=1e-6)
    assert np.array_equal(gate.accepts(query), gate.distance(query) <= 0.2)
    path = tmp_path / "content_gate.npz"
    gate.save(path)
    block = {"file": path.name, "method": KNN_METHOD, "threshold": 0.2, "feature_layer": "head_pool"}
    again = load_pack_gate(tmp_path, block)
    assert isinstance(again, KnnGate) and again.k == 3 and np.array_equal(again.distance(query), gate.distance(query))
    with pytest.raises(ValueError, match="features"):
        gate.distance(np.ones((1, 15)))
    with pytest.raises(ValueError, match="k must be"):
        KnnGate.fit(train, k=41, threshold=0.2, feature_layer="head_pool")


def test_knn_gate_threshold_passes_every_grade_and_the_method_comparison_uses_training_data_only():
    from asdesk.training.gatefit import compare_gate_methods, fit_knn_gate

    rng = np.random.default_rng(1)
    # a common grade and a rare, distinct one (as KL 4 knees are in a fine-tuned model's features)
    common, rare = rng.normal(size=(300, 8)) + 3.0, rng.normal(size=(30, 8)) + np.array([3, 3, 3, 3, 9, 9, 9, 9])
    train = np.vstack([common[:250], rare[:24]])
    grades = np.array(["0"] * 250 + ["4"] * 24)
    validation = np.vstack([common[250:], rare[24:]])
    validation_grades = np.array(["0"] * 50 + ["4"] * 6)
    gate, info = fit_knn_gate(train, validation, k=5, strata=validation_grades)
    assert info["per_stratum_acceptance"]["0"] >= 0.95 and info["per_stratum_acceptance"]["4"] >= 0.95
    groups = np.array([f"p{i}" for i in range(len(train))])
    table = compare_gate_methods(train, grades, groups, validation, validation_grades, folds=3)
    assert set(table) == {"ppca k=7", "knn k=50"}  # k clamped below the 8 feature dimensions
    assert all(set(row) == {"0", "4", "worst"} and 0.0 <= row["worst"] <= 1.0 for row in table.values())
    assert all(row["worst"] == min(v for k, v in row.items() if k != "worst") for row in table.values())


def test_gate_strata_are_label_folders_for_files_and_the_label_otherwise():
    """Knee files stratify the gate's threshold by their grade folder; SIJ slices (``<patient>#<slice>``) have
    none, so ``asdesk train`` falls back to the binary label rather than one stratum for all."""
    from asdesk.training.gatefit import label_folders

    assert label_folders(["/d/val/4/9001L.png", "/d/val/0/9002R.png"]).tolist() == ["4", "0"]
    assert label_folders(["1003#7", "1003#8"]) is None
