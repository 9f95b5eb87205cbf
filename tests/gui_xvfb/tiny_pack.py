"""A REAL model pack for GUI tests: MobileNetV2 with random weights (TEST DATA, meaningless output).

Written by :func:`asdesk.inference.write_pack` around :func:`asdesk.training.model.build_classifier`, so every
step of the real flow runs (card validation, SHA-256 check, preprocessing, ``tf.function`` classification,
Grad-CAM). At 32 x 32 the Grad-CAM map is 1 x 1 (constant); the screenshot test uses 128 x 128 (4 x 4 map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_card(pack_id: str, size: int) -> dict[str, Any]:
    """A valid card for the tiny pack (accepts raster images, MR, CR and DX; top-3 study rule)."""
    import asdesk

    return {
        "schema_version": 1, "id": pack_id, "version": "0.0.1", "task": "TEST ONLY: random weights",
        "labels": {"positive": "Test positive", "negative": "Test negative"},
        "modalities": ["", "MR", "CR", "DX"], "body_parts": [""], "architecture": "MobileNetV2",
        "input": {"height": size, "width": size, "channels": 3},
        "preprocessing": [{"name": "window", "mode": "display"},
                          {"name": "resize", "height": size, "width": size, "mode": "pad"},
                          {"name": "normalise", "backbone": "mobilenet_v2"}],
        "gradcam_layer": "out_relu",
        "operating_points": {"high_sensitivity": {"threshold": 0.2}, "balanced": {"threshold": 0.5},
                             "high_specificity": {"threshold": 0.8}, "default": "balanced"},
        "performance": {"dataset": "none (TEST DATA)", "auc": {"value": 0.5, "ci95": [0.4, 0.6]}},
        "training_data": {"name": "none", "provenance": "random initialisation", "licence": "n/a"},
        "intended_use": asdesk.INTENDED_USE,
        "sha256": "0" * 64, "asdesk_version": asdesk.__version__, "date": "2024-01-01",
        "study_rule": {"kind": "top_k_mean", "k": 3, "threshold": 0.5,
                       "description": "mean of the 3 highest slice probabilities >= 0.5 (TEST)"},
    }


def build_tiny_pack(folder: Path, pack_id: str = "gui-tiny-pack", size: int = 32) -> Path:
    """Write the tiny pack into ``folder`` and return it.

    The BatchNormalization statistics are set from one batch of noise so that outputs differ between images.
    """
    import keras
    import numpy as np

    from asdesk.inference import write_pack
    from asdesk.training.model import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier("MobileNetV2", (size, size, 3), weights=None, seed=0)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(np.random.default_rng(0).uniform(-1, 1, (16, size, size, 3)).astype("float32"), training=True)
    for layer in batch_norms:
        layer.momentum = 0.99
    write_pack(folder, model, tiny_card(pack_id, size))
    return Path(folder)
