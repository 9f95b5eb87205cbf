"""The backbone comparison's parsing and table, repeated grouped k-fold, class weights, and the knee osteoporosis
data as the trainer reads it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared

from asdesk.training.compare import comparison_architectures, markdown_table, weights_by_architecture
from asdesk.training.splits import repeated_group_kfold
from asdesk.training.trainer import class_weights

OSTEO = SHARED_DATA / "knee-xray-osteoporosis"


def test_compare_value_names_architectures_or_results_files():
    assert comparison_architectures(["ResNet50,DenseNet121,MobileNetV2,VGG16"]) == [
        "ResNet50", "DenseNet121", "MobileNetV2", "VGG16"]
    assert comparison_architectures(["VGG16", "VGG16,MobileNetV2"]) == ["VGG16", "MobileNetV2"]
    assert comparison_architectures(["runs/a/evaluation/results.json"]) is None
    assert comparison_architectures([]) is None
    assert comparison_architectures(["ResNet50,resnet"]) is None


def test_weights_per_architecture():
    archs = ["ResNet50", "MobileNetV2", "VGG16"]
    table = weights_by_architecture("MobileNetV2=/w/m.h5,VGG16=/w/v.h5", archs)
    assert table == {"ResNet50": None, "MobileNetV2": "/w/m.h5", "VGG16": "/w/v.h5"}
    assert weights_by_architecture("imagenet", archs) == dict.fromkeys(archs, "imagenet")
    assert weights_by_architecture("none", archs) == dict.fromkeys(archs)
    assert weights_by_architecture("/w/m.h5", ["MobileNetV2"]) == {"MobileNetV2": "/w/m.h5"}
    with pytest.raises(ValueError, match="ARCH=FILE"):
        weights_by_architecture("/w/m.h5", archs)
    with pytest.raises(ValueError, match="unknown architecture"):
        weights_by_architecture("Inception=/w/i.h5", archs)


def test_balanced_class_weights_equalise_the_classes():
    labels = np.array([0] * 30 + [1] * 180)
    weights = class_weights(labels, "balanced")
    assert weights[0] == pytest.approx(210 / 60) and weights[1] == pytest.approx(210 / 360)
    assert weights[0] * 30 == pytest.approx(weights[1] * 180)
    assert class_weights(labels, None) is None and class_weights(labels, "none") is None
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.ones(5, int), "balanced")


def test_markdown_table_marks_backbones_without_pretrained_weights():
    metric = {"value": 0.7, "ci95": [0.6, 0.8]}
    row = {"architecture": "ResNet50", "weights": "none", "pretrained": False, "auc": metric, "accuracy": metric,
           "sensitivity": metric, "specificity": metric, "confusion_matrix": [[1, 2], [3, 4]], "parameters": 10,
           "latency_ms": 5.0, "training_seconds": 120.0, "selection_auc": 0.7, "per_repeat_auc": [0.69, 0.71]}
    result = {"task": "t", "data": "d", "n_images": 3, "n_patients": 3, "n_positive": 1, "protocol": "p",
              "budget": {"training": "b", "input_size": 224, "preprocessing": "none", "class_weight": "balanced",
                         "horizontal_flip": False, "seed": 0},
              "rows": [row, {**row, "architecture": "VGG16", "weights": "v.h5", "pretrained": True}],
              "winner": "VGG16", "chosen_by": "highest out-of-fold AUC", "machine": "CPU"}
    text = markdown_table(result)
    assert "| ResNet50 | **none: weights=None, random initialisation** | 0.700 (0.600-0.800)" in text
    assert "| VGG16 (chosen) | v.h5 |" in text
    assert "ResNet50 0.690-0.710" in text


@requires_shared("data/knee-xray-osteoporosis")
def test_osteoporosis_folder_reads_by_patient_and_repeated_folds_never_share_a_patient():
    from asdesk.training.datasets import load_folder_dataset

    samples = load_folder_dataset(OSTEO, "osteopenia,osteoporosis", "normal", patient_csv=OSTEO / "labels.csv")
    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient for s in samples])
    assert len(samples) == 210 and int((labels == 0).sum()) == 30 and int(labels.sum()) == 180
    assert len(set(groups.tolist())) == 210 and all(g.startswith(("N", "OP", "OS")) for g in groups)
    splits = list(repeated_group_kfold(labels, groups, n_splits=5, repeats=3, seed=0))
    assert len(splits) == 15
    for repeat in range(3):
        tested = np.concatenate([s.test for s in splits if s.name.startswith(f"r{repeat}f")])
        assert sorted(tested.tolist()) == list(range(210))  # every image tested once per repeat
    for split in splits:
        parts = [set(groups[split.train]), set(groups[split.validation]), set(groups[split.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert labels[split.test].min() == 0  # stratified: every test fold holds normal knees
    assert not np.array_equal(splits[0].test, splits[5].test)  # repeats reshuffle
