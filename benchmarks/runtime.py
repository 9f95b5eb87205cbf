"""The lean runtime against the bare runtimes, per shipped pack, measured in one run on this machine.

    python benchmarks/runtime.py [--repeats 30] [--screen-images 200] [--batch 16] [--screen-rounds 3] [--settle-ms 0]

For each shipped pack, on one real image (the bundled knee radiograph; a STIR slice of the SIJ DICOM series)
and a folder of real images (knee-xray-kl/val radiographs; the SIJ STIR + T1 DICOM slices), interleaved so
that machine load affects all alike, medians of ``--repeats``:

* **bare batch-1** inference of the same preprocessed tensor in TensorFlow (``tf.function`` of
  ``model(x, training=False)``), ONNX Runtime (``model.onnx``, asdesk's session options) and OpenVINO
  (``model.onnx``, ``INFERENCE_PRECISION_HINT=f32``), with each one's max |dp| against Keras;
* **asdesk per image**: ``analyze_batch`` of a freshly read image with Grad-CAM (read + preprocess + classify +
  CAM + content gate + decision) on the engine ``EngineCache`` picks (ONNX Runtime);
* **naive**: read + preprocess + ``model.predict`` per image (the Keras idiom);
* **screening**: ``asdesk.tasks.screen_folder`` (CSV row by row, no Grad-CAM) against the fastest bare
  batched throughput (batches of ``--batch`` preprocessed tensors, already in memory), interleaved over
  ``--screen-rounds`` rounds, each measurement after a 0.5 s pause (medians).

Printed ratios (targets of issue 10): asdesk / fastest bare batch-1 (<= 1.5), screening / bare batched
(>= 0.8), naive / asdesk; and the CPU time the process uses in the half second after an analysis (ONNX Runtime
threads left spinning would show here). ``--settle-ms`` idles before each timed call: the latency after a pause,
as a reader's click meets it, and no runtime's spinning threads slow the one timed after it. Needs the train
extra (TensorFlow) and ``openvino`` for the comparison columns.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import asdesk  # noqa: E402, F401 - first, as the asdesk command: numpy's BLAS single-threaded beside ONNX Runtime

SHARED = REPO.parent / "shared" / "data"


def images_for(card, count: int) -> list[Path]:
    """Real inputs for a pack: SIJ DICOM slices for MR packs, knee radiographs otherwise."""
    if "MR" in card.modalities:
        files = sorted(p for p in (SHARED / "sij-mri-dicom" / "patient1" / "STIR").iterdir() if p.is_file())
        if not files:
            sys.exit("needs ../shared/data/sij-mri-dicom")
        return (files * (count // len(files) + 1))[:count]
    files = sorted((SHARED / "knee-xray-kl" / "val").rglob("*.png"))[:count]
    return files or sorted((REPO / "resources" / "samples").glob("*.png"))


def median_ms(function, repeats: int, settle_s: float = 0.0) -> float:
    times = []
    for _ in range(repeats):
        time.sleep(settle_s)  # let the previous runtime's worker threads stop spinning (not timed)
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--screen-images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--screen-rounds", type=int, default=3,
                        help="interleaved rounds of bare batched inference and asdesk screening (medians)")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="idle time before each timed call, so that the thread pools of the runtime measured "
                             "just before (TensorFlow's, OpenVINO's, ONNX Runtime's) have stopped spinning")
    args = parser.parse_args()
    settle = args.settle_ms / 1000.0

    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from asdesk.inference import discover_packs
    from asdesk.inference.onnx_engine import session_options
    from asdesk.inference.runtime import load_model
    from asdesk.io import read_image
    from asdesk.tasks import EngineCache, analyze_batch, screen_folder

    try:
        import openvino as ov
    except ImportError:
        ov = None
    packs, errors = discover_packs()
    cache = EngineCache()
    print(f"onnxruntime {ort.__version__}, TensorFlow {tf.__version__}, "
          f"OpenVINO {ov.__version__ if ov else 'not installed'}; {os.cpu_count()} CPUs; repeats {args.repeats}")
    for pack in packs:
        engine = cache.engine_for_pack(pack)
        files = images_for(pack.card, args.screen_images)
        path = files[len(files) // 2]
        x = engine.pipeline(read_image(path)).tensor[np.newaxis].astype(np.float32)
        model = load_model(pack.model_path)  # asdesk's loader: registers the Spatial Transformer layer
        tf_call = tf.function(lambda t, model=model: model(t, training=False), reduce_retracing=True)
        session = ort.InferenceSession(str(pack.path / "model.onnx"), session_options(),
                                       providers=["CPUExecutionProvider"])
        def probability_of(output) -> np.ndarray:
            """A classifier's output, or a segmentation pack's slice score (Keras ``slice_score``, exported to
            ONNX as ``probability``)."""
            return np.asarray(output["slice_score"] if isinstance(output, dict) else output).reshape(-1)

        bare = {
            "tensorflow": lambda t, f=tf_call: probability_of(f(tf.constant(t))),
            "onnxruntime": lambda t, s=session: s.run(["probability"], {"image": t})[0].reshape(-1),
        }
        if ov is not None:
            compiled = ov.Core().compile_model(str(pack.path / "model.onnx"), "CPU",
                                               {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()
            output = compiled.output("probability")
            bare["openvino"] = lambda t, r=request, o=output: np.asarray(r.infer({0: t})[o]).reshape(-1)
        reference = probability_of(model(x, training=False))
        for function in bare.values():  # warm-up
            function(x), function(x)

        def asdesk_one(engine=engine, path=path) -> None:
            analyze_batch(engine, [read_image(path)], gradcam=True)

        def naive(model=model, engine=engine, path=path) -> None:
            model.predict(engine.pipeline(read_image(path)).tensor[np.newaxis], verbose=0)

        asdesk_one(), naive()
        timings = {name: [] for name in [*bare, "asdesk", "naive"]}
        for _ in range(args.repeats):  # interleaved
            for name, function in bare.items():
                timings[name].append(median_ms(lambda f=function, t=x: f(t), 1, settle))
            timings["asdesk"].append(median_ms(asdesk_one, 1, settle))
            timings["naive"].append(median_ms(naive, 1, settle))
        medians = {name: statistics.median(values) for name, values in timings.items()}
        fastest = min(bare, key=lambda name: medians[name])
        print(f"\n{pack.card.id} ({pack.card.architecture} {pack.card.input_shape}), image {path.name}; "
              f"engine: {engine.device}")
        for name, function in bare.items():
            deviation = float(np.max(np.abs(function(x) - reference)))
            print(f"  bare batch-1 {name:12s} {medians[name]:8.2f} ms   max |dp| vs Keras {deviation:.2e}")
        print(f"  asdesk per image (read+preprocess+classify+CAM+gate+decision) {medians['asdesk']:8.2f} ms")
        print(f"  naive read+preprocess+model.predict                            {medians['naive']:8.2f} ms")
        print(f"  RATIO asdesk / fastest bare batch-1 ({fastest}): {medians['asdesk'] / medians[fastest]:.2f} "
              f"(target <= 1.5)")
        print(f"  RATIO naive / asdesk: {medians['naive'] / medians['asdesk']:.1f}")
        time.sleep(0.5)  # every runtime's threads idle
        asdesk_one()
        before = os.times()
        time.sleep(0.5)
        after = os.times()
        burned = (after.user + after.system - before.user - before.system) * 1000.0
        print(f"  CPU time of the process in the 0.5 s after an analysis: {burned:.0f} ms (threads left spinning)")

        # batched: each bare runtime over preprocessed tensors in memory, and asdesk's screening of the same
        # images from disk, interleaved over --screen-rounds rounds (medians); each after a 0.5 s pause, so no
        # runtime's thread pool is still busy from the one measured before it
        tensors = np.stack([engine.pipeline(read_image(p)).tensor for p in files]).astype(np.float32)
        batched_functions = {}
        for name, single in bare.items():
            function = single
            if name == "openvino":
                throughput = ov.Core().compile_model(str(pack.path / "model.onnx"), "CPU", {
                    "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"})
                port = throughput.output("probability")

                def function(t, c=throughput, o=port):
                    return np.asarray(c(t)[o]).reshape(-1)
            function(tensors[: args.batch])
            batched_functions[name] = function
        folder = Path(tempfile.mkdtemp(prefix="asdesk-bench-"))
        for index, source in enumerate(files):
            shutil.copy(source, folder / f"{index:05d}-{source.name}")
        rates = {name: [] for name in [*batched_functions, "screening"]}
        for round_index in range(args.screen_rounds):
            for name, function in batched_functions.items():
                time.sleep(0.5)
                start = time.perf_counter()
                for first in range(0, len(tensors), args.batch):
                    function(tensors[first:first + args.batch])
                rates[name].append(len(tensors) / (time.perf_counter() - start))
            time.sleep(0.5)
            csv_path = folder.parent / f"{folder.name}-{round_index}.csv"
            start = time.perf_counter()
            summary = screen_folder(folder, csv_path, model_id=pack.card.id, batch_size=args.batch, engines=cache)
            rates["screening"].append(summary.n_done / (time.perf_counter() - start))
            csv_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        batched = {name: statistics.median(values) for name, values in rates.items() if name != "screening"}
        screening = statistics.median(rates["screening"])
        best = max(batched, key=batched.get)
        listed = ", ".join(f"{name} {rate:.1f} img/s" for name, rate in batched.items())
        print(f"  bare batched (batch {args.batch}, median of {args.screen_rounds}): {listed}")
        print(f"  asdesk screen_folder over {summary.n_done} images (median of {args.screen_rounds}): "
              f"{screening:.1f} img/s")
        print(f"  RATIO screening / fastest bare batched ({best}): {screening / batched[best]:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
