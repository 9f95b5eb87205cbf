"""How faithful is a map: pointing game and Dice against readers' masks, with the readers' own agreement.

A heat map that is "hot in the right place" is a claim that can be measured where readers outlined the
finding. Two measures, both per slice that holds a reference region:

* **pointing game** (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down neural attention by excitation
  backprop", IJCV 2018): a hit when the map's maximum lies inside the reference mask, optionally within a
  tolerance of a few millimetres of it;
* **Dice** (Dice, Ecology 1945) of the map thresholded at a stated level against the mask.

The ceiling is how well the readers agree with each other: the pairwise Dice of their masks on the same
slices, and each reader's pointing game against the others' consensus is not defined (a mask has no single
maximum), so only Dice is given for readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import cv2
import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float | None:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean masks.

    Parameters
    ----------
    prediction, reference : numpy.ndarray
        bool, same shape.

    Returns
    -------
    float or None
        In [0, 1]; ``None`` when both masks are empty (undefined).

    Raises
    ------
    ValueError
        Shapes differ.
    """
    a, b = np.asarray(prediction, bool), np.asarray(reference, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return None
    return 2.0 * float(np.logical_and(a, b).sum()) / total


def pointing_hit(heatmap: np.ndarray, reference: np.ndarray, tolerance_px: float = 0.0) -> bool:
    """Whether the map's maximum falls inside ``reference`` (dilated by ``tolerance_px``).

    Parameters
    ----------
    heatmap : numpy.ndarray
        float (H, W); ties at the maximum count as a hit if any tied pixel is inside.
    reference : numpy.ndarray
        bool (H, W), non-empty.
    tolerance_px : float
        Tolerance radius in pixels (0: strictly inside).

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        Shapes differ or the reference is empty.
    """
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=-np.inf)
    mask = np.asarray(reference, bool)
    if values.shape != mask.shape:
        raise ValueError(f"map {values.shape} and mask {mask.shape} differ in shape")
    if not mask.any():
        raise ValueError("the pointing game needs a non-empty reference mask")
    if tolerance_px > 0:
        radius = int(np.ceil(tolerance_px))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    peak = values.max()
    return bool(np.any(mask[values >= peak]))


def _summary(values: Sequence[float | bool | None]) -> dict[str, Any]:
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "n": 0}
    return {"mean": round(float(np.mean(kept)), 4), "n": len(kept)}


def map_agreement(maps: np.ndarray, consensus: np.ndarray, readers: np.ndarray, threshold: float,
                  tolerance_px: float) -> dict[str, Any]:
    """Pointing game and Dice of maps against the consensus and each reader, on slices with a region.

    Parameters
    ----------
    maps : numpy.ndarray
        float (N, H, W): the maps (any scale; thresholded at ``threshold``).
    consensus : numpy.ndarray
        bool (N, H, W): the reference consensus.
    readers : numpy.ndarray
        bool (N, R, H, W): each reader's mask.
    threshold : float
        Map level counted as "marked" for Dice.
    tolerance_px : float
        Pointing-game tolerance in pixels.

    Returns
    -------
    dict
        ``{"consensus": {"pointing_game", "pointing_game_tolerant", "dice"}, "readers": [...same per
        reader...]}``, each ``{"mean", "n"}``: means over the slices whose reference mask is non-empty.
    """
    def against(reference: np.ndarray) -> dict[str, Any]:
        strict, tolerant, scores = [], [], []
        for index in range(len(maps)):
            if not reference[index].any():
                continue
            strict.append(pointing_hit(maps[index], reference[index]))
            tolerant.append(pointing_hit(maps[index], reference[index], tolerance_px))
            scores.append(dice(maps[index] >= threshold, reference[index]))
        return {"pointing_game": _summary(strict), "pointing_game_tolerant": _summary(tolerant),
                "dice": _summary(scores)}

    return {"consensus": against(consensus),
            "readers": [against(readers[:, r]) for r in range(readers.shape[1])]}


def reader_agreement(readers: np.ndarray, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Pairwise Dice of the readers' masks, per slice where either reader of a pair marked something.

    Parameters
    ----------
    readers : numpy.ndarray
        bool (N, R, H, W).
    names : sequence of str, optional
        Reader names (default ``R1..RR``).

    Returns
    -------
    dict
        ``{"pairs": {"A-B": {"mean", "n"}}, "mean_of_pairs": float}``.
    """
    count = readers.shape[1]
    names = list(names) if names is not None else [f"R{i + 1}" for i in range(count)]
    pairs: dict[str, Any] = {}
    for a, b in combinations(range(count), 2):
        values = [dice(readers[i, a], readers[i, b]) for i in range(len(readers))]
        pairs[f"{names[a]}-{names[b]}"] = _summary(values)
    means = [pair["mean"] for pair in pairs.values() if pair["mean"] is not None]
    return {"pairs": pairs, "mean_of_pairs": round(float(np.mean(means)), 4) if means else None}


def summarise(block: Mapping[str, Any]) -> str:
    """One line: consensus pointing game, tolerant pointing game and Dice of a :func:`map_agreement` block."""
    c = block["consensus"]
    return (f"pointing game {c['pointing_game']['mean']} (n={c['pointing_game']['n']}), "
            f"within tolerance {c['pointing_game_tolerant']['mean']}, Dice {c['dice']['mean']}")
