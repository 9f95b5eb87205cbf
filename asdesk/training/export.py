"""Export a model pack to ONNX for the lean runtime (:mod:`asdesk.inference.onnx_engine`), with measured parity.

``model.onnx`` has one input ``image`` (N, h, w, 3) float32 and three outputs: ``features``, the card's
``gradcam_layer`` feature map (N, h', w', C), ``pooled``, the head's GlobalAveragePooling output (N, C), which
the content gate reads, and ``probability`` (N, 1). The output layer's kernel and bias
go to ``onnx_head.npz``: the runtime computes the heat map as CAM from them, which equals Grad-CAM on the
logit only for a ``gradcam_layer -> [non-overlapping MaxPooling2D]* -> GlobalAveragePooling2D -> Dropout* ->
Dense(1, sigmoid)`` head (Zhou et al., CVPR 2016; Selvaraju et al., ICCV 2017, sec. 3.1); other heads are
refused (:func:`check_cam_head`).

The converter is ``tf2onnx`` (the ``train`` extra). The card's ``onnx`` block records both files with their
SHA-256 (so the pack's hash check and the bundled pins cover them), the exporter and its version, the opset,
and the parity with the Keras model on the images given: max |dp|, max |d heat map| (normalised maps on the
image, :func:`asdesk.inference.gradcam.map_on_image`), max |d content-gate distance|, and the decisions that
change at each operating point (must be 0, else the export is refused). ``model.keras`` and every measured
number of the card are left as they are.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asdesk.core import AsdeskError, NullProgress, ProgressSink

LOGGER = logging.getLogger(__name__)

OPSET = 17
ONNX_FILE = "model.onnx"
HEAD_FILE = "onnx_head.npz"


class ExportError(AsdeskError, ValueError):
    """A pack cannot be exported to the lean runtime (its head is not GAP -> Dense, or parity failed)."""


def check_cam_head(model: Any, gradcam_layer: str) -> tuple[Any, str]:  # noqa: ANN401
    """Check that CAM from ``gradcam_layer`` and the output layer's weights equals Grad-CAM on the logit.

    Parameters
    ----------
    model : keras.Model
        A flat functional pack model.
    gradcam_layer : str
        The card's Grad-CAM layer.

    Returns
    -------
    dense : keras.layers.Dense
        The one-unit sigmoid output layer.
    pooled_layer : str
        The name of the GlobalAveragePooling2D layer (the content gate's ``head_pool``).

    Notes
    -----
    With ``z = sum_k w_k mean_ij P(A)^k_ij + b``, where ``P`` is zero or more non-overlapping max poolings
    (VGG16's ``block5_pool``), every pooling window passes the gradient to exactly one cell, so
    ``sum_ij dz/dA^k_ij = w_k`` and Grad-CAM's weight is ``alpha_k = w_k / (h' w')`` on the Grad-CAM layer:
    Grad-CAM is CAM ``ReLU(sum_k w_k A^k) / (h' w')`` (Selvaraju et al., ICCV 2017, sec. 3.1).

    Raises
    ------
    ExportError
        The model does not end in ``gradcam_layer -> [MaxPooling2D]* -> GlobalAveragePooling2D -> Dropout* ->
        Dense(1, sigmoid)``: its Grad-CAM would differ from CAM, so it must keep the TensorFlow engine.
    """
    import keras

    def refuse(reason: str) -> ExportError:
        return ExportError(f"model {model.name!r}: {reason}; CAM would not equal its Grad-CAM, so it is not exported "
                           "to the lean runtime (it keeps running on TensorFlow)")

    last = model.layers[-1] if model.layers else None
    if not (isinstance(last, keras.layers.Dense) and last.units == 1
            and last.activation is keras.activations.sigmoid and len(model.outputs) == 1
            and last.output is model.outputs[0]):
        raise refuse("its output is not a one-unit sigmoid Dense layer")
    node = last
    while True:
        inbound = node._inbound_nodes
        if len(inbound) != 1 or len(inbound[0].parent_nodes) != 1:
            raise refuse(f"layer {node.name!r} does not have exactly one input")
        parent = inbound[0].parent_nodes[0].operation
        if isinstance(parent, keras.layers.Dropout):
            node = parent
            continue
        break
    if not (isinstance(parent, keras.layers.GlobalAveragePooling2D) and not parent.keepdims):
        raise refuse(f"the output layer reads {parent.name!r}, not a GlobalAveragePooling2D")
    pooling = parent
    node = parent
    while True:  # non-overlapping max pooling (VGG16's block5_pool) routes each window's gradient to one cell
        inbound = node._inbound_nodes[0].parent_nodes
        source = inbound[0].operation if len(inbound) == 1 else None
        if source is None:
            raise refuse(f"layer {node.name!r} does not have exactly one input")
        if source.name == gradcam_layer:
            break
        if not (isinstance(source, keras.layers.MaxPooling2D) and source.padding == "valid"
                and tuple(source.pool_size) == tuple(source.strides)):
            raise refuse(f"its pooling reads {source.name!r}, not the Grad-CAM layer {gradcam_layer!r}")
        node = source
    return last, pooling.name


def convert(model: Any, gradcam_layer: str, path: str | Path, opset: int = OPSET) -> dict[str, str]:  # noqa: ANN401
    """Write the two-output ONNX graph of ``model`` with tf2onnx.

    Parameters
    ----------
    model : keras.Model
    gradcam_layer : str
        The layer whose output becomes the ``features`` output.
    path : str or Path
        The ``.onnx`` file to write.
    opset : int
        ONNX opset.

    Returns
    -------
    dict
        ``{"exporter": "tf2onnx <version>", "tensorflow": <version>}``.

    Raises
    ------
    ExportError
        tf2onnx is not installed or fails.
    """
    try:
        import tf2onnx
    except ImportError as error:
        raise ExportError("exporting to ONNX needs tf2onnx, which this installation lacks: "
                          "pip install 'asdesk[train]'") from error
    import keras
    import tensorflow as tf

    layer = model.get_layer(gradcam_layer)
    _dense, pooled_layer = check_cam_head(model, gradcam_layer)
    outputs = [layer.output, model.get_layer(pooled_layer).output, model.outputs[0]]
    has_theta = any(item.name == "stn_theta" for item in model.layers)
    if has_theta:  # a Spatial Transformer: its transform is the fourth output (the viewer shows the warp)
        outputs.append(model.get_layer("stn_theta").output)
    three = keras.Model(model.inputs[0], outputs, name=f"{model.name}_onnx")
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    spec = (tf.TensorSpec((None, *shape), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def forward(image: Any) -> dict[str, Any]:  # noqa: ANN401
        values = three(image, training=False)
        named = {"features": values[0], "pooled": values[1], "probability": values[2]}
        if has_theta:
            named["theta"] = values[3]
        return named

    try:
        tf2onnx.convert.from_function(forward, input_signature=spec, opset=int(opset), output_path=str(path))
    except Exception as error:  # tf2onnx raises many types
        raise ExportError(f"tf2onnx {tf2onnx.__version__} could not convert model {model.name!r} "
                          f"({type(error).__name__}: {error})") from error
    return {"exporter": f"tf2onnx {tf2onnx.__version__}", "tensorflow": tf.__version__}


def parity_samples(data: str | Path) -> list[Any]:
    """The images parity is measured on: the SIJ STIR NIfTI set (a folder with ``stir/``, every slice, labelled
    or not) or a folder ``<root>/<label>/<image>`` (every label folder).

    Raises
    ------
    DatasetError
        No images.
    """
    from asdesk.training.datasets import load_folder_dataset, load_sij_stir_dataset

    root = Path(data)
    if (root / "stir").is_dir():
        return load_sij_stir_dataset(root, include_unlabelled=True)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    if len(folders) > 2:
        return load_folder_dataset(root, positive_labels=folders[1:], negative_labels=folders[:1])
    return load_folder_dataset(root)


def measure_parity(pack_dir: str | Path, model: Any, samples: Sequence[Any], batch_size: int = 16,  # noqa: ANN401
                   progress: ProgressSink | None = None) -> dict[str, Any]:
    """Compare the ONNX engine with the Keras model (TensorFlow engine with Grad-CAM) on real images.

    Parameters
    ----------
    pack_dir : str or Path
        The pack, already holding ``model.onnx``, ``onnx_head.npz`` and a card with its ``onnx`` block.
    model : keras.Model
        The pack's Keras model (already loaded).
    samples : sequence of Sample
        Images (:func:`parity_samples`); unreadable ones are skipped.
    batch_size : int
    progress : ProgressSink, optional

    Returns
    -------
    dict
        ``n_images``, ``max_abs_probability``, ``max_abs_heatmap``, ``max_abs_gate_distance``,
        ``decisions_changed`` {operating point: count}, ``gate_decisions_changed``.
    """
    from asdesk.core import ReadError
    from asdesk.inference import InferenceEngine, load_pack
    from asdesk.inference.onnx_engine import OnnxEngine

    sink = progress or NullProgress()
    # As a user pack: a bundled pack's card no longer matches its pins until they are updated after the export.
    pack = load_pack(pack_dir, verify_hash=False, origin="user")
    reference = InferenceEngine(pack, batch_size=batch_size, verify_hash=False)
    reference._model = model  # the model just loaded: no second load
    reference.device = "CPU"
    import tensorflow as tf

    reference._classify = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    reference._load_content_gate(model)
    lean = OnnxEngine(pack, batch_size=batch_size, verify_hash=False).load()
    thresholds = {name: point.threshold for name, point in pack.card.operating_points.items()}
    gate = reference.content_gate
    result: dict[str, Any] = {"n_images": 0, "max_abs_probability": 0.0, "max_abs_heatmap": 0.0,
                              "max_abs_gate_distance": 0.0 if gate is not None else None,
                              "decisions_changed": dict.fromkeys(thresholds, 0), "gate_decisions_changed": 0}
    sink.start(len(samples), "parity")
    try:
        for first in range(0, len(samples), batch_size):
            records = []
            for sample in samples[first:first + batch_size]:
                try:
                    records.append(sample.load())
                except ReadError as error:
                    LOGGER.warning("parity: skipped %s (%s)", sample.key, error.reason)
            if not records:
                continue
            expected = reference.infer(records, gradcam=True)
            actual = lean.infer(records, gradcam=True)
            for a, b in zip(expected, actual, strict=True):
                result["n_images"] += 1
                result["max_abs_probability"] = max(result["max_abs_probability"],
                                                    abs(a.probability - b.probability))
                result["max_abs_heatmap"] = max(result["max_abs_heatmap"],
                                                float(np.max(np.abs(a.heatmap - b.heatmap))))
                for name, threshold in thresholds.items():
                    result["decisions_changed"][name] += int((a.probability >= threshold)
                                                             != (b.probability >= threshold))
                if gate is not None:
                    result["max_abs_gate_distance"] = max(result["max_abs_gate_distance"],
                                                          abs(a.distance - b.distance))
                    result["gate_decisions_changed"] += int((a.distance <= gate.threshold)
                                                            != (b.distance <= gate.threshold))
            sink.advance(len(records))
    finally:
        sink.finish()
    for key in ("max_abs_probability", "max_abs_heatmap", "max_abs_gate_distance"):
        if result[key] is not None:
            result[key] = float(f"{result[key]:.3g}")
    return result


def export_pack(pack_dir: str | Path, data: str | Path | None = None, opset: int = OPSET,
                max_images: int | None = None, progress: ProgressSink | None = None) -> dict[str, Any]:
    """Write ``model.onnx`` and ``onnx_head.npz`` beside ``model.keras`` and the card's ``onnx`` block.

    Parameters
    ----------
    pack_dir : str or Path
        A model pack folder (its files are hash-checked first).
    data : str or Path, optional
        The pack's evaluation images for the parity measurement (:func:`parity_samples`); without them the
        block says parity was not measured.
    opset : int
        ONNX opset.
    max_images : int, optional
        Measure parity on the first ``max_images`` images only.
    progress : ProgressSink, optional

    Returns
    -------
    dict
        The card's new ``onnx`` block.

    Raises
    ------
    ExportError
        The head is not GAP -> Dense (CAM != Grad-CAM), tf2onnx fails, or a decision changes between the
        Keras and the ONNX model (the files are then removed and the card is left unchanged).
    ModelHashMismatchError, CardError
        The pack is damaged.
    """
    from asdesk.inference import load_model, load_pack
    from asdesk.inference.trust import sha256_file

    start = time.perf_counter()
    pack = load_pack(pack_dir, verify_hash=True)
    folder = pack.path
    model = load_model(pack.model_path)
    dense, pooled_layer = check_cam_head(model, pack.card.gradcam_layer)
    onnx_path, head_path = folder / ONNX_FILE, folder / HEAD_FILE
    card_path = folder / "card.json"
    original = card_path.read_text(encoding="utf-8")
    tool = convert(model, pack.card.gradcam_layer, onnx_path, opset)
    kernel = np.asarray(dense.kernel.numpy(), dtype=np.float32).reshape(-1)
    bias = np.asarray(dense.bias.numpy() if dense.use_bias else np.zeros(1), dtype=np.float32).reshape(())
    with head_path.open("wb") as handle:
        np.savez(handle, kernel=kernel, bias=bias)
    import onnxruntime

    block: dict[str, Any] = {
        "file": ONNX_FILE,
        "sha256": sha256_file(onnx_path),
        "exporter": tool["exporter"],
        "exported_from": f"model.keras (sha256 {pack.card.sha256[:12]}) with TensorFlow {tool['tensorflow']}",
        "opset": int(opset),
        "inputs": {"image": ["N", *pack.card.input_shape]},
        "outputs": {"features": f"{pack.card.gradcam_layer} (N, h, w, C)", "pooled": f"{pooled_layer} (N, C)",
                    "probability": "(N, 1)",
                    **({"theta": "stn_theta (N, 6): the Spatial Transformer's affine transform"}
                       if any(layer.name == "stn_theta" for layer in model.layers) else {})},
        "pooled_layer": pooled_layer,
        "head": {"file": HEAD_FILE, "sha256": sha256_file(head_path), "layer": dense.name,
                 "content": "kernel float32 (C,) and bias of the output Dense layer"},
        "heatmap": "CAM = ReLU(sum_k w_k A_k), equal to Grad-CAM on the logit for this GAP -> Dense head "
                   "(Zhou et al., CVPR 2016; Selvaraju et al., ICCV 2017, sec. 3.1)",
        "runtime": f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider, float32",
    }
    document = json.loads(original)
    document["onnx"] = block
    _write_card(card_path, document)
    try:
        if data is not None:
            samples = parity_samples(data)
            if max_images:
                samples = samples[:int(max_images)]
            parity = measure_parity(folder, model, samples, progress=progress)
            where = "/".join(Path(data).resolve().parts[-2:])
            parity["measured_on"] = where + (f" (first {max_images} images)" if max_images else " (every image)")
            changed = sum(parity["decisions_changed"].values())
            if changed:
                raise ExportError(f"{folder}: {changed} decisions change between model.keras and model.onnx on "
                                  f"{data} ({parity}); the export is refused")
            block["parity"] = parity
        else:
            block["parity"] = {"n_images": 0, "note": "not measured: run asdesk export PACK --data IMAGES"}
        document["onnx"] = block
        _write_card(card_path, document)
    except BaseException:
        card_path.write_text(original, encoding="utf-8")
        for path in (onnx_path, head_path):
            path.unlink(missing_ok=True)
        raise
    LOGGER.info("exported %s to %s in %.0f s: %s", pack.card.id, onnx_path, time.perf_counter() - start,
                block.get("parity"))
    return block


def _write_card(path: Path, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
