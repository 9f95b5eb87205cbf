"""Refusal rates of the shipped packs' content gates on in- and out-of-distribution images.

Every image goes through the runtime path: ``asdesk.io.read_frames`` / ``read_series`` -> the card's
pipeline -> ``.tensor`` -> the model's ``head_pool`` features -> :class:`ContentGate` loaded from the card.

    PYTHONPATH=$PWD python benchmarks/refusal.py [--cache /tmp/refusal] [--variants /tmp/gatecache]

``--variants DIR`` also fits alternative gates (PPCA with other k; k-th nearest-neighbour distance on
L2-normalised features, Sun et al., ICML 2022) on the knee training features cached by
``python -m asdesk.training.gatefit ... --cache DIR``, each with its threshold chosen on the validation
patients (95% pass), and prints their acceptance per set. The choice of the shipped gate is made on validation
data only (``n_components_log_likelihood`` in the card); this table only reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asdesk.inference import load_pack
from asdesk.inference.content_gate import ContentGate, KnnGate, load_pack_gate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


def _testdata(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    return Path(found) if found else None


def image_sets() -> dict[str, list[Path]]:
    """Named lists of files; a folder entry is a DICOM series (one image per slice)."""
    sets: dict[str, list[Path]] = {
        "knee-xray-kl/val (knee radiographs, test patients)": sorted((DATA / "knee-xray-kl" / "val").rglob("*.png")),
        "knee-xray-osteoporosis (bilateral AP knees, 512 px)":
            sorted((DATA / "knee-xray-osteoporosis").rglob("*.png")),
        "sij-mri-dicom STIR slices": [DATA / "sij-mri-dicom" / "patient1" / "STIR"],
        "sij-mri-dicom T1 slices": [DATA / "sij-mri-dicom" / "patient1" / "T1"],
    }
    for label, names in {
        "chest CR RG1 (UNCR, UNCI, J2KR, J2KI)": ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"],
        "tibia CR RG3, MONOCHROME1 (UNCR, UNCI, J2KR, J2KI)":
            ["RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"],
        "CT_small.dcm": ["CT_small.dcm"],
        "MR_small.dcm": ["MR_small.dcm"],
        "other pydicom-data (US1_UNCR, MR2_UNCR, SC_rgb)": ["US1_UNCR.dcm", "MR2_UNCR.dcm", "SC_rgb.dcm"],
    }.items():
        sets[label] = [p for p in (_testdata(n) for n in names) if p is not None]
    return sets


def records_of(paths: list[Path]) -> list:
    """ImageRecords of files (every frame) and series folders (every slice)."""
    from asdesk.io import read_frames, read_series

    records = []
    for path in paths:
        if path.is_dir():
            records.extend(read_series(path)[0])
        else:
            records.extend(read_frames(path))
    return records


def features_of(pack_dir: Path, sets: dict[str, list[Path]], cache: Path | None) -> dict[str, np.ndarray]:
    """Pooled gate features (N, D) of each set through the pack's card pipeline and its ONNX Runtime engine (the
    runtime path; cached per pack hash)."""

    from asdesk.tasks import EngineCache

    pack = load_pack(pack_dir)
    engine = None
    out: dict[str, np.ndarray] = {}
    pipeline = pack.card.pipeline()
    for name, paths in sets.items():
        tag = hashlib.sha1(name.encode()).hexdigest()[:10]
        file = cache / f"{pack.card.id}-{pack.card.sha256[:12]}-{tag}.npy" if cache else None
        if file is not None and file.is_file():
            out[name] = np.load(file)
            continue
        if engine is None:  # the runtime's engine (ONNX Runtime): its pooled output is what the gate reads
            engine = EngineCache().engine_for_pack(pack)
        tensors = np.stack([pipeline(record).tensor for record in records_of(paths)]).astype(np.float32)
        chunks = [engine._forward_with_features(tensors[i:i + 32])[1] for i in range(0, len(tensors), 32)]
        out[name] = np.concatenate(chunks).astype(np.float32)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.save(file, out[name])
    return out


def shipped_gate(pack_dir: Path) -> ContentGate | KnnGate:
    """The gate as the runtime loads it: arrays from the pack, method, threshold and layer from the card."""
    block = json.loads((pack_dir / "card.json").read_text(encoding="utf-8"))["content_gate"]
    return load_pack_gate(pack_dir, block)


def knn_scorer(train: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """k-th nearest-neighbour Euclidean distance of L2-normalised features (Sun et al., ICML 2022)."""
    bank = train / np.linalg.norm(train, axis=1, keepdims=True)

    def score(x: np.ndarray) -> np.ndarray:
        q = x / np.linalg.norm(x, axis=1, keepdims=True)
        d2 = np.maximum(2.0 - 2.0 * q @ bank.T, 0.0)
        return np.sqrt(np.sort(d2, axis=1)[:, k - 1])

    return score


def variants(cache: Path, pack_dir: Path) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]]:
    """Alternative knee gates: name -> (distance function, threshold chosen on validation patients)."""
    from asdesk.training.datasets import load_folder_dataset
    from asdesk.training.gatefit import acceptance_threshold, gate_from_features
    from asdesk.training.splits import group_holdout

    pack = load_pack(pack_dir)
    with np.load(cache / f"{pack.card.id}-{pack.card.sha256[:12]}-train.npz") as data:
        features, kept = data["features"], set(data["kept"].tolist())
    samples = [s for s in load_folder_dataset(DATA / "knee-xray-kl" / "train", "2,3,4", "0,1", r"^(\d+)")
               if s.key in kept]
    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient for s in samples])
    train, validation = group_holdout(labels, groups, 0.15, 0)
    result = {}
    for k in (8, 32, 128, 256, 512):
        gate = gate_from_features(features[train], k)
        result[f"ppca k={k}"] = (gate.distance, acceptance_threshold(gate.distance(features[validation])))
    for k in (1, 10, 50):
        score = knn_scorer(features[train], k)
        result[f"knn k={k}"] = (score, acceptance_threshold(score(features[validation])))
    return result


def sij_variants(cache: Path, pack_dir: Path) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]]:
    """Alternative SIJ gates, each threshold nested (each patient's distances to a gate fitted on the others)."""
    from asdesk.training.gatefit import acceptance_threshold, gate_from_features

    pack = load_pack(pack_dir)
    with np.load(cache / f"{pack.card.id}-{pack.card.sha256[:12]}-all.npz") as data:
        features, keys = data["features"], data["kept"]
    groups = np.array([str(k).split("#")[0] for k in keys])

    def fitter(kind: str, k: int) -> Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        return (lambda x: gate_from_features(x, k).distance) if kind == "ppca" else (lambda x: knn_scorer(x, k))

    result = {}
    for kind, k in (("ppca", 8), ("ppca", 32), ("ppca", 64), ("ppca", 128), ("knn", 1), ("knn", 10)):
        make = fitter(kind, k)
        held = np.concatenate([make(features[groups != p])(features[groups == p]) for p in np.unique(groups)])
        result[f"{kind} k={k}"] = (make(features), acceptance_threshold(held))
    return result


def main(argv: list[str] | None = None) -> int:
    """Print one table per pack: images, accepted, accepted fraction, median distance / threshold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="folder for cached features")
    parser.add_argument("--variants", type=Path, help="folder of gatefit's cached training features")
    args = parser.parse_args(argv)
    sets = image_sets()
    for pack_id in ("knee-xray-oa", "sij-mri-stir-inflammation"):
        pack_dir = ROOT / "models" / pack_id
        gate = shipped_gate(pack_dir)
        features = features_of(pack_dir, sets, args.cache)
        size = (f"k={gate.k} of {gate.n_components} training images" if isinstance(gate, KnnGate)
                else f"k={gate.n_components}")
        print(f"\n{pack_id}: shipped gate {gate.method} {size}, threshold {gate.threshold:.3f}")
        print(f"{'set':60s} {'images':>6s} {'accepted':>8s} {'fraction':>8s} {'median d/t':>10s}")
        for name, x in features.items():
            d = gate.distance(x)
            print(f"{name:60s} {len(d):6d} {int(np.sum(d <= gate.threshold)):8d} "
                  f"{np.mean(d <= gate.threshold):8.3f} {np.median(d) / gate.threshold:10.2f}")
        if args.variants:
            options = (variants if pack_id == "knee-xray-oa" else sij_variants)(args.variants, pack_dir)
            print(f"\n{pack_id} alternatives (threshold: 95% of validation / held-out patients pass), "
                  "accepted fraction per set")
            print(f"{'set':60s} " + " ".join(f"{name:>10s}" for name in options))
            for name, x in features.items():
                print(f"{name:60s} " + " ".join(f"{np.mean(score(x) <= t):10.3f}" for score, t in options.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
