"""Image kernels in NumPy that reproduce OpenCV's: resize, CLAHE and global histogram equalisation.

The model packs were trained with an OpenCV pipeline, so the analysis runtime must compute exactly what
OpenCV computes, without shipping OpenCV (about 150 MB in the installer). These functions follow OpenCV's
own definitions (OpenCV 4.x / 5.x sources, ``modules/imgproc/src/resize.cpp``, ``clahe.cpp`` and
``histogram.cpp``; ``cv::resize``, ``cv::createCLAHE``, ``cv::equalizeHist`` in the OpenCV reference manual)
step by step, in the same floating-point precision and, where the order of additions matters, the same
order:

* :func:`resize`: ``cv::resize`` of a float32 (H, W) image with ``INTER_LINEAR`` or ``INTER_AREA``; equal to
  OpenCV's to float32 rounding (``tests/test_kernels.py`` checks 1e-5 of the value range against OpenCV).
* :func:`clahe` and :func:`equalize_hist`: ``cv::CLAHE::apply`` and ``cv::equalizeHist`` on uint8 images,
  bit-exact.

OpenCV stays the oracle of the tests and of training; nothing here imports it.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["clahe", "equalize_hist", "resize"]

_DBL_EPSILON = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------------------
# resize


def resize(image: np.ndarray, height: int, width: int, interpolation: str = "linear") -> np.ndarray:
    """Resize a 2-D float32 image as ``cv2.resize(image, (width, height), interpolation=...)`` does.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) image, converted to float32 (the precision OpenCV computes float32 images in). H, W >= 1.
    height, width : int
        Output size in pixels, >= 1.
    interpolation : str
        ``"linear"`` (``cv2.INTER_LINEAR``) or ``"area"`` (``cv2.INTER_AREA``).

    Returns
    -------
    numpy.ndarray
        float32 (height, width), a new array.

    Notes
    -----
    OpenCV's rules (``cv::resize`` and ``cv::hal::resize`` in ``resize.cpp``), with ``scale = src / dst``
    per axis computed as ``1 / (dst / src)`` in double precision:

    * Same size: a copy.
    * ``INTER_LINEAR``: separable, a horizontal pass then a vertical pass, float32 arithmetic. Destination
      pixel ``d`` samples the source at ``p = (d + 0.5) * scale - 0.5`` (pixel centres aligned), between
      ``s = floor(p)`` and ``s + 1`` with weights ``(1 - f, f)``, ``f = p - s``. Horizontally, positions left
      of the first pixel take the first pixel and positions at or right of the last pixel take the last
      pixel, alone; vertically the two source rows are clamped to the image and keep their weights.
      *Where ``f`` is rounded*: OpenCV's x86-64 builds (the ``opencv-python`` wheels the packs were trained
      with) pass float32 ``INTER_LINEAR`` to Intel IPP, which takes ``f`` from ``p`` in double precision;
      OpenCV's portable code rounds ``p`` to float32 first (an error of up to half a float32 step of the
      source coordinate, so up to ~1e-4 of the value range when shrinking a 3000-pixel axis) and is what
      runs where IPP declines: images of a single row or column. Both are reproduced: the portable code
      exactly, the IPP path to float32 rounding (measured: <= 2e-7 of the value range). The portable
      code's rule "a downscale by exactly 2 on both axes is ``INTER_AREA``" never applies to a single row
      or column.
    * ``INTER_AREA`` when neither axis enlarges (``scale >= 1`` on both): each output pixel is the
      area-weighted mean of the source pixels its footprint ``[d * scale, (d + 1) * scale)`` covers. For
      integer factors on both axes, the block mean (OpenCV's ``resizeAreaFast``, its order of additions);
      otherwise OpenCV's weight tables (``computeResizeAreaTab``, which drop partial pixels covering no
      more than 1e-3 of a pixel), accumulated row by row in OpenCV's order (``ResizeArea_Invoker``).
    * ``INTER_AREA`` when an axis enlarges: OpenCV's bilinear variant, on *both* axes: ``s = floor(d *
      scale)``, ``f = float32((d + 1) - (s + 1) / scale)``, weight ``f - floor(f)`` on ``s + 1`` when
      ``f > 0``, else 0 (so the output copies source pixels except across the boundary between two of
      them), with the edge rules of ``INTER_LINEAR`` (portable code: IPP declines ``INTER_AREA``).

    Raises
    ------
    ValueError
        Not a 2-D non-empty image, a size < 1 or an unknown interpolation.
    """
    source = np.asarray(image)
    if source.ndim != 2 or source.size == 0:
        raise ValueError(f"resize needs a non-empty 2-D (H, W) image, got shape {source.shape}")
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"resize needs an output size >= 1 x 1, got {height} x {width}")
    if interpolation not in ("linear", "area"):
        raise ValueError(f"interpolation must be 'linear' or 'area', got {interpolation!r}")
    source = np.ascontiguousarray(source, dtype=np.float32)
    src_h, src_w = source.shape
    if (src_h, src_w) == (height, width):
        return source.copy()
    if interpolation == "linear":
        return _bilinear(source, height, width, area_mode=False, precise=src_h > 1 and src_w > 1)

    scale_x, scale_y = 1.0 / (width / src_w), 1.0 / (height / src_h)
    if scale_x >= 1 and scale_y >= 1:
        iscale_x, iscale_y = int(round(scale_x)), int(round(scale_y))
        if abs(scale_x - iscale_x) < _DBL_EPSILON and abs(scale_y - iscale_y) < _DBL_EPSILON:
            return _area_fast(source, height, width, iscale_y, iscale_x)
        return _area(source, height, width, scale_y, scale_x)
    return _bilinear(source, height, width, area_mode=True, precise=False)


def _linear_taps(src: int, dst: int, area_mode: bool, precise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source index ``s`` (int64) and float32 weight ``f`` of ``s + 1`` for each destination index."""
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    d = np.arange(dst, dtype=np.float64)
    if area_mode:
        s = np.floor(d * scale).astype(np.int64)
        f = ((d + 1.0) - (s + 1) * inv_scale).astype(np.float32)
        f = np.where(f <= 0, np.float32(0), f - np.floor(f)).astype(np.float32)
    elif precise:  # IPP: the fraction of the double-precision coordinate
        p = (d + 0.5) * scale - 0.5
        s = np.floor(p)
        f = (p - s).astype(np.float32)
        s = s.astype(np.int64)
    else:  # OpenCV's portable code: the coordinate rounded to float32 first
        p32 = ((d + 0.5) * scale - 0.5).astype(np.float32)
        s = np.floor(p32).astype(np.int64)
        f = p32 - s.astype(np.float32)
    return s, f


@functools.lru_cache(maxsize=32)
def _bilinear_plan(src_h: int, src_w: int, height: int, width: int, area_mode: bool, precise: bool) -> tuple:
    """The taps and weights of :func:`_bilinear` for one pair of sizes, computed once (read-only arrays).

    The same arrays as computing them per call: caching changes no arithmetic, it saves their set-up (about
    half of the time of a 7 x 7 -> 224 x 224 heat-map upsampling).
    """
    one = np.float32(1)

    # Horizontal taps: outside the image the edge pixel is taken alone (OpenCV's xmin / xmax).
    sx, fx = _linear_taps(src_w, width, area_mode, precise)
    left = sx < 0
    sx[left], fx[left] = 0, 0
    right = sx >= src_w - 1
    sx[right], fx[right] = src_w - 1, 0
    inner = ~right
    sx_next = np.minimum(sx + 1, src_w - 1)
    ax0, ax1 = one - fx, fx

    # Vertical taps: rows clamped to the image, weights kept.
    sy, fy = _linear_taps(src_h, height, area_mode, precise)
    row0 = np.clip(sy, 0, src_h - 1)
    row1 = np.clip(sy + 1, 0, src_h - 1)
    by0, by1 = (one - fy)[:, None], fy[:, None]
    # The horizontal pass runs once on each source row that is used.
    rows, inverse = np.unique(np.concatenate([row0, row1]), return_inverse=True)
    plan = (sx[inner], sx_next[inner], ax0[inner], ax1[inner], inner, right, sx[right], rows,
            inverse[:height], inverse[height:], by0, by1)
    for array in plan:
        array.setflags(write=False)  # shared by every call with these sizes
    return plan


def _bilinear(source: np.ndarray, height: int, width: int, area_mode: bool, precise: bool) -> np.ndarray:
    """OpenCV's ``resizeGeneric_`` with ``HResizeLinear`` / ``VResizeLinear`` on float32."""
    src_h, src_w = source.shape
    (x0, x1, ax0, ax1, inner, right, x_right, rows, index0, index1, by0,
     by1) = _bilinear_plan(src_h, src_w, height, width, area_mode, precise)
    picked = source[rows]
    horizontal = np.empty((rows.size, width), dtype=np.float32)
    horizontal[:, inner] = picked[:, x0] * ax0 + picked[:, x1] * ax1
    horizontal[:, right] = picked[:, x_right]
    return horizontal[index0] * by0 + horizontal[index1] * by1


def _area_fast(source: np.ndarray, height: int, width: int, ky: int, kx: int) -> np.ndarray:
    """OpenCV's ``resizeAreaFast_`` for integer factors: block sums in OpenCV's order, times ``1 / area``."""
    if ky == 2 and kx == 2:
        # OpenCV's SSE path, four outputs at a time: (row 0 pair + row 1 pair) * 0.25; the last width % 4
        # outputs go through the scalar loop below, ((a + b) + c) + d.
        top, bottom = source[0::2], source[1::2]
        a, b, c, d = top[:, 0::2], top[:, 1::2], bottom[:, 0::2], bottom[:, 1::2]
        out = (a + b) + (c + d)
        tail = width // 4 * 4
        out[:, tail:] = ((a[:, tail:] + b[:, tail:]) + c[:, tail:]) + d[:, tail:]
        return out * np.float32(0.25)
    area = ky * kx
    # (height, width, area): each block's pixels in OpenCV's order (row by row within the block).
    blocks = source[: height * ky, : width * kx].reshape(height, ky, width, kx).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(height, width, area)
    # OpenCV adds four pixels at a time, ((a + b) + c) + d, to a running float32 sum, then the rest singly.
    groups = area // 4 * 4
    if groups:
        quads = blocks[:, :, 0:groups:4] + blocks[:, :, 1:groups:4]
        quads += blocks[:, :, 2:groups:4]
        quads += blocks[:, :, 3:groups:4]
        total = np.add.accumulate(quads, axis=2)[:, :, -1] if quads.shape[2] > 1 else quads[:, :, 0].copy()
    else:
        total = np.zeros((height, width), dtype=np.float32)
    for k in range(groups, area):
        total += blocks[:, :, k]
    return total * (np.float32(1) / np.float32(area))


def _area_table(src: int, dst: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``computeResizeAreaTab`` as dense (dst, taps) index and float32 weight arrays.

    Unused taps have weight 0 and point at pixel 0; taps are in OpenCV's order (left to right).
    """
    entries: list[list[tuple[int, float]]] = []
    for d in range(dst):
        fs1 = d * scale
        fs2 = fs1 + scale
        cell = min(scale, src - fs1)
        s1, s2 = int(np.ceil(fs1)), int(np.floor(fs2))
        s2 = min(s2, src - 1)
        s1 = min(s1, s2)
        taps: list[tuple[int, float]] = []
        if s1 - fs1 > 1e-3:
            taps.append((s1 - 1, (s1 - fs1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if fs2 - s2 > 1e-3:
            taps.append((s2, min(min(fs2 - s2, 1.0), cell) / cell))
        entries.append(taps)
    count = max(len(taps) for taps in entries)
    index = np.zeros((dst, count), dtype=np.intp)
    weight = np.zeros((dst, count), dtype=np.float32)
    for d, taps in enumerate(entries):
        for k, (s, alpha) in enumerate(taps):
            index[d, k] = s
            weight[d, k] = np.float32(alpha)
    return index, weight


def _area(source: np.ndarray, height: int, width: int, scale_y: float, scale_x: float) -> np.ndarray:
    """OpenCV's ``ResizeArea_Invoker``: per source row, ``buf[dx] += S[si] * alpha`` over the x table;
    per destination row, ``sum += beta * buf`` over the y table (float32, in table order)."""
    src_h, src_w = source.shape
    x_index, x_weight = _area_table(src_w, width, scale_x)
    y_index, y_weight = _area_table(src_h, height, scale_y)
    rows = np.unique(y_index[y_weight != 0])
    picked = source if rows.size == src_h else source[rows]  # rows.size == src_h: every row, in order
    horizontal = np.zeros((rows.size, width), dtype=np.float32)
    term = np.empty_like(horizontal)
    for k in range(x_index.shape[1]):
        column = x_weight[:, k] != 0
        if column.all():
            np.take(picked, x_index[:, k], axis=1, out=term)
            term *= x_weight[:, k]
            horizontal += term
        else:
            horizontal[:, column] += np.take(picked, x_index[column, k], axis=1) * x_weight[column, k]
    position = np.searchsorted(rows, y_index)
    out = np.zeros((height, width), dtype=np.float32)
    for k in range(y_index.shape[1]):
        row = y_weight[:, k] != 0
        out[row] += y_weight[row, k][:, None] * horizontal[position[row, k]]
    return out


# ----------------------------------------------------------------------------------------------------------
# histogram equalisation


def _check_uint8(image: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"{what} needs a 2-D uint8 image, got {array.dtype} of shape {array.shape}")
    return array


def equalize_hist(image: np.ndarray) -> np.ndarray:
    """Global histogram equalisation, bit-exact with ``cv2.equalizeHist``.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W).

    Notes
    -----
    OpenCV's definition (``cv::equalizeHist``, ``histogram.cpp``): with ``h`` the 256-bin histogram and
    ``i0`` the first non-empty bin, an image of one value ``i0`` stays as it is; otherwise
    ``lut[i0] = 0`` and, for ``i > i0``, ``lut[i] = round(float32(sum(h[i0 + 1 : i + 1])) *
    float32(255 / (N - h[i0])))`` (round half to even, saturated), ``N`` the number of pixels.

    Raises
    ------
    ValueError
        Not a 2-D uint8 image.
    """
    array = _check_uint8(image, "equalize_hist")
    if array.size == 0:
        return array.copy()
    hist = np.bincount(array.ravel(), minlength=256).astype(np.int64)
    first = int(np.flatnonzero(hist)[0])
    total = int(array.size)
    if hist[first] == total:
        return np.full(array.shape, first, dtype=np.uint8)
    scale = np.float32(255.0) / np.float32(total - hist[first])
    cumulative = np.cumsum(hist) - hist[first]  # sum of the bins after the first non-empty one, up to i
    lut = np.clip(np.rint(cumulative.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    lut[: first + 1] = 0
    return lut[array]


def _reflect_101(length: int, count: int) -> np.ndarray:
    """Source indices of ``count`` positions past the end of an axis of ``length`` (``BORDER_REFLECT_101``,
    OpenCV's ``borderInterpolate``, reflected as often as needed)."""
    out = np.empty(count, dtype=np.intp)
    for k in range(count):
        p = length + k
        if length == 1:
            out[k] = 0
            continue
        while not 0 <= p < length:
            p = -p if p < 0 else 2 * length - 2 - p
        out[k] = p
    return out


def clahe(image: np.ndarray, clip_limit: float, tile_grid: tuple[int, int]) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalisation, bit-exact with OpenCV's ``CLAHE::apply``.

    Same result as ``cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(columns, rows)).apply(image)``
    (note OpenCV's (width, height) order of the grid).

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W).
    clip_limit : float
        OpenCV's ``clipLimit``; <= 0 disables clipping.
    tile_grid : tuple of int
        Number of tiles (rows, columns), each >= 1.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W).

    Notes
    -----
    OpenCV's definition (``clahe.cpp``; Zuiderveld, "Contrast limited adaptive histogram equalization",
    Graphics Gems IV, 1994):

    1. When H or W is not divisible by the grid, the image is padded at the bottom by ``rows - H % rows``
       rows and at the right by ``columns - W % columns`` columns (a whole extra tile's worth where that axis
       divides) with ``BORDER_REFLECT_101``; tiles are ``ceil``-sized pieces of the padded image.
    2. Per tile, a 256-bin histogram. The clip limit in counts is ``max(int(clip_limit * area / 256), 1)``;
       the counts above it are cut, their total is spread as ``excess // 256`` on every bin, and the
       residual ``r`` (if any) adds 1 to bins ``0, step, 2 step, ...`` (``r`` of them), ``step = max(256 //
       r, 1)``.
    3. ``lut = round(float32(cumulative histogram) * float32(255 / area))``, rounding half to even.
    4. Each pixel is the bilinear blend of the LUTs of the four nearest tile centres, with float32 weights
       ``x / tile_width - 0.5`` (and likewise in y), clamped at the borders, rounded to uint8.

    Raises
    ------
    ValueError
        Not a 2-D uint8 image or a grid with fewer than one tile per axis.
    """
    array = _check_uint8(image, "clahe")
    tiles_y, tiles_x = int(tile_grid[0]), int(tile_grid[1])
    if tiles_y < 1 or tiles_x < 1:
        raise ValueError(f"the CLAHE grid needs at least one tile per axis, got {tile_grid}")
    height, width = array.shape
    if height == 0 or width == 0:
        return array.copy()

    extended = array
    if height % tiles_y or width % tiles_x:
        rows = np.concatenate([np.arange(height), _reflect_101(height, tiles_y - height % tiles_y)])
        cols = np.concatenate([np.arange(width), _reflect_101(width, tiles_x - width % tiles_x)])
        extended = array[rows[:, None], cols[None, :]]
    tile_h, tile_w = extended.shape[0] // tiles_y, extended.shape[1] // tiles_x
    area = tile_h * tile_w
    tile_count = tiles_y * tiles_x

    # 1-2. Histograms of the tiles (the padded image's top-left tiles_y x tiles_x tiles).
    used = extended[: tiles_y * tile_h, : tiles_x * tile_w]
    tile_of_row = (np.arange(used.shape[0]) // tile_h) * tiles_x
    tile_of_col = np.arange(used.shape[1]) // tile_w
    keys = ((tile_of_row[:, None] + tile_of_col[None, :]) << 8) | used
    hist = np.bincount(keys.ravel(), minlength=tile_count * 256).reshape(tile_count, 256).astype(np.int64)

    if clip_limit > 0.0:
        limit = max(int(float(clip_limit) * area / 256), 1)
        clipped = np.maximum(hist - limit, 0).sum(axis=1)
        hist = np.minimum(hist, limit)
        batch = clipped // 256
        residual = clipped - batch * 256
        hist += batch[:, None]
        step = np.maximum(256 // np.maximum(residual, 1), 1)[:, None]
        bins = np.arange(256)[None, :]
        hist += ((residual[:, None] > 0) & (bins % step == 0) & (bins // step < residual[:, None])).astype(np.int64)

    # 3. LUTs, float32 as OpenCV computes them.
    lut_scale = np.float32(255.0) / np.float32(area)
    luts = np.clip(np.rint(np.cumsum(hist, axis=1).astype(np.float32) * lut_scale), 0, 255).astype(np.float32)
    flat = luts.ravel()

    # 4. Bilinear interpolation between the four nearest tiles' LUTs.
    def weights(size: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        position = np.arange(size, dtype=np.float32) * (np.float32(1.0) / np.float32(tile)) - np.float32(0.5)
        first = np.floor(position).astype(np.int64)
        fraction = (position - first.astype(np.float32)).astype(np.float32)
        return (np.maximum(first, 0), np.minimum(first + 1, tiles - 1), np.float32(1.0) - fraction, fraction)

    tx1, tx2, xa1, xa = weights(width, tile_w, tiles_x)
    ty1, ty2, ya1, ya = weights(height, tile_h, tiles_y)
    col1, col2 = (tx1 << 8).astype(np.int32), (tx2 << 8).astype(np.int32)
    out = np.empty((height, width), dtype=np.uint8)
    chunk = max(1, (1 << 18) // max(width, 1))  # rows per block, to keep the temporaries in cache
    for start in range(0, height, chunk):
        stop = min(height, start + chunk)
        values = array[start:stop].astype(np.int32)
        plane1 = (ty1[start:stop] * tiles_x << 8).astype(np.int32)[:, None]
        plane2 = (ty2[start:stop] * tiles_x << 8).astype(np.int32)[:, None]
        left, right = values + col1, values + col2
        top = np.take(flat, plane1 + left) * xa1 + np.take(flat, plane1 + right) * xa
        bottom = np.take(flat, plane2 + left) * xa1 + np.take(flat, plane2 + right) * xa
        blended = top * ya1[start:stop, None] + bottom * ya[start:stop, None]
        np.clip(np.rint(blended), 0, 255, out=blended)
        out[start:stop] = blended
    return out
