import keras
import numpy as np

from keras_frcnn.anchors import Anchors, base_anchors

# py-faster-rcnn's generate_anchors() output (x1, y1, x2, y2 inclusive pixels), as printed in its
# source: the reference for the original's rounding (ratio 0.5 gives 23 x 12 before scaling).
ORIGINAL = np.array([
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
], np.float32)


def test_base_anchors_reproduce_the_original():
    ours = base_anchors(16, (0.5, 1, 2), (8, 16, 32))
    # An inclusive box (x1, y1, x2, y2) covers the continuous [y1, x1, y2 + 1, x2 + 1].
    expected = np.stack([ORIGINAL[:, 1], ORIGINAL[:, 0], ORIGINAL[:, 3] + 1, ORIGINAL[:, 2] + 1], 1)
    np.testing.assert_array_equal(ours, expected)
    # Every anchor is centred on the middle of the 16 x 16 cell, (8, 8).
    np.testing.assert_array_equal((ours[:, :2] + ours[:, 2:]) / 2, np.full((9, 2), 8.0))
    # The rounding: ratio 0.5 (h / w) anchors are 12 x 23 cells, not 11.3 x 22.6.
    h, w = ours[0, 2] - ours[0, 0], ours[0, 3] - ours[0, 1]
    assert (h, w) == (12 * 8, 23 * 8)


def test_anchors_layer_order_matches_flattened_rpn_outputs():
    layer = Anchors(stride=16, base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32))
    h, w, k = 3, 5, 9
    anchors = layer(np.zeros((2, h, w, 7), np.float32)).numpy()
    assert anchors.shape == (h * w * k, 4)
    cell = base_anchors()
    # An RPN output [B, H, W, k] reshaped to [B, H*W*k] has index (i * W + j) * k + a.
    for i, j, a in [(0, 0, 0), (1, 3, 4), (2, 4, 8)]:
        np.testing.assert_array_equal(anchors[(i * w + j) * k + a], cell[a] + [16 * i, 16 * j, 16 * i, 16 * j])


def test_anchors_get_config_round_trip():
    layer = Anchors(stride=8, base_size=8, ratios=(1.0,), scales=(2.0, 4.0))
    clone = Anchors.from_config(layer.get_config())
    x = np.zeros((1, 4, 6, 3), np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), clone(x).numpy())
    assert keras.saving.get_registered_name(Anchors) == "keras_frcnn>Anchors"
