"""Training: patient-level splits, augmentation, data indexing and one real (tiny) training run."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, skip_without_shared

from asdesk.training.augment import Augmentation
from asdesk.training.splits import group_holdout, group_kfold, leave_one_patient_out, stratified_70_15_15

KNEE = SHARED_DATA / "knee-xray-kl"
SIJ = SHARED_DATA / "sij-mri-spa"


def _groups(n_patients: int = 40, per_patient: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient)
    labels = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    return labels, groups


def test_holdout_and_70_15_15_never_share_patients():
    labels, groups = _groups()
    keep, held = group_holdout(labels, groups, 0.15)
    assert not set(groups[keep]) & set(groups[held])
    assert 0.08 < len(set(groups[held])) / 40 < 0.25
    split = stratified_70_15_15(labels, groups)
    parts = [set(groups[split.train]), set(groups[split.validation]), set(groups[split.test])]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(split.train) + len(split.validation) + len(split.test) == len(labels)
    assert 0.6 < len(split.train) / len(labels) < 0.8


def test_leave_one_patient_out_holds_each_patient_out_once():
    labels, groups = _groups(n_patients=6, per_patient=4)
    labels[::2] = 1 - labels[::2]  # every patient has both classes
    folds = list(leave_one_patient_out(labels, groups))
    assert sorted(f.name for f in folds) == sorted(set(groups))
    for fold in folds:
        test_patients = set(groups[fold.test])
        assert test_patients == {fold.name}
        assert not test_patients & set(groups[fold.train]) and not test_patients & set(groups[fold.validation])
        assert not set(groups[fold.train]) & set(groups[fold.validation])


def test_group_kfold_tests_every_image_once():
    labels, groups = _groups()
    seen = np.concatenate([fold.test for fold in group_kfold(labels, groups, 5)])
    assert sorted(seen.tolist()) == list(range(len(labels)))


def test_augmentation_stays_within_limits_and_never_flips_by_default():
    image = np.zeros((64, 64), np.float32)
    image[:, :20] = 1.0  # bright left band
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = Augmentation()(image, rng)
        assert out.shape == image.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert out[:, :16].mean() > out[:, -16:].mean()  # left stays left: no flip
    flips = [Augmentation(horizontal_flip=True)(image, rng)[:, -16:].mean() > 0.5 for _ in range(40)]
    assert 5 < sum(flips) < 35


def test_folder_dataset_uses_patient_pattern_and_label_sets(tmp_path):
    from asdesk.training.datasets import DatasetError, load_folder_dataset

    skip_without_shared("data/knee-xray-kl")
    for grade in ("0", "3"):
        (tmp_path / grade).mkdir()
        for path in sorted((KNEE / "val" / grade).glob("*.png"))[:4]:
            shutil.copy(path, tmp_path / grade / path.name)
    samples = load_folder_dataset(tmp_path, positive_labels="2,3,4", negative_labels="0,1",
                                  patient_pattern=r"^(\d+)")
    assert len(samples) == 8
    assert {s.label for s in samples if "/3/" in s.key} == {1}
    assert all(s.patient.isdigit() and s.key.split("/")[-1].startswith(s.patient) for s in samples)
    assert samples[0].load().shape == (224, 224)
    with pytest.raises(DatasetError):
        load_folder_dataset(tmp_path, positive_labels="3", negative_labels="3")


def test_sij_dataset_labels_slices_by_reader_agreement():
    from asdesk.training.datasets import load_sij_stir_dataset

    skip_without_shared("data/sij-mri-spa")
    samples = load_sij_stir_dataset(SIJ, min_readers=2)
    # The data README: 119 inflamed of 198 labelled slices in 8 patients.
    assert len(samples) == 198
    assert sum(s.label for s in samples) == 119
    assert len({s.patient for s in samples}) == 8
    strict = load_sij_stir_dataset(SIJ, min_readers=4)
    assert sum(s.label for s in strict) < 119


def _train_args(tmp_path: Path, data: Path, test_data: Path) -> argparse.Namespace:
    from asdesk.training.arguments import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args([
        str(data), "--test-data", str(test_data), "--architecture", "MobileNetV2", "--weights", "none",
        "--positive-labels", "2,3,4", "--negative-labels", "0,1", "--patient-pattern", r"^(\d+)",
        "--input-size", "32", "--epochs", "1", "--fine-tune-epochs", "1", "--augment-copies", "1",
        "--batch-size", "8", "--out", str(tmp_path / "pack"), "--pack-id", "tiny-knee",
    ])


def test_one_epoch_of_training_on_real_radiographs_writes_a_valid_pack(tmp_path):
    from asdesk.inference import load_pack
    from asdesk.training.train import main_train

    skip_without_shared("data/knee-xray-kl")
    for split, count in (("train", 12), ("val", 6)):
        for grade in ("0", "1", "3", "4"):
            (tmp_path / split / grade).mkdir(parents=True)
            for path in sorted((KNEE / split / grade).glob("*.png"))[:count // 2]:
                shutil.copy(path, tmp_path / split / grade / path.name)
    args = _train_args(tmp_path, tmp_path / "train", tmp_path / "val")
    assert main_train(args) == 0
    pack = load_pack(tmp_path / "pack")
    assert pack.card.id == "tiny-knee" and pack.card.input_shape == (32, 32, 3)
    card = json.loads((tmp_path / "pack" / "card.json").read_text())
    assert card["training_data"]["n_images"] == 24
    assert card["performance"]["n_images"] == 12
    assert set(card["operating_points"]) >= {"high_sensitivity", "balanced", "high_specificity"}
    predictions = (tmp_path / "pack" / "evaluation" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 13
    for name in ("roc.png", "calibration.png", "confusion.png"):
        assert (tmp_path / "pack" / "evaluation" / name).stat().st_size > 1000
    gate = card["content_gate"]
    assert gate["feature_layer"] == "head_pool" and (tmp_path / "pack" / gate["file"]).is_file()
    assert gate["validation_acceptance"] >= 0.95
    assert len(card["training_patients"]["sha256"]) == card["training_data"]["n_patients"]
    # the lean runtime's model.onnx, with its parity measured on the held-out images
    onnx = card["onnx"]
    assert (tmp_path / "pack" / onnx["file"]).is_file() and onnx["parity"]["n_images"] == 12
    assert onnx["parity"]["max_abs_probability"] < 1e-5 and set(onnx["parity"]["decisions_changed"].values()) == {0}
