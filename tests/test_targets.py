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


def test_hash_uniform_is_per_image_and_uniform():
    from keras_frcnn.targets import hash_uniform

    ids = tf.range(50000, dtype=tf.int64)
    u = hash_uniform(tf.constant([7, -3, 2**40], tf.int64), ids, salt=5).numpy()
    assert u.shape == (3, 50000) and (u >= 0).all() and (u < 1).all()
    np.testing.assert_allclose(u.mean(axis=1), 0.5, atol=0.01)
    assert np.histogram(u[0], bins=10, range=(0, 1))[0].min() > 4500  # ~5000 per tenth
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.02
    # A row depends on its own seed only, not on the other rows of the batch.
    np.testing.assert_array_equal(hash_uniform(tf.constant([-3], tf.int64), ids, salt=5).numpy()[0], u[1])
    assert not np.array_equal(hash_uniform(tf.constant([7], tf.int64), ids, salt=6).numpy()[0], u[0])


def test_hash_uniform_golden_values():
    """The hash's stream, pinned against the mixer in Python's integers: the sampled anchors and
    RoIs and the dropout masks of every seeded run depend on it."""
    from keras_frcnn.targets import hash_uniform

    def reference(seed, ident, salt):
        fold = lambda v: ((v & 0xFFFFFFFFFFFFFFFF) ^ ((v & 0xFFFFFFFFFFFFFFFF) >> 32)) & 0xFFFFFFFF  # noqa: E731
        x = (fold(seed) * 0x27D4EB2D + fold(ident) * 0x165667B1 + salt % 0x7FFFFFFF) & 0xFFFFFFFF
        for _ in range(2):
            x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
        return ((x ^ (x >> 16)) >> 8) / float(1 << 24)

    seeds = [0, 7, -3, 2**40 + 5, -(2**63), 2**63 - 1]
    ids = [0, 1, -1, 4095, 2**48 + 17, -(2**62), 2**63 - 1, 123456789]
    for salt in (0, 5, 2**31 + 3):
        got = hash_uniform(tf.constant(seeds, tf.int64), tf.constant(ids, tf.int64), salt).numpy()
        want = np.array([[reference(s, i, salt) for i in ids] for s in seeds], np.float32)
        np.testing.assert_array_equal(got, want)


def test_sample_takes_the_first_of_a_stable_sort(rng):
    """``sample`` keeps the candidates a stable descending sort of the keys ranks first (ties to
    the lower index), for any count: none, fewer than the candidates, more, with and without a
    bound known when the graph is built."""
    from keras_frcnn.targets import sample

    for trial in range(120):
        n = int(rng.integers(0, 60))
        candidates = rng.uniform(size=(3, n)) < rng.uniform()
        noise = (rng.integers(0, 6, (3, n)) / 8.0).astype(np.float32)  # many ties
        count = rng.integers(-1, n + 3, 3) if trial % 2 else np.full(3, rng.integers(0, n + 3))
        most = None if trial % 3 == 0 else max(int(count.max()), 0) + int(rng.integers(0, 3))
        want = np.zeros_like(candidates)
        for row in range(3):
            order = np.argsort(-np.where(candidates[row], noise[row], -1.0), kind="stable")
            want[row, order[:max(count[row], 0)]] = True
        want &= candidates
        got = sample(tf.constant(candidates), tf.constant(count if trial % 2 else int(count[0])), None,
                     tf.constant(noise), most=most)
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"n={n} count={count} most={most}")


def test_seeded_sampling_of_an_image_does_not_depend_on_its_batch():
    """With per-image seeds, an image samples the same anchors and RoIs alone as in a padded
    batch with a larger image (its anchors are named by cell and size, not by flat index)."""
    from keras_frcnn.anchors import Anchors

    rng = np.random.default_rng(3)
    layer = anchor_targets(batch_size=32, feature_rounding="floor", seed=4)
    small = np.zeros((1, 6, 7, 8), np.float32)  # a 96 x 112 image's map
    large = np.zeros((2, 9, 10, 8), np.float32)  # padded to a 144 x 160 image's map
    gt = np.array([[[10, 10, 60, 70], [40, 30, 90, 100]]], np.float32)
    gt_classes = np.array([[1, 2]], np.int32)
    info = np.array([[96.0, 112.0, 1.0]], np.float32)
    seeds = tf.constant([123456789], tf.int64)
    anchors_small = Anchors(scales=(2.0, 4.0))(small)
    anchors_large = Anchors(scales=(2.0, 4.0))(large)
    alone, _ = layer(anchors_small, gt, gt_classes, info, seeds)
    batched, _ = layer(anchors_large, np.concatenate([gt, gt + 20]), np.concatenate([gt_classes] * 2),
                       np.array([[96.0, 112.0, 1.0], [144.0, 160.0, 1.0]], np.float32),
                       tf.constant([123456789, 5], tf.int64))
    # The first image's anchors inside its own map, in the padded map's flat order.
    keep = (anchors_large.numpy()[:, None, :] == anchors_small.numpy()[None]).all(-1).any(-1)
    np.testing.assert_array_equal(batched.numpy()[0][keep], alone.numpy()[0])
    assert (alone.numpy() == 1).sum() > 0 and (alone.numpy() == 0).sum() == 32 - (alone.numpy() == 1).sum()

    targets = ProposalTargets(batch_rois=16, fg_fraction=0.25, seed=9)
    proposals = random_boxes(rng, 40, size=96.0)[None]
    rois, labels, _, valid = targets(proposals, np.array([40]), gt, gt_classes, seeds)
    padded = np.concatenate([np.concatenate([proposals, np.zeros((1, 20, 4), np.float32)], 1),
                             random_boxes(rng, 60, size=144.0)[None]])
    rois2, labels2, _, valid2 = targets(padded, np.array([40, 60]), np.concatenate([gt, gt]),
                                        np.concatenate([gt_classes] * 2), tf.constant([123456789, 1], tf.int64))
    np.testing.assert_array_equal(rois2.numpy()[0], rois.numpy()[0])
    np.testing.assert_array_equal(labels2.numpy()[0], labels.numpy()[0])


def test_samplers_through_the_training_views_fill_their_minibatches():
    """End to end through the RPN and detector views: 256 anchors per image (at most 128
    positive) and 128 RoIs a step, 64 per image of the 2-image detector step (at most 16
    foreground each, 32 a step), as py-faster-rcnn; fewer only where an image has fewer
    candidates."""
    import dataclasses

    from conftest import tiny_config
    from keras_frcnn.models import build_models

    base = tiny_config()
    cfg = dataclasses.replace(
        base, rpn=dataclasses.replace(base.rpn, batch_size=256, positive_fraction=0.5),
        detector=dataclasses.replace(base.detector, batch_rois=128, fg_fraction=0.25),
        train=dataclasses.replace(base.train, detector_batch_images=2, rpn_batch_images=1))
    net = build_models(cfg, 3, weights=None)
    rng = np.random.default_rng(0)
    size = 320  # 20 x 20 positions x 6 anchors: thousands of candidates
    gt_boxes = np.zeros((2, 12, 4), np.float32)
    gt_boxes[0] = random_boxes(rng, 12, size=size, min_side=40)
    gt_boxes[1, :1] = [[100, 100, 180, 160]]
    gt_classes = np.zeros((2, 12), np.int32)
    gt_classes[0] = rng.integers(1, 4, 12)
    gt_classes[1, 0] = 2
    # Image 0: 300 proposals near its boxes (many foreground); image 1: only 9 proposals.
    proposals = np.zeros((2, 300, 4), np.float32)
    jitter = rng.normal(0, 6, (300, 4)).astype(np.float32)
    proposals[0] = np.clip(gt_boxes[0][rng.integers(0, 12, 300)] + jitter, 0, size)
    proposals[0, 150:] = random_boxes(rng, 150, size=size, min_side=8)
    proposals[1, :9] = random_boxes(rng, 9, size=size, min_side=8)
    batch = {"images": rng.integers(0, 255, (2, size, size, 3)).astype(np.uint8),
             "image_info": np.array([[size, size, 1.0]] * 2, np.float32), "gt_boxes": gt_boxes,
             "gt_classes": gt_classes, "num_gt": np.array([12, 1], np.int32),
             "sample_seed": np.array([3, 4], np.int64), "proposals": proposals,
             "num_proposals": np.array([300, 9], np.int32)}

    rpn = net.rpn_model(batch, training=True)
    labels = rpn["anchor_labels"].numpy()
    assert ((labels >= 0).sum(axis=1) == 256).all()
    assert ((labels == 1).sum(axis=1) <= 128).all() and (labels[0] == 1).sum() > 20

    detector = net.detector_model(batch, training=True)
    valid, roi_labels = detector["roi_valid"].numpy(), detector["roi_labels"].numpy()
    assert valid.shape == (2, 64)  # 128 a step over 2 images
    assert valid[0].sum() == 64 and (roi_labels[0] > 0).sum() == 16  # plenty of foreground: 25 %
    # Image 1 has 9 proposals + 1 ground-truth box: 10 candidates, all sampled.
    assert valid[1].sum() == 10 and 1 <= (roi_labels[1] > 0).sum() <= 10
    assert valid.sum() + (64 - 10) == 128

    joint = net.joint_model({k: v[:1] for k, v in batch.items()}, training=True)
    assert joint["roi_valid"].shape == (1, 128)  # the 1-image joint step: 128 RoIs per image


def dense_match(candidates, gt, valid_gt, valid_candidates):
    """The reference: every IoU at once, in numpy."""
    batch = gt.shape[0]
    candidates = np.broadcast_to(candidates, (batch,) + candidates.shape[1:])
    overlaps = box_ops.iou(gt, candidates).numpy()  # [B, G, N]
    overlaps = np.where(valid_gt[:, :, None] & valid_candidates[:, None, :], overlaps, -1.0)
    best_per_gt = overlaps.max(axis=2, keepdims=True)
    is_best = ((overlaps == best_per_gt) & (best_per_gt > 0)).any(axis=1)
    return overlaps.max(axis=1), overlaps.argmax(axis=1), is_best


def test_matching_in_slices_of_ground_truth_equals_the_dense_match(rng):
    from keras_frcnn.targets import match_ground_truth

    candidates = random_boxes(rng, 60, size=100.0, min_side=4)[None]
    gt = np.stack([random_boxes(rng, 23, size=100.0, min_side=4) for _ in range(3)])
    gt[0, 5] = gt[0, 17]  # one box twice: ties go to the first, in another slice
    gt[1, 3] = candidates[0, 8]  # a candidate equal to a ground truth box
    valid_gt = rng.random((3, 23)) < 0.8
    valid_gt[2] = False  # an image without objects
    valid_candidates = rng.random((3, 60)) < 0.9
    want = dense_match(candidates, gt, valid_gt, valid_candidates)
    assert want[2].any() and (want[0][2] == -1).all()

    # One slice, slices of 6, 1 and 2 ground-truth boxes (the last slice padded), in and out of XLA.
    for max_pairs in (None, 3 * 60 * 6, 3 * 60, 3 * 60 * 2 + 7):
        for jit in (False, True):
            run = tf.function(lambda *a: match_ground_truth(*a, max_pairs=max_pairs), jit_compile=jit)
            got = [t.numpy() for t in run(candidates, gt, valid_gt, valid_candidates)]
            np.testing.assert_array_equal(got[0], want[0].astype(np.float32), err_msg=f"{max_pairs} {jit}")
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"{max_pairs} {jit}")
            np.testing.assert_array_equal(got[2], want[2], err_msg=f"{max_pairs} {jit}")


def test_targets_of_a_crowded_image_do_not_depend_on_the_slicing(rng, monkeypatch):
    from keras_frcnn import targets

    anchors = random_boxes(rng, 400, size=100.0, min_side=8)
    gt = random_boxes(rng, 2 * 150, size=100.0, min_side=3).reshape(2, 150, 4)
    classes = rng.integers(0, 4, (2, 150)).astype(np.int32)
    info = np.array([[100.0, 100.0, 1.0]] * 2, np.float32)
    proposals = random_boxes(rng, 2 * 90, size=100.0, min_side=4).reshape(2, 90, 4)
    seeds = np.array([3, 4], np.int64)

    def both():
        labels, deltas = anchor_targets(batch_size=64)(anchors, gt, classes, info, seeds)
        sampled = ProposalTargets(batch_rois=32, seed=0)(proposals, np.array([90, 70], np.int32), gt, classes, seeds)
        return [t.numpy() for t in (labels, deltas, *sampled)]

    whole = both()
    monkeypatch.setattr(targets, "MAX_PAIRS", 2 * 400 * 7)  # slices of 7 of the 151 columns
    sliced = both()
    for a, b in zip(whole, sliced):
        np.testing.assert_array_equal(a, b)
    assert (whole[0] == 1).any() and (whole[3] > 0).any()
