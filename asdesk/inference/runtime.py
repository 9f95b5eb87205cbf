"""The TensorFlow runtime: device set-up and model loading.

TensorFlow is imported inside these functions only, never when :mod:`asdesk.inference` is imported, so the
GUI can show its window before the (seconds-long) TensorFlow import.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from asdesk.core import CardError
from asdesk.core.logsetup import native_stderr_silenced

LOGGER = logging.getLogger(__name__)

_DEVICE_LOCK = threading.Lock()
_device: str | None = None


def configure_device() -> str:
    """Import TensorFlow, enable GPU memory growth and describe the device that will run models.

    Memory growth stops TensorFlow from reserving all GPU memory at start-up (other programs, and a
    second model, keep working). The first call does the work and logs the description at INFO level;
    later calls return the same string.

    Returns
    -------
    str
        ``"GPU:0 (<device name>)"`` (further GPUs are appended, comma-separated) or
        ``"CPU (<n> threads)"``, where ``n`` is TensorFlow's intra-op thread count (the number of logical
        CPUs when TensorFlow chooses it itself).
    """
    global _device
    with _DEVICE_LOCK:
        if _device is not None:
            return _device
        # Importing TensorFlow and listing GPUs print oneDNN and CUDA probing lines from C++ straight to the
        # terminal ("Could not find cuda drivers", "failed call to cuInit") on every machine without a GPU;
        # they are discarded unless asdesk logs at DEBUG level. The device chosen is logged once, below.
        with native_stderr_silenced(not logging.getLogger("asdesk").isEnabledFor(logging.DEBUG)):
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        names = []
        for index, gpu in enumerate(gpus):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError) as error:  # already initialised: growth cannot change now
                LOGGER.debug("cannot set memory growth on %s: %s", gpu.name, error)
            try:
                details = tf.config.experimental.get_device_details(gpu)
            except (RuntimeError, ValueError):
                details = {}
            names.append(f"GPU:{index} ({details.get('device_name', gpu.name)})")
        if names:
            _device = ", ".join(names)
        else:
            threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
            _device = f"CPU ({threads} threads)"
        LOGGER.info("TensorFlow %s runs models on %s", tf.__version__, _device)
        return _device


def load_model(path: str | Path) -> Any:  # noqa: ANN401
    """Load a Keras model for inference.

    Parameters
    ----------
    path : str or Path
        A ``.keras`` file (Keras 3 format).

    Returns
    -------
    keras.Model
        Loaded with ``compile=False`` (no optimizer or losses are needed to classify) and Keras' safe mode
        (no arbitrary code in ``Lambda`` layers).

    Raises
    ------
    CardError
        The file is missing, damaged or not loadable by this Keras version.
    """
    path = Path(path)
    if not path.is_file():
        raise CardError(f"{path}: model file not found. A pack installed with the desktop program is in its "
                        "deployment form (model.onnx only, run by ONNX Runtime); the TensorFlow runtime needs "
                        "model.keras: unset ASDESK_RUNTIME, or use the pack from a source checkout")
    import keras

    import asdesk.inference.side_layers  # noqa: F401 - registers the oedema U-Net's joint-splitting layers
    import asdesk.inference.stn_layers  # noqa: F401 - registers the Spatial Transformer's sampler layer

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types (ValueError, OSError, zipfile errors, TypeError)
        raise CardError(f"{path}: could not load the Keras model ({type(error).__name__}: {error}); the "
                        "file is damaged or was saved by an incompatible Keras (this is Keras "
                        f"{keras.__version__}): reinstall the pack") from error


def model_input_shape(model: Any) -> tuple[int | None, ...]:  # noqa: ANN401
    """The (h, w, c) a Keras model's input expects (``None`` for free dimensions); ``()`` if unknown."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return ()
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def input_fits(model: Any, input_shape: tuple[int, int, int]) -> bool:  # noqa: ANN401
    """Whether a Keras model accepts images of ``input_shape`` (h, w, c), e.g. a card's ``input``."""
    shape = model_input_shape(model)
    return len(shape) == 3 and all(d is None or d == int(c) for d, c in zip(shape, input_shape, strict=True))
