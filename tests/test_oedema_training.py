"""Oedema-map training pieces: masks follow the image, augmentation moves both, the U-Net's score, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from asdesk.core import ImageMetadata, ImageRecord

pytest.importorskip("keras", reason="needs Keras (the train extra)")


def _record(pixels: np.ndarray, spacing: tuple[float, float]) -> ImageRecord:
    pixels = pixels.astype(np.float32)
    meta = ImageMetadata(source=Path("synthetic"), photometric_interpretation="MONOCHROME2", pixel_spacing_mm=spacing)
    return ImageRecord(pixels=pixels, display=pixels / max(float(pixels.max()), 1.0), metadata=meta)


@pytest.mark.parametrize("shape, spacing", [((336, 336), (0.595, 0.595)), ((256, 256), (0.977, 0.977)),
                                            ((300, 220), (0.7, 0.9))])
def test_a_mask_follows_its_image_through_crop_and_resize(shape, spacing):
    from asdesk.training.oedema import mask_to_input, pipeline

    rows, cols = shape
    pixels = np.full(shape, 100.0)
    mask = np.zeros(shape, bool)
    centre = (rows // 2 + int(20 / spacing[0]), cols // 2 - int(30 / spacing[1]))  # 20 mm down, 30 mm to the left
    half = (int(8 / spacing[0]), int(8 / spacing[1]))
    mask[centre[0] - half[0]:centre[0] + half[0], centre[1] - half[1]:centre[1] + half[1]] = True
    pixels[mask] = 400.0
    image = pipeline()(_record(pixels, spacing)).image
    moved = mask_to_input(mask, spacing)
    bright = image > (image.max() + np.median(image)) / 2
    overlap = np.logical_and(bright, moved).sum() / np.logical_or(bright, moved).sum()
    assert overlap > 0.85, overlap
    if spacing[0] == spacing[1]:  # a 16 mm square at 176 mm / 256 px, whatever the scanner's pixel size
        assert moved.sum() == pytest.approx((16 / (176 / 256)) ** 2, rel=0.2)


def test_augmentation_moves_the_mask_with_the_image():
    from asdesk.training.oedema import augment_pair

    image = np.zeros((128, 128), np.float32)
    mask = np.zeros((128, 128), bool)
    image[40:52, 90:102] = 1.0
    mask[40:52, 90:102] = True
    rng = np.random.default_rng(3)
    for _ in range(10):
        out, moved = augment_pair(image, mask, rng)
        assert out.shape == image.shape and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
        bright = out > 0.5 * out.max()
        ys, xs = np.nonzero(moved)
        by, bx = np.nonzero(bright)
        assert abs(ys.mean() - by.mean()) < 2.5 and abs(xs.mean() - bx.mean()) < 2.5
        # no flip: the spot (centre x = 96) stays on the right half (a flip would put it at x = 32)
        assert xs.mean() > 64


@pytest.fixture(scope="module")
def small_unet():
    import keras

    from asdesk.training.oedema import build_unet

    keras.utils.set_random_seed(0)
    return build_unet(weights=None, input_size=64)


def _peak_local_mean(m):
    from scipy.ndimage import uniform_filter

    from asdesk.training.oedema import SCORE_WINDOW

    total = uniform_filter(m.astype(np.float64), SCORE_WINDOW, mode="constant")
    count = uniform_filter(np.ones_like(m, np.float64), SCORE_WINDOW, mode="constant")
    return float((total / count).max())


def test_each_joint_score_is_the_peak_of_its_halfs_local_mean_and_the_slice_score_the_larger(small_unet):
    from asdesk.training.oedema import MAP_OUTPUT, SCORE_OUTPUT, SIDE_OUTPUT

    x = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    out = small_unet(x, training=False)
    maps, scores = np.asarray(out[MAP_OUTPUT])[..., 0], np.asarray(out[SCORE_OUTPUT]).reshape(-1)
    joints = np.asarray(out[SIDE_OUTPUT])
    assert maps.shape == (3, 64, 64) and np.all((maps >= 0) & (maps <= 1)) and joints.shape == (3, 2)
    for m, s, (right, left) in zip(maps, scores, joints, strict=True):
        # each half is its own input: the local mean does not reach across the midline
        assert right == pytest.approx(_peak_local_mean(m[:, :32]), abs=1e-5)
        assert left == pytest.approx(_peak_local_mean(m[:, 32:]), abs=1e-5)
        assert s == pytest.approx(max(right, left), abs=1e-6)


def test_the_whole_crop_unet_scores_the_peak_of_the_maps_local_mean():
    import keras

    from asdesk.training.oedema import MAP_OUTPUT, SCORE_OUTPUT, build_unet

    keras.utils.set_random_seed(0)
    model = build_unet(weights=None, input_size=64, sides=False)
    out = model(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32), training=False)
    for m, s in zip(np.asarray(out[MAP_OUTPUT])[..., 0], np.asarray(out[SCORE_OUTPUT]).reshape(-1), strict=True):
        assert s == pytest.approx(_peak_local_mean(m), abs=1e-5)


def test_a_mirrored_slice_gives_the_mirrored_map_and_swaps_the_joints(small_unet):
    """Left and right stay what they are: the network reads each joint the same way, whichever side it is on."""
    from asdesk.training.oedema import MAP_OUTPUT, SIDE_OUTPUT

    x = np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    x[:, 20:30, 40:50] = 1.0  # something bright on the image-right half only
    out = small_unet(x, training=False)
    mirrored = small_unet(np.ascontiguousarray(x[:, :, ::-1]), training=False)
    assert np.abs(np.asarray(out[MAP_OUTPUT])[:, :, ::-1] - np.asarray(mirrored[MAP_OUTPUT])).max() < 1e-6
    assert np.abs(np.asarray(out[SIDE_OUTPUT])[:, ::-1] - np.asarray(mirrored[SIDE_OUTPUT])).max() < 1e-6
    # and the halves are independent: changing the image-left half leaves the image-right joint's score alone
    changed = x.copy()
    changed[:, :, :32] = np.random.default_rng(5).uniform(-1, 1, changed[:, :, :32].shape)
    again = small_unet(changed, training=False)
    assert np.abs(np.asarray(again[SIDE_OUTPUT])[:, 1] - np.asarray(out[SIDE_OUTPUT])[:, 1]).max() < 1e-6
    assert np.abs(np.asarray(again[MAP_OUTPUT])[:, :, 32:] - np.asarray(out[MAP_OUTPUT])[:, :, 32:]).max() < 1e-6


def test_joint_labels_need_two_readers_on_that_side():
    from asdesk.training.oedema import side_labels

    readers = np.zeros((3, 4, 8, 8), bool)
    readers[0, 0, 2, 1] = readers[0, 1, 5, 2] = True  # two readers, both on the image-left half
    readers[1, 0, 2, 1] = readers[1, 1, 5, 6] = True  # one reader on each side: the slice label, no joint label
    readers[2, :, 4, 4:6] = True  # all four on the image-right half
    assert side_labels(readers).tolist() == [[1, 0], [0, 0], [0, 1]]
    consensus = np.zeros((2, 8, 8), bool)
    consensus[0, 1, 3] = consensus[1, 1, 4] = True
    assert side_labels(consensus).tolist() == [[1, 0], [0, 1]]


def test_the_runtime_graph_exports_to_onnx_with_parity(small_unet, tmp_path):
    pytest.importorskip("tf2onnx", reason="needs tf2onnx (the train extra)")
    import onnxruntime as ort

    from asdesk.training.oedema import network_input
    from asdesk.training.oedema_pack import export_onnx, keras_outputs

    path = tmp_path / "unet.onnx"
    export_onnx(small_unet, path)
    images = np.random.default_rng(1).uniform(0, 1, (4, 64, 64)).astype(np.float32)
    maps, pooled, scores = keras_outputs(small_unet, images)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_map, got_pooled, got_score = session.run(["oedema_map", "pooled", "probability"],
                                                 {"image": network_input(images)})
    assert got_pooled.shape == (4, 192)  # the two halves' mean: one vector per slice
    assert np.max(np.abs(got_map[..., 0] - maps)) < 1e-5
    assert np.max(np.abs(got_pooled - pooled)) < 1e-4
    assert np.max(np.abs(got_score.reshape(-1) - scores)) < 1e-5


def test_reader_masks_load_aligned_with_their_volumes():
    from asdesk.training.oedema import load_volumes, prepare

    if not (SHARED_DATA / "sij-mri-spa").is_dir():
        pytest.skip("needs ../shared/data/sij-mri-spa: not present (a user's clone has no shared folder)")
    volumes = load_volumes(SHARED_DATA / "sij-mri-spa")
    assert len(volumes) == 8 and all(len(v.readers) == 4 for v in volumes)
    data = prepare(volumes)
    assert data.images.shape == (198, 256, 256) and int(data.labels.sum()) == 119  # the data README's counts
    # oedema is bright on STIR: the consensus region is brighter than the tissue around it
    inside = data.images[data.consensus].mean()
    assert inside > 1.5 * np.median(data.images[data.images > 0.05])
