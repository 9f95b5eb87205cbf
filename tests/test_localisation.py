"""Map-faithfulness measures (pointing game, Dice, reader agreement) on constructed and real reader masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared

from asdesk.training.localisation import dice, map_agreement, pointing_hit, reader_agreement


def test_dice_of_known_overlaps():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) is None
    with pytest.raises(ValueError, match="shape"):
        dice(a, b[:5])


def test_pointing_game_hit_miss_and_tolerance():
    mask = np.zeros((50, 50), bool)
    mask[20:25, 20:25] = True
    heat = np.zeros((50, 50), np.float32)
    heat[22, 22] = 1.0
    assert pointing_hit(heat, mask)
    heat = np.zeros((50, 50), np.float32)
    heat[22, 29] = 1.0  # 5 px right of the mask's edge
    assert not pointing_hit(heat, mask)
    assert not pointing_hit(heat, mask, tolerance_px=4)
    assert pointing_hit(heat, mask, tolerance_px=5)
    with pytest.raises(ValueError, match="non-empty"):
        pointing_hit(heat, np.zeros_like(mask))


@requires_shared("data/sij-mri-spa")
def test_real_readers_agree_with_themselves_and_less_with_each_other():
    from asdesk.io.nifti import read_nifti_volume

    root = SHARED_DATA / "sij-mri-spa" / "inflammation_masks"
    readers = np.stack([read_nifti_volume(root / r / f"1016_inflammation_{r}.nii.gz")[0] > 0
                        for r in ("R11", "R12", "R21", "R22")], axis=1)
    consensus = readers.sum(axis=1) >= 2
    agreement = reader_agreement(readers, ["R11", "R12", "R21", "R22"])
    assert len(agreement["pairs"]) == 6
    assert 0.0 < agreement["mean_of_pairs"] < 1.0
    perfect = map_agreement(consensus.astype(np.float32), consensus, readers, 0.5, 0.0)
    assert perfect["consensus"]["dice"]["mean"] == 1.0
    assert perfect["consensus"]["pointing_game"]["mean"] == 1.0
    assert perfect["consensus"]["pointing_game"]["n"] == int(consensus.any(axis=(1, 2)).sum())
    # A map that is hot only in the image corner (the skin / outside the body) points nowhere near oedema.
    corner = np.zeros(consensus.shape, np.float32)
    corner[:, :5, :5] = 1.0
    wrong = map_agreement(corner, consensus, readers, 0.5, 8.0)
    assert wrong["consensus"]["pointing_game"]["mean"] == 0.0 and wrong["consensus"]["dice"]["mean"] == 0.0
