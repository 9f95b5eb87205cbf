"""Model packs on disk: writing, hash checking, discovery in the bundled and user folders, choosing one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asdesk.core import CardError, ModelHashMismatchError, ModelNotFoundError, paths
from asdesk.inference import (
    ModelCard,
    ModelPack,
    discover_packs,
    find_pack,
    load_pack,
    pins,
    scan_packs,
    sha256_file,
    write_pack,
)
from asdesk.inference.pack import _version_key
from asdesk.inference.trust import compute_pins


def valid_card(**overrides: Any) -> dict[str, Any]:
    """A valid card for :func:`tiny_model` (32x32 input, Grad-CAM layer ``last_conv``)."""
    card: dict[str, Any] = {
        "schema_version": 1,
        "id": "tiny-pack",
        "version": "1.0.0",
        "task": "test task",
        "labels": {"positive": "Finding", "negative": "No finding"},
        "modalities": ["", "CR", "DX"],
        "body_parts": ["KNEE"],
        "architecture": "MobileNetV2",
        "input": {"height": 32, "width": 32, "channels": 3},
        "preprocessing": [{"name": "window", "mode": "display"},
                          {"name": "resize", "height": 32, "width": 32, "mode": "pad"},
                          {"name": "normalise", "backbone": "mobilenet_v2"}],
        "gradcam_layer": "last_conv",
        "operating_points": {"high_sensitivity": {"threshold": 0.3}, "balanced": {"threshold": 0.5},
                             "high_specificity": {"threshold": 0.7}, "default": "balanced"},
        "performance": {},
        "training_data": {"name": "synthetic"},
        "intended_use": "Research use only; not a medical device.",
        "asdesk_version": "0.1.0",
        "date": "2025-01-01",
    }
    card.update(overrides)
    return card


@pytest.fixture(scope="module")
def tiny_model():
    keras = pytest.importorskip("keras")
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="last_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="head_output")(x))


@pytest.fixture(scope="module")
def template_pack(tiny_model, tmp_path_factory) -> ModelPack:
    return write_pack(tmp_path_factory.mktemp("packs") / "tiny-pack", tiny_model, valid_card())


def copy_pack(source: ModelPack, destination: Path, **card_changes: Any) -> Path:
    """Copy a pack folder and edit its card (the model, hence the hash, stays valid)."""
    shutil.copytree(source.path, destination)
    card = json.loads((destination / "card.json").read_text(encoding="utf-8"))
    card.update(card_changes)
    (destination / "card.json").write_text(json.dumps(card), encoding="utf-8")
    return destination


def test_write_then_load(template_pack, tiny_model, tmp_path):
    document = valid_card()
    pack = write_pack(tmp_path / "new", tiny_model, document)
    assert "sha256" not in document  # the caller's card is not modified
    assert pack.model_path == tmp_path / "new" / "model.keras" and pack.model_path.is_file()
    assert pack.card.sha256 == sha256_file(pack.model_path)
    on_disk = json.loads((tmp_path / "new" / "card.json").read_text(encoding="utf-8"))
    assert on_disk["sha256"] == pack.card.sha256
    loaded = load_pack(tmp_path / "new")
    assert loaded == pack
    assert load_pack(tmp_path / "new" / "card.json") == pack
    assert loaded.card == ModelCard.from_dict(on_disk)


def test_write_pack_accepts_numpy_values(tiny_model, tmp_path):
    import numpy as np

    card = valid_card()
    card["operating_points"]["balanced"]["threshold"] = np.float32(0.25)
    card["performance"] = {"auc": np.float64(0.8), "curve": np.array([0.1, 0.2]), "data": tmp_path}
    pack = write_pack(tmp_path / "numpy", tiny_model, card)
    assert pack.card.threshold() == ("balanced", 0.25)
    assert load_pack(pack.path).card.performance["curve"] == [0.1, 0.2]


def test_a_trained_model_is_written_without_its_optimizer_state(tmp_path):
    import numpy as np

    keras = pytest.importorskip("keras")
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="last_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="head_output")(x))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    model.fit(images, np.array([0, 1] * 4, dtype="float32"), epochs=1, verbose=0)  # Adam now has moments
    with_state = tmp_path / "with-state.keras"
    model.save(with_state)
    pack = write_pack(tmp_path / "trained", model, valid_card())
    assert model.optimizer is not None  # the caller's model is untouched
    assert pack.model_path.stat().st_size < with_state.stat().st_size
    loaded = keras.models.load_model(pack.model_path)
    assert getattr(loaded, "optimizer", None) is None
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))


def test_sha256_file_streams(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_flipped_byte_is_a_hash_mismatch(template_pack, tmp_path):
    folder = copy_pack(template_pack, tmp_path / "damaged")
    data = bytearray((folder / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatchError) as caught:
        load_pack(folder)
    message = str(caught.value)
    assert "tiny-pack" in message and str(folder) in message
    assert template_pack.card.sha256 in message and sha256_file(folder / "model.keras") in message
    assert "reinstall the pack" in message
    assert isinstance(caught.value, CardError)
    assert load_pack(folder, verify_hash=False).card.id == "tiny-pack"


def test_missing_model_file(template_pack, tmp_path):
    folder = copy_pack(template_pack, tmp_path / "no-model")
    (folder / "model.keras").unlink()
    with pytest.raises(CardError, match="no model.keras"):
        load_pack(folder)
    with pytest.raises(CardError, match="not a folder"):
        load_pack(tmp_path / "nowhere")


def test_write_pack_checks_the_card_against_the_model(tiny_model, tmp_path):
    with pytest.raises(CardError, match="Grad-CAM layer 'out_relu'"):
        write_pack(tmp_path / "a", tiny_model, valid_card(gradcam_layer="out_relu"))
    steps = valid_card()["preprocessing"]
    steps[1] = {"name": "resize", "height": 48, "width": 48}
    with pytest.raises(CardError, match=r"model expects \(32, 32, 3\)"):
        write_pack(tmp_path / "b", tiny_model, valid_card(input={"height": 48, "width": 48, "channels": 3},
                                                          preprocessing=steps))
    with pytest.raises(CardError, match="missing required field"):
        write_pack(tmp_path / "c", tiny_model, {"id": "x"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


@pytest.fixture
def pack_folders(template_pack, tmp_path, monkeypatch):
    """A bundled and a user models folder (ASDESK_HOME points at tmp_path); the bundled packs are pinned."""
    bundled = tmp_path / "install" / "models"
    bundled.mkdir(parents=True)
    monkeypatch.setenv("ASDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(paths, "bundled_models_dir", lambda: bundled)
    user = paths.user_models_dir()
    assert user == tmp_path / "home" / "data" / "models"
    user.mkdir(parents=True)
    copy_pack(template_pack, bundled / "knee", id="knee", version="1.0")
    copy_pack(template_pack, bundled / "sij", id="sij", version="2.0", modalities=["MR"])
    monkeypatch.setattr(pins, "BUNDLED_PINS", {name: compute_pins(bundled / name) for name in ("knee", "sij")})
    copy_pack(template_pack, user / "knee-update", id="knee", version="1.10")  # newer, but never replaces it
    copy_pack(template_pack, user / "sij-copy", id="sij", version="2.0")  # same version: bundled is used
    copy_pack(template_pack, user / "spine", id="spine", version="0.1", modalities=["MR"],
              body_parts=["SPINE"])
    copy_pack(template_pack, user / "spine-old", id="spine", version="0.0.9", modalities=["MR"])  # user: older loses
    broken = copy_pack(template_pack, user / "broken", id="broken")
    (broken / "card.json").write_text("{ not json", encoding="utf-8")
    invalid = copy_pack(template_pack, user / "invalid", id="invalid")
    card = json.loads((invalid / "card.json").read_text(encoding="utf-8"))
    del card["gradcam_layer"]
    (invalid / "card.json").write_text(json.dumps(card), encoding="utf-8")
    (copy_pack(template_pack, user / "no-model", id="no-model") / "model.keras").unlink()
    (user / "not-a-pack").mkdir()
    (user / "stray.txt").write_text("hello", encoding="utf-8")
    return bundled, user


def test_discover_packs(pack_folders):
    bundled, user = pack_folders
    packs, errors = discover_packs()
    assert [p.card.id for p in packs] == ["knee", "sij", "spine"]
    by_id = {p.card.id: p for p in packs}
    assert by_id["knee"].path == bundled / "knee" and by_id["knee"].card.version == "1.0"
    assert by_id["sij"].path == bundled / "sij"
    assert [p.origin for p in packs] == ["bundled", "bundled", "user"]
    assert by_id["spine"].path == user / "spine"
    text = "\n".join(errors)
    assert len(errors) == 6, text
    assert "not valid JSON" in text and "gradcam_layer" in text and "no model.keras" in text
    assert "'knee' version 1.10" in text and "never replaces it" in text and "--model user:knee" in text
    assert "'sij' version 2.0" in text and "--model user:sij" in text
    assert "'spine' version 0.0.9" in text and "higher version" in text
    scan = scan_packs()
    assert [(p.selection_id, p.path) for p in scan.alternates] == [("user:knee", user / "knee-update"),
                                                                    ("user:sij", user / "sij-copy")]


def test_discover_packs_can_verify_hashes(pack_folders):
    _, user = pack_folders
    (user / "spine" / "model.keras").write_bytes(b"not a model")
    packs, errors = discover_packs()
    assert user / "spine" in [p.path for p in packs]
    packs, errors = discover_packs(verify_hash=True)
    assert user / "spine" not in [p.path for p in packs]
    assert [p.path for p in packs if p.card.id == "spine"] == [user / "spine-old"]  # the next user pack
    assert any("reinstall the pack" in e and "'spine'" in e for e in errors)


def test_discover_packs_without_folders(tmp_path):
    assert discover_packs([tmp_path / "missing"]) == ([], [])


def test_version_order():
    assert _version_key("1.10") > _version_key("1.9") > _version_key("1.2.3") > _version_key("1.2")
    assert _version_key("2") > _version_key("1.99")


def _pack(pack_id: str, modalities: list[str], body_parts: list[str]) -> ModelPack:
    card = ModelCard.from_dict(valid_card(id=pack_id, modalities=modalities, body_parts=body_parts,
                                          sha256="0" * 64))
    return ModelPack(path=Path(pack_id), card=card)


CANDIDATES = [
    _pack("knee-xray", ["", "CR", "DX"], ["KNEE"]),
    _pack("sij-stir", ["MR"], ["SIJ", "PELVIS", ""]),
    _pack("spine-mri", ["MR"], ["SPINE", "LSPINE"]),
    _pack("spine-xray", ["CR", "DX"], ["SPINE"]),
]


@pytest.mark.parametrize(("modality", "body_part", "expected"), [
    ("", "", "knee-xray"),  # raster files: only the knee pack lists ""
    ("mr", "pelvis", "sij-stir"),
    ("MR", "lspine", "spine-mri"),
    ("MR", "", "sij-stir"),  # unknown body part: the pack listing "" wins
    ("DX", "spine", "spine-xray"),
    ("DX", "knee", "knee-xray"),
    ("CR", "", "knee-xray"),  # several match, none by body part: first by id
    ("MR", "KNEE", "sij-stir"),  # no pack lists it: modality match, first by id (logged)
])
def test_find_pack_by_modality_and_body_part(modality, body_part, expected):
    assert find_pack(modality=modality, body_part=body_part, packs=CANDIDATES).card.id == expected


def test_find_pack_by_id():
    assert find_pack("spine-mri", modality="CR", packs=CANDIDATES).card.id == "spine-mri"
    assert find_pack("SIJ-STIR", packs=CANDIDATES).card.id == "sij-stir"
    with pytest.raises(ModelNotFoundError, match="no model pack with id 'hip'.*knee-xray.*--model"):
        find_pack("hip", packs=CANDIDATES)


def test_find_pack_reports_what_is_installed():
    with pytest.raises(ModelNotFoundError, match="modality 'CT'.*sij-stir.*--model"):
        find_pack(modality="ct", body_part="chest", packs=CANDIDATES)
    with pytest.raises(ModelNotFoundError, match="raster images"):
        find_pack(packs=CANDIDATES[1:])
    with pytest.raises(ModelNotFoundError, match="none installed"):
        find_pack(modality="MR", packs=[])


def test_find_pack_discovers_by_default(pack_folders):
    assert find_pack(modality="MR", body_part="SPINE").card.id == "spine"
    assert find_pack("knee").card.version == "1.0"
    assert find_pack("user:knee").card.version == "1.10"
    with pytest.raises(ModelNotFoundError, match="no user-installed model pack with id 'user:nothing'"):
        find_pack("user:nothing")


def test_importing_inference_does_not_import_tensorflow():
    code = ("import sys, asdesk.inference; "
            "sys.exit(int(any(m in sys.modules for m in ('tensorflow', 'keras'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
