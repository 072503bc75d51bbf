"""RoI pooling: a fixed ``P x P`` grid of features for every region of interest.

Shape letters: B images, H x W feature cells, C channels, R RoIs per image, P pool size.

Frames: RoIs are ``[ymin, xmin, ymax, xmax]`` in continuous input-image pixels (the project's box
format). ``spatial_scale`` (1 / feature stride) takes them to the feature map, where feature cell
``(i, j)`` covers input pixels ``[i, i + 1) / spatial_scale`` by ``[j, j + 1) / spatial_scale``.

``RoIPooling(mode="max")`` is Fast R-CNN's RoI max pooling with Caffe's arithmetic, bit for bit.
Caffe takes inclusive-pixel boxes ``(x1, y1, x2, y2)``, ``x2`` the last pixel inside: the layer
converts there, at its input, a continuous ``[ymin, xmin, ymax, xmax]`` being the inclusive
``(xmin, ymin, xmax - 1, ymax - 1)``. Then per RoI, ``start = round(x1 * spatial_scale)`` and
``end = round(x2 * spatial_scale)`` (halves away from zero),
``roi_len = max(end - start + 1, 1)`` cells, ``bin_len = roi_len / P`` in float32, and bin ``j``
covers cells ``[floor(j * bin_len), ceil((j + 1) * bin_len)) + start``, clamped to the map. A bin
left empty by the clamping outputs 0; otherwise the maximum, whose gradient goes to one cell only.

``RoIPooling(mode="align")`` is RoIAlign (Detectron2's ``ROIAlignV2`` / torchvision's
``roi_align(aligned=True, sampling_ratio=2)``): the mean of 2 x 2 bilinear samples per bin, with
no rounding anywhere. The samples come from ``tf.image.crop_and_resize``; traced for the
converters (``preprocessing.for_converters``), from gathers (LiteRT has no CropAndResize). Their
gradient to the features is the layer's own (``_splat_bins``: dense matrix products on small
maps, a sparse one on large maps): TensorFlow's CPU kernel for it loses updates where RoIs overlap
(see ``_align_bins``). Given each image's size (``image_info``), RoIAlign samples every image of
a padded batch as its valid region alone: its last valid row and column, not the batch's padding,
are what a sample past them reads (``_align_source``).

The RoI boxes get no gradient (Faster R-CNN's approximate joint training treats proposals as
constants), so they are wrapped in ``tf.stop_gradient``.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_frcnn.preprocessing import check_rounding, converting, valid_feature_sizes

# Scaled RoI coordinates are clipped to +-2**22 cells: keeps the int32 arithmetic defined for absurd
# boxes, and keeps RoIs short enough for the exact float32 division argument in ``caffe_bin_edges``.
_CELL_LIMIT = 2.0**22
# RoI lengths (in feature cells) the converters' bin table covers: a 65536 px side at stride 16.
_BIN_TABLE_SIZE = 4097
# The name scope of the layers' own gradients (TensorFlow hoists a tf.cond inside a custom gradient
# out of the layer's scope; a profile finds RoI pooling's backward ops by this name).
GRADIENT_SCOPE = "roi_pooling_gradient"


def round_half_away_from_zero(x):
    """C's ``round`` (halves away from zero), exactly, on a float tensor.

    ``sign(x) * floor(|x| + 0.5)`` is not exact: the addition itself rounds, so 0.49999997 + 0.5
    becomes 1.0 in float32. ``|x| - floor(|x|)`` is exact.
    """
    magnitude = tf.abs(x)
    whole = tf.floor(magnitude)
    return tf.sign(x) * (whole + tf.cast(magnitude - whole >= 0.5, x.dtype))


def caffe_bin_edges(roi_start, roi_end, pool_size, size):
    """Fast R-CNN's ``pool_size`` bins along one axis of the feature map.

    Args:
      roi_start, roi_end: int32 ``[...]``, the RoI's rounded first and last cell (inclusive).
      pool_size: P, a Python int.
      size: int32 scalar, cells along this axis (H or W).
    Returns:
      ``(lo, hi)``, int32 ``[..., P]``: bin ``j`` covers cells ``[lo, hi)``, both clamped to
      ``[0, size]``; the bin is empty when ``hi <= lo``.
    """
    roi_len = tf.maximum(roi_end - roi_start + 1, 1)
    # Caffe's bin_len = roi_len / P is a float32 division. Grappler's constant folding and XLA's
    # algebraic simplifier both turn a division by a constant into a multiplication by 1/P,
    # which in float32 moves the last bin's end one cell out for ~40% of RoI lengths (P = 7).
    # Dividing in float64 and rounding to float32 gives the correctly rounded float32 quotient
    # with or without that rewrite: the float64 result is within ~2**-52 (relative) of roi_len / P,
    # which for roi_len < 2**24 is never that close to a float32 rounding boundary, and double
    # rounding via float64 (more than 2 * 24 + 2 bits) is harmless. The tests check every
    # roi_len up to 4096 in eager, graph and XLA modes.
    if converting():
        # No float64 for the converters: the same correctly rounded quotients, from a table.
        table = (np.arange(_BIN_TABLE_SIZE, dtype=np.float64) / pool_size).astype(np.float32)
        bin_len = tf.gather(tf.constant(table), tf.minimum(roi_len, _BIN_TABLE_SIZE - 1))[..., None]
    else:
        bin_len = tf.cast(tf.cast(roi_len, tf.float64) / float(pool_size), tf.float32)[..., None]
    j = tf.range(pool_size, dtype=tf.float32)
    start = roi_start[..., None]
    lo = tf.cast(tf.floor(j * bin_len), tf.int32) + start
    hi = tf.cast(tf.math.ceil((j + 1.0) * bin_len), tf.int32) + start
    return tf.clip_by_value(lo, 0, size), tf.clip_by_value(hi, 0, size)


def _num_levels(static_size, max_levels):
    """Static number of table levels along an axis: a bin is at most the whole axis long, so
    ``size.bit_length()`` levels cover every bin when the size is known while tracing."""
    if static_size is None:
        return max_levels
    return max(1, min(max_levels, int(static_size).bit_length()))


def range_max_tables(features, levels_y, levels_x, with_positions=True):
    """2D sparse tables of range maxima and of where they are: ``[B, H, W, C]`` ->
    ``(values, positions)``, both ``[B, levels_y, levels_x, H, W, C]``.

    ``values[b, k, l, y, x]`` is the max of ``features[b]`` over rows ``[y, y + 2**k)`` and
    columns ``[x, x + 2**l)``, cut at the map's edge; ``positions`` holds the flat cell
    ``row * W + column`` of that max (int32). Level ``l`` is the max of level ``l - 1`` and
    level ``l - 1`` shifted by ``2**(l - 1)`` columns (the shift is clamped to the last column,
    which stays inside the range), then the same along rows. A tie keeps the unshifted block's
    cell, the one nearer the origin: each entry's position is the first maximal cell of its block
    in row-major order.
    """
    shape = tf.shape(features)
    height, width = shape[1], shape[2]
    values = features
    positions = None
    if with_positions:
        positions = tf.broadcast_to(
            tf.reshape(tf.range(height * width, dtype=tf.int32), [1, height, width, 1]), shape)

    def fold(values, positions, axis, length, levels):
        """Levels along ``axis`` (1: rows, 2: columns of a [B, H, W, C] level)."""
        all_values, all_positions = [values], [positions]
        for level in range(1, levels):
            shifted = tf.minimum(tf.range(length) + 2 ** (level - 1), length - 1)
            other = tf.gather(values, shifted, axis=axis)
            if positions is None:
                values = tf.maximum(values, other)
            else:
                take = other > values
                values = tf.where(take, other, values)
                positions = tf.where(take, tf.gather(positions, shifted, axis=axis), positions)
            all_values.append(values)
            all_positions.append(positions)
        if positions is None:
            return tf.stack(all_values, axis=1), None
        return tf.stack(all_values, axis=1), tf.stack(all_positions, axis=1)

    values, positions = fold(values, positions, 2, width, levels_x)  # [B, Lx, H, W, C]
    return fold(values, positions, 2, height, levels_y)  # rows, axis 2 of that: [B, Ly, Lx, H, W, C]
def _block_corners(lo, hi, num_levels):
    """Two table blocks of length ``2**level`` that together cover each bin ``[lo, hi)``.

    Args: lo, hi: int32 ``[...]`` clamped bin edges; num_levels: table levels along this axis.
    Returns: ``(level, first, last, non_empty)``: the table level ``floor(log2(hi - lo))``, capped
    at ``num_levels - 1``; the start cells of the blocks at ``lo`` and ending at ``hi`` (0 for
    empty bins, so every index is valid); whether the bin has any cell.
    """
    length = hi - lo
    non_empty = length > 0
    # floor(log2(length)) in integers: the float log2 of a power of two may land just below it.
    level = tf.zeros_like(length)
    for j in range(1, num_levels):
        level += tf.cast(length >= 2**j, tf.int32)
    first = tf.where(non_empty, lo, 0)
    block = tf.gather(tf.constant([2**j for j in range(num_levels)], tf.int32), level)  # 2**level
    last = tf.where(non_empty, hi - block, 0)
    return level, first, last, non_empty


def roi_max_pool(features, rois, pool_size, spatial_scale, max_levels, feature_gradient=True):
    """Fast R-CNN RoI max pooling (see the module docstring) by range-maximum queries.

    Args:
      features: ``[B, H, W, C]`` float.
      rois: ``[B, R, 4]`` float32 ``[ymin, xmin, ymax, xmax]`` input-image pixels.
      feature_gradient: False where no gradient will flow to ``features`` (inference, a frozen
        base): the tables then hold only the maxima, not where they are.
    Returns:
      ``[B, R, P, P, C]``, the dtype of ``features``.

    Every bin is answered with four lookups in ``range_max_tables``: with ``n`` rows and ``m``
    columns, ``k = floor(log2 n)`` and ``l = floor(log2 m)``, the ``2**k x 2**l`` blocks at the
    bin's four corners cover it exactly. Cost: building the tables, then ``4 * B * R * P * P``
    gathered rows of C values, whatever the bin sizes.

    The gradient of each output goes to one maximal cell of its bin (a custom gradient: the
    tables also hold where each maximum is, so the backward pass is one scatter-add): Caffe's
    argmax (the first in row-major order) unless the maximum is tied between cells of different
    corner blocks.
    """
    shape = tf.shape(features)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = features.shape[-1] if features.shape[-1] is not None else shape[3]
    levels_y = _num_levels(features.shape[1], max_levels)
    levels_x = _num_levels(features.shape[2], max_levels)

    # Caffe rounds the RoI's first and *last* pixel (inclusive boxes: x2 = x1 + w - 1); a
    # continuous box [x1, x2) has its last pixel at x2 - 1.
    last_pixel = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32)
    cells = round_half_away_from_zero((rois - last_pixel) * tf.constant(spatial_scale, tf.float32))
    cells = tf.cast(tf.clip_by_value(cells, -_CELL_LIMIT, _CELL_LIMIT), tf.int32)
    row_lo, row_hi = caffe_bin_edges(cells[..., 0], cells[..., 2], pool_size, height)  # [B, R, P]
    col_lo, col_hi = caffe_bin_edges(cells[..., 1], cells[..., 3], pool_size, width)
    k, top, bottom, rows_non_empty = _block_corners(row_lo, row_hi, levels_y)
    l, left, right, cols_non_empty = _block_corners(col_lo, col_hi, levels_x)

    # Flat row index into the tables reshaped to [B * levels_y * levels_x * H * W, C], split into
    # a part from the bin's row (image, k, y) and one from its column (l, x).
    image = tf.range(batch)[:, None, None]
    map_size = height * width
    row_base = (image * levels_y + k) * levels_x * map_size
    top_index = (row_base + top * width)[..., :, None]  # [B, R, P, 1]
    bottom_index = (row_base + bottom * width)[..., :, None]
    left_index = (l * map_size + left)[..., None, :]  # [B, R, 1, P]
    right_index = (l * map_size + right)[..., None, :]

    non_empty = (rows_non_empty[..., :, None] & cols_non_empty[..., None, :])[..., None]  # [B, R, P, P, 1]
    corners = (top_index + left_index, top_index + right_index, bottom_index + left_index,
               bottom_index + right_index)

    if not feature_gradient:
        values, _ = range_max_tables(features, levels_y, levels_x, with_positions=False)
        values = tf.reshape(values, [-1, channels])
        pooled = tf.gather(values, corners[0])
        for corner in corners[1:]:
            pooled = tf.maximum(pooled, tf.gather(values, corner))
        return tf.stop_gradient(tf.where(non_empty, pooled, tf.zeros([], pooled.dtype)))

    @tf.custom_gradient
    def pool(features):
        values, positions = range_max_tables(features, levels_y, levels_x)
        values, positions = tf.reshape(values, [-1, channels]), tf.reshape(positions, [-1, channels])
        pooled, cell = tf.gather(values, corners[0]), tf.gather(positions, corners[0])
        # The four corner blocks in turn; a tie keeps the earlier block's cell (they often overlap).
        for corner in corners[1:]:
            other = tf.gather(values, corner)
            take = other > pooled
            pooled = tf.where(take, other, pooled)
            cell = tf.where(take, tf.gather(positions, corner), cell)
        pooled = tf.where(non_empty, pooled, tf.zeros([], pooled.dtype))

        def gradient(upstream):
            # Each output's gradient to its bin's maximal cell: one scatter-add into the map.
            with tf.name_scope(GRADIENT_SCOPE):
                upstream = tf.where(non_empty, upstream, tf.zeros([], upstream.dtype))
                image = tf.range(batch)[:, None, None, None, None]
                channel = tf.range(channels)
                ids = (image * map_size + cell) * channels + channel
                summed = tf.math.unsorted_segment_sum(tf.reshape(upstream, [-1]), tf.reshape(ids, [-1]),
                                                      batch * map_size * channels)
                return tf.reshape(summed, tf.shape(features))

        return pooled, gradient

    return pool(features)


def roi_align(features, rois, pool_size, spatial_scale, valid=None):
    """RoIAlign with 2 x 2 bilinear samples per bin, averaged.

    Args:
      features: ``[B, H, W, C]`` float.
      rois: ``[B, R, 4]`` float32 ``[ymin, xmin, ymax, xmax]`` input-image pixels.
      valid: optional ``[B, 2]`` int32, each image's valid rows and columns of a padded batch
        (``valid_cells``): each image is then sampled as its valid region alone.
    Returns:
      ``[B, R, P, P, C]``, the dtype of ``features``.

    Continuous feature coordinates put cell ``i``'s centre at ``i``: ``u = x * spatial_scale -
    0.5``. A RoI spanning ``[u1, u2)`` gets ``2P`` samples per axis at ``u1 + (i + 0.5) * (u2 - u1)
    / 2P``, i.e. the centres of a 2P x 2P grid; ``tf.image.crop_and_resize`` places its ``2P``
    samples evenly from the box's first to last normalised coordinate times ``(size - 1)``, so
    the box handed to it spans the first to the last sample.
    """
    shape = tf.shape(features)
    batch, num_rois = shape[0], tf.shape(rois)[1]
    channels = features.shape[-1] if features.shape[-1] is not None else shape[3]
    padded = _align_source(features, valid)
    box_indices = tf.repeat(tf.range(batch), num_rois)
    limits = None if valid is None else _sample_limits(valid, box_indices)
    if converting():
        pooled = _mean_of_samples(_bilinear_samples(padded, rois, spatial_scale, 2 * pool_size, limits))
    else:
        pooled = _align_bins(padded, tf.reshape(rois, [-1, 4]), box_indices, spatial_scale, pool_size, limits,
                             per_image=num_rois)
    pooled = tf.reshape(pooled, [batch, num_rois, pool_size, pool_size, channels])
    return tf.cast(pooled, features.dtype)


def valid_cells(image_info, stride, rounding, features):
    """``[B, 2]`` int32: each image's valid feature rows and columns at ``stride``, as the base's
    ``PaddingMask`` (``preprocessing.valid_feature_sizes``), at most the map's."""
    sizes = valid_feature_sizes(image_info, stride, rounding)
    return tf.minimum(tf.cast(sizes, tf.int32), tf.shape(features)[1:3])


def _align_source(features, valid=None):
    """The map RoIAlign samples: float32 for bfloat16 features (crop_and_resize has no bfloat16
    kernel; it computes in float32 whatever it is given), with one replicated cell around it:
    RoIAlign reads a sample up to one cell outside the map as the edge cell and returns 0 further
    out, while crop_and_resize returns 0 (its extrapolation value) anywhere outside
    [0, size - 1]; with the padding the two agree. It also keeps size - 1 >= 2 for a map one cell
    high or wide.

    ``valid`` ``[B, 2]`` (``valid_cells``): in a padded batch the cell after an image's valid
    region is the base's zero padding, not its edge; for crop_and_resize each image's last valid
    row, then column, is copied there (``_replicate_valid_edges``), so that an image reads as its
    valid region alone (samples beyond that cell are zeroed by the per-RoI limits of
    ``_sample_limits``). Skipped where every image fills the map, and for the converters, whose
    gathers clamp each RoI's samples to its image's last valid cell instead (``_sample_grid``)."""
    source = tf.cast(features, tf.float32) if features.dtype == tf.bfloat16 else features
    padded = tf.pad(source, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    if valid is None or converting():
        return padded
    return tf.cond(tf.reduce_any(valid < tf.shape(source)[1:3]), lambda: _replicate_valid_edges(padded, valid),
                   lambda: padded)


def _replicate_valid_edges(padded, valid):
    """``padded [B, H + 2, W + 2, C]`` with row ``valid[b, 0] + 1`` of each image ``b`` (padded
    coordinates: the one after its last valid row) a copy of its last valid row, then column
    ``valid[b, 1] + 1`` a copy of its last valid column: scatters of one row and one column an
    image, as is the gradient (each copy's gradient moved back to the cell copied, columns first;
    autodiff's gradient of the copies is a dense map-sized one: RoIAlign took 1.53x against 1.35x
    its time without the copies on an FPN P2 level, BENCHMARKS.md)."""
    shape = tf.shape(padded)
    images = tf.range(shape[0])
    rows = tf.broadcast_to(tf.range(shape[1])[None, :], shape[:2])

    def row_cells(index):  # [B, 2]: (image, row index[b])
        return tf.stack([images, index], 1)

    def column_cells(index):  # [B, H + 2, 3]: (image, every row, column index[b])
        return tf.stack([tf.broadcast_to(images[:, None], shape[:2]), rows,
                         tf.broadcast_to(index[:, None], shape[:2])], -1)

    def copy(x, cells_from, cells_to):
        return tf.tensor_scatter_nd_update(x, cells_to, tf.gather_nd(x, cells_from))

    def move(x, cells_from, cells_to):
        moved = tf.gather_nd(x, cells_from)
        x = tf.tensor_scatter_nd_update(x, cells_from, tf.zeros_like(moved))
        return tf.tensor_scatter_nd_add(x, cells_to, moved)

    last_row, after_row = row_cells(valid[:, 0]), row_cells(valid[:, 0] + 1)
    last_column, after_column = column_cells(valid[:, 1]), column_cells(valid[:, 1] + 1)

    @tf.custom_gradient
    def replicate(padded):
        def gradient(upstream):
            with tf.name_scope(GRADIENT_SCOPE):
                return move(move(upstream, after_column, last_column), after_row, last_row)

        return copy(copy(padded, last_row, after_row), last_column, after_column), gradient

    return replicate(padded)


def _sample_limits(valid, box_indices):
    """``[N, 2]`` float32: the last padded-map coordinate (rows, columns) a sample of each RoI may
    read, one past its image's valid region (``_align_source``); RoIAlign reads 0 beyond it. An
    image with no valid cell along an axis (a side under the stride with floor rounding) reads 0
    everywhere: -1."""
    valid = tf.gather(valid, box_indices)
    return tf.cast(tf.where(valid > 0, valid + 1, -1), tf.float32)


def _align_bins(padded, rois, box_indices, spatial_scale, pool_size, limits=None, per_image=None):
    """RoIAlign's bins: ``padded`` (``_align_source``), ``rois [N, 4]`` pixels of image
    ``box_indices [N]`` -> ``[N, P, P, C]``, the mean of each bin's 2 x 2 samples
    (``crop_and_resize`` at the centres of a 2P x 2P grid over each RoI). ``limits [N, 2]``
    (``_sample_limits``): samples past them read 0. ``per_image``: given when the RoIs come in
    one block of this many per image, in image order (``box_indices`` is ``repeat(range(B),
    per_image)``), as from ``roi_align``; the dense gradient then works on each image's block.

    The gradient to ``padded`` is ours (``_splat_bins``), not ``CropAndResizeGradImage``'s:
    TensorFlow's CPU kernel adds the boxes' gradients into the map from several threads without
    synchronisation, so overlapping RoIs lose part of their gradient now and then (and the result
    changes from run to run); on GPUs it adds with atomics (correct, in no fixed order)."""

    @tf.custom_gradient
    def bins(padded):
        def gradient(upstream):
            with tf.name_scope(GRADIENT_SCOPE):
                return _splat_bins(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits,
                                   per_image)

        samples = _crop_samples(padded, rois, box_indices, spatial_scale, 2 * pool_size, limits)
        return _mean_of_samples(samples), gradient

    return bins(padded)


def _sample_grid(rois, axis, spatial_scale, samples, size, limits=None):
    """Axis ``axis`` (0: rows, 1: columns) of the S x S sample grid over ``rois`` (``[..., 4]``
    pixels, flattened to ``[N]`` RoIs) on a padded map of ``size`` cells along it
    (``_align_source``): the two cells each sample interpolates, ``low`` and ``high`` ``[N, S]``
    int32, the weight of ``high`` (``lerp``) and whether the sample is on the map (``inside``:
    crop_and_resize reads 0 elsewhere). With ``limits`` (``[N, 2]``, ``_sample_limits``), a
    sample past its RoI's limit is not inside and the cells are clamped to the one before it, its
    image's last valid cell (which ``_align_source`` also copies to the limit for
    crop_and_resize)."""
    lo = tf.reshape(rois[..., axis], [-1, 1]) * spatial_scale + 0.5  # - 0.5 to cell centres, + 1 for the padding
    hi = tf.reshape(rois[..., axis + 2], [-1, 1]) * spatial_scale + 0.5
    at = lo + (hi - lo) * ((tf.range(samples, dtype=tf.float32) + 0.5) / samples)[None, :]
    if limits is None:
        inside = (at >= 0.0) & (at <= tf.cast(size - 1, tf.float32))
        last_cell = size - 1
    else:
        limit = limits[:, axis:axis + 1]
        inside = (at >= 0.0) & (at <= tf.minimum(limit, tf.cast(size - 1, tf.float32)))
        last_cell = tf.maximum(tf.minimum(tf.cast(limit, tf.int32) - 1, size - 1), 0)
    low = tf.floor(at)
    lerp = at - low
    low = tf.clip_by_value(tf.cast(low, tf.int32), 0, last_cell)
    return low, tf.minimum(low + 1, last_cell), lerp, inside


def _splat_bins(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits=None, per_image=None):
    """The gradient of ``_align_bins`` to ``padded``: a bin's upstream gradient, a quarter to
    each of its four samples, spread over the four cells each sample interpolates with their
    bilinear weights. Two ways, the same sums up to rounding, each the same bits every run: on
    small maps (the shapes preset's; ``_splat_is_dense``) two dense matrix products
    (``_splat_dense``; ``per_image``: ``_align_bins``'), else a sparse matrix product
    (``_splat_sparse``), whose cost does not grow with the map."""
    dense = _splat_is_dense(tf.shape(padded), tf.shape(rois)[0], pool_size, tf.shape(upstream)[-1],
                            blocked=per_image is not None)
    return tf.cond(dense,
                   lambda: _splat_dense(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits,
                                        per_image),
                   lambda: _splat_sparse(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits))


# Per row of bins and channel, ``_splat_dense`` does ~2 W (P + H) multiply-adds (2 W (P + B H)
# without blocks of RoIs per image) and the sparse product 16 P entries, an entry taking tens of
# multiply-adds' time on CPUs (both routes' times: BENCHMARKS.md): dense while W (P + H) (or
# W (P + B H)) <= _DENSE_RATIO * P and its [N, P, W, C] intermediate holds at most _DENSE_FLOATS
# floats (128 MB).
_DENSE_RATIO = 1024
_DENSE_FLOATS = 2**25


def _splat_is_dense(padded_shape, num_rois, pool_size, channels, blocked=False):
    """Whether ``_splat_bins`` takes ``_splat_dense`` (a bool tensor); ``blocked``: with the RoIs
    in one block per image (``per_image``)."""
    batch, height, width = (tf.cast(padded_shape[k], tf.int64) for k in range(3))
    floats = tf.cast(num_rois, tf.int64) * pool_size * width * tf.cast(channels, tf.int64)
    rows = height if blocked else batch * height
    return (width * (pool_size + rows) <= _DENSE_RATIO * pool_size) & (floats <= _DENSE_FLOATS)


def _splat_dense(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits=None, per_image=None):
    """``_splat_bins`` on small maps: per RoI, each bin's weight on every column ``Wx [N, P, W]``
    and every row ``Wy [N, P, H]`` of the map (half of each of its two samples' bilinear weights
    along that axis); then ``T[n, i, x] = sum_j Wx[n, j, x] g[n, i, j]`` (a batched product) and
    the map's rows of image ``b``, ``sum over n of b, i of Wy[n, i, y] T[n, i, x]``. With the
    RoIs in blocks of ``per_image``, that is a product of ``[H, per_image * P]`` by
    ``[per_image * P, W * C]`` per image (batched); else one product of ``[B * H, N * P]`` (each
    RoI's rows in its image's block, zeros elsewhere) by ``[N * P, W * C]``, whose work grows
    with the square of the batch."""
    shape = tf.shape(padded)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]

    def axis(k, size):
        low, high, lerp, inside = _sample_grid(rois, k, spatial_scale, 2 * pool_size, size, limits)
        inside = tf.cast(inside, tf.float32)
        weights = (tf.one_hot(low, size) * ((1.0 - lerp) * inside)[..., None]
                   + tf.one_hot(high, size) * (lerp * inside)[..., None])  # [N, 2P, size]
        return 0.5 * tf.reduce_sum(tf.reshape(weights, [-1, pool_size, 2, size]), 2)

    row_weights = axis(0, height)  # [N, P, H]
    column_weights = axis(1, width)  # [N, P, W]
    columns = tf.matmul(column_weights[:, None], tf.cast(upstream, tf.float32), transpose_a=True)  # [N, P, W, C]
    if per_image is not None:
        block = per_image * pool_size
        summed = tf.matmul(tf.reshape(row_weights, [batch, block, height]),
                           tf.reshape(columns, [batch, block, width * channels]), transpose_a=True)  # [B, H, W C]
    else:
        rows = tf.one_hot(box_indices, batch)[:, None, :, None] * row_weights[:, :, None, :]  # [N, P, B, H]
        summed = tf.matmul(tf.reshape(rows, [-1, batch * height]), tf.reshape(columns, [-1, width * channels]),
                           transpose_a=True)
    return tf.cast(tf.reshape(summed, shape), padded.dtype)


def _splat_sparse(upstream, padded, rois, box_indices, spatial_scale, pool_size, limits=None):
    """``_splat_bins`` on large maps: a sparse ``[map cells, bins]`` matrix of the bilinear weights,
    16 entries a bin, times the bins' gradient ``[bins, C]``: ``tf.sparse.sparse_dense_matmul``,
    which on the CPU runs through the entries in order on one thread (the same sums every run; its
    GPU kernel adds with atomics) without forming the weighted samples; the channels are split over
    the cores (``_channel_parts``). Segment sums of the weighted samples (the version before) wrote
    16 products a bin and channel to memory, and their four partial maps were added by ``AddN``,
    whose order changes from run to run on large maps."""
    shape = tf.shape(padded)
    height, width = shape[1], shape[2]
    channels = padded.shape[-1]
    num_bins = tf.shape(rois)[0] * pool_size * pool_size

    def axis(k, size):
        # Per bin along axis k, [N, P, 4]: its two samples' two cells each, and their weights.
        low, high, lerp, inside = _sample_grid(rois, k, spatial_scale, 2 * pool_size, size, limits)
        inside = tf.cast(inside, tf.float32)
        cells = tf.reshape(tf.stack([low, high], -1), [-1, pool_size, 4])
        weights = tf.reshape(tf.stack([(1.0 - lerp) * inside, lerp * inside], -1), [-1, pool_size, 4])
        return cells, weights

    y_cells, y_weights = axis(0, height)
    x_cells, x_weights = axis(1, width)
    image = tf.reshape(box_indices * (height * width), [-1, 1, 1, 1, 1])
    cells = image + y_cells[:, :, None, :, None] * width + x_cells[:, None, :, None, :]  # [N, P, P, 4, 4]
    weights = 0.25 * y_weights[:, :, None, :, None] * x_weights[:, None, :, None, :]
    bins = tf.broadcast_to(tf.reshape(tf.range(num_bins), [-1, pool_size, pool_size, 1, 1]), tf.shape(cells))
    indices = tf.stack([tf.reshape(cells, [-1]), tf.reshape(bins, [-1])], 1)
    matrix = tf.sparse.SparseTensor(tf.cast(indices, tf.int64), tf.reshape(weights, [-1]),
                                    tf.cast(tf.stack([shape[0] * height * width, num_bins]), tf.int64))
    # (Not [num_bins, -1]: with no bins, as on a pyramid level no RoI is assigned to, -1 is not C.)
    upstream = tf.reshape(tf.cast(upstream, tf.float32), [num_bins, tf.shape(upstream)[-1]])
    parts = 1 if channels is None else _channel_parts(channels)
    summed = tf.concat([tf.sparse.sparse_dense_matmul(matrix, part) for part in tf.split(upstream, parts, axis=1)], 1)
    return tf.cast(tf.reshape(summed, shape), padded.dtype)


def _channel_parts(channels):
    """How many ``sparse_dense_matmul`` calls ``_splat_bins`` splits ``channels`` over: one per
    core the process may run on (TensorFlow's CPU kernel uses one thread; the calls run side by
    side), at least 32 channels each (TensorFlow's kernel takes a plain loop below 32 columns),
    and a divisor of ``channels``. Each channel's sums are the same whatever the split."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parts = max(1, min(cores, channels // 32))
    while channels % parts:
        parts -= 1
    return parts


def _crop_samples(padded, rois, box_indices, spatial_scale, samples, limits=None):
    """``crop_and_resize``: ``padded`` (``_align_source``), ``rois [N, 4]`` pixels of image
    ``box_indices [N]`` -> ``[N, S, S, C]`` samples at the centres of an S x S grid over each
    (no gradient of its own is used: ``_align_bins``). Samples past ``limits`` (``[N, 2]``) are
    zeroed, where any RoI has one (a RoI inside its image reaches past its limit only with floor
    rounding: MobileNetV3's)."""
    shape = tf.shape(padded)

    def normalised_samples(lo, hi, padded_size):
        lo = lo * spatial_scale + 0.5  # - 0.5 to cell-centre coordinates, + 1 for the padding
        hi = hi * spatial_scale + 0.5
        step = (hi - lo) / samples
        last_index = tf.cast(padded_size - 1, tf.float32)
        return (lo + 0.5 * step) / last_index, (hi - 0.5 * step) / last_index

    y1, y2 = normalised_samples(rois[:, 0], rois[:, 2], shape[1])
    x1, x2 = normalised_samples(rois[:, 1], rois[:, 3], shape[2])
    crops = tf.image.crop_and_resize(padded, tf.stack([y1, x1, y2, x2], axis=-1), box_indices, [samples, samples])
    if limits is None:
        return crops
    _, _, _, y_inside = _sample_grid(rois, 0, spatial_scale, samples, shape[1], limits)
    _, _, _, x_inside = _sample_grid(rois, 1, spatial_scale, samples, shape[2], limits)
    inside = y_inside[:, :, None] & x_inside[:, None, :]  # [N, S, S]
    return tf.cond(tf.reduce_all(inside), lambda: crops,
                   lambda: crops * tf.cast(inside, crops.dtype)[..., None])


def _mean_of_samples(crops):
    """``[N, 2P, 2P, C]`` samples -> ``[N, P, P, C]``, the mean of each bin's 2 x 2. avg_pool2d
    rather than reduce_mean over a 7-D reshape: 15x faster on CPU (benchmarks)."""
    return tf.nn.avg_pool2d(crops, ksize=2, strides=2, padding="VALID")


def _bilinear_samples(padded, rois, spatial_scale, samples, limits=None):
    """``crop_and_resize``'s samples by gathers, for the converters (LiteRT has no CropAndResize):
    ``padded [B, H + 2, W + 2, C]`` (``roi_align``'s padded map), ``rois [B, R, 4]`` pixels ->
    ``[B * R, S, S, C]``, the bilinear values at the centres of an S x S grid over each RoI, 0
    outside the map (or past ``limits [B * R, 2]``), with crop_and_resize's arithmetic order
    (equal up to float rounding)."""
    shape = tf.shape(padded)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = padded.shape[-1] if padded.shape[-1] is not None else shape[3]
    num_rois = tf.shape(rois)[1]
    y_low, y_high, y_lerp, y_in = _sample_grid(rois, 0, spatial_scale, samples, height, limits)
    x_low, x_high, x_lerp, x_in = _sample_grid(rois, 1, spatial_scale, samples, width, limits)
    image = tf.repeat(tf.range(batch), num_rois)[:, None, None] * (height * width)  # [B * R, 1, 1]
    flat = tf.reshape(padded, [-1, channels])

    def gather(ys, xs):
        return tf.gather(flat, image + tf.expand_dims(ys, 2) * width + tf.expand_dims(xs, 1))

    top_left, top_right = gather(y_low, x_low), gather(y_low, x_high)
    bottom_left, bottom_right = gather(y_high, x_low), gather(y_high, x_high)
    x_lerp = tf.reshape(x_lerp, [-1, 1, samples, 1])
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    values = top + (bottom - top) * tf.reshape(y_lerp, [-1, samples, 1, 1])
    inside = tf.expand_dims(y_in, 2) & tf.expand_dims(x_in, 1)  # [B * R, S, S]
    return values * tf.cast(tf.expand_dims(inside, 3), values.dtype)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class RoIPooling(keras.layers.Layer):
    """``[features, rois]`` or ``[features, rois, image_info]`` -> ``roi_features``: a ``P x P``
    grid of features per RoI.

    Inputs:
      features: ``[B, H, W, C]`` float, H and W may be dynamic.
      rois: ``[B, R, 4]`` ``[ymin, xmin, ymax, xmax]`` input-image pixels, continuous
        coordinates; no gradient flows to them.
      image_info: optional ``[B, 3]`` (valid h, w, scale) of a padded batch: ``"align"`` mode
        then samples each image as its valid region alone (its valid feature size ``rounding``
        of h, w times ``spatial_scale``, as the base's ``PaddingMask``): without it, samples past
        an image's last valid cell read the padding's zeros, not the edge. ``"max"`` mode takes
        no account of it (a bin reaching the padding takes the maximum with its zeros).
    Output:
      ``[B, R, P, P, C]`` with ``P = pool_size``, in the layer's compute dtype.

    Args:
      pool_size: P (7 for VGG-16, 6 for ZF).
      spatial_scale: feature cells per input pixel (1/16 for VGG-16 and ZF).
      mode: ``"max"``, Fast R-CNN's RoI max pooling with Caffe's arithmetic exactly, or
        ``"align"``, RoIAlign with 2 x 2 bilinear samples per bin (see the module docstring).
      rounding: ``"ceil"`` or ``"floor"``, how the base maps an image side to valid feature
        cells (``config.feature_rounding``); used with ``image_info``.
      max_levels: ``"max"`` mode only. Each bin is answered from a sparse table of range maxima
        with ``levels_y x levels_x`` levels, ``min(max_levels, size.bit_length())`` per axis if
        the map's size is known while tracing, else ``max_levels``. Bins up to ``2**levels``
        cells long are pooled exactly; a longer bin would be pooled over its first and last
        ``2**(levels - 1)`` cells only. The default, 6 (bins of 64 cells, RoIs up to ~7000 px
        at stride 16 and P = 7), is far beyond real images. A RoI inside the image gives bins
        of at most ``ceil((S + 2) / P) + 1`` cells on a map side of S cells: 11 for the paper's
        1000 px images at P = 7 (14 at 1333 px), so ``max_levels=4`` is exact there, with
        less than half the table memory and a 1.5-3x faster forward and backward.

    Memory of ``"max"`` mode, independent of R: the tables hold ``levels_y * levels_x * H * W *
    C`` values per image (4 bytes each in float32), and the forward pass peaks at about twice
    that while the levels are stacked. For 300 RoIs on a 38 x 63 x 512 map (600 x 1000 image,
    VGG-16): 6 x 6 levels of 4.9 MB = 177 MB of tables, a peak allocation of 350-380 MB in the
    forward pass and 450-480 MB forward + backward (output: 30 MB); with ``max_levels=4``,
    78 MB, 230-280 MB and 300-330 MB. ``benchmarks/bench_roi_pooling.py`` measures these.

    ``"max"`` mode compiles with XLA. ``"align"`` mode cannot (``CropAndResize`` has no XLA
    kernel), so it sets ``supports_jit = False`` and ``jit_compile="auto"`` models skip XLA.
    """

    def __init__(self, pool_size=7, spatial_scale=1.0 / 16.0, mode="max", max_levels=6, rounding="ceil", **kwargs):
        # Coordinates stay float32 under a mixed-precision policy: features are cast in call().
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in ("max", "align"):
            raise ValueError(f"mode must be 'max' or 'align', got {mode!r}")
        check_rounding(rounding)
        if int(pool_size) < 1 or int(max_levels) < 1:
            raise ValueError(f"pool_size and max_levels must be >= 1: {pool_size}, {max_levels}")
        self.pool_size = int(pool_size)
        self.spatial_scale = float(spatial_scale)
        self.mode = mode
        self.max_levels = int(max_levels)
        self.rounding = rounding
        if mode == "align":
            self.supports_jit = False

    def call(self, inputs, feature_gradient=True):
        """``feature_gradient=False`` where no gradient flows to the features (inference, a
        frozen base): max pooling then skips what only its gradient needs."""
        features, rois, *image_info = inputs
        features = tf.cast(features, self.compute_dtype)
        rois = tf.stop_gradient(tf.cast(rois, tf.float32))
        if self.mode == "max":
            return roi_max_pool(features, rois, self.pool_size, self.spatial_scale, self.max_levels,
                                feature_gradient=feature_gradient)
        valid = (valid_cells(image_info[0], round(1.0 / self.spatial_scale), self.rounding, features)
                 if image_info else None)
        return roi_align(features, rois, self.pool_size, self.spatial_scale, valid)

    def compute_output_shape(self, input_shape):
        features_shape, rois_shape = input_shape[:2]
        batch = features_shape[0] if features_shape[0] is not None else rois_shape[0]
        return (batch, rois_shape[1], self.pool_size, self.pool_size, features_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "spatial_scale": self.spatial_scale,
            "mode": self.mode,
            "max_levels": self.max_levels,
            "rounding": self.rounding,
        }


@keras.saving.register_keras_serializable(package="keras_frcnn")
class PyramidRoIAlign(keras.layers.Layer):
    """``[[P2, ..., P5], rois]`` or ``[[P2, ..., P5], rois, image_info]`` -> ``[B, R, P, P, C]``:
    RoIAlign of each RoI on the pyramid level the FPN paper assigns it (Lin et al. 2017, eq. 1):
    ``k = floor(k0 + log2(sqrt(w h) / 224))`` with k0 = 4, clamped to the levels, as torchvision's
    ``MultiScaleRoIAlign`` (its ``LevelMapper``, eps 1e-6) and Detectron. Each level crops only its
    own RoIs, which are then stitched back in order (``Where``, ``GatherV2``, ``CropAndResize``,
    ``DynamicStitch``: all with GPU kernels); traced for the converters, every level pools every
    RoI and each RoI keeps its level's (fixed shapes). ``strides``: the levels' (4, 8, 16, 32: level k has stride 2**k).
    ``image_info`` and ``rounding``: as ``RoIPooling``'s, each level's valid cells at its stride."""

    def __init__(self, pool_size=7, strides=(4, 8, 16, 32), canonical_size=224.0, canonical_level=4,
                 rounding="ceil", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.rounding = check_rounding(rounding)
        self.pool_size = int(pool_size)
        self.strides = tuple(int(s) for s in strides)
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        self.supports_jit = False  # crop_and_resize, as RoIPooling(mode="align")

    def call(self, inputs, feature_gradient=True):
        features, rois, *image_info = inputs
        rois = tf.stop_gradient(tf.cast(rois, tf.float32))

        def valid(stride, level_features):
            return valid_cells(image_info[0], stride, self.rounding, level_features) if image_info else None

        sides = tf.sqrt(tf.maximum(rois[..., 2] - rois[..., 0], 0.0) * tf.maximum(rois[..., 3] - rois[..., 1], 0.0))
        levels = tf.floor(self.canonical_level + tf.math.log(sides / self.canonical_size + 1e-12) / np.log(2.0)
                          + 1e-6)
        first, last = (float(np.log2(s)) for s in (self.strides[0], self.strides[-1]))
        levels = tf.clip_by_value(levels, first, last)  # [B, R]
        if converting():  # every level pools every RoI, each RoI keeps its level's (no dynamic shapes)
            pooled = None
            for stride, level_features in zip(self.strides, features):
                level = roi_align(tf.cast(level_features, self.compute_dtype), rois, self.pool_size, 1.0 / stride,
                                  valid(stride, level_features))
                here = tf.reshape(tf.equal(levels, float(np.log2(stride))),
                                  tf.concat([tf.shape(levels), [1, 1, 1]], 0))
                pooled = tf.where(here, level, tf.zeros_like(level) if pooled is None else pooled)
            return pooled
        # Each level pools its own RoIs (torchvision's MultiScaleRoIAlign): gathered, cropped,
        # stitched back in order.
        shape = tf.shape(rois)
        flat_rois, flat_levels = tf.reshape(rois, [-1, 4]), tf.reshape(levels, [-1])
        indices, parts = [], []
        for stride, level_features in zip(self.strides, features):
            here = tf.cast(tf.where(tf.equal(flat_levels, float(np.log2(stride))))[:, 0], tf.int32)
            level_valid = valid(stride, level_features)
            images = here // shape[1]
            limits = None if level_valid is None else _sample_limits(level_valid, images)
            bins = _align_bins(_align_source(tf.cast(level_features, self.compute_dtype), level_valid),
                               tf.gather(flat_rois, here), images, 1.0 / stride, self.pool_size, limits)
            indices.append(here)
            parts.append(tf.cast(bins, self.compute_dtype))
        pooled = tf.dynamic_stitch(indices, parts)  # [B * R, P, P, C]
        channels = features[0].shape[-1] or tf.shape(pooled)[-1]
        return tf.reshape(pooled, [shape[0], shape[1], self.pool_size, self.pool_size, channels])

    def compute_output_shape(self, input_shape):
        features_shape, rois_shape = input_shape[:2]
        return (rois_shape[0], rois_shape[1], self.pool_size, self.pool_size, features_shape[0][-1])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": list(self.strides),
                "canonical_size": self.canonical_size, "canonical_level": self.canonical_level,
                "rounding": self.rounding}
