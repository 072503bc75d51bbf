"""One pixel convention, checked against py-faster-rcnn's formulas written out here in its own
inclusive-pixel frame (a box ``(x1, y1, x2, y2)`` holds pixels ``x1..x2``, width ``x2 - x1 + 1``).

Ours is continuous: pixel ``i`` covers ``[i, i + 1)``, so the inclusive box is our
``[y1, x1, y2 + 1, x2 + 1]`` (:func:`continuous`). Anchors, box encoding, clipping, the minimum
size, the border rule for anchors, IoU, RoI pooling's bins (tests/test_roi_pooling.py) and VOC's
1-based XML numbers all agree through that one conversion. The one place we differ on purpose is
decoding: py-faster-rcnn's ``bbox_transform_inv`` ends a box at ``ctr + w / 2`` *inclusive*, one
pixel past the inverse of its own encoding; ours is the exact inverse (Detectron's correction).
"""

import numpy as np
import pytest
import tensorflow as tf
from test_data_fixtures import write_voc_folder

from keras_frcnn import boxes
from keras_frcnn.anchors import Anchors, base_anchors
from keras_frcnn.data import eval_dataset, load_voc_folder
from keras_frcnn.metrics import pairwise_iou
from keras_frcnn.targets import AnchorTargets


def continuous(xyxy_inclusive):
    """py-faster-rcnn's ``[N, 4]`` inclusive ``(x1, y1, x2, y2)`` -> our yxyx continuous."""
    b = np.asarray(xyxy_inclusive, np.float64)
    return np.stack([b[:, 1], b[:, 0], b[:, 3] + 1, b[:, 2] + 1], axis=1)


# --- py-faster-rcnn, in numpy (lib/rpn/generate_anchors.py, lib/fast_rcnn/bbox_transform.py,
# lib/rpn/proposal_layer.py, lib/rpn/anchor_target_layer.py, lib/utils/cython_bbox.pyx)


def pf_whctrs(anchor):
    w, h = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def pf_mkanchors(ws, hs, x_ctr, y_ctr):
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def pf_generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    base = np.array([1, 1, base_size, base_size]) - 1
    w, h, x_ctr, y_ctr = pf_whctrs(base)
    ws = np.round(np.sqrt(w * h / np.array(ratios)))
    hs = np.round(ws * np.array(ratios))
    out = []
    for anchor in pf_mkanchors(ws, hs, x_ctr, y_ctr):
        w, h, x_ctr, y_ctr = pf_whctrs(anchor)
        out.append(pf_mkanchors(w * np.array(scales), h * np.array(scales), x_ctr, y_ctr))
    return np.vstack(out)


def pf_bbox_transform(ex, gt):
    ex_w, ex_h = ex[:, 2] - ex[:, 0] + 1.0, ex[:, 3] - ex[:, 1] + 1.0
    ex_x, ex_y = ex[:, 0] + 0.5 * ex_w, ex[:, 1] + 0.5 * ex_h
    gt_w, gt_h = gt[:, 2] - gt[:, 0] + 1.0, gt[:, 3] - gt[:, 1] + 1.0
    gt_x, gt_y = gt[:, 0] + 0.5 * gt_w, gt[:, 1] + 0.5 * gt_h
    return np.stack([(gt_x - ex_x) / ex_w, (gt_y - ex_y) / ex_h, np.log(gt_w / ex_w), np.log(gt_h / ex_h)], 1)


def pf_bbox_transform_inv(anchors, deltas):
    w, h = anchors[:, 2] - anchors[:, 0] + 1.0, anchors[:, 3] - anchors[:, 1] + 1.0
    x, y = anchors[:, 0] + 0.5 * w, anchors[:, 1] + 0.5 * h
    dx, dy, dw, dh = deltas.T
    cx, cy, pw, ph = dx * w + x, dy * h + y, np.exp(dw) * w, np.exp(dh) * h
    return np.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], 1)


def pf_clip_boxes(b, height, width):
    return np.stack([np.clip(b[:, 0], 0, width - 1), np.clip(b[:, 1], 0, height - 1),
                     np.clip(b[:, 2], 0, width - 1), np.clip(b[:, 3], 0, height - 1)], 1)


def pf_bbox_overlaps(a, b):
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area = lambda c: (c[:, 2] - c[:, 0] + 1) * (c[:, 3] - c[:, 1] + 1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def random_inclusive_boxes(rng, n, size=300):
    x1, y1 = rng.integers(0, size - 40, n), rng.integers(0, size - 40, n)
    return np.stack([x1, y1, x1 + rng.integers(1, 40, n), y1 + rng.integers(1, 40, n)], 1).astype(np.float64)


# --- the checks


@pytest.mark.parametrize("scales", [(8, 16, 32), (1.5, 3, 6)])
def test_anchors_are_py_faster_rcnns(scales):
    ours = base_anchors(16, (0.5, 1, 2), scales)
    np.testing.assert_allclose(ours, continuous(pf_generate_anchors(16, (0.5, 1, 2), scales)), atol=1e-5)
    # Shifted over a 3 x 4 feature map, row-major, the 9 anchors of each position in order.
    grid = Anchors(16, 16, (0.5, 1, 2), scales)(tf.zeros([1, 3, 4, 1])).numpy()
    sx, sy = np.meshgrid(np.arange(4) * 16, np.arange(3) * 16)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
    expected = (pf_generate_anchors(16, (0.5, 1, 2), scales)[None] + shifts[:, None]).reshape(-1, 4)
    np.testing.assert_allclose(grid, continuous(expected), atol=1e-4)


def test_encoding_is_py_faster_rcnns_and_decoding_its_exact_inverse():
    rng = np.random.default_rng(0)
    anchors, gt = random_inclusive_boxes(rng, 200), random_inclusive_boxes(rng, 200)
    ours = boxes.encode(continuous(gt), continuous(anchors)).numpy()  # (dy, dx, dh, dw)
    np.testing.assert_allclose(ours, pf_bbox_transform(anchors, gt)[:, [1, 0, 3, 2]], rtol=1e-5, atol=1e-6)

    deltas = rng.normal(0, 0.3, (200, 4))
    decoded = boxes.decode(deltas[:, [1, 0, 3, 2]], continuous(anchors)).numpy()
    theirs = pf_bbox_transform_inv(anchors, deltas)
    # Left / top edges agree; py-faster-rcnn's right / bottom edge (ctr + w / 2, inclusive) ends
    # one pixel further than the box its own encoding describes. Ours inverts the encoding.
    np.testing.assert_allclose(decoded, continuous(theirs) - [0, 0, 1, 1], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(boxes.encode(decoded, continuous(anchors)).numpy(), deltas[:, [1, 0, 3, 2]],
                               rtol=1e-4, atol=1e-4)


def test_clipping_and_minimum_size_are_py_faster_rcnns():
    rng = np.random.default_rng(1)
    b = random_inclusive_boxes(rng, 300, size=400) - 50  # many across the 300 x 250 image's edges
    # Boxes with a pixel inside the image. (A box wholly outside clips to a 1-pixel box there and
    # to an empty one here: below any minimum size in both.)
    b = b[(b[:, 2] >= 0) & (b[:, 0] <= 299) & (b[:, 3] >= 0) & (b[:, 1] <= 249)]
    assert len(b) > 200 and ((b < 0).any(axis=1) | (b[:, 2] > 299) | (b[:, 3] > 249)).sum() > 50
    ours = boxes.clip(continuous(b), [250, 300]).numpy()
    clipped = pf_clip_boxes(b, 250, 300)
    np.testing.assert_allclose(ours, continuous(clipped), atol=1e-5)
    # proposal_layer._filter_boxes: inclusive widths and heights >= min_size.
    ws, hs = clipped[:, 2] - clipped[:, 0] + 1, clipped[:, 3] - clipped[:, 1] + 1
    np.testing.assert_array_equal(boxes.min_side_mask(ours, 16.0).numpy(), (ws >= 16) & (hs >= 16))


def test_iou_is_the_inclusive_pixel_overlap():
    rng = np.random.default_rng(2)
    a, b = random_inclusive_boxes(rng, 50), random_inclusive_boxes(rng, 60)
    np.testing.assert_allclose(boxes.iou(continuous(a), continuous(b)).numpy(), pf_bbox_overlaps(a, b), rtol=1e-5)
    np.testing.assert_allclose(pairwise_iou(continuous(a), continuous(b), inclusive_pixels=False),
                               pf_bbox_overlaps(a, b), rtol=1e-9)


def test_anchors_across_the_border_are_ignored_by_py_faster_rcnns_rule():
    """anchor_target_layer keeps anchors with x1 >= 0, y1 >= 0, x2 < W, y2 < H (inclusive x2);
    half-pixel anchors (scale 1.5) tell ``x2 < W`` from ``x2 + 1 <= W``."""
    height, width = 104, 122  # anchors end at x2 = 121.5 and y2 = 103.5: inside by the rule
    scales = (1.5, 3.0)
    inclusive = pf_generate_anchors(16, (0.5, 1, 2), scales)
    sx, sy = np.meshgrid(np.arange(9) * 16, np.arange(7) * 16)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
    inclusive = (inclusive[None] + shifts[:, None]).reshape(-1, 4)
    theirs = ((inclusive[:, 0] >= 0) & (inclusive[:, 1] >= 0) & (inclusive[:, 2] < width)
              & (inclusive[:, 3] < height))
    # The feature map of a 104 x 122 image at stride 16 (floor) has 6 x 7 positions.
    positions = (np.floor((inclusive[:, 0] + inclusive[:, 2] + 1) / 2 / 16) < 7) & \
        (np.floor((inclusive[:, 1] + inclusive[:, 3] + 1) / 2 / 16) < 6)
    assert (theirs[positions] != ((inclusive[positions, 2] + 1 <= width) & (inclusive[positions, 3] + 1 <= height)
                                  & (inclusive[positions, 0] >= 0) & (inclusive[positions, 1] >= 0))).any()
    # No objects and a minibatch larger than the anchors: every anchor the rule keeps is a
    # sampled negative (0), every other one ignored (-1).
    layer = AnchorTargets(batch_size=100000, stride=16)
    labels, _ = layer(tf.constant(continuous(inclusive), tf.float32), tf.zeros([1, 0, 4]),
                      tf.zeros([1, 0], tf.int32), tf.constant([[height, width, 1.0]]))
    np.testing.assert_array_equal(labels.numpy()[0] == 0, theirs & positions)


def test_voc_pixel_numbers_become_py_faster_rcnns_boxes_and_the_devkits_iou(tmp_path):
    """pascal_voc.py reads an XML box as ``xmin - 1 .. xmax - 1`` (0-based inclusive); the devkit
    compares 1-based inclusive boxes. Our boxes are those continuous ones, and their continuous
    IoU is the devkit's."""
    objects = [("dog", (5, 10, 30, 40), False), ("cat", (1, 1, 80, 60), False)]
    write_voc_folder(tmp_path, {"a": {"size": (60, 80), "objects": objects}}, {"test": ["a"]})
    batch = next(iter(eval_dataset(load_voc_folder(tmp_path, "test"))))
    inclusive = np.array([o[1] for o in objects], np.float64) - 1  # py-faster-rcnn's boxes
    np.testing.assert_allclose(batch["gt_boxes"].numpy()[0], continuous(inclusive))
    rng = np.random.default_rng(3)
    detections_1_based = random_inclusive_boxes(rng, 40, size=80) + 1
    devkit = pairwise_iou(continuous(detections_1_based), continuous(np.array([o[1] for o in objects], float)),
                          inclusive_pixels=False)
    ours = pairwise_iou(continuous(detections_1_based - 1), batch["gt_boxes"].numpy()[0], inclusive_pixels=False)
    np.testing.assert_allclose(ours, devkit, rtol=1e-6)
