"""Transfer learning as in the AS reference (Adam 1e-4, batch 32, up to 30 epochs, early stopping on
validation loss, ReduceLROnPlateau, dropout 0.5), in two phases:

1. *Frozen backbone*: the backbone runs once over each training image and ``augment_copies`` augmented
   copies of it, and the head (Dropout → Dense) trains on those pooled features. This is exactly the
   frozen-backbone model (its BatchNormalization runs in inference mode either way) at a fraction of the
   cost, and the cache is shared across cross-validation folds.
2. *Fine-tuning* (optional): the top ``fine_tune_fraction`` of the backbone's layers are unfrozen
   (BatchNormalization stays frozen) and the whole model trains on freshly augmented images at a 10x lower
   learning rate, with early stopping on validation loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asdesk.core import CancelToken, NullProgress, ProgressSink
from asdesk.preprocess import Normalise
from asdesk.training.augment import Augmentation
from asdesk.training.model import build_classifier, set_trainable

LOGGER = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the AS transfer-learning reference).

    Attributes
    ----------
    architecture : str
        ``MobileNetV2``, ``VGG16``, ``ResNet50`` or ``DenseNet121``.
    weights : str or None
        ``"imagenet"``, a weights file path, or ``None``.
    head_epochs, fine_tune_epochs : int
        Maximum epochs of each phase (early stopping may end them sooner); 0 skips fine-tuning.
    fine_tune_fraction : float
        Fraction of backbone layers (from the top) unfrozen for fine-tuning.
    batch_size : int
    learning_rate, fine_tune_learning_rate : float
        Adam learning rates of the two phases.
    patience : int
        Early-stopping patience in epochs (ReduceLROnPlateau uses half of it).
    augment_copies : int
        Augmented copies per training image in the frozen phase.
    augmentation : Augmentation
    seed : int
    class_weight : str or None
        ``"balanced"``: each class's loss weighted by ``N / (2 N_class)`` of the training images
        (scikit-learn's "balanced" rule), so the minority class counts as much as the majority; ``None``:
        unweighted.
    stn : bool
        Put a Spatial Transformer (:mod:`asdesk.training.stn`) in front of the backbone; it trains in a
        third phase (backbone frozen, head warm-started) for ``stn_epochs`` epochs.
    stn_epochs : int
        Maximum epochs of the Spatial Transformer phase (early stopping on validation loss).
    """

    architecture: str = "MobileNetV2"
    weights: str | None = None
    head_epochs: int = 30
    fine_tune_epochs: int = 0
    fine_tune_fraction: float = 0.3
    batch_size: int = 32
    learning_rate: float = 1e-4
    fine_tune_learning_rate: float = 1e-5
    patience: int = 5
    augment_copies: int = 4
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0
    class_weight: str | None = None
    stn: bool = False
    stn_epochs: int = 10


def class_weights(labels: np.ndarray, mode: str | None) -> dict[int, float] | None:
    """Per-class loss weights for Keras ``fit(class_weight=...)``.

    Parameters
    ----------
    labels : numpy.ndarray
        (N,) int {0, 1} training labels.
    mode : str or None
        ``"balanced"`` (weight ``N / (2 N_c)``) or ``None``/``"none"`` (no weighting).

    Returns
    -------
    dict or None
        ``{0: w0, 1: w1}``, or ``None`` when unweighted.

    Raises
    ------
    ValueError
        Unknown mode, or a class absent from ``labels`` with ``"balanced"``.
    """
    if mode in (None, "none"):
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'balanced' or None, got {mode!r}")
    labels = np.asarray(labels).astype(np.int64)
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"balanced class weights need both classes, got counts {counts.tolist()}")
    return {c: float(len(labels) / (2.0 * counts[c])) for c in (0, 1)}


@dataclass
class FitResult:
    """A trained model and how training went."""

    model: Any
    head_epochs_run: int
    fine_tune_epochs_run: int
    history: dict[str, list[float]]
    stn_epochs_run: int = 0


def _normalised_batches(images: np.ndarray, normalise: Normalise, batch_size: int):  # noqa: ANN202
    for start in range(0, len(images), batch_size):
        yield np.stack([normalise(image) for image in images[start:start + batch_size]])


def forward(model: Any, images: np.ndarray, normalise: Normalise, batch_size: int = 32,  # noqa: ANN401
            progress: ProgressSink | None = None, cancel: CancelToken | None = None) -> np.ndarray:
    """Run ``model(x, training=False)`` over model-input images in batches, inside a ``tf.function``.

    Parameters
    ----------
    model : keras.Model
    images : numpy.ndarray
        float32 (N, h, w) in [0, 1].
    normalise : Normalise
        The pipeline's normalisation (grayscale → 3 channels, backbone scaling).

    Returns
    -------
    numpy.ndarray
        float32 (N, ...) outputs, e.g. (N,) probabilities for a classifier, (N, D) pooled features.
    """
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    sink = progress or NullProgress()
    outputs = []
    sink.start(len(images), "forward")
    try:
        for batch in _normalised_batches(images, normalise, batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            outputs.append(np.asarray(call(tf.constant(batch))))
            sink.advance(len(batch))
    finally:
        sink.finish()
    result = np.concatenate(outputs, axis=0).astype(np.float32)
    return result[:, 0] if result.ndim == 2 and result.shape[1] == 1 else result


class FeatureCache:
    """Pooled backbone features of every image and of ``copies`` augmented copies of it.

    Parameters
    ----------
    model : keras.Model
        From :func:`asdesk.training.model.build_classifier` (its ``head_pool`` output is cached).
    images : numpy.ndarray
        float32 (N, h, w) in [0, 1].
    normalise : Normalise
    copies : int
    augmentation : Augmentation
    seed : int

    Attributes
    ----------
    features : numpy.ndarray
        float32 (N, 1 + copies, D); index 0 along axis 1 is the unaugmented image.
    """

    def __init__(self, model: Any, images: np.ndarray, normalise: Normalise, copies: int,  # noqa: ANN401
                 augmentation: Augmentation, seed: int, progress: ProgressSink | None = None,
                 cancel: CancelToken | None = None) -> None:
        import keras

        extractor = keras.Model(model.input, model.get_layer("head_pool").output)
        rng = np.random.default_rng(seed)
        variants = [images]
        for _ in range(copies):
            variants.append(np.stack([augmentation(image, rng) for image in images]))
        stacked = np.concatenate(variants, axis=0)
        features = forward(extractor, stacked, normalise, progress=progress, cancel=cancel)
        self.features = features.reshape(copies + 1, len(images), -1).transpose(1, 0, 2).copy()


def _head_model(dimension: int, seed: int, prior: float = 0.5) -> Any:  # noqa: ANN401
    """The Dropout → Dense(1, sigmoid) head on pooled features, started where a logistic regression starts.

    The kernel starts at zero and the bias at the log-odds of the training prevalence ``prior``, so the
    first prediction is the class prior and every step of Adam moves away from it only as far as the data
    pull. A random (Glorot) start instead gives each image a random logit of order one that a small data
    set (a few hundred images, as the SIJ MRI set) cannot train away within early stopping's epochs.
    """
    import keras

    prior = float(np.clip(prior, 1e-3, 1 - 1e-3))
    inputs = keras.Input(shape=(dimension,))
    x = keras.layers.Dropout(0.5, seed=seed, name="head_dropout")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head_output", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant(np.log(prior / (1 - prior))))(x)
    return keras.Model(inputs, outputs)


def _callbacks(patience: int, with_validation: bool) -> list[Any]:
    import keras

    if not with_validation:
        return []
    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, patience // 2),
                                          min_lr=1e-7),
    ]


def fit_head(cache: FeatureCache, labels: np.ndarray, train: np.ndarray, validation: np.ndarray | None,
             config: TrainConfig, epochs: int | None = None, verbose: int = 0) -> tuple[Any, int, dict]:  # noqa: ANN401
    """Train the Dropout → Dense head on cached features.

    Parameters
    ----------
    cache : FeatureCache
    labels : numpy.ndarray
        (N,) int {0, 1}.
    train, validation : numpy.ndarray
        Index arrays; ``validation`` ``None`` trains exactly ``epochs`` epochs.
    config : TrainConfig
    epochs : int, optional
        Overrides ``config.head_epochs``.

    Returns
    -------
    head : keras.Model
    epochs_run : int
        The best epoch (early stopping restores it) or ``epochs``.
    history : dict
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    features = cache.features[train].reshape(-1, cache.features.shape[2])
    targets = np.repeat(labels[train], cache.features.shape[1]).astype(np.float32)
    weights = class_weights(labels[train], config.class_weight)
    # With balanced weights the weighted prevalence is 1/2: start the head there.
    head = _head_model(features.shape[1], config.seed, prior=0.5 if weights else float(targets.mean()))
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="binary_crossentropy",
                 metrics=[keras.metrics.AUC(name="auc")])
    validation_data = None
    if validation is not None and len(validation):
        validation_data = (cache.features[validation, 0], labels[validation].astype(np.float32))
    history = head.fit(features, targets, batch_size=config.batch_size, epochs=epochs or config.head_epochs,
                       validation_data=validation_data, shuffle=True, verbose=verbose, class_weight=weights,
                       callbacks=_callbacks(config.patience, validation_data is not None))
    losses = history.history.get("val_loss")
    epochs_run = int(np.argmin(losses)) + 1 if losses else len(history.history["loss"])
    return head, epochs_run, {k: [float(v) for v in vs] for k, vs in history.history.items()}


def install_head(model: Any, head: Any) -> None:  # noqa: ANN401
    """Copy a trained head's Dense weights into the full classifier's ``head_output`` layer."""
    model.get_layer("head_output").set_weights(head.get_layer("head_output").get_weights())


class _AugmentedImages:
    """A keras PyDataset of freshly augmented, normalised training batches (built lazily to import keras)."""

    @staticmethod
    def create(images: np.ndarray, labels: np.ndarray, normalise: Normalise, augmentation: Augmentation,
               batch_size: int, seed: int) -> Any:  # noqa: ANN401
        import keras

        class Batches(keras.utils.PyDataset):
            def __init__(self) -> None:
                super().__init__()
                self.rng = np.random.default_rng(seed)
                self.order = self.rng.permutation(len(images))

            def __len__(self) -> int:
                return math.ceil(len(images) / batch_size)

            def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
                chosen = self.order[index * batch_size:(index + 1) * batch_size]
                batch = np.stack([normalise(augmentation(images[i], self.rng)) for i in chosen])
                return batch, labels[chosen].astype(np.float32)

            def on_epoch_end(self) -> None:
                self.order = self.rng.permutation(len(images))

        return Batches()


def fit(images: np.ndarray, labels: np.ndarray, train: np.ndarray, validation: np.ndarray | None,
        config: TrainConfig, normalise: Normalise, input_shape: tuple[int, int, int],
        cache: FeatureCache | None = None, model: Any = None, head_epochs: int | None = None,  # noqa: ANN401
        fine_tune_epochs: int | None = None, progress: ProgressSink | None = None,
        cancel: CancelToken | None = None, verbose: int = 0, stn_epochs: int | None = None) -> FitResult:
    """Train one classifier: frozen-backbone phase on cached features, then optional fine-tuning.

    Parameters
    ----------
    images : numpy.ndarray
        float32 (N, h, w) in [0, 1]: model-input images of the whole data set.
    labels : numpy.ndarray
        (N,) int {0, 1}.
    train, validation : numpy.ndarray
        Index arrays into ``images``. Without validation, the phases run exactly ``head_epochs`` /
        ``fine_tune_epochs`` epochs (used for the final model, with the epoch counts that early stopping
        chose in cross-validation).
    config : TrainConfig
    normalise : Normalise
        The pipeline's normalisation step.
    input_shape : tuple of int
        (h, w, 3).
    cache : FeatureCache, optional
        Reused across folds; built from ``model`` when absent.
    model : keras.Model, optional
        A freshly built classifier matching ``cache``; built when absent.

    Returns
    -------
    FitResult
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    if model is None:
        model = build_classifier(config.architecture, input_shape, config.weights, seed=config.seed,
                                 stn=config.stn)
    if cache is None:
        cache = FeatureCache(model, images, normalise, config.augment_copies, config.augmentation,
                             config.seed, progress, cancel)
    head, head_run, history = fit_head(cache, labels, train, validation, config, head_epochs, verbose)
    install_head(model, head)
    stn_run = 0
    if config.stn:
        from asdesk.training.stn import fit_stn

        stn_run, stn_history = fit_stn(model, images, labels, train, validation, config, normalise,
                                       config.stn_epochs if stn_epochs is None else stn_epochs, verbose)
        history.update(stn_history)
        set_trainable(model, "head")
    tune_epochs = config.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
    tuned_run = 0
    if tune_epochs > 0:
        set_trainable(model, "fine_tune", config.fine_tune_fraction)
        tuned_run, tuned_history = fit_on_images(model, images, labels, train, validation, config, normalise,
                                                 config.fine_tune_learning_rate, tune_epochs, verbose, "fine_tune")
        history.update(tuned_history)
        set_trainable(model, "head")
    return FitResult(model, head_run, tuned_run, history, stn_run)


def fit_on_images(model: Any, images: np.ndarray, labels: np.ndarray, train: np.ndarray,  # noqa: ANN401
                  validation: np.ndarray | None, config: TrainConfig, normalise: Normalise, learning_rate: float,
                  epochs: int, verbose: int, prefix: str) -> tuple[int, dict[str, list[float]]]:
    """Train the model's trainable layers end to end on augmented images (fine-tuning, the Spatial Transformer).

    Adam at ``learning_rate`` on binary cross-entropy, batches of augmented training images, the configured class
    weights, early stopping on the validation loss (best weights restored) when there are validation images.

    Parameters
    ----------
    model : keras.Model
        With the layers to train already marked trainable.
    images : numpy.ndarray
        float32 (N, h, w) model-input images in [0, 1].
    labels : numpy.ndarray
        (N,) int {0, 1}.
    train, validation : numpy.ndarray
        Index arrays; without validation exactly ``epochs`` epochs run.
    config : TrainConfig
        Batch size, patience, augmentation, class weights, seed.
    normalise : Normalise
    learning_rate : float
    epochs : int
        Maximum epochs.
    verbose : int
        Keras' verbosity.
    prefix : str
        Prefix of the returned history's keys (``"fine_tune"`` -> ``fine_tune_loss``, ...).

    Returns
    -------
    epochs_run : int
        The epoch with the lowest validation loss (or the number of epochs run without validation).
    history : dict
        Keras history, keys prefixed.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    batches = _AugmentedImages.create(images[train], labels[train], normalise, config.augmentation,
                                      config.batch_size, config.seed)
    validation_data = None
    if validation is not None and len(validation):
        validation_data = (np.stack([normalise(images[i]) for i in validation]),
                           labels[validation].astype(np.float32))
    fitted = model.fit(batches, epochs=epochs, validation_data=validation_data, verbose=verbose,
                       class_weight=class_weights(labels[train], config.class_weight),
                       callbacks=_callbacks(config.patience, validation_data is not None))
    losses = fitted.history.get("val_loss")
    run = int(np.argmin(losses)) + 1 if losses else len(fitted.history["loss"])
    return run, {f"{prefix}_{k}": [float(v) for v in vs] for k, vs in fitted.history.items()}


def median_epochs(values: Sequence[int]) -> int:
    """The median of per-fold best epochs, at least 1 (epochs for the final all-patients model)."""
    return max(1, int(round(float(np.median(values))))) if len(values) else 1
