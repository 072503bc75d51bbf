"""RoIPooling: hand-worked golden values, a Caffe reference on random RoIs, gradients, RoIAlign,
serialisation and XLA."""

import decimal

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn import roi_pooling
from keras_frcnn.roi_pooling import RoIPooling, round_half_away_from_zero


# ---------------------------------------------------------------------------------------------
# References (numpy, float32 where Caffe is float32)


def caffe_round(value):
    """C's round() (halves away from zero), exactly, via decimal arithmetic."""
    exact = decimal.Decimal(float(value))
    return int(exact.to_integral_value(rounding=decimal.ROUND_HALF_UP))


def caffe_roi_pool(features, rois, pool_size, spatial_scale):
    """Fast R-CNN's ``ROIPoolingLayer::Forward_cpu`` loop in float32.

    features ``[B, H, W, C]``, rois ``[B, R, 4]`` Caffe's inclusive-pixel boxes in yxyx order
    (``y2``, ``x2`` the last pixel inside; :func:`continuous` gives the layer's boxes) -> (output ``[B, R, P, P, C]``,
    d(sum output)/d(features) ``[B, H, W, C]``: one per non-empty bin at its argmax, the first
    maximal cell in row-major order, as Caffe's strict ``>`` scan).
    """
    batch, height, width, channels = features.shape
    scale = np.float32(spatial_scale)
    p = np.float32(pool_size)
    output = np.zeros((batch, rois.shape[1], pool_size, pool_size, channels), np.float32)
    grad = np.zeros(features.shape, np.float32)
    for b in range(batch):
        for r, (y1, x1, y2, x2) in enumerate(rois[b].astype(np.float32)):
            start_h, start_w = caffe_round(y1 * scale), caffe_round(x1 * scale)
            end_h, end_w = caffe_round(y2 * scale), caffe_round(x2 * scale)
            bin_h = np.float32(max(end_h - start_h + 1, 1)) / p
            bin_w = np.float32(max(end_w - start_w + 1, 1)) / p
            for ph in range(pool_size):
                hstart = min(max(int(np.floor(np.float32(ph) * bin_h)) + start_h, 0), height)
                hend = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + start_h, 0), height)
                for pw in range(pool_size):
                    wstart = min(max(int(np.floor(np.float32(pw) * bin_w)) + start_w, 0), width)
                    wend = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + start_w, 0), width)
                    if hend <= hstart or wend <= wstart:
                        continue
                    window = features[b, hstart:hend, wstart:wend].reshape(-1, channels)
                    best = window.argmax(axis=0)
                    output[b, r, ph, pw] = window[best, np.arange(channels)]
                    ys, xs = np.unravel_index(best, (hend - hstart, wend - wstart))
                    np.add.at(grad[b], (ys + hstart, xs + wstart, np.arange(channels)), 1.0)
    return output, grad


def bilinear_taps(height, width, y, x):
    """torchvision's ``bilinear_interpolate`` (RoIAlign) at (y, x) cell coords of an ``H x W`` map:
    its four ``((row, column), weight)`` taps, none off the map."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return [((y0, x0), (1 - ly) * (1 - lx)), ((y0, x1), (1 - ly) * lx), ((y1, x0), ly * (1 - lx)),
            ((y1, x1), ly * lx)]


def bilinear(feature_map, y, x):
    """``[H, W, C]`` at (y, x) cell coords, as torchvision's RoIAlign samples it."""
    return sum((weight * feature_map[cell] for cell, weight in bilinear_taps(*feature_map.shape[:2], y, x)),
               np.zeros(feature_map.shape[-1]))


def align_samples(roi, pool_size, spatial_scale):
    """torchvision ``roi_align(aligned=True, sampling_ratio=2)``'s sample points of one yxyx RoI:
    ``(i, j, y, x)``, four per bin (i, j), in cell coordinates."""
    y1, x1, y2, x2 = np.asarray(roi, np.float64) * spatial_scale - 0.5
    bin_h, bin_w = (y2 - y1) / pool_size, (x2 - x1) / pool_size
    for i in range(pool_size):
        for j in range(pool_size):
            for sy in (0.25, 0.75):
                for sx in (0.25, 0.75):
                    yield i, j, y1 + (i + sy) * bin_h, x1 + (j + sx) * bin_w


def roi_align_reference(features, rois, pool_size, spatial_scale):
    """torchvision ``roi_align(aligned=True, sampling_ratio=2)`` in float64, yxyx rois."""
    batch, _, _, channels = features.shape
    output = np.zeros((batch, rois.shape[1], pool_size, pool_size, channels))
    for b in range(batch):
        for r, roi in enumerate(rois[b]):
            for i, j, y, x in align_samples(roi, pool_size, spatial_scale):
                output[b, r, i, j] += bilinear(features[b], y, x) / 4.0
    return output


def roi_align_gradient_reference(feature_shape, rois, upstream, pool_size, spatial_scale):
    """The gradient of ``sum(roi_align_reference(features, ...) * upstream)`` to the features,
    float64: each sample's share of its bin's upstream gradient spread over its four taps."""
    grad = np.zeros(feature_shape)
    for b in range(feature_shape[0]):
        for r, roi in enumerate(rois[b]):
            for i, j, y, x in align_samples(roi, pool_size, spatial_scale):
                for cell, weight in bilinear_taps(*feature_shape[1:3], y, x):
                    grad[(b, *cell)] += weight * upstream[b, r, i, j] / 4.0
    return grad


def continuous(inclusive_rois):
    """Caffe's inclusive-pixel boxes -> the project's continuous boxes: the last pixel ``x2``
    inside ends at ``x2 + 1``."""
    return (np.asarray(inclusive_rois, np.float32) + np.float32([0, 0, 1, 1])).astype(np.float32)


def pool(features, rois, **kwargs):
    layer = RoIPooling(**kwargs)
    return layer([tf.constant(features, tf.float32), tf.constant(rois, tf.float32)]).numpy()


def random_rois(rng, num_rois, image_height, image_width):
    """yxyx pixel boxes of every kind: inside the image, across its edges, tiny, degenerate."""
    ys = rng.uniform(-0.2 * image_height, 1.2 * image_height, size=(num_rois, 2))
    xs = rng.uniform(-0.2 * image_width, 1.2 * image_width, size=(num_rois, 2))
    rois = np.stack([ys.min(1), xs.min(1), ys.max(1), xs.max(1)], axis=1)
    tiny = rng.uniform(size=num_rois) < 0.15
    rois[tiny, 2:] = rois[tiny, :2] + rng.uniform(0, 20, size=(tiny.sum(), 2))
    flipped = rng.uniform(size=num_rois) < 0.05
    rois[flipped] = rois[flipped][:, [2, 3, 0, 1]]  # ymax < ymin: Caffe takes one cell
    halves = rng.uniform(size=rois.shape) < 0.2  # coordinates that scale to exact halves
    rois[halves] = np.round(rois[halves] / 8.0) * 8.0
    return rois.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# mode="max": golden values worked out by hand


def test_round_half_away_from_zero_matches_c_round():
    below_half = np.nextafter(np.float32(0.5), np.float32(0))  # 0.49999997: + 0.5 rounds to 1
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 4194304.5, 2.4999998, -7.25, 0.0,
                       below_half, -below_half], np.float32)
    expected = [caffe_round(v) for v in values]
    assert expected[:7] == [-3, -2, -1, 1, 2, 3, 4194305] and expected[-2:] == [0, 0]
    got = round_half_away_from_zero(tf.constant(values)).numpy()
    np.testing.assert_array_equal(got, np.array(expected, np.float32))


# The 8 x 8 x 1 map has value 8 * y + x at row y, column x, so the max over a bin is at its
# last row and column (8 * (hi_y - 1) + hi_x - 1), and on the negated map at its first
# (-(8 * lo_y + lo_x)): the two maps check both edges of every bin.
# Per axis (Caffe): start = round(lo * scale), end = round(hi * scale), halves away from zero;
# len = max(end - start + 1, 1); bin = len / P; bin j = [floor(j * bin), ceil((j + 1) * bin)) +
# start, clamped to [0, 8].
GOLDEN = {
    # rows: start 1, end 4, len 4, bin 2 -> [1, 3), [3, 5).
    # cols: start 2, end 6, len 5, bin 2.5 -> [0, 3) + 2 = [2, 5), [2, 5) + 2 = [4, 7).
    "normal": dict(
        spatial_scale=1.0, pool_size=2, roi=[1, 2, 4, 6],
        arange=[[20, 22], [36, 38]],  # last rows 2, 4; last cols 4, 6
        negated=[[-10, -12], [-26, -28]],  # first rows 1, 3; first cols 2, 4
    ),
    # rows: 0.5 -> 1, 4.5 -> 5 (half-to-even would give 0, 4): start 1, len 5, bin 5/3 =
    # 1.6666666: [0, 2) + 1, [1, 4) + 1, [3, 5) + 1 = [1, 3), [2, 5), [4, 6) (3 * bin rounds
    # to 5.0 in float32, ceil 5). cols: 2.5 -> 3, 6.5 -> 7: start 3, len 5 -> [3, 5), [4, 7),
    # [6, 8).
    "half_scale_overlapping_bins": dict(
        spatial_scale=0.5, pool_size=3, roi=[1, 5, 9, 13],
        arange=[[20, 22, 23], [36, 38, 39], [44, 46, 47]],  # last rows 2, 4, 5; cols 4, 6, 7
        negated=[[-11, -12, -14], [-19, -20, -22], [-35, -36, -38]],  # first: 1, 2, 4; 3, 4, 6
    ),
    # rows: start -1, end 4, len 6, bin 3 -> [-1, 2) clamped to [0, 2), [2, 5).
    # cols: start 4, end 9, len 6, bin 3 -> [4, 7), [7, 10) clamped to [7, 8).
    "clamped_to_map": dict(
        spatial_scale=1.0, pool_size=2, roi=[-1, 4, 4, 9],
        arange=[[14, 15], [38, 39]],  # last rows 1, 4; last cols 6, 7
        negated=[[-4, -7], [-20, -23]],  # first rows 0, 2; first cols 4, 7
    ),
    # rows: 6.2 * 0.5 = 3.1 -> 3, 3.3 -> 3: len 1, bin 0.5 -> [0, 1) + 3 and [0, 1) + 3: row 3
    # twice. cols: 3.45 -> 3, 3.7 -> 4: len 2, bin 1 -> [3, 4), [4, 5).
    "smaller_than_a_cell": dict(
        spatial_scale=0.5, pool_size=2, roi=[6.2, 6.9, 6.6, 7.4],
        arange=[[27, 28], [27, 28]],
        negated=[[-27, -28], [-27, -28]],
    ),
    # rows: -2.5 -> -3 (away from zero), 1.5 -> 2: len 6, bin 3 -> [-3, 0) clamped to [0, 0)
    # EMPTY, [0, 3). cols: 4.5 -> 5, 10.5 -> 11: len 7, bin 3.5 -> [0, 4) + 5 = [5, 9) clamped
    # to [5, 8), [3, 7) + 5 = [8, 12) clamped to [8, 8) EMPTY. Only bin (1, 0) has cells.
    "empty_bins": dict(
        spatial_scale=0.5, pool_size=2, roi=[-5, 9, 3, 21],
        arange=[[0, 0], [23, 0]],  # rows [0, 3), cols [5, 8): last 2 * 8 + 7
        negated=[[0, 0], [-5, 0]],  # first 0 * 8 + 5
    ),
    # rows start 9: every row bin clamps to [8, 8).
    "beyond_the_map": dict(
        spatial_scale=1.0, pool_size=2, roi=[9, 2, 12, 5],
        arange=[[0, 0], [0, 0]],
        negated=[[0, 0], [0, 0]],
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_max_golden_values(case):
    spec = GOLDEN[case]
    ramp = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    rois = np.array([[spec["roi"]]], np.float32)  # Caffe's inclusive boxes, as worked out above
    for features, expected in ((ramp, spec["arange"]), (-ramp, spec["negated"])):
        got = pool(features, continuous(rois), pool_size=spec["pool_size"], spatial_scale=spec["spatial_scale"])
        np.testing.assert_array_equal(got[0, 0, :, :, 0], np.array(expected, np.float32))
        reference, _ = caffe_roi_pool(features, rois, spec["pool_size"], spec["spatial_scale"])
        np.testing.assert_array_equal(got, reference)


def test_max_bin_edges_are_float32_divisions():
    """Every RoI length 1..4096 at P = 7, eager, in a graph and under XLA: the bin edges are
    Caffe's float32 ``floor(j * (len / 7))`` and ``ceil((j + 1) * (len / 7))``; with
    ``len * (1/7)``, which graph optimisers substitute for a division by a constant, ~40% of
    the last bins would end one cell further."""
    pool_size, max_len = 7, 4096
    width = max_len + 8
    lengths = np.arange(1, max_len + 1)
    # One row of cells; the RoI of length n covers cells [0, n) at spatial_scale 1 (continuous
    # xmax n: the last pixel n - 1).
    rois = np.zeros((1, max_len, 4), np.float32)
    rois[0, :, 2] = 1
    rois[0, :, 3] = lengths
    bin_len = lengths.astype(np.float32)[:, None] / np.float32(pool_size)
    j = np.arange(pool_size, dtype=np.float32)
    first = np.floor(j * bin_len).astype(np.int64)
    last = np.ceil((j + 1) * bin_len).astype(np.int64) - 1
    assert (np.ceil(7 * (lengths * (np.float32(1) / np.float32(7))).astype(np.float32)) - 1
            != last[:, -1]).mean() > 0.3  # the test can tell the two apart

    layer = RoIPooling(pool_size=pool_size, spatial_scale=1.0, max_levels=10)
    columns = np.arange(width, dtype=np.float32).reshape(1, 1, width, 1)
    # tf.function and XLA are where Grappler and XLA would rewrite a division by a constant.
    for run in (layer, tf.function(layer), tf.function(layer, jit_compile=True)):
        # Increasing values: the max is the bin's last column; decreasing: its first.
        got_last = run([tf.constant(columns), tf.constant(rois)]).numpy()[0, :, 0, :, 0]
        got_first = -run([tf.constant(-columns), tf.constant(rois)]).numpy()[0, :, 0, :, 0]
        np.testing.assert_array_equal(got_last, last)
        np.testing.assert_array_equal(got_first, first)


# ---------------------------------------------------------------------------------------------
# mode="max": against the Caffe loop on random RoIs


def _random_case(seed=0, num_rois=150, height=24, width=36, channels=5):
    rng = np.random.default_rng(seed)
    # Distinct non-zero values of both signs: the argmax (and its gradient) is unique, and only
    # an empty bin outputs 0.
    size = 2 * height * width * channels
    features = (rng.permutation(size) + 0.5 - size / 2) / size
    features = features.astype(np.float32).reshape(2, height, width, channels)
    rois = np.stack([random_rois(rng, num_rois, 16 * height, 16 * width) for _ in range(2)])
    return features, rois


def test_max_matches_caffe_on_random_rois():
    features, rois = _random_case()
    expected, _ = caffe_roi_pool(features, rois, 7, 1 / 16)
    layer = RoIPooling(pool_size=7, spatial_scale=1 / 16)
    inputs = [tf.constant(features), tf.constant(continuous(rois))]

    np.testing.assert_array_equal(layer(inputs).numpy(), expected)
    jit = tf.function(layer, jit_compile=True)
    np.testing.assert_array_equal(jit(inputs).numpy(), expected)
    # Unknown H and W while tracing: the tables get max_levels levels instead of the map's.
    dynamic = tf.function(layer, input_signature=[[
        tf.TensorSpec([None, None, None, 5], tf.float32),
        tf.TensorSpec([None, None, 4], tf.float32),
    ]])
    np.testing.assert_array_equal(dynamic(inputs).numpy(), expected)
    assert (expected == 0).all(axis=-1).any() and (expected != 0).all(axis=-1).any()


def test_max_gradient_goes_to_the_argmax_only():
    features, rois = _random_case(seed=1, num_rois=60)
    expected_output, expected_grad = caffe_roi_pool(features, rois, 7, 1 / 16)
    features, rois = tf.constant(features), tf.constant(continuous(rois))
    layer = RoIPooling(pool_size=7, spatial_scale=1 / 16)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, rois])
        total = tf.reduce_sum(layer([features, rois]))
    grad = tape.gradient(total, features).numpy()
    np.testing.assert_array_equal(grad, expected_grad)
    # One unit per non-empty bin (a cell may be the argmax of several overlapping bins).
    assert grad.sum() == (expected_output != 0).sum()
    assert tape.gradient(total, rois) is None


def test_max_gradient_with_ties_picks_one_cell_per_bin():
    # Values in {0, 1, 2} (like quantised ReLU outputs): most bins have several maximal cells.
    rng = np.random.default_rng(2)
    features = np.round(rng.uniform(0, 2, size=(1, 12, 12, 3))).astype(np.float32)
    rois = random_rois(rng, 40, 192, 192)[None]
    expected_output, _ = caffe_roi_pool(features, rois, 7, 1 / 16)
    non_empty_bins = caffe_roi_pool(np.ones_like(features), rois, 7, 1 / 16)[0].sum()
    features, rois = tf.constant(features), tf.constant(continuous(rois))
    with tf.GradientTape() as tape:
        tape.watch(features)
        pooled = RoIPooling()([features, rois])
        total = tf.reduce_sum(pooled)
    grad = tape.gradient(total, features).numpy()
    np.testing.assert_array_equal(pooled.numpy(), expected_output)
    assert grad.sum() == non_empty_bins
    np.testing.assert_array_equal(grad, np.round(grad))  # never split between tied cells


# ---------------------------------------------------------------------------------------------
# mode="align"


def test_align_constant_map():
    features = np.full((2, 10, 12, 3), 2.5, np.float32)
    rois = np.array([[[8, 6, 30, 40], [0, 0, 40, 48]], [[1, 1, 3, 2], [-2, -2, 41, 49]]],
                    np.float32)
    got = pool(features, rois, pool_size=4, spatial_scale=0.25, mode="align")
    np.testing.assert_allclose(got, 2.5, rtol=1e-6)


def test_align_linear_ramp_gives_bin_centres():
    # f = 3 y + 2 x + 1 at cell (y, x). Bilinear sampling is exact on a linear function, and the
    # mean of a bin's 2 x 2 samples (symmetric about the bin's centre) is f at the centre. In
    # cell-centre coordinates u = pixel * scale - 0.5 the RoI [8, 6, 30, 40] at scale 1/4 spans
    # y in [1.5, 7.0], x in [1.0, 9.5]; every sample is inside the map [0, 9] x [0, 11].
    pool_size = 3
    ys, xs = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    features = (3.0 * ys + 2.0 * xs + 1.0).astype(np.float32)[None, :, :, None]
    rois = np.array([[[8, 6, 30, 40]]], np.float32)
    centre_y = 1.5 + (np.arange(pool_size) + 0.5) * 5.5 / pool_size
    centre_x = 1.0 + (np.arange(pool_size) + 0.5) * 8.5 / pool_size
    expected = 3.0 * centre_y[:, None] + 2.0 * centre_x[None, :] + 1.0
    got = pool(features, rois, pool_size=pool_size, spatial_scale=0.25, mode="align")
    np.testing.assert_allclose(got[0, 0, :, :, 0], expected, rtol=1e-5)


def test_align_matches_torchvision_semantics():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2, 9, 11, 2)).astype(np.float32)
    rois = np.stack([random_rois(rng, 20, 9 * 16, 11 * 16) for _ in range(2)])
    got = pool(features, rois, pool_size=3, spatial_scale=1 / 16, mode="align")
    np.testing.assert_allclose(got, roi_align_reference(features, rois, 3, 1 / 16), atol=2e-5)


def test_align_for_converters_samples_by_gathers_with_the_same_values():
    """Traced for the converters (LiteRT has no CropAndResize) RoIAlign gathers its bilinear
    samples: the same values as crop_and_resize, RoIs reaching past the map included."""
    from keras_frcnn.preprocessing import for_converters

    rng = np.random.default_rng(5)
    features = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    rois = np.stack([random_rois(rng, 20, 9 * 16, 11 * 16) for _ in range(2)])
    rois[0, :3] = [[-40, -40, 60, 60], [100, 120, 200, 230], [0, 0, 144, 176]]  # outside the map
    layer = RoIPooling(pool_size=4, spatial_scale=1 / 16, mode="align")
    traced = tf.function(lambda f, r: layer([f, r]))
    expected = traced(features, rois)
    with for_converters():
        converted = tf.function(lambda f, r: layer([f, r]))
        got = converted(features, rois)
        ops = {op.type for op in converted.get_concrete_function(features, rois).graph.get_operations()}
    assert "CropAndResize" not in ops
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(got, roi_align_reference(features, rois, 4, 1 / 16), atol=2e-5)


def test_align_gradients_flow_to_features_only():
    rng = np.random.default_rng(4)
    features = tf.constant(rng.standard_normal((1, 10, 12, 1)).astype(np.float32))
    rois = tf.constant([[[8, 6, 30, 40], [10, 10, 20, 20]]], tf.float32)  # samples inside the map
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, rois])
        layer = RoIPooling(pool_size=3, spatial_scale=0.25, mode="align")
        total = tf.reduce_sum(layer([features, rois]))
    grad = tape.gradient(total, features).numpy()
    # Each output is a mean of bilinear samples whose weights sum to 1.
    np.testing.assert_allclose(grad.sum(), 2 * 3 * 3, rtol=1e-5)
    assert (grad >= 0).all() and (grad > 0).sum() > 9
    assert tape.gradient(total, rois) is None


@pytest.mark.parametrize("route", ["dense", "sparse"])
def test_align_gradient_is_exact_and_the_same_every_run(route, monkeypatch):
    """RoIAlign's gradient to the features is the layer's own (``_splat_bins``: two dense
    products on small maps, else a sparse one; each route forced here), not TensorFlow's CPU
    ``CropAndResizeGradImage``, which adds the boxes' gradients into the map from several threads
    without synchronisation: where RoIs overlap, its sums came out in another order from run to
    run and now and then lost a sample's share (cells off by up to 3.8). Here two images, 200
    RoIs around one object in each, a few across the map's edges (with TensorFlow's kernel this
    test failed in 15 of 20 runs): every run equals the float64 reference, and the first bit for
    bit."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 24, 30, 64)).astype(np.float32)
    centres = np.array([96.0, 120.0]) + rng.normal(0, 6, size=(2, 200, 2))
    sides = rng.uniform(20, 80, size=(2, 200, 2))
    rois = np.concatenate([centres - sides / 2, centres + sides / 2], -1)
    rois[0, :2] = [[-30, -20, 40, 50], [150, 200, 230, 290]]
    rois[1, :2] = [[-9, 100, 20, 260], [5, -40, 200, 9]]
    rois = tf.constant(rois, tf.float32)  # a tensor, as in training (TensorFlow's kernel raced on it)
    upstream = rng.standard_normal((2, 200, 3, 3, 64)).astype(np.float32)
    layer = RoIPooling(pool_size=3, spatial_scale=1 / 8, mode="align")
    assert bool(roi_pooling._splat_is_dense(tf.constant([2, 26, 32, 64]), 400, 3, 64))  # this size's own route
    if route == "sparse":
        monkeypatch.setattr(roi_pooling, "_DENSE_RATIO", 0)

    @tf.function
    def gradient(features):
        with tf.GradientTape() as tape:
            tape.watch(features)
            total = tf.reduce_sum(layer([features, rois]) * upstream)
        return tape.gradient(total, features)

    expected = roi_align_gradient_reference(features.shape, rois.numpy(), upstream, 3, 1 / 8)
    first = gradient(tf.constant(features)).numpy()
    np.testing.assert_allclose(first, expected, atol=2e-4)
    for _ in range(9):
        np.testing.assert_array_equal(gradient(tf.constant(features)).numpy(), first)


def test_align_gradient_per_image_blocks_equal_the_whole_batch_product():
    """The dense gradient's second product per image (RoIs in one block per image, as
    ``roi_align`` hands them over) against the whole batch's (each RoI's rows in its image's
    block of a ``[B * H, N * P]`` matrix: the pyramid's levels, whose RoIs come in no fixed
    blocks): three images, both equal to the float64 reference; the blocked form stays dense on
    maps where the whole-batch product, whose work grows with the square of the batch, would not."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((3, 20, 26, 32)).astype(np.float32)
    corners = rng.uniform(-20, 150, size=(3, 40, 2))
    sides = rng.uniform(12, 90, size=(3, 40, 2))
    rois = np.concatenate([corners, corners + sides], -1).astype(np.float32)
    upstream = rng.standard_normal((3, 40, 4, 4, 32)).astype(np.float32)
    flat_rois, flat_upstream = tf.constant(rois.reshape(-1, 4)), tf.constant(upstream.reshape(-1, 4, 4, 32))
    box_indices = tf.repeat(tf.range(3), 40)

    def gradient(per_image):
        features_ = tf.constant(features)
        with tf.GradientTape() as tape:
            tape.watch(features_)
            bins = roi_pooling._align_bins(roi_pooling._align_source(features_), flat_rois, box_indices, 1 / 8, 4,
                                           per_image=per_image)
            total = tf.reduce_sum(bins * flat_upstream)
        return tape.gradient(total, features_).numpy()

    blocked, whole = gradient(40), gradient(None)
    expected = roi_align_gradient_reference(features.shape, rois, upstream, 4, 1 / 8)
    np.testing.assert_allclose(blocked, expected, atol=2e-4)
    np.testing.assert_allclose(whole, expected, atol=2e-4)
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-5)
    assert bool(roi_pooling._splat_is_dense(tf.constant([3, 22, 28, 32]), 120, 4, 32, blocked=True))  # dense here
    shape = tf.constant([8, 60, 60, 128])  # eight images: dense only in blocks
    assert bool(roi_pooling._splat_is_dense(shape, 8 * 64, 7, 128, blocked=True))
    assert not bool(roi_pooling._splat_is_dense(shape, 8 * 64, 7, 128))


def test_align_gradient_on_a_large_map_is_the_same_every_run_and_every_split(monkeypatch):
    """At an FPN P2 level's size (2 x 200 x 336 cells; the sparse route), where the version before
    (four segment sums added by ``AddN``, which adds its inputs in an order that changes from run to
    run on large tensors) differed in the last bit now and then: five runs bit for bit the first,
    and the channels split over 1, 2 or 3 ``sparse_dense_matmul`` calls (``_channel_parts``, one per
    core) give the same bits; no RoIs, zeros."""
    rng = np.random.default_rng(1)
    padded = roi_pooling._align_source(tf.constant(rng.standard_normal((2, 200, 336, 96)), tf.float32))
    corners = rng.uniform([-20, -20], [640, 1075], size=(512, 2))
    sides = rng.uniform(16, [320, 538], size=(512, 2))
    rois = tf.constant(np.concatenate([corners, corners + sides], 1), tf.float32)
    box_indices = tf.constant(np.repeat([0, 1], 256), tf.int32)
    upstream = tf.constant(rng.standard_normal((512, 7, 7, 96)), tf.float32)

    def gradient():
        return tf.function(lambda: roi_pooling._splat_bins(upstream, padded, rois, box_indices, 1 / 4, 7))

    assert not bool(roi_pooling._splat_is_dense(tf.shape(padded), 512, 7, 96))  # the sparse route at this size

    first = gradient()().numpy()
    call = gradient()
    for _ in range(5):
        np.testing.assert_array_equal(call().numpy(), first)
    for parts in (1, 2, 3):
        monkeypatch.setattr(roi_pooling, "_channel_parts", lambda channels, parts=parts: parts)
        np.testing.assert_array_equal(gradient()().numpy(), first)
    # A pyramid level that no RoI is assigned to: zeros.
    none = roi_pooling._splat_bins(upstream[:0], padded, rois[:0], box_indices[:0], 1 / 4, 7)
    np.testing.assert_array_equal(none.numpy(), np.zeros(padded.shape, np.float32))


def _padded_batch(rng, sizes, map_shape, stride, rounding, channels=4):
    """Features of a padded batch as the base gives them (zero past each image's valid cells), and
    each image's valid region alone."""
    features = rng.standard_normal((len(sizes), *map_shape, channels)).astype(np.float32)
    cut = np.floor if rounding == "floor" else np.ceil
    valid = [(int(cut(h / stride)), int(cut(w / stride))) for h, w in sizes]
    for i, (vh, vw) in enumerate(valid):
        features[i, vh:] = 0
        features[i, :, vw:] = 0
    return features, [features[i:i + 1, :vh, :vw] for i, (vh, vw) in enumerate(valid)], valid


def _rois_reaching_the_edges(rng, h, w, count=24):
    """RoIs inside an h x w image, several ending on its bottom or right edge (where an image of a
    padded batch meets the padding)."""
    rois = random_rois(rng, count, h, w)
    rois = np.clip(rois, 0, [h, w, h, w]).astype(np.float32)
    rois[:4] = [[0, 0, h, w], [h - 20, w - 30, h, w], [h / 2, 0, h, w / 3], [0, w / 2, h / 3, w]]
    return rois


@pytest.mark.parametrize("rounding,route", [("ceil", "dense"), ("floor", "dense"), ("ceil", "sparse"),
                                            ("floor", "converters")])
def test_align_pools_each_image_of_a_padded_batch_as_its_valid_region_alone(rounding, route, monkeypatch):
    """Given ``image_info``, RoIAlign samples each image of a padded batch as its valid region alone:
    past its last valid cell it reads that cell (RoIAlign's clamp at a map's edge), not the zeros of
    the padding, and beyond one more cell 0 (floor rounding reaches there: MobileNetV3's), forward
    and backward (each gradient route; the converters' gathers forward). Sides whose size / stride
    has a fraction of 0, 0.5 and above. Without ``image_info`` the padded batch reads the zeros."""
    from keras_frcnn.preprocessing import for_converters

    rng = np.random.default_rng(7)
    sizes, stride = [(96, 44), (63, 95)], 8
    features, alone, valid = _padded_batch(rng, sizes, (15, 14), stride, rounding)
    rois = np.stack([_rois_reaching_the_edges(rng, h, w) for h, w in sizes])
    info = np.array([[h, w, 1.0] for h, w in sizes], np.float32)
    upstream = rng.standard_normal((2, rois.shape[1], 3, 3, 4)).astype(np.float32)
    layer = RoIPooling(pool_size=3, spatial_scale=1 / stride, mode="align", rounding=rounding)
    if route == "sparse":
        monkeypatch.setattr(roi_pooling, "_DENSE_RATIO", 0)

    def pooled_and_gradient(features, rois, info, upstream):
        features = tf.constant(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = layer([features, tf.constant(rois), tf.constant(info)])
            total = tf.reduce_sum(out * upstream)
        return out.numpy(), tape.gradient(total, features).numpy()

    if route == "converters":
        with for_converters():
            together = tf.function(lambda f, r, i: layer([f, r, i]))(features, rois, info).numpy()
    else:
        together, gradient = pooled_and_gradient(features, rois, info, upstream)
    for i, (vh, vw) in enumerate(valid):
        out, grad = pooled_and_gradient(alone[i], rois[i:i + 1], info[i:i + 1], upstream[i:i + 1])
        np.testing.assert_allclose(together[i], out[0], atol=1e-5)
        if route != "converters":
            np.testing.assert_allclose(gradient[i, :vh, :vw], grad[0], atol=1e-5)
            assert not gradient[i, vh:].any() and not gradient[i, :, vw:].any()
    without = layer([tf.constant(features), tf.constant(rois)]).numpy()
    assert np.abs(without[0] - together[0]).max() > 0.05  # (the first image's edges meet the padding)


@pytest.mark.parametrize("converting", [False, True])
def test_align_of_an_image_without_a_valid_cell_is_zero(converting):
    """With floor rounding a side under the stride leaves an image no valid cell along it (20 px
    at stride 32): its RoIs pool 0 and send no gradient into the padding, whatever the padding
    holds (before, samples next to the map's edge read the padding's first row)."""
    from keras_frcnn.preprocessing import for_converters

    layer = RoIPooling(2, 1 / 32, "align", rounding="floor")
    info = tf.constant([[20.0, 64.0, 1.0], [64.0, 64.0, 1.0]])  # valid cells (0, 2) and (2, 2)
    rois = tf.constant([[[0.0, 0.0, 20.0, 64.0]], [[0.0, 0.0, 64.0, 64.0]]])
    features = np.ones((2, 2, 2, 1), np.float32)
    features[0] = 5.0  # (not what the base gives there: what the layer must not read)
    features = tf.constant(features)
    if converting:
        with for_converters():
            pooled = tf.function(lambda f: layer([f, rois, info]))(features)
    else:
        with tf.GradientTape() as tape:
            tape.watch(features)
            pooled = layer([features, rois, info])
            total = tf.reduce_sum(pooled)
        np.testing.assert_array_equal(tape.gradient(total, features)[0], np.zeros((2, 2, 1)))
    np.testing.assert_array_equal(pooled[0], np.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(pooled[1], np.ones((1, 2, 2, 1)))


@pytest.mark.parametrize("rounding", ["ceil", "floor"])
def test_pyramid_align_pools_each_image_of_a_padded_batch_as_its_valid_region_alone(rounding):
    """The same on each level of a pyramid (strides 8 and 16), RoIs on both levels."""
    from keras_frcnn.roi_pooling import PyramidRoIAlign

    rng = np.random.default_rng(8)
    sizes = [(96, 44), (63, 95)]
    level8, alone8, _ = _padded_batch(rng, sizes, (15, 14), 8, rounding)
    level16, alone16, _ = _padded_batch(rng, sizes, (8, 7), 16, rounding)
    rois = np.stack([_rois_reaching_the_edges(rng, h, w) for h, w in sizes])
    info = np.array([[h, w, 1.0] for h, w in sizes], np.float32)
    layer = PyramidRoIAlign(3, (8, 16), canonical_size=32.0, rounding=rounding)
    levels = np.floor(4 + np.log2(np.sqrt(np.prod(rois[..., 2:] - rois[..., :2], -1)) / 32 + 1e-12))
    assert {3.0, 4.0} <= set(np.clip(levels, 3, 4).ravel())
    together = layer([[level8, level16], rois, info]).numpy()
    for i in range(2):
        out = layer([[alone8[i], alone16[i]], rois[i:i + 1], info[i:i + 1]]).numpy()
        np.testing.assert_allclose(together[i], out[0], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Keras: shapes, dtype, config, saving, XLA


@pytest.mark.parametrize("mode", ["max", "align"])
@pytest.mark.parametrize("policy,dtype", [("mixed_float16", tf.float16), ("mixed_bfloat16", tf.bfloat16)])
def test_output_shape_and_mixed_precision(mode, policy, dtype):
    layer = RoIPooling(pool_size=7, mode=mode, dtype=policy)
    features = keras.Input((None, None, 16))
    rois = keras.Input((30, 4))
    assert layer.compute_output_shape((features.shape, rois.shape)) == (None, 30, 7, 7, 16)
    assert tuple(layer([features, rois]).shape) == (None, 30, 7, 7, 16)
    out = layer([tf.ones((2, 5, 6, 16)), tf.constant([[[0, 0, 50, 60]] * 30] * 2, tf.float32)])
    assert out.shape == (2, 30, 7, 7, 16) and out.dtype == dtype


@pytest.mark.parametrize("mode", ["max", "align"])
def test_bfloat16_equals_float32_and_trains(mode):
    """Under mixed_bfloat16 (``--precision auto`` on CPUs with AVX512_BF16 / AMX) both modes run
    (crop_and_resize has no bfloat16 kernel), agree with float32 to bfloat16's precision, and
    pass a gradient to the features."""
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(2, 12, 14, 8)), tf.float32)
    rois = tf.constant(rng.uniform(0, 150, size=(2, 9, 4)).astype(np.float32))
    rois = tf.concat([tf.minimum(rois[..., :2], rois[..., 2:]), tf.maximum(rois[..., :2], rois[..., 2:])], -1)
    upstream = tf.constant(rng.normal(size=(2, 9, 3, 3, 8)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(features)
        reference = RoIPooling(pool_size=3, spatial_scale=1 / 16, mode=mode)([features, rois])
        total = tf.reduce_sum(reference * upstream)
    reference_gradient = tape.gradient(total, features)
    layer = RoIPooling(pool_size=3, spatial_scale=1 / 16, mode=mode, dtype="mixed_bfloat16")
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = layer([tf.cast(features, tf.bfloat16), rois], feature_gradient=True)
        total = tf.reduce_sum(tf.cast(out, tf.float32) * upstream)
    np.testing.assert_allclose(tf.cast(out, tf.float32), reference, rtol=2e-2, atol=2e-2)
    gradient = tape.gradient(total, features)
    assert gradient is not None and float(tf.reduce_sum(tf.abs(gradient))) > 0
    if mode == "align":  # (max's maxima may tie differently in bfloat16)
        assert bool(roi_pooling._splat_is_dense(tf.constant([2, 14, 16, 8]), 18, 3, 8, blocked=True))
        np.testing.assert_allclose(gradient, reference_gradient, rtol=3e-2, atol=3e-2)


def test_config_round_trip():
    layer = RoIPooling(pool_size=3, spatial_scale=0.5, mode="align", max_levels=4, name="pool")
    clone = RoIPooling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.pool_size == 3 and clone.spatial_scale == 0.5
    assert clone.mode == "align" and clone.max_levels == 4
    features, rois = _random_case(num_rois=10)
    for mode in ("max", "align"):
        layer = RoIPooling(pool_size=3, spatial_scale=1 / 16, mode=mode)
        clone = RoIPooling.from_config(layer.get_config())
        np.testing.assert_array_equal(clone([features, rois]), layer([features, rois]))
    with pytest.raises(ValueError):
        RoIPooling(mode="average")


@pytest.mark.parametrize("mode", ["max", "align"])
def test_keras_save_and_load(tmp_path, mode):
    features_in = keras.Input((None, None, 5), name="features")
    rois_in = keras.Input((None, 4), name="rois")
    pooled = RoIPooling(pool_size=7, spatial_scale=1 / 16, mode=mode)([features_in, rois_in])
    model = keras.Model([features_in, rois_in], keras.layers.Flatten()(pooled))
    path = tmp_path / "roi_pooling.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True by default
    features, rois = _random_case(num_rois=10)
    np.testing.assert_array_equal(loaded.predict([features, rois], verbose=0),
                                  model.predict([features, rois], verbose=0))


@pytest.mark.parametrize("mode", ["max", "align"])
def test_keras_jit_compile(mode):
    """Keras honours ``supports_jit``: a model with an align layer falls back to no XLA."""
    features_in = keras.Input((None, None, 5))
    rois_in = keras.Input((None, 4))
    model = keras.Model([features_in, rois_in], RoIPooling(mode=mode)([features_in, rois_in]))
    if mode == "align":
        with pytest.warns(UserWarning, match="jit_compile"):
            model.compile(jit_compile=True)
        assert not model.jit_compile
        return
    model.compile(jit_compile=True)
    assert model.jit_compile
    features, rois = _random_case(num_rois=10)
    np.testing.assert_array_equal(model.predict([features, rois], verbose=0),
                                  model([features, rois]).numpy())


def test_without_feature_gradient_the_same_maxima_and_no_gradient():
    """Inference and a frozen base pool without the argmax tables: the same outputs."""
    features, rois = _random_case(seed=3, num_rois=40)
    layer = RoIPooling(pool_size=7, spatial_scale=1 / 16)
    inputs = [tf.constant(features), tf.constant(continuous(rois))]
    np.testing.assert_array_equal(layer(inputs, feature_gradient=False).numpy(), layer(inputs).numpy())
    with tf.GradientTape() as tape:
        tape.watch(inputs[0])
        total = tf.reduce_sum(layer(inputs, feature_gradient=False))
    assert tape.gradient(total, inputs[0]) is None
