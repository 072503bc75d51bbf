import numpy as np
import tensorflow as tf

from keras_frcnn import boxes as box_ops
from keras_frcnn.targets import AnchorTargets, ProposalTargets
from conftest import random_boxes

INFO = np.array([[100.0, 100.0, 1.0]], np.float32)


def anchor_targets(**kwargs):
    defaults = dict(batch_size=256, positive_fraction=0.5, stride=16, feature_rounding="ceil", seed=0)
    return AnchorTargets(**{**defaults, **kwargs})


def test_best_anchor_rule_with_ties_and_thresholds():
    anchors = np.array([
        [0, 0, 20, 20],  # IoU 0.25 with gt A (its best, tied with the next): positive
        [20, 20, 40, 40],  # IoU 0.25 with gt A too: positive (ties included)
        [50, 50, 90, 90],  # IoU 0.81 with gt B: positive by threshold
        [51, 51, 87, 87],  # IoU 1225 / 1367 ~ 0.90 with gt B: positive by threshold
        [60, 0, 80, 20],  # no overlap: negative
        [30, 30, 50, 50],  # IoU with A = 100 / (400 + 1600 - 100) ~ 0.05: negative
    ], np.float32)
    gt_boxes = np.array([[[0, 0, 40, 40], [50, 50, 86, 86]]], np.float32)
    gt_classes = np.array([[1, 2]], np.int32)
    labels, deltas = anchor_targets()(anchors, gt_boxes, gt_classes, INFO)
    iou = box_ops.iou(anchors, gt_boxes[0]).numpy()
    assert iou[0, 0] == iou[1, 0] == 0.25 and iou[5, 0] < 0.3 and iou[3, 1] >= 0.7
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, 1, 1, 0, 0])
    # Regression targets only for positives; they decode back to the matched ground truth.
    d = deltas.numpy()[0]
    assert not d[4:].any()
    np.testing.assert_allclose(box_ops.decode(d[:1], anchors[:1]).numpy(), gt_boxes[0, :1], atol=1e-4)


def test_cross_boundary_anchors_are_ignored():
    anchors = np.array([[-10, 0, 30, 40], [0, 0, 40, 40], [70, 70, 110, 110]], np.float32)
    gt_boxes = np.array([[[0, 0, 40, 40]]], np.float32)
    labels, _ = anchor_targets()(anchors, gt_boxes, np.array([[1]], np.int32), INFO)
    np.testing.assert_array_equal(labels.numpy()[0], [-1, 1, -1])


def test_image_without_objects_gives_only_negatives(rng):
    anchors = random_boxes(rng, 300, size=100.0, min_side=4)
    labels, deltas = anchor_targets(batch_size=64)(anchors, np.zeros((1, 3, 4), np.float32),
                                                   np.zeros((1, 3), np.int32), INFO)
    labels = labels.numpy()
    assert (labels <= 0).all() and (labels == 0).sum() == 64
    assert not deltas.numpy().any()


def test_sampling_bounds(rng):
    # Many positives: at most batch_size * fraction of them, and batch_size in all.
    centres = rng.uniform(20, 80, (500, 2))
    anchors = np.concatenate([centres - 15, centres + 15], 1).astype(np.float32)
    gt = np.array([[[35, 35, 65, 65], [20, 20, 50, 50]]], np.float32)
    labels, _ = anchor_targets(batch_size=32, positive_fraction=0.25)(anchors, gt, np.array([[1, 2]]), INFO)
    labels = labels.numpy()[0]
    assert (labels == 1).sum() <= 8 and (labels >= 0).sum() <= 32
    assert (labels == 1).sum() > 0


def test_proposal_targets_sampling_bounds_and_ground_truth_added(rng):
    proposals = random_boxes(rng, 400, size=200.0, min_side=8)[None]
    gt_boxes = np.array([[[10, 10, 60, 70], [100, 120, 150, 190]]], np.float32)
    gt_classes = np.array([[3, 1]], np.int32)
    layer = ProposalTargets(batch_rois=64, fg_fraction=0.25, seed=0)
    rois, labels, deltas, valid = [t.numpy()[0] for t in layer(proposals, np.array([400]), gt_boxes, gt_classes)]
    fg = labels > 0
    assert valid.sum() <= 64 and fg.sum() <= 16 and fg.sum() >= 2  # the gt boxes themselves
    iou = box_ops.iou(rois, gt_boxes[0]).numpy().max(-1)
    assert (iou[fg] >= 0.5).all() and (iou[valid & ~fg] < 0.5).all()
    # Class-specific targets with the stds decode back to the matched ground truth.
    matched = gt_boxes[0][box_ops.iou(rois, gt_boxes[0]).numpy().argmax(-1)]
    back = box_ops.decode(deltas[fg], rois[fg], (0.1, 0.1, 0.2, 0.2)).numpy()
    np.testing.assert_allclose(back, matched[fg], atol=1e-3)
    assert not deltas[~fg].any()


def test_proposal_targets_without_objects_and_no_gradient():
    proposals = tf.constant([[[10.0, 10.0, 50.0, 50.0], [0.0, 0.0, 30.0, 30.0]]])
    layer = ProposalTargets(batch_rois=8, seed=0)
    with tf.GradientTape() as tape:
        tape.watch(proposals)
        rois, labels, deltas, valid = layer(proposals, tf.constant([2]), tf.zeros([1, 1, 4]), tf.zeros([1, 1], tf.int32))
        total = tf.reduce_sum(rois)
    assert tape.gradient(total, proposals) is None
    assert valid.numpy().sum() == 2 and not labels.numpy().any() and not deltas.numpy().any()


def test_a_batch_without_any_object_has_targets():
    # G = 0: no ground-truth column at all (a padded batch of empty images).
    anchors = np.array([[0, 0, 32, 32], [40, 40, 80, 80]], np.float32)
    labels, deltas = anchor_targets()(anchors, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int32),
                                      np.tile(INFO, (2, 1)))
    assert (labels.numpy() == 0).all() and not deltas.numpy().any()
    rois, roi_labels, roi_deltas, valid = ProposalTargets(batch_rois=4, seed=0)(
        np.tile(anchors[None], (2, 1, 1)), np.array([2, 1], np.int32), np.zeros((2, 0, 4), np.float32),
        np.zeros((2, 0), np.int32))
    np.testing.assert_array_equal(valid.numpy().sum(1), [2, 1])
    assert not roi_labels.numpy().any() and not roi_deltas.numpy().any()
