"""Patient-level splits: no patient ever has images on both sides of a split.

The AS transfer-learning reference uses a stratified 70/15/15 train/validation/test split; with few
patients asdesk uses leave-one-patient-out or grouped k-fold instead (``../shared/data/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Index arrays (int64) into a sample list."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    name: str = ""


def _check(labels: Sequence[int], groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y, g = np.asarray(labels), np.asarray(groups)
    if y.shape != g.shape or y.ndim != 1:
        raise ValueError(f"labels and groups must be 1-D and equally long, got {y.shape} and {g.shape}")
    return y, g


def group_holdout(labels: Sequence[int], groups: Sequence[str], fraction: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split into (keep, held_out) index arrays, holding out about ``fraction`` of the patients.

    Stratified by label at patient level through scikit-learn's ``StratifiedGroupKFold`` with
    ``round(1 / fraction)`` folds, taking the first fold as held out.

    Parameters
    ----------
    labels : sequence of int
        (N,) class per image.
    groups : sequence of str
        (N,) patient id per image.
    fraction : float
        In (0, 0.5].
    seed : int
        Shuffling seed.

    Returns
    -------
    keep, held_out : numpy.ndarray
        int64 indices; disjoint in patients.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y, g = _check(labels, groups)
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    folds = max(2, int(round(1.0 / fraction)))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(y)), y, g))
    return keep.astype(np.int64), held.astype(np.int64)


def stratified_70_15_15(labels: Sequence[int], groups: Sequence[str], seed: int = 0) -> Split:
    """The reference's 70/15/15 train/validation/test split, by patient and stratified by label."""
    y, g = _check(labels, groups)
    rest, test = group_holdout(y, g, 0.15, seed)
    inner_train, inner_val = group_holdout(y[rest], g[rest], 0.15 / 0.85, seed + 1)
    return Split(rest[inner_train], rest[inner_val], test, "70/15/15")


def leave_one_patient_out(labels: Sequence[int], groups: Sequence[str], seed: int = 0) -> Iterator[Split]:
    """One split per patient: that patient is the test set; one other patient (rotating, chosen so the
    validation set holds both classes where possible) is the validation set for early stopping.

    Yields
    ------
    Split
        ``name`` is the held-out patient id.
    """
    y, g = _check(labels, groups)
    patients = sorted(set(g.tolist()))
    if len(patients) < 3:
        raise ValueError("leave-one-patient-out needs at least 3 patients")
    rng = np.random.default_rng(seed)
    for position, patient in enumerate(patients):
        others = [p for p in patients if p != patient]
        mixed = [p for p in others if len(set(y[g == p].tolist())) > 1]
        pool = mixed or others
        validation_patient = pool[(position + int(rng.integers(0, len(pool)))) % len(pool)]
        test = np.flatnonzero(g == patient)
        validation = np.flatnonzero(g == validation_patient)
        train = np.flatnonzero((g != patient) & (g != validation_patient))
        yield Split(train, validation, test, str(patient))


def group_kfold(labels: Sequence[int], groups: Sequence[str], n_splits: int = 5, seed: int = 0
                ) -> Iterator[Split]:
    """Stratified grouped k-fold; within each fold's training part, 15% of patients validate."""
    from sklearn.model_selection import StratifiedGroupKFold

    y, g = _check(labels, groups)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (rest, test) in enumerate(splitter.split(np.zeros(len(y)), y, g)):
        inner_train, inner_val = group_holdout(y[rest], g[rest], 0.15, seed + fold)
        yield Split(rest[inner_train], rest[inner_val], test.astype(np.int64), f"fold{fold}")


def repeated_group_kfold(labels: Sequence[int], groups: Sequence[str], n_splits: int = 5, repeats: int = 5,
                         seed: int = 0) -> Iterator[Split]:
    """Repeated stratified grouped k-fold: ``repeats`` runs of :func:`group_kfold` with different shuffles.

    Every image is in the test part of exactly one fold per repeat, so each repeat gives a full set of
    out-of-fold predictions; averaging them over repeats gives one prediction per image from models that
    never saw its patient.

    Parameters
    ----------
    labels : sequence of int
        (N,) class per image.
    groups : sequence of str
        (N,) patient id per image.
    n_splits : int
        Folds per repeat (at least 2).
    repeats : int
        Number of reshuffled repeats (at least 1).
    seed : int
        Repeat ``r`` uses seed ``seed + 1000 * r``.

    Yields
    ------
    Split
        ``name`` is ``"r<repeat>f<fold>"``.

    Raises
    ------
    ValueError
        ``n_splits < 2`` or ``repeats < 1``.
    """
    if n_splits < 2 or repeats < 1:
        raise ValueError(f"need n_splits >= 2 and repeats >= 1, got {n_splits} and {repeats}")
    for repeat in range(repeats):
        for split in group_kfold(labels, groups, n_splits, seed + 1000 * repeat):
            yield Split(split.train, split.validation, split.test, f"r{repeat}{split.name.replace('fold', 'f')}")
