"""Per-image ``analyze`` latency of each shipped model pack against a naive ``model.predict`` per image,
and screening throughput, measured in one run on this machine.

    python benchmarks/latency.py [--repeats 15] [--screen-images 64]

*asdesk* = read + preprocess + classify (``tf.function`` of ``model(x, training=False)``) + Grad-CAM +
overlay, through :class:`asdesk.inference.InferenceEngine` — what ``asdesk analyze`` and the GUI do per
image. *naive* = read + preprocess + ``model.predict(x)`` for the same image with no Grad-CAM — the common
Keras idiom DESIGN.md warns about. The ratio naive / asdesk is what to read: both are measured in the same
process, interleaved, so machine load affects both alike. Screening: ``asdesk.tasks.screen_folder`` over a
folder of real images (CSV written as it goes, no Grad-CAM) against the naive per-image predict loop.
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
SHARED = REPO.parent / "shared" / "data"


def sample_for(card) -> Path:
    """A real input for a pack: the SIJ DICOM for MR packs, a knee radiograph otherwise."""
    if "MR" in card.modalities:
        stir = SHARED / "sij-mri-dicom" / "patient1" / "STIR"
        if stir.is_dir():
            return sorted(stir.iterdir())[7]
    samples = sorted((REPO / "resources" / "samples").glob("*.png"))
    if samples:
        return samples[0]
    return sorted((SHARED / "knee-xray-kl" / "val" / "2").glob("*.png"))[0]


def screening_folder(count: int) -> tuple[Path, list[Path]]:
    source = sorted((SHARED / "knee-xray-kl" / "val").rglob("*.png"))[:count]
    if not source:
        sys.exit("screening benchmark needs ../shared/data/knee-xray-kl/val")
    folder = Path(tempfile.mkdtemp(prefix="asdesk-bench-"))
    for path in source:
        shutil.copy(path, folder / path.name)
    return folder, sorted(folder.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--screen-images", type=int, default=64)
    args = parser.parse_args()

    import numpy as np

    from asdesk.inference import InferenceEngine, discover_packs
    from asdesk.inference.runtime import configure_device, load_model
    from asdesk.io import read_image
    from asdesk.tasks import analyze_batch, screen_folder

    device = configure_device()
    packs, errors = discover_packs()
    print(f"device: {device}; packs: {', '.join(p.card.id for p in packs) or 'none'}")
    for error in errors:
        print(f"  broken pack: {error}")
    print(f"{'pack':32s} {'asdesk ms/img':>14s} {'naive ms/img':>13s} {'naive/asdesk':>13s}")
    for pack in packs:
        engine = InferenceEngine(pack).load()
        naive_model = load_model(pack.model_path)
        path = sample_for(pack.card)
        pipeline = engine.pipeline

        def ours(engine=engine, path=path) -> None:
            analyze_batch(engine, [read_image(path)], gradcam=True)

        def naive(pipeline=pipeline, model=naive_model, path=path) -> None:
            tensor = pipeline(read_image(path)).tensor
            model.predict(tensor[np.newaxis], verbose=0)

        ours(), naive()  # warm-up: tracing and first-call allocation
        mine, theirs = [], []
        for _ in range(args.repeats):
            for function, store in ((ours, mine), (naive, theirs)):
                start = time.perf_counter()
                function()
                store.append((time.perf_counter() - start) * 1000.0)
        a, b = statistics.median(mine), statistics.median(theirs)
        print(f"{pack.card.id:32s} {a:14.1f} {b:13.1f} {b / a:13.2f}   ({path.name}, median of {args.repeats})")

    knee = [p for p in packs if "MR" not in p.card.modalities]
    if knee:
        pack = knee[0]
        folder, files = screening_folder(args.screen_images)
        csv_path = folder.parent / f"{folder.name}.csv"
        start = time.perf_counter()
        summary = screen_folder(folder, csv_path, model_id=pack.card.id)
        ours_rate = summary.n_done / (time.perf_counter() - start)
        naive_model = load_model(pack.model_path)
        pipeline = InferenceEngine(pack).pipeline
        start = time.perf_counter()
        for path in files:
            naive_model.predict(pipeline(read_image(path)).tensor[np.newaxis], verbose=0)
        naive_rate = len(files) / (time.perf_counter() - start)
        print(f"screening {len(files)} knee radiographs with {pack.card.id}: asdesk screen_folder "
              f"{ours_rate:.1f} images/s (CSV written per row), naive predict loop {naive_rate:.1f} images/s, "
              f"ratio {ours_rate / naive_rate:.2f}")
        shutil.rmtree(folder, ignore_errors=True)
        csv_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
