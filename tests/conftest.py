"""Shared fixtures: the real data folder, a private ASDESK_HOME per test and a tiny real model pack.

* ``SHARED`` (``<repo>/../shared``), :func:`requires_shared` (a skip mark) and :func:`skip_without_shared` (for
  fixtures and helpers): tests that need the shared data or weights skip with a clear reason in a user's clone,
  which has no shared folder beside it. Nothing falls back to another location: only ``<repo>/../shared`` counts.
* ``shared_data``: ``<repo>/../shared/data`` (real scans; skipped where absent).
* autouse ``asdesk_home``: ``ASDESK_HOME`` points at a fresh temporary folder, so settings, logs and user
  model packs never touch the real user folders; ``QT_QPA_PLATFORM=offscreen`` for Qt (PDF, widgets).
* ``tiny_pack`` (session): a REAL model pack written by :func:`asdesk.inference.write_pack` around a
  MobileNetV2 with random weights (``weights=None``) at 32 x 32 pixels: every step of the real flow runs
  (card validation, SHA-256 check, preprocessing, ``tf.function`` classification, Grad-CAM), in seconds.
* ``installed_pack``: the tiny pack copied into ``$ASDESK_HOME/data/models/<id>``, where ``asdesk models``
  and ``--model`` find it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
TINY_PACK_ID = "tiny-test-pack"
TINY_INPUT = 32
TINY_STUDY_K = 3


def missing_shared(*parts: str) -> str | None:
    """Why the shared paths ``parts`` (relative to ``<repo>/../shared``) cannot be used, or ``None``.

    Parameters
    ----------
    *parts : str
        Paths relative to the shared folder, e.g. ``"data/knee-xray-kl"``, ``"weights"``; none means the folder.
    """
    for part in parts or ("",):
        if not (SHARED / part).exists():
            name = f"../shared/{part}".rstrip("/")
            return f"needs {name}: not present (a user's clone has no shared folder)"
    return None


def requires_shared(*parts: str) -> pytest.MarkDecorator:
    """A ``skipif`` mark for tests (or, as ``pytestmark``, modules) that read ``<repo>/../shared/<part>``."""
    reason = missing_shared(*parts)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_without_shared(*parts: str) -> None:
    """Skip the calling test or fixture (session fixtures too) when a shared path is missing."""
    reason = missing_shared(*parts)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``, the real scans (skips the test when the folder is missing)."""
    skip_without_shared("data")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _qt_application(qapp: Any) -> Any:  # noqa: ANN401
    """Create pytest-qt's ``QApplication`` before any test runs.

    In-process PDF reports call :func:`asdesk.report.pdf.ensure_gui_application`, which creates a plain
    ``QGuiApplication`` when none exists; a widget test after that (in any order) would abort, because a
    ``QWidget`` needs a ``QApplication``. Making the ``QApplication`` first, once, serves both.
    """
    return qapp


@pytest.fixture(autouse=True)
def asdesk_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``ASDESK_HOME`` (user data, config, logs) at a fresh temporary folder for every test."""
    home = tmp_path_factory.mktemp("asdesk-home")
    monkeypatch.setenv("ASDESK_HOME", str(home))
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    return home


@pytest.fixture(autouse=True)
def _reset_asdesk_logging() -> Iterator[None]:
    """Remove the handlers ``asdesk.cli.main`` attaches, so no test logs into another test's streams."""
    yield
    import logging

    logger = logging.getLogger("asdesk")
    for handler in list(logger.handlers):
        if getattr(handler, "_asdesk", False):
            logger.removeHandler(handler)
            handler.close()


def tiny_card(pack_id: str = TINY_PACK_ID, study_rule: bool = True) -> dict[str, Any]:
    """A valid card for a 32 x 32 MobileNetV2 pack accepting raster images, MR, CR and DX.

    Parameters
    ----------
    pack_id : str
        The card's id.
    study_rule : bool
        Include a ``top_k_mean`` study rule (k = 3, threshold 0.5).
    """
    import asdesk

    card: dict[str, Any] = {
        "schema_version": 1,
        "id": pack_id,
        "version": "0.0.1",
        "name": "tiny test pack (random weights)",
        "task": "test only: random MobileNetV2, meaningless output",
        "labels": {"positive": "Test positive", "negative": "Test negative"},
        "modalities": ["", "MR", "CR", "DX"],
        "body_parts": [""],
        "architecture": "MobileNetV2",
        "input": {"height": TINY_INPUT, "width": TINY_INPUT, "channels": 3},
        "preprocessing": [
            {"name": "window", "mode": "display"},
            {"name": "resize", "height": TINY_INPUT, "width": TINY_INPUT, "mode": "pad"},
            {"name": "normalise", "backbone": "mobilenet_v2"},
        ],
        "gradcam_layer": "out_relu",
        "operating_points": {
            "high_sensitivity": {"threshold": 0.2},
            "balanced": {"threshold": 0.5},
            "high_specificity": {"threshold": 0.8},
            "default": "balanced",
        },
        "performance": {
            "dataset": "none (test pack)",
            "metrics": {"auc": {"value": 0.5, "ci95": [0.4, 0.6]}},
        },
        "training_data": {"name": "none", "provenance": "random initialisation", "licence": "n/a"},
        "intended_use": asdesk.INTENDED_USE,
        "sha256": "0" * 64,
        "asdesk_version": asdesk.__version__,
        "date": "2024-01-01",
    }
    if study_rule:
        card["study_rule"] = {
            "kind": "top_k_mean",
            "k": TINY_STUDY_K,
            "threshold": 0.5,
            "description": f"mean of the {TINY_STUDY_K} highest slice probabilities >= 0.5",
        }
    return card


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: ANN401 - a ModelPack
    """A real model pack (MobileNetV2, random weights, 32 x 32), written once per test session.

    The BatchNormalization statistics are set from one batch of noise, so that probabilities differ from
    image to image.

    Returns
    -------
    asdesk.inference.ModelPack
        In ``<tmp>/packs/tiny-test-pack``.
    """
    try:
        import keras

        from asdesk.inference import write_pack
        from asdesk.training.model import build_classifier
    except ImportError as error:  # pragma: no cover - only while a layer is missing
        pytest.skip(f"cannot build the tiny model pack: {error}")
    import numpy as np

    keras.utils.set_random_seed(0)
    model = build_classifier("MobileNetV2", (TINY_INPUT, TINY_INPUT, 3), weights=None, seed=0)
    # Random weights make activations vanish through 50+ layers (every output would be exactly 0.5). Set the
    # BatchNormalization statistics from one batch of noise, so outputs spread over (0, 1) and the tests can
    # tell images apart; the weights stay random.
    calibration = np.random.default_rng(0).uniform(-1.0, 1.0, (32, TINY_INPUT, TINY_INPUT, 3)).astype("float32")
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(calibration, training=True)
    for layer in batch_norms:
        layer.momentum = 0.99
    folder = tmp_path_factory.mktemp("packs") / TINY_PACK_ID
    return write_pack(folder, model, tiny_card())


@pytest.fixture
def installed_pack(tiny_pack: Any, asdesk_home: Path) -> Path:  # noqa: ANN401
    """The tiny pack copied into ``$ASDESK_HOME/data/models/<id>`` (the user's model folder)."""
    target = asdesk_home / "data" / "models" / TINY_PACK_ID
    shutil.copytree(tiny_pack.path, target)
    return target
