"""Transfer-learning classifiers built as one flat Keras functional graph.

The backbone's layers are inlined into the model (``input_tensor=``), not nested as a sub-model, so that
Grad-CAM can read any conv layer's output under Keras 3 (DESIGN.md, "Grad-CAM needs a flat functional
graph"). Head as in the AS transfer-learning reference: GlobalAveragePooling → Dropout 0.5 → Dense.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

# Last convolutional feature map of each backbone: the Grad-CAM target layer (Selvaraju et al., 2017).
GRADCAM_LAYERS = {
    "MobileNetV2": "out_relu",
    "VGG16": "block5_conv3",
    "ResNet50": "conv5_block3_out",
    "DenseNet121": "relu",
}
# Preprocessing mode of each backbone (asdesk.preprocess.Normalise).
NORMALISATION = {
    "MobileNetV2": "mobilenet_v2",
    "VGG16": "vgg16",
    "ResNet50": "resnet50",
    "DenseNet121": "densenet121",
}
BACKBONE_PREFIX = "backbone"


def _application(architecture: str) -> Any:  # noqa: ANN401
    import keras

    table = {
        "MobileNetV2": keras.applications.MobileNetV2,
        "VGG16": keras.applications.VGG16,
        "ResNet50": keras.applications.ResNet50,
        "DenseNet121": keras.applications.DenseNet121,
    }
    if architecture not in table:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(table)}")
    return table[architecture]


def build_classifier(architecture: str, input_shape: tuple[int, int, int], weights: str | Path | None = None,
                     dropout: float = 0.5, seed: int | None = None, stn: bool = False) -> Any:  # noqa: ANN401
    """Build a binary classifier: backbone → GlobalAveragePooling → Dropout → Dense(1, sigmoid).

    Parameters
    ----------
    architecture : str
        ``"MobileNetV2"``, ``"VGG16"``, ``"ResNet50"`` or ``"DenseNet121"``.
    input_shape : tuple of int
        (height, width, 3).
    weights : str, Path or None
        ``"imagenet"`` (downloads: connected machines only), a path to a no-top Keras weights file
        (e.g. ``../shared/weights/*.weights.h5``), or ``None`` for random initialisation.
    dropout : float
        Dropout rate before the output layer.
    seed : int, optional
        Seed of the head's initialisers and dropout.
    stn : bool
        Put a Spatial Transformer (:func:`asdesk.training.stn.spatial_transformer`, Jaderberg et al. 2015)
        between the input and the backbone, in the same flat graph; its warped image is the layer
        ``stn_output``. The backbone's weights are then loaded into a stand-alone copy and copied over.

    Returns
    -------
    keras.Model
        A flat functional model named after the architecture; output float32 (batch, 1), the
        probability of the positive class. The backbone's layers keep their Keras names; the head layers
        are ``head_pool``, ``head_dropout`` and ``head_output``.

    Raises
    ------
    ValueError
        Unknown architecture, or a weights file that does not exist or does not fit the architecture.
    """
    import keras

    if weights is not None and weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"backbone weights file {path} does not exist; give a path to a no-top "
                             "Keras weights file, 'imagenet' (needs internet) or None")
        weights = str(path)
    inputs = keras.Input(shape=input_shape, name="image")
    try:
        if stn:
            from asdesk.training.stn import copy_backbone_weights, spatial_transformer

            warped = spatial_transformer(inputs, seed=seed)
            backbone = _application(architecture)(include_top=False, weights=None, input_tensor=warped)
            if weights is not None:
                reference = _application(architecture)(include_top=False, weights=weights,
                                                       input_shape=input_shape)
                copy_backbone_weights(backbone, reference)
                del reference
        else:
            backbone = _application(architecture)(include_top=False, weights=weights, input_tensor=inputs)
    except (ValueError, OSError) as error:
        raise ValueError(f"could not load {architecture} backbone weights from {weights}: {error}") from error
    features = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    features = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(features)
    initializer = keras.initializers.GlorotUniform(seed=seed)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=initializer,
                                 dtype="float32", name="head_output")(features)
    model = keras.Model(inputs, outputs, name=architecture)
    LOGGER.info("built %s%s %s, weights=%s, %d parameters", architecture, " with STN" if stn else "",
                input_shape, weights, model.count_params())
    return model


def head_layer_names() -> tuple[str, ...]:
    """Names of the layers added on top of the backbone."""
    return ("head_pool", "head_dropout", "head_output")


def set_trainable(model: Any, phase: str, fine_tune_fraction: float = 0.3) -> int:  # noqa: ANN401
    """Freeze or unfreeze layers for a training phase.

    BatchNormalization layers always stay frozen (in Keras 3, ``trainable=False`` also runs them in
    inference mode), as Keras' transfer-learning guide advises and as measured in DESIGN.md.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_classifier`.
    phase : str
        ``"head"``: only the head trains. ``"fine_tune"``: the head and the top ``fine_tune_fraction`` of
        the backbone's layers train.
    fine_tune_fraction : float
        Fraction (0-1] of backbone layers, counted from the top, unfrozen in ``"fine_tune"``.

    Returns
    -------
    int
        Number of trainable weight tensors.
    """
    import keras

    head = set(head_layer_names())
    backbone_layers = [layer for layer in model.layers
                       if layer.name not in head and not isinstance(layer, keras.layers.InputLayer)]
    cut = len(backbone_layers) - int(round(len(backbone_layers) * fine_tune_fraction))
    for index, layer in enumerate(backbone_layers):
        unfreeze = phase == "fine_tune" and index >= cut
        layer.trainable = unfreeze and not isinstance(layer, keras.layers.BatchNormalization)
    for layer in model.layers:
        if layer.name in head:
            layer.trainable = True
    if phase not in ("head", "fine_tune"):
        raise ValueError(f"phase must be 'head' or 'fine_tune', got {phase!r}")
    return len(model.trainable_weights)
