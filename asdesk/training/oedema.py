"""SIJ bone-marrow oedema segmentation: data, U-Net, leave-one-patient-out training (issue 11).

The model sees what the readers marked. Each coronal STIR slice is scaled to its own tissue reference (the
VHI idea of Hepburn et al., without a hand-drawn normal-marrow region: :func:`asdesk.preprocess.transforms.
tissue_reference`), the pelvis region holding both sacroiliac joints is cropped at a fixed physical size
(176 mm x 176 mm, centred), and a U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) whose encoder is the
MobileNetV2 backbone in ``../shared/weights`` (Sandler et al., CVPR 2018) outputs an oedema probability map at
the input's resolution (256 x 256, 0.69 mm per pixel; the source is 0.595 mm). It learns from the 2-of-4
reader consensus mask (pixels at least two readers marked). The slice score is the map's peak of a 5 x 5
local mean (about 3.4 mm x 3.4 mm of oedema), trained jointly against the slice label (at least two readers
marked the slice, the data README's definition), so the score is derived from the map and a single bright
pixel does not make a finding. No horizontal flip: left and right joints stay where they are.

Since pack 3.0.0 the U-Net reads the two sacroiliac joints separately (:func:`build_unet` ``sides``): the crop
is cut at its midline, which lies on the sacrum (the field of view is centred there), and the image-right half
is mirrored, so one set of weights reads each joint like-oriented; each joint has its own score, trained on its
own label (two readers marked that side), and the slice score is the larger of the two.

The graph is flat and exports to ONNX with three outputs (``oedema_map``, ``pooled`` for the content gate,
``probability`` = the slice score), so the lean runtime runs it like the classifiers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from asdesk.core import ImageRecord
from asdesk.preprocess import build_pipeline
from asdesk.preprocess.pipeline import Pipeline
from asdesk.preprocess.transforms import CropMillimetres

LOGGER = logging.getLogger(__name__)

INPUT_SIZE = 256
CROP_MM = 176.0
#: The pack's preprocessing (card ``preprocessing``): tissue-referenced STIR, fixed physical crop, 256 px.
PREPROCESSING: list[dict[str, Any]] = [
    {"name": "window", "mode": "reference", "low": 20.0, "high": 4.0},
    {"name": "crop_mm", "height_mm": CROP_MM, "width_mm": CROP_MM},
    {"name": "resize", "height": INPUT_SIZE, "width": INPUT_SIZE, "mode": "pad"},
    {"name": "normalise", "backbone": "mobilenet_v2"},
]
#: MobileNetV2 layers whose outputs feed the decoder (strides 2, 4, 8, 16) and the bottleneck (stride 32).
SKIP_LAYERS = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu")
BOTTLENECK = "out_relu"
#: The content gate's features: the global average of ``block_6_expand_relu`` (192 channels, stride 8, a skip
#: connection of the decoder). The trained U-Net's bottleneck ``out_relu`` is saturated (every channel at 0 or 6
#: on every slice: the decoder works from the skip connections) and says nothing about the input. Candidates
#: were compared by one rule, fixed before looking: pass >= 95% of held-out training-site slices and refuse the
#: non-STIR sets (radiographs, CT, axial MR, the coronal T1 series). Measured (nested threshold): Conv_1_bn and
#: block_16_project_BN accepted every radiograph; decoder0_relu 68% of them; decoder1_relu and decoder2_relu
#: refused them but accepted 87% / 73% of the T1 slices; block_6_expand_relu refused all of them and the T1.
GATE_LAYER = "block_6_expand_relu"
MAP_OUTPUT = "oedema_map"
SCORE_OUTPUT = "slice_score"
#: Per-joint scores of a side-split U-Net (N, 2): image-left half (the patient's right joint), image-right half.
SIDE_OUTPUT = "side_scores"
SIDE_SPLIT = "side_split"
POOLED_LAYER = "head_pool"
SCORE_WINDOW = 5


@dataclass
class OedemaVolume:
    """One patient's coronal STIR volume with the readers' oedema masks.

    Attributes
    ----------
    patient : str
    records : list of ImageRecord
        The slices as :func:`asdesk.io.nifti_slices` reads them (display-oriented like DICOM).
    readers : dict of str to numpy.ndarray
        Reader name -> bool (S, H, W) oedema mask; empty for patients without masks.
    """

    patient: str
    records: list[ImageRecord]
    readers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        """Whether reader masks exist."""
        return bool(self.readers)

    def consensus(self, min_readers: int = 2) -> np.ndarray:
        """bool (S, H, W): pixels marked by at least ``min_readers`` readers."""
        votes = np.sum([mask.astype(np.int16) for mask in self.readers.values()], axis=0)
        return votes >= min_readers

    def slice_labels(self, min_readers: int = 2) -> np.ndarray:
        """int (S,): 1 where at least ``min_readers`` readers marked the slice (data README definition)."""
        votes = np.sum([mask.any(axis=(1, 2)).astype(int) for mask in self.readers.values()], axis=0)
        return (votes >= min_readers).astype(int)


def load_volumes(root: str | Path, include_unlabelled: bool = False) -> list[OedemaVolume]:
    """Read ``sij-mri-spa``: STIR volumes and the four readers' inflammation masks.

    Parameters
    ----------
    root : str or Path
        The ``sij-mri-spa`` folder (``stir/**/<id>_STIR.nii.gz``, ``inflammation_masks/<reader>/...``).
    include_unlabelled : bool
        Also return patients without masks.

    Returns
    -------
    list of OedemaVolume
        Sorted by patient id.

    Raises
    ------
    FileNotFoundError
        No STIR volume under ``root``.
    ValueError
        A mask whose shape differs from its volume's.
    """
    from asdesk.io import nifti_slices
    from asdesk.io.nifti import read_nifti_volume

    root = Path(root)
    paths = sorted(root.glob("stir/**/*_STIR.nii*"))
    if not paths:
        raise FileNotFoundError(f"{root}: no stir/**/<id>_STIR.nii.gz volumes; is this the sij-mri-spa folder?")
    volumes = []
    for path in paths:
        patient = path.name.split("_")[0]
        records = nifti_slices(path)
        readers = {}
        for mask_path in sorted(root.glob(f"inflammation_masks/*/{patient}_inflammation_*.nii*")):
            mask = read_nifti_volume(mask_path)[0] > 0
            if mask.shape != (len(records), *records[0].pixels.shape):
                raise ValueError(f"{mask_path}: shape {mask.shape} differs from {path}")
            readers[mask_path.parent.name] = mask
        if readers or include_unlabelled:
            volumes.append(OedemaVolume(patient, records, readers))
    return sorted(volumes, key=lambda volume: volume.patient)


def pipeline() -> Pipeline:
    """The pack's preprocessing pipeline (:data:`PREPROCESSING`)."""
    return build_pipeline(PREPROCESSING)


def mask_to_input(mask: np.ndarray, spacing_mm: tuple[float, float] | None) -> np.ndarray:
    """Carry a mask through the pipeline's geometry (crop, resize with padding) to the model-input grid.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (H, W) on the source slice.
    spacing_mm : tuple of float or None
        The slice's (row, column) pixel spacing.

    Returns
    -------
    numpy.ndarray
        bool (INPUT_SIZE, INPUT_SIZE): True where more than half of the output pixel was marked.
    """
    steps = pipeline()
    crop = next(step for step in steps.intensity_steps if isinstance(step, CropMillimetres))
    top, left, bottom, right = crop.box(mask.shape, spacing_mm)
    from asdesk.preprocess.geometry import Geometry

    region = mask[top:bottom, left:right].astype(np.float32)
    resized, _ = steps.resize.apply(region, Geometry.identity(region.shape))
    return resized > 0.5


@dataclass
class Prepared:
    """Model-input arrays of a set of volumes.

    Attributes
    ----------
    images : numpy.ndarray
        float32 (N, 256, 256) in [0, 1] (before the backbone normalisation).
    consensus : numpy.ndarray
        bool (N, 256, 256): 2-of-4 reader consensus.
    readers : numpy.ndarray
        bool (N, R, 256, 256), R = 4 readers (all False for unlabelled patients).
    labels : numpy.ndarray
        int (N,): slice labels (-1 when unlabelled).
    patients : numpy.ndarray
        str (N,).
    slices : numpy.ndarray
        int (N,): slice index within the volume.
    """

    images: np.ndarray
    consensus: np.ndarray
    readers: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    slices: np.ndarray


def prepare(volumes: list[OedemaVolume]) -> Prepared:
    """Preprocess every slice and carry the masks to the model-input grid.

    Parameters
    ----------
    volumes : list of OedemaVolume

    Returns
    -------
    Prepared
    """
    steps = pipeline()
    images, consensus, readers, labels, patients, slices = [], [], [], [], [], []
    names = sorted({name for volume in volumes for name in volume.readers})
    for volume in volumes:
        agree = volume.consensus() if volume.labelled else None
        slice_labels = volume.slice_labels() if volume.labelled else None
        for index, record in enumerate(volume.records):
            spacing = record.metadata.pixel_spacing_mm
            images.append(steps(record).image)
            blank = np.zeros((INPUT_SIZE, INPUT_SIZE), bool)
            consensus.append(mask_to_input(agree[index], spacing) if agree is not None else blank)
            readers.append(np.stack([mask_to_input(volume.readers[name][index], spacing) if name in volume.readers
                                     else blank for name in names]) if names else np.zeros((0, *blank.shape), bool))
            labels.append(int(slice_labels[index]) if slice_labels is not None else -1)
            patients.append(volume.patient)
            slices.append(index)
    return Prepared(np.stack(images).astype(np.float32), np.stack(consensus), np.stack(readers),
                    np.asarray(labels), np.asarray(patients), np.asarray(slices))


def network_input(images: np.ndarray) -> np.ndarray:
    """Model-input images as the U-Net takes them: the pipeline's ``normalise`` step for MobileNetV2.

    Parameters
    ----------
    images : numpy.ndarray
        float (N, s, s) in [0, 1] (:attr:`Prepared.images`).

    Returns
    -------
    numpy.ndarray
        float32 (N, s, s, 3) in [-1, 1]: the gray image in all three channels, scaled as
        ``keras.applications.mobilenet_v2.preprocess_input`` scales [0, 255].
    """
    return (np.asarray(images, dtype=np.float32)[..., None].repeat(3, axis=-1) * 2.0 - 1.0).astype(np.float32)


def build_unet(weights: str | Path | None = None, input_size: int = INPUT_SIZE, seed: int = 0,
               sides: bool = True) -> Any:  # noqa: ANN401
    """U-Net with a MobileNetV2 encoder: oedema map, slice score and per-joint scores.

    With ``sides`` (the default since pack 3.0.0) the input is cut at its vertical midline, which the fixed crop
    centred on the field of view puts on the sacrum (``scripts/sij_midline.py`` on the 248 slices: the pelvis's
    mirror-symmetry axis lies within 3 mm of the image centre on 87% of them, within 5 mm on 91%; the rest are
    mostly the first and last slices of a volume, where bowel or the absence of the joints breaks the symmetry), and
    the right half is mirrored (:class:`asdesk.inference.side_layers.SideSplit`), so one network reads each
    sacroiliac joint as a separate, like-oriented input: every weight sees twice the joints, and each joint gets its
    own score, trained on its own label (at least two readers marked that side). The map is put back together
    (:class:`~asdesk.inference.side_layers.SideMerge`); the slice score is the larger joint score.

    Parameters
    ----------
    weights : str, Path or None
        No-top MobileNetV2 weights (``../shared/weights/mobilenetv2_1.00_*.weights.h5``), ``"imagenet"``
        (connected machines) or ``None``.
    input_size : int
        Height and width of the input, a multiple of 32 (of 64 with ``sides``).
    seed : int
        Seed of the decoder's initialisers.
    sides : bool
        Read the two halves (joints) separately, as above; ``False`` is the 2.0.0 whole-crop U-Net.

    Returns
    -------
    keras.Model
        Flat functional model, input ``image`` float32 (N, s, s, 3) in MobileNetV2's [-1, 1]; outputs
        ``oedema_map`` float32 (N, s, s, 1) in [0, 1], ``slice_score`` float32 (N, 1) in [0, 1] and, with
        ``sides``, ``side_scores`` float32 (N, 2) (image-left half = the patient's right joint, then the
        image-right half). A score is the maximum over positions of the map's 5 x 5 local mean. The content
        gate reads the global average of the encoder's ``block_6_expand_relu`` (N, 192), added as
        ``head_pool`` by :func:`with_pooled`.

    Raises
    ------
    ValueError
        ``input_size`` not a multiple of 32 (64 with ``sides``), or unusable weights.
    """
    import keras

    from asdesk.inference.side_layers import SideMerge, SidePairs, SideSplit

    if input_size % (64 if sides else 32):
        raise ValueError(f"input_size must be a multiple of {64 if sides else 32}, got {input_size}")
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise ValueError(f"backbone weights file {weights} does not exist")
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    features = SideSplit(name=SIDE_SPLIT)(inputs) if sides else inputs
    encoder = keras.applications.MobileNetV2(include_top=False, weights=None if weights is None else str(weights),
                                             input_tensor=features)
    bottleneck = encoder.get_layer(BOTTLENECK).output
    init = keras.initializers.HeNormal(seed=seed)
    x = bottleneck
    for depth, (name, filters) in enumerate(zip(reversed(SKIP_LAYERS), (192, 96, 48, 32), strict=True)):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder{depth}_up")(x)
        x = keras.layers.Concatenate(name=f"decoder{depth}_concat")([x, encoder.get_layer(name).output])
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=init,
                                name=f"decoder{depth}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"decoder{depth}_bn")(x)
        x = keras.layers.ReLU(name=f"decoder{depth}_relu")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="decoder_out_up")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init,
                            name="decoder_out_conv")(x)
    oedema = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32",
                                 name=f"{MAP_OUTPUT}_half" if sides else MAP_OUTPUT,
                                 bias_initializer=keras.initializers.Constant(-3.0))(x)
    local = keras.layers.AveragePooling2D(SCORE_WINDOW, strides=1, padding="same", name="score_local_mean")(oedema)
    if sides:
        half_scores = keras.layers.GlobalMaxPooling2D(name="side_score_half", dtype="float32")(local)
        side_scores = SidePairs(flatten=True, name=SIDE_OUTPUT, dtype="float32")(half_scores)
        score = keras.layers.GlobalMaxPooling1D(name=SCORE_OUTPUT, dtype="float32")(
            keras.layers.Reshape((2, 1), name="side_scores_column")(side_scores))
        outputs = {MAP_OUTPUT: SideMerge(name=MAP_OUTPUT, dtype="float32")(oedema), SCORE_OUTPUT: score,
                   SIDE_OUTPUT: side_scores}
    else:
        outputs = {MAP_OUTPUT: oedema,
                   SCORE_OUTPUT: keras.layers.GlobalMaxPooling2D(name=SCORE_OUTPUT, dtype="float32")(local)}
    model = keras.Model(inputs, outputs, name="MobileNetV2_UNet_sides" if sides else "MobileNetV2_UNet")
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def is_side_split(model: Any) -> bool:  # noqa: ANN401
    """Whether ``model`` reads the two joints separately (:func:`build_unet` with ``sides``)."""
    return any(layer.name == SIDE_SPLIT for layer in model.layers)


def with_pooled(model: Any) -> Any:  # noqa: ANN401
    """The three-output view the runtime uses: oedema map, pooled encoder features, slice score.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_unet` (or loaded from a pack's ``model.keras``).

    Returns
    -------
    keras.Model
        Outputs ``[oedema_map (N, s, s, 1), head_pool (N, 192), slice_score (N, 1)]``; ``head_pool`` is the
        global average of :data:`GATE_LAYER` (for a side-split model, the mean of the two halves'); no new
        weights.
    """
    import keras

    from asdesk.inference.side_layers import SideMean

    if is_side_split(model):
        halves = keras.layers.GlobalAveragePooling2D(name=f"{POOLED_LAYER}_half")(model.get_layer(GATE_LAYER).output)
        pooled = SideMean(name=POOLED_LAYER)(halves)
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name=POOLED_LAYER)(model.get_layer(GATE_LAYER).output)
    return keras.Model(model.inputs[0], [model.get_layer(MAP_OUTPUT).output, pooled,
                                         model.get_layer(SCORE_OUTPUT).output], name=f"{model.name}_runtime")


def _dice_bce(y_true: Any, y_pred: Any) -> Any:  # noqa: ANN401
    import keras
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    intersection = ops.sum(y_true * y_pred)
    dice = (2.0 * intersection + 1.0) / (ops.sum(y_true) + ops.sum(y_pred) + 1.0)
    return bce + (1.0 - dice)


def compile_unet(model: Any, learning_rate: float = 5e-4, score_weight: float = 0.5) -> Any:  # noqa: ANN401
    """Compile with BCE + soft Dice on the map and BCE on the scores.

    A side-split model's joint scores carry ``score_weight`` and its slice score half of it (the slice score
    is the larger joint score, so it mostly repeats their signal).

    Parameters
    ----------
    model : keras.Model
        From :func:`build_unet`.
    learning_rate : float
        Adam's learning rate.
    score_weight : float
        Weight of the slice-score loss relative to the map loss.

    Returns
    -------
    keras.Model
        ``model``, compiled.
    """
    import keras

    losses = {MAP_OUTPUT: _dice_bce, SCORE_OUTPUT: "binary_crossentropy"}
    weights = {MAP_OUTPUT: 1.0, SCORE_OUTPUT: score_weight}
    if is_side_split(model):
        losses[SIDE_OUTPUT] = "binary_crossentropy"
        weights.update({SIDE_OUTPUT: score_weight, SCORE_OUTPUT: score_weight / 2})
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses, loss_weights=weights)
    return model


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random affine (rotation ±10°, zoom ±15%, shift ±8%), resolution and intensity jitter; no flip.

    The resolution jitter (down- and up-sampling by up to 1.7x) imitates scanners with coarser pixels
    (the DICOM study is 0.98 mm against the training data's 0.595 mm).

    Parameters
    ----------
    image : numpy.ndarray
        float32 (h, w) in [0, 1].
    mask : numpy.ndarray
        bool (h, w).
    rng : numpy.random.Generator

    Returns
    -------
    image : numpy.ndarray
        float32 (h, w) in [0, 1].
    mask : numpy.ndarray
        bool (h, w), moved with the image.
    """
    height, width = image.shape
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), rng.uniform(-10, 10), 1 + rng.uniform(-0.15, 0.15))
    matrix[:, 2] += rng.uniform(-0.08, 0.08, size=2) * (width, height)
    out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0)
    moved = cv2.warpAffine(mask.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderValue=0.0) > 0.5
    if rng.random() < 0.5:
        factor = rng.uniform(1.0, 1.7)
        small = cv2.resize(out, (int(width / factor), int(height / factor)), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    out = out * rng.uniform(0.85, 1.15)
    out = np.power(np.clip(out, 0.0, 1.0), rng.uniform(0.8, 1.25))
    out = out + rng.normal(0.0, rng.uniform(0.0, 0.02), size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32), moved


def side_labels(masks: np.ndarray) -> np.ndarray:
    """Per-joint labels from masks on the model-input grid: whether each half holds a marked pixel.

    Parameters
    ----------
    masks : numpy.ndarray
        bool (N, s, s) consensus masks, or (N, R, s, s) one per reader.

    Returns
    -------
    numpy.ndarray
        int (N, 2): [image-left half, image-right half]; from reader masks, 1 where at least two readers
        marked that half (the slice label's rule, per joint).
    """
    half = masks.shape[-1] // 2
    marked = np.stack([masks[..., :half].any(axis=(-2, -1)), masks[..., half:].any(axis=(-2, -1))], axis=-1)
    if masks.ndim == 4:
        return (marked.sum(axis=1) >= 2).astype(int)
    return marked.astype(int)


def _batches(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, batch_size: int, epochs: int,
             seed: int, sides: bool = False) -> Any:  # noqa: ANN401
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            pick = order[start:start + batch_size]
            pairs = [augment_pair(images[i], masks[i], rng) for i in pick]
            x = network_input(np.stack([pair[0] for pair in pairs]))
            y_map = np.stack([pair[1] for pair in pairs])[..., None].astype(np.float32)
            y_score = labels[pick].astype(np.float32)[:, None]
            targets = {MAP_OUTPUT: y_map, SCORE_OUTPUT: y_score}
            if sides:  # from the moved mask: a shift may carry a mark across the midline
                targets[SIDE_OUTPUT] = side_labels(y_map[..., 0]).astype(np.float32)
            yield x, targets


def train_unet(data: Prepared, index: np.ndarray, weights: str | Path | None, epochs: int = 30,
               batch_size: int = 8, seed: int = 0, sides: bool = True) -> Any:  # noqa: ANN401
    """Train a U-Net on ``data[index]`` (labelled slices) for a fixed number of epochs (no early stopping),
    then recompute the decoder's BatchNorm statistics on those slices (:func:`recalibrate_batchnorm`).

    Parameters
    ----------
    data : Prepared
    index : numpy.ndarray
        int (M,): rows of ``data`` to train on.
    weights : str, Path or None
        Encoder weights (:func:`build_unet`).
    epochs, batch_size, seed : int
    sides : bool
        Side-split U-Net (:func:`build_unet`).

    Returns
    -------
    keras.Model
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = compile_unet(build_unet(weights, seed=seed, sides=sides))
    steps = len(index) // batch_size
    generator = _batches(data.images[index], data.consensus[index], data.labels[index], batch_size, epochs, seed,
                         sides=sides)
    model.fit(generator, epochs=epochs, steps_per_epoch=steps, verbose=2)
    recalibrate_batchnorm(model, data.images[index])
    return model


def recalibrate_batchnorm(model: Any, images: np.ndarray, batch_size: int = 8) -> dict[str, float]:  # noqa: ANN401
    """Set the decoder's BatchNormalization statistics to their values on the (unaugmented) training images.

    During training the moving averages trail the weights and follow augmented batches; measured on the first
    final model, the decoder's moving means sat about one standard deviation from the population means and the
    map lit up a fifth of every slice in inference mode (a few percent in training mode). Recomputing them
    once on the training images after training is "precise BN" (Wu & Johnson, "Rethinking 'Batch' in
    BatchNorm", 2021). Layer by layer, since each depends on the ones before it; the frozen encoder keeps its
    pretrained statistics.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_unet`, trained.
    images : numpy.ndarray
        float32 (N, s, s) in [0, 1]: the training images (no augmentation).
    batch_size : int

    Returns
    -------
    dict
        Layer name -> median |old - new| moving mean in units of the new standard deviation (the correction).
    """
    import keras

    x = network_input(images)
    changes = {}
    for layer in model.layers:
        if not (isinstance(layer, keras.layers.BatchNormalization) and layer.trainable):
            continue
        probe = keras.Model(model.inputs[0], layer.input)
        total = np.zeros(layer.moving_mean.shape, np.float64)
        squares = np.zeros_like(total)
        count = 0
        for first in range(0, len(x), batch_size):
            values = np.asarray(probe(x[first:first + batch_size], training=False), np.float64)
            values = values.reshape(-1, values.shape[-1])
            total += values.sum(axis=0)
            squares += (values ** 2).sum(axis=0)
            count += values.shape[0]
        mean = total / count
        variance = np.maximum(squares / count - mean ** 2, 0.0)
        old = np.asarray(layer.moving_mean.numpy(), np.float64)
        changes[layer.name] = float(np.median(np.abs(old - mean) / np.sqrt(variance + layer.epsilon)))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    LOGGER.info("BatchNorm recalibrated on %d images: %s", len(images), changes)
    return changes


def predict(model: Any, images: np.ndarray,  # noqa: ANN401
            batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Oedema maps, slice scores and (side-split models) joint scores.

    Parameters
    ----------
    model : keras.Model
    images : numpy.ndarray
        float32 (N, s, s) in [0, 1].

    Returns
    -------
    maps : numpy.ndarray
        float32 (N, s, s) in [0, 1].
    scores : numpy.ndarray
        float32 (N,).
    side_scores : numpy.ndarray or None
        float32 (N, 2) for a side-split model, else ``None``.
    """
    out = model.predict(network_input(images), batch_size=batch_size, verbose=0)
    return (np.asarray(out[MAP_OUTPUT])[..., 0].astype(np.float32), np.asarray(out[SCORE_OUTPUT]).reshape(-1),
            np.asarray(out[SIDE_OUTPUT], np.float32) if SIDE_OUTPUT in out else None)


def run_lopo(root: str | Path, weights: str | Path | None, out: str | Path, epochs: int, seed: int = 0,
             patients: list[str] | None = None, sides: bool = True) -> Path:
    """Leave-one-patient-out: train on 7 labelled patients, predict the 8th; save maps and scores.

    Parameters
    ----------
    root : str or Path
        ``sij-mri-spa``.
    weights : str, Path or None
    out : str or Path
        Folder; one ``fold-<patient>.npz`` per held-out patient (maps float16, scores, labels, slices).
    epochs, seed : int
    patients : list of str, optional
        Only these held-out patients (default all).
    sides : bool
        Side-split U-Net (:func:`build_unet`); the fold files then also hold ``side_scores`` and
        ``side_labels``.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(load_volumes(root))
    for patient in patients or sorted(set(data.patients)):
        target = out / f"fold-{patient}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        train = np.flatnonzero(data.patients != patient)
        test = np.flatnonzero(data.patients == patient)
        model = train_unet(data, train, weights, epochs=epochs, seed=seed, sides=sides)
        maps, scores, joints = predict(model, data.images[test])
        extra = {} if joints is None else {"side_scores": joints, "side_labels": side_labels(data.readers[test])}
        np.savez_compressed(target, maps=maps.astype(np.float16), scores=scores, labels=data.labels[test],
                            slices=data.slices[test], seconds=time.perf_counter() - start, **extra)
        LOGGER.info("fold %s: %d slices, %.0f s", patient, len(test), time.perf_counter() - start)
    return out


def train_oedema_pack(args: argparse.Namespace) -> int:
    """``asdesk train --task sij-oedema DATA --out PACK``: leave-one-patient-out folds, the final model, the pack.

    Folds are written to ``PACK/lopo`` and reused when present (an interrupted run resumes); the final model
    (all labelled patients, same epochs) to ``PACK/final``; then :func:`asdesk.training.oedema_pack.build`
    evaluates and writes the pack into ``PACK``.

    Parameters
    ----------
    args : argparse.Namespace
        ``asdesk train`` options: ``data``, ``weights``, ``epochs``, ``seed``, ``out``, ``pack_id``,
        ``pack_version``.

    Returns
    -------
    int
        0.
    """
    from asdesk.training.oedema_pack import build

    out = Path(args.out)
    weights = None if str(args.weights).lower() in ("", "none") else args.weights
    run_lopo(args.data, weights, out / "lopo", args.epochs, args.seed)
    final = out / "final"
    if not (final / "model.keras").is_file():
        data = prepare(load_volumes(args.data))
        model = train_unet(data, np.arange(len(data.images)), weights, epochs=args.epochs, seed=args.seed)
        final.mkdir(parents=True, exist_ok=True)
        model.save(final / "model.keras")
        (final / "training.json").write_text(json.dumps({"epochs": args.epochs, "seed": args.seed}))
    build(argparse.Namespace(
        data=args.data, lopo=str(out / "lopo"), model=str(final / "model.keras"), old_pack=[], previous_lopo="",
        out=str(out), pack_id=args.pack_id, version=args.pack_version, weights_name=str(weights or "none"),
        epochs=args.epochs, configurations=1, selection_note="", allow_parity_changes=False))
    print(f"model pack written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m asdesk.training.oedema lopo|final ...``."""
    parser = argparse.ArgumentParser(prog="python -m asdesk.training.oedema", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("lopo", "final"))
    parser.add_argument("data", help="the sij-mri-spa folder")
    parser.add_argument("--weights", default=None, help="no-top MobileNetV2 weights file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patients", default="", help="comma-separated held-out patients (lopo)")
    parser.add_argument("--whole", action="store_true",
                        help="the 2.0.0 whole-crop U-Net instead of reading the two joints separately")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "lopo":
        run_lopo(args.data, args.weights, args.out, args.epochs, args.seed,
                 [p for p in args.patients.split(",") if p] or None, sides=not args.whole)
        return 0
    data = prepare(load_volumes(args.data))
    model = train_unet(data, np.arange(len(data.images)), args.weights, epochs=args.epochs, seed=args.seed,
                       sides=not args.whole)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model.save(Path(args.out) / "model.keras")
    (Path(args.out) / "training.json").write_text(json.dumps({"epochs": args.epochs, "seed": args.seed,
                                                              "sides": not args.whole,
                                                              "patients": sorted(set(data.patients.tolist()))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
