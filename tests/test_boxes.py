import keras
import numpy as np
import pytest

from keras_frcnn import boxes
from conftest import random_boxes

STDS = (0.1, 0.1, 0.2, 0.2)
ANCHOR = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)  # h 20, w 40, centre (20, 40)


def test_encode_identity_is_zero():
    np.testing.assert_allclose(boxes.encode(ANCHOR, ANCHOR).numpy(), [[0, 0, 0, 0]], atol=1e-7)


def test_encode_pure_shift():
    # Shift by half the height down and a quarter of the width right: (dy, dx) = (0.5, 0.25).
    shifted = ANCHOR + np.array([[10.0, 10.0, 10.0, 10.0]], np.float32)
    np.testing.assert_allclose(boxes.encode(shifted, ANCHOR).numpy(), [[0.5, 0.25, 0, 0]], atol=1e-6)


def test_encode_double_size_is_log2():
    # Same centre, twice the height and width: (dh, dw) = (log 2, log 2).
    double = np.array([[0.0, 0.0, 40.0, 80.0]], np.float32)
    np.testing.assert_allclose(boxes.encode(double, ANCHOR).numpy(), [[0, 0, np.log(2), np.log(2)]],
                               atol=1e-6)
    # The detector's stds divide the targets: log 2 / 0.2.
    np.testing.assert_allclose(boxes.encode(double, ANCHOR, STDS).numpy(),
                               [[0, 0, np.log(2) / 0.2, np.log(2) / 0.2]], atol=1e-5)


def test_decode_clamps_log_scale():
    huge = np.array([[0.0, 0.0, 50.0, 50.0]], np.float32)
    out = boxes.decode(huge, ANCHOR).numpy()
    h, w = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
    np.testing.assert_allclose([h, w], [20 * 1000 / 16, 40 * 1000 / 16], rtol=1e-5)
    assert np.all(np.isfinite(out))


def test_decode_inverts_encode_on_random_boxes(rng):
    # Sides of 4..200 px keep every size ratio under the clamp (1000 / 16).
    gt = random_boxes(rng, 500, min_side=4)
    anchors = random_boxes(rng, 500, min_side=4)
    for stds in [(1.0, 1.0, 1.0, 1.0), STDS]:
        back = boxes.decode(boxes.encode(gt, anchors, stds), anchors, stds).numpy()
        np.testing.assert_allclose(back, gt, atol=1e-3)


def test_encode_and_decode_equal_keras_bit_for_bit(rng):
    # The coding is keras.utils.bounding_boxes's written out without its format conversions: the
    # same floats, degenerate boxes (Keras's epsilon floor) and the clamp included.
    bb = keras.utils.bounding_boxes
    starts = rng.uniform(-50, 600, (2, 3000, 2))
    sides = rng.choice([0.0, 0.5, 1.0, 37.3, 300.7], (2, 3000, 2)) * rng.uniform(0, 1, (2, 3000, 2))
    gt = np.concatenate([starts, starts + sides], -1).astype(np.float32)
    anchors, gt = gt[0], gt[1:]
    deltas = rng.normal(0, 2, (1, 3000, 4)).astype(np.float32)
    deltas[0, :20, 2:] = 20.0  # beyond the clamp
    for stds in [(1.0, 1.0, 1.0, 1.0), STDS]:
        ref = bb.encode_box_to_deltas(anchors=anchors, boxes=gt, anchor_format="yxyx", box_format="yxyx",
                                      encoding_format="center_yxhw", variance=stds)
        np.testing.assert_array_equal(boxes.encode(gt, anchors[None], stds).numpy(), np.asarray(ref))
        scaled = deltas * np.float32(stds)
        scaled[..., 2:] = np.minimum(scaled[..., 2:], np.float32(boxes.DELTA_CLAMP))
        ref = bb.decode_deltas_to_boxes(anchors=anchors, boxes_delta=scaled, anchor_format="yxyx",
                                        box_format="yxyx", encoded_format="center_yxhw")
        np.testing.assert_array_equal(boxes.decode(deltas, anchors[None], stds).numpy(), np.asarray(ref))


def test_iou_golden_values():
    a = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    b = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 10.0, 15.0], [20.0, 20.0, 30.0, 30.0],
                  [0.0, 0.0, 5.0, 5.0]], np.float32)
    # identical: 1; half overlap: 50 / 150; disjoint: 0; contained quarter: 25 / 100.
    np.testing.assert_allclose(boxes.iou(a, b).numpy(), [[1.0, 1 / 3, 0.0, 0.25]], atol=1e-6)


def test_iou_symmetric_bounded_and_matches_keras(rng):
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    ab, ba = boxes.iou(a, b).numpy(), boxes.iou(b, a).numpy()
    np.testing.assert_allclose(ab, ba.T, atol=1e-6)
    assert ab.min() >= 0 and ab.max() <= 1
    ref = keras.utils.bounding_boxes.compute_iou(a, b, "yxyx")
    np.testing.assert_allclose(ab, np.asarray(ref), atol=1e-5)
    batched = boxes.iou(np.stack([a, a]), np.stack([b[:20], b[10:]])).numpy()
    np.testing.assert_allclose(batched[1], boxes.iou(a, b[10:]).numpy(), atol=1e-6)


def test_iou_degenerate_is_zero():
    a = np.array([[5.0, 5.0, 5.0, 5.0]], np.float32)
    assert boxes.iou(a, a).numpy()[0, 0] == 0.0


def test_clip_per_image_and_min_side():
    b = np.array([[[-5.0, -5.0, 50.0, 50.0]], [[-5.0, -5.0, 50.0, 50.0]]], np.float32)
    clipped = boxes.clip(b, [[10, 20], [30, 40]]).numpy()
    np.testing.assert_array_equal(clipped[:, 0], [[0, 0, 10, 20], [0, 0, 30, 40]])
    mask = boxes.min_side_mask(clipped, np.array([[15.0], [15.0]], np.float32)).numpy()
    np.testing.assert_array_equal(mask, [[False], [True]])


def test_edge_format_conversions():
    pixels = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)  # yxyx
    norm = boxes.to_normalized(pixels, [100, 200]).numpy()
    np.testing.assert_allclose(norm, [[0.1, 0.1, 0.3, 0.3]], atol=1e-7)
    np.testing.assert_allclose(boxes.from_normalized(norm, [100, 200]).numpy(), pixels, atol=1e-5)
    # COCO xywh: x=20, y=10, w=40, h=20.
    np.testing.assert_allclose(boxes.to_coco(pixels).numpy(), [[20, 10, 40, 20]])
    np.testing.assert_allclose(boxes.from_coco([[20.0, 10.0, 40.0, 20.0]]).numpy(), pixels)
    # VOC xml (xmin, ymin, xmax, ymax) numbers are taken as they are (TFDS's convention).
    np.testing.assert_allclose(boxes.from_voc([[20.0, 10.0, 60.0, 30.0]]).numpy(), pixels)
    np.testing.assert_allclose(boxes.to_voc(pixels).numpy(), [[20, 10, 60, 30]])


@pytest.mark.parametrize("fn", [boxes.encode, boxes.iou])
def test_box_ops_compile_with_xla(fn, rng):
    import tensorflow as tf

    a, b = random_boxes(rng, 8), random_boxes(rng, 8)
    np.testing.assert_allclose(tf.function(fn, jit_compile=True)(a, b).numpy(), fn(a, b).numpy(),
                               atol=1e-5)
