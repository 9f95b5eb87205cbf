"""Grad-CAM (Selvaraju et al., ICCV 2017) on every backbone asdesk trains, and on models whose evidence is
known by construction; plus the overlay colour helpers."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from asdesk.inference.gradcam import GradCam  # noqa: E402
from asdesk.inference.overlay import blend, colourise, overlay_rgba  # noqa: E402
from asdesk.preprocess import Normalise  # noqa: E402
from asdesk.training.model import GRADCAM_LAYERS, NORMALISATION, build_classifier  # noqa: E402

SIZE = 64  # smallest convenient size with a >= 2x2 Grad-CAM grid on every backbone (stride 32)


def smooth_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """float32 (count, size, size) in [0, 1]: blurred noise with some structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 8, 8)).astype(np.float32)
    return np.stack([tf.image.resize(c[:, :, None], (size, size)).numpy()[:, :, 0] for c in coarse])


@pytest.fixture(scope="module", params=["MobileNetV2", "DenseNet121", "ResNet50", "VGG16"])
def backbone(request):
    """(architecture, model, GradCam, normalised batch) with a head whose weights are all positive.

    With non-negative head weights every channel weight alpha_k is >= 0 and the target layers end in a
    ReLU, so the map is non-degenerate (max == 1) whatever the random backbone weights are. The head is
    scaled so that the logits of the test batch lie in [-0.5, 0.5] (random backbones give huge features,
    which would saturate the sigmoid).
    """
    architecture = request.param
    model = build_classifier(architecture, (SIZE, SIZE, 3), weights=None, seed=0)
    normalise = Normalise(NORMALISATION[architecture])
    batch = np.stack([normalise(image) for image in smooth_images(2, SIZE)]).astype(np.float32)
    head = model.get_layer("head_output")
    kernel = np.abs(head.get_weights()[0])
    pooled = keras.Model(model.inputs[0], model.get_layer("head_pool").output)(batch).numpy()
    kernel /= max(float(np.abs(pooled @ kernel).max()), 1e-6)
    head.set_weights([kernel, np.array([-0.5], np.float32)])
    explainer = GradCam(model, GRADCAM_LAYERS[architecture])
    return architecture, model, explainer, batch


def test_gradcam_maps_on_every_backbone(backbone):
    architecture, model, explainer, batch = backbone
    probabilities, maps = explainer(batch)
    assert explainer.score == "logit"
    assert (np.abs(probabilities - 0.5) < 0.2).all()  # not saturated
    assert probabilities.shape == (2,) and probabilities.dtype == np.float32
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    np.testing.assert_allclose(maps.reshape(2, -1).max(axis=1), 1.0, atol=1e-6, err_msg=architecture)
    direct = model(batch, training=False).numpy()[:, 0]
    np.testing.assert_allclose(probabilities, direct, atol=1e-5, err_msg=architecture)


def test_gradcam_matches_reference_computation(backbone):
    """The tf.function logit implementation equals a plain eager Grad-CAM of the probability (the positive
    factor sigma'(z) cancels in the per-map normalisation)."""
    architecture, model, explainer, batch = backbone
    layer = model.get_layer(GRADCAM_LAYERS[architecture])
    reference_model = keras.Model(model.inputs[0], [layer.output, model.output])
    with tf.GradientTape() as tape:
        features, output = reference_model(batch, training=False)
        score = output[:, 0]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    reference = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    reference /= reference.reshape(len(reference), -1).max(axis=1)[:, None, None]
    _, raw = explainer.raw(batch)
    raw /= raw.reshape(len(raw), -1).max(axis=1)[:, None, None]
    assert raw.shape == reference.shape
    np.testing.assert_allclose(raw, reference, atol=1e-4, err_msg=architecture)


def test_gradcam_rejects_wrong_batch_shape(backbone):
    _, _, explainer, batch = backbone
    with pytest.raises(ValueError, match="batch"):
        explainer(batch[0])
    with pytest.raises(ValueError, match="batch"):
        explainer(np.zeros((1, SIZE + 8, SIZE + 8, 3), np.float32))


# --- models whose evidence is known by construction -------------------------------------------------------

BRIGHT = (slice(8, 16), slice(4, 12))  # a bright square in the left half
DARK = (slice(8, 16), slice(20, 28))  # a dark square in the right half


def two_squares() -> np.ndarray:
    """(1, 32, 32, 3): mid-gray with a bright square on the left and a dark square on the right."""
    image = np.full((32, 32), 0.5, np.float32)
    image[BRIGHT] = 1.0
    image[DARK] = 0.0
    return np.repeat(image[None, :, :, None], 3, axis=3)


def evidence_model(bright_weight: float, dark_weight: float, bias: float = 0.0, pool: int = 1):
    """Two feature channels: ``relu(2x - 1)`` fires on bright pixels only, ``relu(1 - 2x)`` on dark ones
    (mid-gray gives 0 in both). The score is ``bright_weight * mean(bright) + dark_weight * mean(dark) + bias``,
    so which square is evidence for the positive class is set by the head weights."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(2, 1, name="detector")(inputs)
    x = keras.layers.ReLU(name="features")(x)
    if pool > 1:
        x = keras.layers.AveragePooling2D(pool, name="pooled")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head_output")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 2.0 / 3.0, -2.0 / 3.0
    model.get_layer("detector").set_weights([kernel, np.array([-1.0, 1.0], np.float32)])
    model.get_layer("head_output").set_weights([np.array([[bright_weight], [dark_weight]], np.float32),
                                                np.array([bias], np.float32)])
    return model


def mass_in(heatmap: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(heatmap[region].sum() / heatmap.sum())


@pytest.mark.parametrize(("bright_weight", "dark_weight", "region"), [
    (4.0, 0.0, BRIGHT),
    (0.0, 4.0, DARK),
    (4.0, -4.0, BRIGHT),  # the dark square lowers the score: Grad-CAM's ReLU must drop it
    (-4.0, 4.0, DARK),
])
def test_gradcam_finds_the_evidence(bright_weight, dark_weight, region):
    model = evidence_model(bright_weight, dark_weight)
    probabilities, maps = GradCam(model, "features")(two_squares())
    assert mass_in(maps[0], region) > 0.95
    assert maps[0].max() == pytest.approx(1.0)
    np.testing.assert_allclose(probabilities, model(two_squares(), training=False).numpy()[:, 0], atol=1e-6)


def test_gradcam_upsamples_a_coarse_layer_and_keeps_the_location():
    model = evidence_model(4.0, 0.0, pool=4)
    explainer = GradCam(model, "pooled")
    _, raw = explainer.raw(two_squares())
    assert raw.shape == (1, 8, 8)
    _, maps = explainer(two_squares())
    assert maps.shape == (1, 32, 32)
    assert mass_in(maps[0], (slice(0, 32), slice(0, 16))) > 0.9
    assert mass_in(maps[0], (slice(4, 20), slice(0, 16))) > 0.8


def test_gradcam_uses_the_logit_when_the_probability_saturates():
    """p == 1.0 in float32: d p / d A underflows to 0, the logit's gradient does not."""
    model = evidence_model(4.0, 0.0, bias=60.0)
    probabilities, maps = GradCam(model, "features")(two_squares())
    assert probabilities[0] == 1.0
    assert maps[0].max() == pytest.approx(1.0)
    assert mass_in(maps[0], BRIGHT) > 0.95


def test_gradcam_without_evidence_is_all_zero_not_nan():
    model = evidence_model(4.0, 0.0)
    gray = np.full((2, 32, 32, 3), 0.5, np.float32)
    probabilities, maps = GradCam(model, "features")(gray)
    assert np.isfinite(maps).all()
    assert not maps.any()
    assert probabilities.shape == (2,)


def test_gradcam_empty_batch():
    probabilities, maps = GradCam(evidence_model(1.0, 0.0), "features")(np.zeros((0, 32, 32, 3), np.float32))
    assert probabilities.shape == (0,) and maps.shape == (0, 32, 32)


def test_gradcam_falls_back_to_the_probability_without_a_sigmoid_dense_head():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(2, 1, name="detector")(inputs)
    x = keras.layers.ReLU(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1, name="logit")(x)
    outputs = keras.layers.Activation("sigmoid", name="probability")(x)
    model = keras.Model(inputs, outputs)
    explainer = GradCam(model, "features")
    assert explainer.score == "probability"
    probabilities, maps = explainer(two_squares())
    np.testing.assert_allclose(probabilities, model(two_squares(), training=False).numpy()[:, 0], atol=1e-6)
    assert maps.shape == (1, 32, 32)


def test_gradcam_rejects_a_missing_layer():
    with pytest.raises(ValueError, match="no layer 'block5_conv3'.*gradcam_layer"):
        GradCam(evidence_model(1.0, 0.0), "block5_conv3")


def test_gradcam_rejects_a_layer_in_a_nested_submodel():
    inner_inputs = keras.Input((32, 32, 3))
    inner_features = keras.layers.ReLU(name="inner_relu")(keras.layers.Conv2D(4, 3, name="inner_conv")(inner_inputs))
    backbone = keras.Model(inner_inputs, inner_features, name="nested_backbone")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name="outer")
    with pytest.raises(ValueError, match="nested sub-model 'nested_backbone'.*rebuild the pack as a flat graph"):
        GradCam(model, "inner_relu")


def test_gradcam_rejects_a_non_spatial_layer():
    with pytest.raises(ValueError, match="spatial"):
        GradCam(evidence_model(1.0, 0.0), "head_output")


# --- overlay ------------------------------------------------------------------------------------------------

def test_colourise_is_rgb_jet():
    heat = np.array([[0.0, 1.0]], np.float32)
    rgb = colourise(heat)
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    cold, hot = rgb[0, 0].astype(int), rgb[0, 1].astype(int)
    assert cold[2] > cold[0]  # jet 0 is blue: channel 2 of RGB
    assert hot[0] > hot[2]  # jet 1 is red: channel 0 of RGB
    with pytest.raises(ValueError, match="colour map"):
        colourise(heat, "rainbow-unicorn")
    with pytest.raises(ValueError, match="2-D"):
        colourise(np.zeros((2, 2, 3), np.float32))


def test_overlay_alpha_follows_heat_above_floor():
    heat = np.array([[0.0, 0.2, 0.6, 1.0, np.nan]], np.float32)
    rgba = overlay_rgba(heat, alpha=0.5, floor=0.2)
    assert rgba.shape == (1, 5, 4) and rgba.dtype == np.uint8
    alpha = rgba[0, :, 3].astype(int)
    assert alpha[0] == 0 and alpha[1] == 0 and alpha[4] == 0
    assert alpha[3] == round(0.5 * 255)
    assert abs(alpha[2] - 0.5 * 255 * 0.5) <= 1
    np.testing.assert_array_equal(rgba[..., :3], colourise(np.nan_to_num(heat)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_rgba(heat, alpha=1.5)
    with pytest.raises(ValueError, match="floor"):
        overlay_rgba(heat, floor=1.0)


def test_blend_composites_over_gray_and_colour():
    display = np.full((4, 5), 0.5, np.float32)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255
    rgba[1, 1, 3] = 128
    out = blend(display, rgba)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[2, 2], [128, 128, 128])
    assert out[1, 1, 0] > out[1, 1, 1]
    np.testing.assert_array_equal(blend(np.repeat(display[:, :, None], 3, axis=2), rgba), out)
    with pytest.raises(ValueError, match="RGBA"):
        blend(display, rgba[:3])
