"""Heat maps → colours: a colour-mapped RGBA layer to draw over an image, and a flat blend for reports.

All outputs are in **RGB(A)** channel order, ready for Qt (``QImage.Format_RGBA8888``), pyqtgraph and PNG
writers that expect RGB. The colour maps are OpenCV's (``cv2.applyColorMap``), as 256-entry tables in
:mod:`asdesk.inference.colormaps`, so colouring needs no OpenCV.
"""

from __future__ import annotations

import functools

import numpy as np

from asdesk.inference.colormaps import NAMES, colormap_rgb

_COLORMAPS = frozenset(NAMES)


def _heat_uint8(heatmap: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heat map is a 2-D (H, W) array, got shape {heat.shape}")
    scaled = heat * np.float32(255.0)  # a new array; +inf -> 255, -inf -> 0 by the clip, NaN -> 0 below
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    scaled[np.isnan(scaled)] = 0.0
    return scaled.astype(np.uint8)


def colourise(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a heat map through a colour map.

    Parameters
    ----------
    heatmap : numpy.ndarray
        float32 (H, W) in [0, 1] (values outside are clipped, NaN counts as 0); quantised to 256 levels.
    colormap : str
        An OpenCV colour map: ``"jet"`` (default, blue = 0 → red = 1), ``"turbo"``, ``"inferno"``,
        ``"magma"``, ``"plasma"``, ``"viridis"``, ``"hot"``, ``"bone"``.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3) in **RGB** order: the colours of ``cv2.applyColorMap`` (which returns BGR).

    Raises
    ------
    ValueError
        The heat map is not 2-D or the colour map is unknown.
    """
    if colormap not in _COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; use one of {sorted(_COLORMAPS)}")
    return colormap_rgb(colormap)[_heat_uint8(heatmap)]


def overlay_rgba(heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet",
                 floor: float = 0.2) -> np.ndarray:
    """A colour-mapped, semi-transparent layer to draw over the image.

    Opacity grows linearly with the heat above ``floor``: 0 at or below ``floor`` (cold areas stay
    transparent, so the anatomy remains visible), ``alpha * 255`` at heat 1.

    Parameters
    ----------
    heatmap : numpy.ndarray
        float32 (H, W) in [0, 1].
    alpha : float
        Maximum opacity, in [0, 1].
    colormap : str
        See :func:`colourise`.
    floor : float
        Heat at and below which the layer is fully transparent, in [0, 1).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 4), RGBA (straight, not premultiplied, alpha).

    Raises
    ------
    ValueError
        Bad shape, colour map, ``alpha`` or ``floor``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    if colormap not in _COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; use one of {sorted(_COLORMAPS)}")
    # The heat is quantised to 256 levels, so colour and opacity are a 256-entry table (one lookup per pixel).
    levels = _heat_uint8(heatmap)
    packed = _rgba_table(colormap, float(alpha), float(floor)).view(np.uint32)[:, 0]  # one 4-byte word per level
    return packed[levels].view(np.uint8).reshape(*levels.shape, 4)


@functools.lru_cache(maxsize=32)
def _rgba_table(colormap: str, alpha: float, floor: float) -> np.ndarray:
    """uint8 (256, 4): the RGBA of each quantised heat level (colour map, opacity ramp above ``floor``)."""
    levels = np.arange(256, dtype=np.uint8)[:, None]
    rgb = colormap_rgb(colormap)
    heat = levels[:, 0].astype(np.float32) / 255.0
    opacity = np.clip((heat - floor) / (1.0 - floor), 0.0, 1.0) * (alpha * 255.0)
    table = np.empty((256, 4), dtype=np.uint8)
    table[:, :3] = rgb
    table[:, 3] = np.clip(np.rint(opacity), 0, 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def blend(display: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA overlay onto an image ("over" operator), for reports and exported pictures.

    Parameters
    ----------
    display : numpy.ndarray
        float (H, W) grayscale or (H, W, 3) RGB, in [0, 1] (as ``ImageRecord.display``); clipped, NaN → 0.
    rgba : numpy.ndarray
        uint8 (H, W, 4) from :func:`overlay_rgba`.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3), RGB.

    Raises
    ------
    ValueError
        Shapes that are not (H, W)/(H, W, 3) and (H, W, 4), or that differ in (H, W).
    """
    base = np.nan_to_num(np.asarray(display, dtype=np.float32), nan=0.0)
    if base.ndim == 2:
        base = np.repeat(base[:, :, None], 3, axis=2)
    if base.ndim != 3 or base.shape[2] != 3:
        raise ValueError(f"display must be (H, W) or (H, W, 3), got shape {np.shape(display)}")
    layer = np.asarray(rgba)
    if layer.ndim != 3 or layer.shape[2] != 4 or layer.shape[:2] != base.shape[:2]:
        raise ValueError(f"overlay must be RGBA (H, W, 4) matching the image {base.shape[:2]}, "
                         f"got shape {layer.shape}")
    base = np.clip(base, 0.0, 1.0) * 255.0
    opacity = layer[:, :, 3:4].astype(np.float32) / 255.0
    mixed = base * (1.0 - opacity) + layer[:, :, :3].astype(np.float32) * opacity
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
