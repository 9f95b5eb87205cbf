"""The lean runtime: a model pack's ``model.onnx`` in ONNX Runtime, with CAM heat maps and no TensorFlow.

``asdesk export`` (:mod:`asdesk.training.export`) writes ``model.onnx`` beside ``model.keras`` with three
outputs, the Grad-CAM layer's feature map ``A`` (N, h', w', C), the head's pooled features (N, C) and the
probability (N, 1), and stores the
output layer's weights ``w`` (C,) and bias in ``onnx_head.npz``; the card's ``onnx`` block lists both files
with their SHA-256 (so they are hash-checked and pinned like ``model.keras``).

Grad-CAM without gradients
--------------------------
The packs' head is ``GlobalAveragePooling2D -> Dropout -> Dense(1, sigmoid)`` on the Grad-CAM layer. The
logit is ``z = sum_k w_k (1/Z) sum_ij A^k_ij + b``, so its gradient is ``dz/dA^k_ij = w_k / Z`` for every
position and Grad-CAM's channel weight is ``alpha_k = w_k / Z``: Grad-CAM on the logit is the CAM of
Zhou, Khosla, Lapedriza, Oliva & Torralba, "Learning deep features for discriminative localization"
(CVPR 2016), ``ReLU(sum_k w_k A^k)``, divided by the constant ``Z = h' w'`` (Selvaraju et al., "Grad-CAM",
ICCV 2017, sec. 3.1). The maps here keep the ``1/Z`` so that they equal
:meth:`asdesk.inference.gradcam.GradCam.raw` (and the normalised map does not depend on it). Non-overlapping
max pooling between ``A`` and the average pooling (VGG16's ``block5_pool``) does not change this: each window
passes the gradient to one cell, so ``alpha_k`` is still ``w_k / Z``. The content gate reads the graph's
``pooled`` output (the GlobalAveragePooling output; Dropout is the identity at inference).

Heads for which this does not hold are refused at export time, so they keep the TensorFlow engine.

This module imports numpy only; ``onnxruntime`` is imported when a model is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from asdesk.core import CardError
from asdesk.core.logsetup import native_stderr_silenced
from asdesk.inference.engine import InferenceEngine, _milliseconds
from asdesk.inference.gradcam import HeatMapExplainer
from asdesk.inference.pack import MODEL_FILE, ModelPack

LOGGER = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
HEAD_FILE = "onnx_head.npz"
FEATURES_OUTPUT = "features"
POOLED_OUTPUT = "pooled"
PROBABILITY_OUTPUT = "probability"
OUTPUTS = (FEATURES_OUTPUT, POOLED_OUTPUT, PROBABILITY_OUTPUT)
MAP_OUTPUT = "oedema_map"
#: Outputs of a segmentation pack (card ``explanation.kind == "oedema_map"``): the per-pixel probability map
#: (N, h, w, 1), the pooled gate features (N, C) and the slice score (N, 1) derived from the map.
MAP_OUTPUTS = (MAP_OUTPUT, POOLED_OUTPUT, PROBABILITY_OUTPUT)
#: The optional fourth output of a pack with a Spatial Transformer: its affine transform (N, 6).
THETA_OUTPUT = "theta"
INPUT_NAME = "image"
#: GPU providers tried before the CPU, in order, when this onnxruntime build has them.
GPU_PROVIDERS = ("CUDAExecutionProvider", "DmlExecutionProvider")


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported (without importing it when it is missing)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def has_onnx(pack: ModelPack) -> bool:
    """Whether ``pack``'s card has an ``onnx`` block whose model file is present."""
    block = pack.card.raw.get("onnx")
    return bool(isinstance(block, dict) and block.get("file") and (pack.path / str(block["file"])).is_file())


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def session_options(threads: int | None = None) -> Any:  # noqa: ANN401
    """ONNX Runtime session options used by asdesk.

    Parameters
    ----------
    threads : int, optional
        Intra-op threads (default: the CPUs this process may use).

    Returns
    -------
    onnxruntime.SessionOptions
        Sequential execution, ``threads`` intra-op threads, all graph optimisations (measured not to change
        the probabilities beyond float32 rounding: see the card's ``onnx.parity``). The intra-op threads
        busy-wait between the operators of a run, and stop at its end (``session.force_spinning_stop``):
        a batch-1 knee radiograph took 4.4-4.9 ms instead of 5.5-7.5 ms with sleeping threads, for the same
        CPU time per run, and no CPU is burned after a run (ONNX Runtime's default spinning kept a core busy
        for ~40 ms after each run, time the window and the next image's decoding need). See
        ``benchmarks/README.md``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or _threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def available_providers() -> list[str]:
    """The execution providers asdesk asks for, best first: a GPU provider when present, then the CPU."""
    import onnxruntime as ort

    present = set(ort.get_available_providers())
    return [name for name in GPU_PROVIDERS if name in present] + ["CPUExecutionProvider"]


def describe_device(providers: list[str] | None = None, threads: int | None = None) -> str:
    """Where ONNX Runtime runs models, e.g. ``"CPU (onnxruntime 1.20.1, 2 threads)"``.

    Parameters
    ----------
    providers : list of str, optional
        The providers a session actually uses (``session.get_providers()``); default: what is available.
    threads : int, optional
        Intra-op threads.
    """
    import onnxruntime as ort

    providers = providers if providers is not None else available_providers()
    first = providers[0] if providers else "CPUExecutionProvider"
    if first == "CUDAExecutionProvider":
        return f"GPU (CUDA, onnxruntime {ort.__version__})"
    if first == "DmlExecutionProvider":
        return f"GPU (DirectML, onnxruntime {ort.__version__})"
    return f"CPU (onnxruntime {ort.__version__}, {int(threads or _threads())} threads)"


def load_head(path: str | Path) -> tuple[np.ndarray, float]:
    """The output layer's kernel and bias stored beside ``model.onnx``.

    Parameters
    ----------
    path : str or Path
        ``onnx_head.npz`` with ``kernel`` float32 (C,) and ``bias`` float32 ().

    Returns
    -------
    kernel : numpy.ndarray
        float32 (C,).
    bias : float

    Raises
    ------
    ValueError
        The file lacks an array, or the kernel is not a finite vector.
    OSError
        The file cannot be read.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        try:
            kernel = np.asarray(data["kernel"], dtype=np.float32).reshape(-1)
            bias = float(np.asarray(data["bias"], dtype=np.float32).reshape(()))
        except KeyError as error:
            raise ValueError(f"{path}: not an ONNX head file (missing {error})") from error
    if kernel.size == 0 or not np.all(np.isfinite(kernel)) or not np.isfinite(bias):
        raise ValueError(f"{path}: the head's kernel must be a non-empty finite vector")
    return kernel, bias


def class_activation_maps(features: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Grad-CAM maps of the logit of a GAP -> Dense(1) head, from the feature map and the dense kernel.

    ``ReLU(sum_k w_k A^k) / (h' w')`` (Zhou et al., CVPR 2016; Selvaraju et al., ICCV 2017, sec. 3.1): equal to
    :meth:`asdesk.inference.gradcam.GradCam.raw` of the same model, up to float32 rounding.

    Parameters
    ----------
    features : numpy.ndarray
        float32 (N, h', w', C): the Grad-CAM layer's output.
    kernel : numpy.ndarray
        float32 (C,): the output Dense layer's kernel.

    Returns
    -------
    numpy.ndarray
        float32 (N, h', w') >= 0.

    Raises
    ------
    ValueError
        ``features`` is not 4-D or its channel count differs from the kernel's.
    """
    maps = np.asarray(features, dtype=np.float32)
    weights = np.asarray(kernel, dtype=np.float32).reshape(-1)
    if maps.ndim != 4 or maps.shape[-1] != weights.shape[0]:
        raise ValueError(f"CAM needs features (N, h, w, {weights.shape[0]}), got {maps.shape}")
    area = float(maps.shape[1] * maps.shape[2])
    return np.maximum(maps @ (weights / np.float32(area)), 0.0).astype(np.float32)


class CamExplainer(HeatMapExplainer):
    """CAM heat maps from an ONNX Runtime session: the :class:`~asdesk.inference.gradcam.GradCam` interface.

    Parameters
    ----------
    run : callable
        ``run(batch) -> (features (N, h', w', C), pooled (N, C), probabilities (N,))`` in float32.
    kernel : numpy.ndarray
        float32 (C,): the output layer's kernel.
    input_shape : tuple of int
        (h, w, 3) of the model input.
    """

    #: The score explained (always the logit: only GAP -> Dense(1, sigmoid) heads are exported).
    score = "logit"

    def __init__(self, run: Any, kernel: np.ndarray, input_shape: tuple[int, ...]) -> None:  # noqa: ANN401
        self._run = run
        self.kernel = np.asarray(kernel, dtype=np.float32)
        self.input_shape = tuple(int(d) for d in input_shape)

    def raw_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, un-normalised maps and pooled features in one forward pass.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 (N, h, w, 3), the model's normalised input.

        Returns
        -------
        probabilities : numpy.ndarray
            float32 (N,).
        maps : numpy.ndarray
            float32 (N, h', w') >= 0 (:func:`class_activation_maps`).
        pooled : numpy.ndarray
            float32 (N, C): the head's GlobalAveragePooling output (the graph's ``pooled`` output).

        Raises
        ------
        ValueError
            Wrong shape.
        """
        features, pooled, probabilities = self._run(self._check(batch))
        return probabilities, class_activation_maps(features, self.kernel), pooled


class MapExplainer(HeatMapExplainer):
    """The heat map of a segmentation pack: its own per-pixel oedema probability output, no CAM.

    Parameters
    ----------
    run : callable
        ``run(batch) -> (maps (N, h, w), pooled (N, C), probabilities (N,))`` in float32.
    input_shape : tuple of int
        (h, w, 3) of the model input.
    """

    score = "oedema probability per pixel"

    def __init__(self, run: Any, input_shape: tuple[int, ...]) -> None:  # noqa: ANN401
        self._run = run
        self.input_shape = tuple(int(d) for d in input_shape)

    def raw_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slice scores (N,), oedema probability maps float32 (N, h, w) in [0, 1] and pooled features (N, C).

        Raises
        ------
        ValueError
            Wrong shape.
        """
        maps, pooled, probabilities = self._run(self._check(batch))
        return probabilities, maps, pooled


class OnnxEngine(InferenceEngine):
    """:class:`InferenceEngine` on the pack's ``model.onnx`` in ONNX Runtime: same ``infer()``, no TensorFlow.

    Probabilities come from the exported graph; heat maps are CAM, equal to Grad-CAM on the logit for the
    packs' GAP -> Dense head (module docstring); the content gate reads the graph's pooled features.
    Decisions, calibration and gates are made afterwards, as for the TensorFlow engine
    (:func:`asdesk.tasks.analysis.analyze_batch`).

    Parameters
    ----------
    pack : ModelPack
        A pack whose card has an ``onnx`` block (:func:`has_onnx`).
    batch_size : int
        Images per forward pass, >= 1.
    verify_hash : bool
        Check every file the card lists (``model.keras``, ``model.onnx``, ``onnx_head.npz``, the gate)
        against its SHA-256 before loading.
    threads : int, optional
        ONNX Runtime intra-op threads (default: the CPUs this process may use).

    Raises
    ------
    CardError
        The card has no ``onnx`` block.
    """

    runtime = "onnxruntime"

    def __init__(self, pack: ModelPack, batch_size: int = 16, verify_hash: bool = True,
                 threads: int | None = None) -> None:
        super().__init__(pack, batch_size=batch_size, verify_hash=verify_hash)
        block = pack.card.raw.get("onnx")
        self.segmentation = pack.card.explanation == "oedema_map"
        if not isinstance(block, dict) or not block.get("file") or not (
                self.segmentation or isinstance(block.get("head"), dict)):
            raise CardError(f"model pack {pack.card.id!r}: its card has no usable 'onnx' block (file and head); "
                            f"export it with 'asdesk export {pack.path}' or use the TensorFlow engine")
        self.onnx_block = block
        self.threads = int(threads) if threads else _threads()
        self._session: Any = None
        self._kernel: np.ndarray | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        """Whether the ONNX Runtime session exists."""
        return self._session is not None

    @property
    def model(self) -> Any:  # noqa: ANN401
        """The ``onnxruntime.InferenceSession`` (created on first access)."""
        self.load()
        return self._session

    def load(self) -> OnnxEngine:
        """Create the ONNX Runtime session now (idempotent).

        Returns
        -------
        OnnxEngine
            ``self``.

        Raises
        ------
        ModelHashMismatchError
            A file of the pack differs from the card's SHA-256 (``verify_hash``).
        CardError
            ``model.onnx`` cannot be loaded, or its input or outputs are not what the card and the exporter
            say.
        """
        with self._lock:
            if self._session is not None:
                return self
            start = time.perf_counter()
            if self.verify_hash:
                self.pack.verify_hash(skip=frozenset({MODEL_FILE}))  # ONNX Runtime never reads model.keras
            import onnxruntime as ort

            path = self.pack.path / str(self.onnx_block["file"])
            kernel = np.zeros(0, np.float32)
            if not self.segmentation:
                head_path = self.pack.path / str(self.onnx_block["head"]["file"])
                try:
                    kernel, _bias = load_head(head_path)
                except (ValueError, OSError) as error:
                    raise CardError(f"model pack {self.card.id!r}: {head_path.name} cannot be used ({error}); "
                                    "the pack was altered or damaged: reinstall it or export it again") from error
            providers = available_providers()
            # A GPU build of onnxruntime on a machine without a usable GPU prints CUDA load errors from C++
            # before falling back to the CPU: discarded (unless asdesk logs at DEBUG); the device the session
            # uses is logged below.
            quiet = providers[0] != "CPUExecutionProvider" and not LOGGER.isEnabledFor(logging.DEBUG)
            try:
                with native_stderr_silenced(quiet):
                    session = ort.InferenceSession(str(path), session_options(self.threads), providers=providers)
            except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
                raise CardError(f"{path}: ONNX Runtime {ort.__version__} cannot load it ({type(error).__name__}: "
                                f"{error}); reinstall the pack or export it again with 'asdesk export'") from error
            self._check_session(session, path, kernel)
            self._kernel = kernel
            self.device = describe_device(session.get_providers(), self.threads)
            self._session = session
            self._gradcam = (MapExplainer(self._run, tuple(self.card.input_shape)) if self.segmentation
                             else CamExplainer(self._run, kernel, tuple(self.card.input_shape)))
            self._load_gate()
            LOGGER.info("loaded model pack %s version %s (%s, sha256 %s) on %s in %.0f ms", self.card.id,
                        self.card.version, path.name, str(self.onnx_block.get("sha256", ""))[:12], self.device,
                        _milliseconds(start))
            return self

    def _check_session(self, session: Any, path: Path, kernel: np.ndarray) -> None:  # noqa: ANN401
        inputs = session.get_inputs()
        outputs = {item.name: item for item in session.get_outputs()}
        problems = []
        if len(inputs) != 1:
            problems.append(f"{len(inputs)} inputs")
        else:
            shape = tuple(inputs[0].shape[1:])
            if shape != tuple(self.card.input_shape):
                problems.append(f"input {shape} but the card says {tuple(self.card.input_shape)}")
        self._has_theta = THETA_OUTPUT in outputs
        expected = MAP_OUTPUTS if self.segmentation else OUTPUTS
        if set(outputs) - {THETA_OUTPUT} != set(expected):
            problems.append(f"outputs {sorted(outputs)} instead of {sorted(expected)}")
        elif not self.segmentation:
            channels = outputs[FEATURES_OUTPUT].shape[-1]
            if isinstance(channels, int) and channels != kernel.shape[0]:
                problems.append(f"{channels} feature channels but the head has {kernel.shape[0]} weights")
        if problems:
            raise CardError(f"{path}: not an asdesk export of model pack {self.card.id!r} ({'; '.join(problems)}); "
                            "export it again with 'asdesk export'")
        self._input_name = inputs[0].name

    def _load_gate(self) -> None:
        layer = self._read_content_gate()
        if layer is None:
            return
        if layer != str(self.onnx_block.get("pooled_layer", "head_pool")):
            self.content_gate = None
            raise CardError(f"model pack {self.card.id!r}: its content gate reads layer {layer!r} but the ONNX "
                            "export gives the head's pooled features only; use the TensorFlow engine")
        self._features_from_gradcam = True

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names = list(MAP_OUTPUTS if self.segmentation else OUTPUTS)
        has_theta = getattr(self, "_has_theta", False)
        outputs = self._session.run(names + [THETA_OUTPUT] if has_theta else names,
                                    {self._input_name: np.ascontiguousarray(batch, np.float32)})
        features, pooled, probabilities = outputs[:3]
        if has_theta:  # one forward pass gives the Spatial Transformer's transforms too (see stn_thetas)
            self._last_thetas = (batch, np.asarray(outputs[3], dtype=np.float32).reshape(-1, 6))
        if self.segmentation:
            features = np.asarray(features, dtype=np.float32)[..., 0]
        return (np.asarray(features, dtype=np.float32), np.asarray(pooled, dtype=np.float32),
                np.asarray(probabilities, dtype=np.float32).reshape(-1))

    def stn_thetas(self, batch: np.ndarray) -> np.ndarray | None:
        """The Spatial Transformer's transforms (N, 6) from the graph's ``theta`` output; ``None`` without one."""
        self.load()
        if not getattr(self, "_has_theta", False):
            return None
        last, self._last_thetas = getattr(self, "_last_thetas", None), None  # used once; the batch is released
        if last is not None and last[0] is batch:  # the forward pass that classified this batch fetched them
            return last[1]
        (theta,) = self._session.run([THETA_OUTPUT], {self._input_name: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(theta, dtype=np.float32).reshape(-1, 6)

    def gradcam(self) -> HeatMapExplainer:
        """The pack's :class:`CamExplainer` (the :class:`~asdesk.inference.gradcam.GradCam` interface)."""
        self.load()
        return self._gradcam  # type: ignore[return-value]  # set by load()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)[2]

    def _forward_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _features, pooled, probabilities = self._run(batch)
        return probabilities, pooled


def create_engine(pack: ModelPack, runtime: str = "auto", batch_size: int = 16,
                  verify_hash: bool = True) -> InferenceEngine:
    """The engine for a pack: ONNX Runtime when the pack has ``model.onnx`` and onnxruntime imports.

    Parameters
    ----------
    pack : ModelPack
    runtime : str
        ``"auto"`` (default; the environment variable ``ASDESK_RUNTIME`` overrides it), ``"onnx"`` or
        ``"tensorflow"``.
    batch_size : int
    verify_hash : bool

    Returns
    -------
    InferenceEngine
        An :class:`OnnxEngine` or the TensorFlow :class:`InferenceEngine`.

    Raises
    ------
    CardError
        ``runtime="onnx"`` and onnxruntime is not installed, or the pack has no ``model.onnx`` (or the ONNX
        runtime was not chosen) and TensorFlow is not installed.
    ValueError
        Unknown ``runtime``.
    """
    choice = runtime
    if choice == "auto":
        choice = os.environ.get("ASDESK_RUNTIME", "auto").strip().lower() or "auto"
    if choice not in ("auto", "onnx", "tensorflow"):
        raise ValueError(f"runtime must be 'auto', 'onnx' or 'tensorflow' (ASDESK_RUNTIME), got {choice!r}")
    if choice == "onnx" or (choice == "auto" and has_onnx(pack) and onnxruntime_available()):
        if not onnxruntime_available():
            raise CardError("the ONNX runtime was asked for but onnxruntime is not installed: pip install onnxruntime")
        return OnnxEngine(pack, batch_size=batch_size, verify_hash=verify_hash)
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        if choice == "tensorflow":
            raise CardError("the TensorFlow engine was asked for (ASDESK_RUNTIME=tensorflow) but TensorFlow is not "
                            "installed: pip install 'asdesk[train]', or unset ASDESK_RUNTIME")
        raise CardError(f"model pack {pack.card.id!r} at {pack.path} has no model.onnx and this installation has no "
                        "TensorFlow to run model.keras: export the pack with 'asdesk export PACK_DIR' (a source "
                        "install with pip install 'asdesk[train]') and install it again, or install the train extra")
    return InferenceEngine(pack, batch_size=batch_size, verify_hash=verify_hash)
