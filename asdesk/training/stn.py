"""Spatial Transformer Network in front of a backbone (Jaderberg et al., NeurIPS 2015).

The foraminal-stenosis reference (``../shared/references/cervical-foraminal-stenosis-abstract.md``) puts a
Spatial Transformer before a ResNet50 together with histogram equalisation and flip augmentation. Here it is
built from plain Keras layers and :class:`asdesk.inference.stn_layers.AffineSampler` inside the model's one
flat functional graph:

``image (B, H, W, 3)`` → localisation network (average-pool / 4 → Conv 16 5x5 /2 → Conv 32 3x3 /2 → global
average pool → Dense 32 → Dense 6, ``stn_theta``, initialised to the identity) → ``stn_output``:
``AffineSampler([image, theta])`` (B, H, W, 3) → backbone → head.

Because the last localisation layer starts with zero weights and the identity as bias, a new model's
``stn_output`` equals its input, so a frozen-backbone feature cache computed through it equals the plain
backbone's; training then runs the Spatial Transformer phase (:func:`fit_stn`) with the backbone frozen.
Grad-CAM still reads the backbone's last conv map (of the warped input); ``stn_output`` is what the viewer's
model-input view shows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from asdesk.inference.stn_warp import IDENTITY_THETA

LOGGER = logging.getLogger(__name__)

STN_PREFIX = "stn_"
STN_OUTPUT = "stn_output"
STN_THETA = "stn_theta"


def spatial_transformer(inputs: Any, downsample: int = 4, seed: int | None = None) -> Any:  # noqa: ANN401
    """Add a Spatial Transformer to a functional graph.

    Parameters
    ----------
    inputs : KerasTensor
        float32 (B, H, W, C) with static H, W, C (the normalised model input).
    downsample : int
        Average-pooling factor before the localisation convolutions (the transform is coarse; this keeps the
        localisation network cheap: about 17 k parameters).
    seed : int, optional
        Seed of the localisation network's initialisers.

    Returns
    -------
    KerasTensor
        float32 (B, H, W, C), the output of the layer named ``stn_output``: ``inputs`` warped by the predicted
        affine transform (identity at initialisation). The transform itself is the output of ``stn_theta``
        (B, 6).

    Raises
    ------
    ValueError
        Input smaller than ``8 * downsample`` pixels on a side.
    """
    import keras

    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    if min(height, width) < 8 * downsample:
        raise ValueError(f"the Spatial Transformer needs an input of at least {8 * downsample} px, got "
                         f"{height} x {width}")
    init = keras.initializers.GlorotUniform(seed=seed)
    x = keras.layers.AveragePooling2D(downsample, name="stn_pool")(inputs)
    x = keras.layers.Conv2D(16, 5, strides=2, activation="relu", kernel_initializer=init, name="stn_conv1")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", kernel_initializer=init, name="stn_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="stn_gap")(x)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer=init, name="stn_dense")(x)
    theta = keras.layers.Dense(6, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(IDENTITY_THETA),
                               dtype="float32", name=STN_THETA)(x)
    from asdesk.inference.stn_layers import AffineSampler

    return AffineSampler(name=STN_OUTPUT)([inputs, theta])


def has_stn(model: Any) -> bool:  # noqa: ANN401
    """Whether ``model`` has a Spatial Transformer (a layer named ``stn_output``)."""
    return any(layer.name == STN_OUTPUT for layer in model.layers)


def stn_layers(model: Any) -> list[Any]:  # noqa: ANN401
    """The Spatial Transformer's layers of ``model`` (names starting with ``stn_``)."""
    return [layer for layer in model.layers if layer.name.startswith(STN_PREFIX)]


def reset_identity(model: Any) -> None:  # noqa: ANN401
    """Set ``stn_theta`` back to the identity transform (zero kernel, identity bias)."""
    layer = model.get_layer(STN_THETA)
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), IDENTITY_THETA.copy()])


def copy_backbone_weights(model: Any, reference: Any) -> int:  # noqa: ANN401
    """Copy weights layer by layer (by name) from a stand-alone backbone into ``model``.

    A backbone built on the Spatial Transformer's output shares the model's graph, so a no-top weights file
    cannot be loaded into it directly (the file does not know the ``stn_`` layers); it is loaded into
    ``reference`` (the same architecture on its own input) and copied.

    Returns
    -------
    int
        Number of layers copied.

    Raises
    ------
    ValueError
        A weighted layer of ``reference`` is missing from ``model``.
    """
    copied = 0
    names = {layer.name for layer in model.layers}
    for layer in reference.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name not in names:
            raise ValueError(f"backbone layer {layer.name!r} not found in the model with a Spatial Transformer")
        model.get_layer(layer.name).set_weights(weights)
        copied += 1
    return copied


def fit_stn(model: Any, images: np.ndarray, labels: np.ndarray, train: np.ndarray,  # noqa: ANN401
            validation: np.ndarray | None, config: Any, normalise: Any, epochs: int,  # noqa: ANN401
            verbose: int = 0) -> tuple[int, dict[str, list[float]]]:
    """Train the Spatial Transformer and the output layer with the backbone frozen.

    Parameters
    ----------
    model : keras.Model
        With a Spatial Transformer and an installed head.
    images : numpy.ndarray
        float32 (N, h, w) model-input images in [0, 1].
    labels : numpy.ndarray
        (N,) int {0, 1}.
    train, validation : numpy.ndarray
        Index arrays; without validation exactly ``epochs`` epochs run.
    config : asdesk.training.trainer.TrainConfig
        Learning rate, batch size, patience, augmentation, class weights, seed.
    normalise : asdesk.preprocess.Normalise
    epochs : int
        Maximum epochs (early stopping on validation loss restores the best).

    Returns
    -------
    epochs_run : int
        The best epoch (or ``epochs`` without validation).
    history : dict
        Keras history, keys prefixed ``stn_``.
    """
    from asdesk.training.trainer import fit_on_images

    trainable = {layer.name for layer in stn_layers(model)} | {"head_output"}
    for layer in model.layers:
        layer.trainable = layer.name in trainable
    run, history = fit_on_images(model, images, labels, train, validation, config, normalise, config.learning_rate,
                                 epochs, verbose, "stn")
    theta = model.get_layer(STN_THETA).get_weights()[1]
    LOGGER.info("Spatial Transformer phase: best epoch %d; theta bias %s", run, np.round(theta, 3).tolist())
    return run, history
