"""The lean runtime: ONNX export, the ONNX Runtime engine, CAM == Grad-CAM, hash checks, shipped packs.

Real models (the four backbones, random weights, built small) and real images (the bundled sample radiograph,
and the shipped packs' own evaluation images when ``../shared`` is present).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asdesk.core import ModelHashMismatchError
from tests.conftest import REPO, requires_shared, tiny_card

pytest.importorskip("onnxruntime", reason="needs onnxruntime (a runtime dependency)")
pytest.importorskip("tf2onnx", reason="needs tf2onnx (the train extra)")

SAMPLE = next((REPO / "resources" / "samples").glob("*.png"))
SIZE = 64  # the smallest input at which every backbone's last feature map is larger than 1 x 1 (2 x 2)
ARCHITECTURES = ["MobileNetV2", "VGG16", "ResNet50", "DenseNet121"]


def _write_images(folder: Path) -> Path:
    """The bundled sample radiograph and three real variants of it (crops, a flip) as PNGs in two label folders."""
    import cv2

    pixels = cv2.imread(str(SAMPLE), cv2.IMREAD_UNCHANGED)
    height, width = pixels.shape[:2]
    variants = [pixels, pixels[: height * 2 // 3], pixels[:, width // 3:], pixels[:, ::-1]]
    for index, image in enumerate(variants):
        target = folder / ("a" if index % 2 else "b") / f"{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(target), np.ascontiguousarray(image))
    return folder


def _records(folder: Path | None = None) -> list[Any]:
    """The images of :func:`_write_images`, read by asdesk's reader (different model inputs)."""
    import tempfile

    from asdesk.io import read_image

    folder = folder or _write_images(Path(tempfile.mkdtemp(prefix="asdesk-onnx-")))
    return [read_image(path) for path in sorted(folder.rglob("*.png"), key=lambda p: p.name)]


def _build_pack(architecture: str, folder: Path, images: Path) -> Any:  # noqa: ANN401
    import keras

    from asdesk.inference import write_pack
    from asdesk.training.model import GRADCAM_LAYERS, NORMALISATION, build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(architecture, (SIZE, SIZE, 3), weights=None, seed=0)
    # Random weights make activations vanish; BatchNormalization statistics from noise spread the outputs.
    noise = np.random.default_rng(0).uniform(-1.0, 1.0, (16, SIZE, SIZE, 3)).astype("float32")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    if norms:
        model(noise, training=True)
    # Scale the random head so the logits of the real images spread around 0 (deep random backbones saturate
    # the sigmoid otherwise): the probabilities then differ from image to image and from 0 and 1.
    from asdesk.preprocess import build_pipeline

    steps = [{"name": "window", "mode": "display"}, {"name": "resize", "height": SIZE, "width": SIZE, "mode": "pad"},
             {"name": "normalise", "backbone": NORMALISATION[architecture]}]
    tensors = np.stack([build_pipeline(steps)(record).tensor for record in _records(images)])
    pooled = np.asarray(keras.Model(model.inputs[0], model.get_layer("head_pool").output)(tensors, training=False))
    head = model.get_layer("head_output")
    kernel = np.random.default_rng(1).normal(size=(pooled.shape[1], 1)).astype("float32")
    kernel /= max(float(np.std(pooled @ kernel)), 1e-6)
    maps = np.asarray(keras.Model(model.inputs[0], model.get_layer(GRADCAM_LAYERS[architecture]).output)(
        tensors, training=False))
    if float(np.max(maps @ kernel)) <= 0:  # no positive evidence anywhere: the maps would all be zero
        kernel = -kernel
    head.set_weights([kernel, np.array([-float(np.mean(pooled @ kernel))], dtype="float32")])
    card = tiny_card(f"tiny-{architecture.lower()}", study_rule=False)
    card.update({"architecture": architecture, "gradcam_layer": GRADCAM_LAYERS[architecture],
                 "input": {"height": SIZE, "width": SIZE, "channels": 3}})
    card["preprocessing"] = steps
    return write_pack(folder, model, card)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: ANN401
    """A real pack of each backbone, exported with parity measured on real images."""
    from asdesk.training.export import export_pack

    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    images = _write_images(root / "images")
    pack = _build_pack(request.param, root / "pack", images)
    export_pack(pack.path, data=images)
    from asdesk.inference import load_pack

    return load_pack(pack.path)


def test_onnx_cam_and_probability_equal_tensorflow_gradcam(exported: Any) -> None:
    from asdesk.inference import InferenceEngine
    from asdesk.inference.onnx_engine import OnnxEngine

    records = _records(exported.path.parent / "images")
    tf_engine = InferenceEngine(exported).load()
    lean = OnnxEngine(exported).load()
    assert lean.device.startswith("CPU (onnxruntime ")
    expected = tf_engine.infer(records, gradcam=True)
    actual = lean.infer(records, gradcam=True)
    probabilities = np.array([o.probability for o in expected])
    assert np.ptp(probabilities) > 1e-4, "the images must give different outputs, or the test proves little"
    np.testing.assert_allclose([o.probability for o in actual], probabilities, atol=1e-5, rtol=0)
    batch = np.stack([o.model_input.tensor for o in expected])
    _p, gradcam_maps = tf_engine.gradcam().raw(batch)
    _q, cam_maps = lean.gradcam().raw(batch)
    assert gradcam_maps.shape == cam_maps.shape and cam_maps.shape[1] >= 2
    scale = float(np.max(gradcam_maps))
    assert scale > 0, "Grad-CAM must have positive evidence somewhere for the comparison to mean anything"
    np.testing.assert_allclose(cam_maps, gradcam_maps, atol=1e-4 * scale, rtol=1e-4)
    for a, b in zip(expected, actual, strict=True):
        assert np.max(np.abs(a.heatmap - b.heatmap)) < 1e-3
    parity = exported.card.raw["onnx"]["parity"]
    assert parity["n_images"] == len(records) and sum(parity["decisions_changed"].values()) == 0


def test_export_round_trip(exported: Any) -> None:
    from asdesk.inference.onnx_engine import OnnxEngine, create_engine, load_head
    from asdesk.inference.trust import sha256_file

    block = exported.card.raw["onnx"]
    assert sha256_file(exported.path / "model.onnx") == block["sha256"]
    assert sha256_file(exported.path / block["head"]["file"]) == block["head"]["sha256"]
    assert {"model.onnx", "onnx_head.npz", "model.keras"} <= set(exported.files())
    assert block["exporter"].startswith("tf2onnx ") and block["opset"] == 17
    assert isinstance(create_engine(exported), OnnxEngine)
    import keras

    model = keras.saving.load_model(exported.model_path, compile=False)
    kernel, bias = load_head(exported.path / block["head"]["file"])
    np.testing.assert_array_equal(kernel, model.get_layer("head_output").kernel.numpy().reshape(-1))
    assert bias == float(model.get_layer("head_output").bias.numpy()[0])


@pytest.mark.parametrize("name", ["model.onnx", "onnx_head.npz"])
def test_tampered_onnx_files_are_refused(tiny_onnx_pack: Any, tmp_path: Path, name: str) -> None:
    from asdesk.inference import load_pack
    from asdesk.inference.onnx_engine import OnnxEngine

    copy = tmp_path / "pack"
    shutil.copytree(tiny_onnx_pack.path, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatchError, match=name):
        OnnxEngine(load_pack(copy, verify_hash=False)).load()


@pytest.fixture(scope="module")
def tiny_onnx_pack(tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: ANN401
    from asdesk.inference import load_pack
    from asdesk.training.export import export_pack

    root = tmp_path_factory.mktemp("onnx-tiny")
    pack = _build_pack("MobileNetV2", root / "pack", _write_images(root / "images"))
    export_pack(pack.path)
    return load_pack(pack.path)


def test_export_refuses_a_head_whose_cam_is_not_gradcam(tmp_path: Path) -> None:
    import keras

    from asdesk.training.export import ExportError, check_cam_head

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    features = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.GlobalAveragePooling2D(name="head_pool")(features))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head_output")(hidden)
    with pytest.raises(ExportError, match="not a GlobalAveragePooling2D"):
        check_cam_head(keras.Model(inputs, outputs), "conv")
    flat = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(features))
    with pytest.raises(ExportError, match="CAM would not equal"):
        check_cam_head(keras.Model(inputs, flat), "conv")


def _shipped(pack_id: str) -> Any:  # noqa: ANN401
    from asdesk.inference import load_pack

    pack = load_pack(REPO / "models" / pack_id)
    if "onnx" not in pack.card.raw:
        pytest.fail(f"shipped pack {pack_id} has no model.onnx: run asdesk export")
    return pack


def _compare_decisions(pack: Any, records: list[Any]) -> None:  # noqa: ANN401
    from asdesk.inference import InferenceEngine
    from asdesk.inference.onnx_engine import OnnxEngine
    from asdesk.tasks.decision import judge

    expected = InferenceEngine(pack).infer(records, gradcam=True)
    actual = OnnxEngine(pack).infer(records, gradcam=True)
    for a, b in zip(expected, actual, strict=True):
        assert abs(a.probability - b.probability) < 1e-5
        assert abs(a.distance - b.distance) < 1e-2 and (a.distance <= pack.card.raw["content_gate"]["threshold"]) \
            == (b.distance <= pack.card.raw["content_gate"]["threshold"])
        assert np.max(np.abs(a.heatmap - b.heatmap)) < 1e-3
        for point in pack.card.operating_points:
            assert judge(pack.card, a.probability, point).positive == judge(pack.card, b.probability, point).positive


def test_shipped_knee_pack_same_decisions_on_both_engines() -> None:
    _compare_decisions(_shipped("knee-xray-oa"), _records())


@requires_shared("data/sij-mri-spa")
def test_shipped_sij_pack_onnx_equals_its_keras_model(shared_data: Path) -> None:
    """The SIJ pack is a U-Net (an oedema map, no CAM head): the ONNX engine's score and map equal the Keras
    model's on real slices, and no decision changes at any operating point."""
    from asdesk.inference.onnx_engine import OnnxEngine
    from asdesk.inference.runtime import load_model
    from asdesk.io import nifti_slices
    from asdesk.tasks.decision import judge
    from asdesk.training.oedema_pack import keras_outputs

    pack = _shipped("sij-mri-stir-inflammation")
    volume = sorted((shared_data / "sij-mri-spa").glob("stir/**/*_STIR.nii*"))[0]
    slices = nifti_slices(volume)
    records = [slices[i] for i in (5, len(slices) // 2, -6)]
    outputs = OnnxEngine(pack).infer(records, gradcam=True)
    images = np.stack([output.model_input.image for output in outputs])
    maps, _pooled, scores = keras_outputs(load_model(pack.model_path), images)
    for output, score, grid in zip(outputs, scores, maps, strict=True):
        assert abs(output.probability - float(score)) < 1e-5
        for point in pack.card.operating_points:
            onnx_call, keras_call = (judge(pack.card, p, point).positive for p in (output.probability, float(score)))
            assert onnx_call == keras_call
        # the map is shown as the model's probability (not normalised to 1), resampled onto the slice
        assert float(output.heatmap.max()) == pytest.approx(float(grid.max()), abs=0.05)


def test_asdesk_export_command_writes_the_onnx_block(tiny_onnx_pack: Any, tmp_path: Path, capsys) -> None:
    from asdesk.cli import main
    from asdesk.inference import load_pack

    copy = tmp_path / "pack"
    shutil.copytree(tiny_onnx_pack.path, copy)
    for name in ("model.onnx", "onnx_head.npz"):
        (copy / name).unlink()
    card = json.loads((copy / "card.json").read_text(encoding="utf-8"))
    del card["onnx"]
    (copy / "card.json").write_text(json.dumps(card), encoding="utf-8")
    images = _write_images(tmp_path / "images")
    assert main(["export", str(copy), "--data", str(images), "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "parity on 4 images" in out
    pack = load_pack(copy)
    assert pack.card.raw["onnx"]["parity"]["n_images"] == 4 and (copy / "model.onnx").is_file()
