"""How far the pelvis's mirror-symmetry axis lies from the image centre on the SIJ STIR training slices.

The oedema U-Net cuts its centred crop at the image's vertical midline and reads each half as one joint
(:func:`asdesk.training.oedema.build_unet`). That is right only where the sacrum, the pelvis's axis of
symmetry, sits at the centre of the field of view. This script measures it on every slice of the 10 volumes:
the axis is the column about which the smoothed slice best correlates with its own mirror image (axis up to
±15 mm), and the distance is reported in mm.

    python scripts/sij_midline.py [../shared/data/sij-mri-spa]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from asdesk.training.oedema import load_volumes

MAX_SHIFT_MM = 15.0


def symmetry_axis_offset_mm(pixels: np.ndarray, column_spacing_mm: float) -> float:
    """Signed distance (mm, + = image right) from the image's centre column to its mirror-symmetry axis.

    Parameters
    ----------
    pixels : numpy.ndarray
        (H, W) slice, any numeric dtype.
    column_spacing_mm : float
        Pixel spacing along a row.

    Returns
    -------
    float
    """
    height, width = pixels.shape
    smooth = ndimage.gaussian_filter(pixels.astype(np.float32), 2)
    smooth /= float(np.percentile(smooth, 99)) + 1e-6
    band = smooth[int(height * 0.2):int(height * 0.9)]
    columns = np.arange(width)
    best_score, best_axis = -np.inf, (width - 1) / 2
    limit = int(2 * MAX_SHIFT_MM / column_spacing_mm)  # the axis moves half a column per shift
    for shift in range(-limit, limit + 1):
        twice_axis = width - 1 + shift
        mirrored = twice_axis - columns
        usable = (mirrored >= 0) & (mirrored < width) & (np.abs(columns - twice_axis / 2) < 0.35 * width)
        score = np.corrcoef(band[:, columns[usable]].ravel(), band[:, mirrored[usable]].ravel())[0, 1]
        if score > best_score:
            best_score, best_axis = score, twice_axis / 2
    return (best_axis - (width - 1) / 2) * column_spacing_mm


def main() -> int:
    """Print the fraction of slices whose symmetry axis lies within 3 mm and 5 mm of the centre."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                                       / "sij-mri-spa"))
    args = parser.parse_args()
    offsets = np.abs([symmetry_axis_offset_mm(record.pixels, record.metadata.pixel_spacing_mm[1])
                      for volume in load_volumes(args.data, include_unlabelled=True) for record in volume.records])
    print(f"{len(offsets)} slices: symmetry axis within 3 mm of the centre on {np.mean(offsets <= 3):.1%}, "
          f"within 5 mm on {np.mean(offsets <= 5):.1%}; median {np.median(offsets):.2f} mm, "
          f"largest {offsets.max():.1f} mm (the search limit is {MAX_SHIFT_MM:g} mm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
