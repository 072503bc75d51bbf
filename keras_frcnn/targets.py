"""Training targets, in the graph, per image of a padded batch.

Shape letters: B images, A anchors, G ground-truth boxes (zero-padded; ``gt_classes`` 0 marks
padding), P proposals, S sampled RoIs per image.

``AnchorTargets`` labels anchors for the RPN (1 positive, 0 negative, -1 ignored) and samples a
minibatch; ``ProposalTargets`` adds the ground truth to the proposals and samples the RoIs the
detector trains on. Sampling is uniform without replacement: random keys, ranked per image.
"""

import keras
import tensorflow as tf

from keras_frcnn import boxes as box_ops
from keras_frcnn.anchors import level_strides
from keras_frcnn.proposals import feature_position_mask


def with_padding_column(gt_boxes, gt_classes):
    """One extra (padding) ground-truth column, so that a batch without any object (G = 0) still
    has a non-empty axis to reduce over."""
    gt_boxes = tf.pad(tf.cast(gt_boxes, tf.float32), [[0, 0], [0, 1], [0, 0]])
    gt_classes = tf.pad(tf.cast(gt_classes, tf.int32), [[0, 0], [0, 1]])
    return gt_boxes, gt_classes


def hash_uniform(image_seeds, ids, salt=0):
    """Uniform noise in [0, 1) from a counter-based hash: ``image_seeds`` int64 ``[B]`` (one per
    image), ``ids`` int ``[B, N]`` or ``[N]`` (each candidate's identity within its image, any
    int64) ->
    float32 ``[B, N]``.

    An image's draws depend on its seed and its candidates only, not on the other images of the
    batch or on any state, so a batch split over replicas samples exactly as on one device, and
    a resumed run as an uninterrupted one. (Keras's stateful seed generators are shared by the
    replicas of a strategy, which race to advance them.) The mixer is the 32-bit integer hash
    ``x = (x ^ x >> 16) * 0x45d9f3b`` in uint32 arithmetic (products wrap modulo 2**32).
    """
    sixteen = tf.constant(16, tf.uint32)

    def fold(v):  # 64 -> 32 bits: the xor of the two halves (in either byte order)
        halves = tf.bitcast(tf.cast(v, tf.int64), tf.uint32)  # [..., 2]
        return tf.bitwise.bitwise_xor(halves[..., 0], halves[..., 1])

    def mix(x):
        return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, sixteen))

    x = (fold(image_seeds)[:, None] * tf.constant(0x27D4EB2D, tf.uint32)
         + fold(ids) * tf.constant(0x165667B1, tf.uint32) + tf.constant(int(salt) % 0x7FFFFFFF, tf.uint32))
    for _ in range(2):
        x = mix(x) * tf.constant(0x45D9F3B, tf.uint32)
    x = tf.bitwise.right_shift(mix(x), tf.constant(8, tf.uint32))
    return tf.cast(x, tf.float32) / float(1 << 24)


# At most this many (ground truth, candidate) IoUs are held at once (4 MB of float32 each
# intermediate): an image of thousands of objects (crowds, aerial views) is matched a slice of its
# ground truth at a time; a VOC image (~40 objects) at 600 x 1000 is one slice. Slices that stay in
# the caches were as fast as the whole (bench_dense_targets.py, BENCHMARKS.md).
MAX_PAIRS = 1 << 20


def match_ground_truth(candidates, gt_boxes, valid_gt, valid_candidates=None, max_pairs=None):
    """Each candidate's best ground truth (torchvision's ``Matcher`` without thresholds).

    ``candidates [B or 1, N, 4]``, ``gt_boxes [B, G, 4]``, ``valid_gt [B, G]`` and
    ``valid_candidates [B or 1, N]`` (pairs with an invalid side count as IoU -1) ->
    ``max_iou [B, N]`` (-1 where a candidate has no valid pair), ``matched [B, N]`` int32 (the
    first ground truth of that IoU) and ``is_best [B, N]``: the candidate holds the highest IoU,
    above 0, of some ground-truth box (ties included).

    The ground truth is taken in slices of at most ``max_pairs`` IoUs for the batch, so memory
    stays bounded however many objects an image holds (default ``MAX_PAIRS``); the result is the
    same for any slicing."""
    max_pairs = min(MAX_PAIRS if max_pairs is None else int(max_pairs), 2 ** 31 - 1)  # int32 shapes
    candidates = tf.cast(candidates, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    batch, num_gt = tf.shape(gt_boxes)[0], tf.shape(gt_boxes)[1]
    num = tf.shape(candidates)[1]
    # The slice: as many ground-truth boxes as max_pairs allows for the whole batch, at least 1.
    width = tf.clip_by_value(max_pairs // tf.maximum(batch * num, 1), 1, tf.maximum(num_gt, 1))
    slices = (num_gt + width - 1) // width
    pad = slices * width - num_gt
    # Slice i is [:, i] of these (no transpose: TensorFlow's oneDNN build logs an error-level line
    # for a transpose of a bool or integer tensor).
    gt_slices = tf.reshape(tf.pad(gt_boxes, [[0, 0], [0, pad], [0, 0]]), [batch, slices, width, 4])
    valid_slices = tf.reshape(tf.pad(valid_gt, [[0, 0], [0, pad]]), [batch, slices, width])
    if valid_candidates is None:
        valid_candidates = tf.ones(tf.shape(candidates)[:2], tf.bool)

    def step(i, max_iou, matched, is_best):
        overlaps = box_ops.iou(gt_slices[:, i], candidates)  # [B, width, N]
        overlaps = tf.where(valid_slices[:, i, :, None] & valid_candidates[:, None, :], overlaps, -1.0)
        best = tf.reduce_max(overlaps, axis=1)
        better = best > max_iou  # an earlier slice keeps ties: the first ground truth, as argmax
        matched = tf.where(better, tf.argmax(overlaps, axis=1, output_type=tf.int32) + i * width, matched)
        best_per_gt = tf.reduce_max(overlaps, axis=2, keepdims=True)  # [B, width, 1]
        is_best |= tf.reduce_any((overlaps == best_per_gt) & (best_per_gt > 0), axis=1)
        return i + 1, tf.maximum(max_iou, best), matched, is_best

    start = (0, tf.fill([batch, num], -1.0), tf.zeros([batch, num], tf.int32), tf.zeros([batch, num], tf.bool))
    # One slice at a time (parallel iterations would hold several slices' IoUs at once).
    _, max_iou, matched, is_best = tf.while_loop(lambda i, *_: i < slices, step, start, parallel_iterations=1)
    return max_iou, matched, is_best


def sample_balanced(positive, negative, batch_size, max_positive, seed, noise=None):
    """A balanced minibatch per row: at most ``max_positive`` of the ``positive`` candidates, the
    rest of ``batch_size`` from the ``negative`` ones, uniformly without replacement
    (torchvision's ``BalancedPositiveNegativeSampler``). Bool ``[B, N]`` inputs -> the sampled
    ``(positive, negative)``; see :func:`sample` for ``seed`` / ``noise``."""
    positive = sample(positive, max_positive, seed, noise, most=max_positive)
    num_positive = tf.reduce_sum(tf.cast(positive, tf.int32), axis=-1)
    return positive, sample(negative, batch_size - num_positive, seed, noise, most=batch_size)


def sample(candidates, max_count, seed, noise=None, most=None):
    """Bool ``[B, N]``: at most ``max_count`` (``[B]`` or scalar) of each row's candidates,
    uniformly at random without replacement, ranked by ``noise`` ``[B, N]`` when given, else by
    draws of the Keras seed generator ``seed``. ``most``: a bound on ``max_count`` known when
    the graph is built (else the row's length).

    The candidates of the ``max_count`` highest keys (noise in [0, 1), the others -1), ties going
    to the lower index: the set a stable descending sort ranks first, found from the row's
    ``most`` highest keys (a top-k, not two full sorts of every row)."""
    if noise is None:
        noise = keras.random.uniform(tf.shape(candidates), seed=seed)
    keys = tf.where(candidates, noise, -1.0)
    max_count = tf.reshape(tf.cast(max_count, tf.int32), [-1, 1])
    k = tf.shape(keys)[-1] if most is None else tf.minimum(int(most), tf.shape(keys)[-1])
    # The k highest keys and below them -2, the key to keep at when the row holds fewer.
    top = tf.pad(tf.math.top_k(keys, k=k).values, [[0, 0], [0, 1]], constant_values=-2.0)
    last = tf.clip_by_value(max_count - 1, 0, k) + tf.zeros_like(top[:, :1], tf.int32)  # [B, 1]
    kth = tf.gather(top, last, batch_dims=1)  # the lowest key kept
    above = keys > kth
    tied = tf.equal(keys, kth)
    room = max_count - tf.reduce_sum(tf.cast(above, tf.int32), axis=-1, keepdims=True)
    keep = above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=-1) <= room))
    return candidates & keep & (max_count > 0)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class AnchorTargets(keras.layers.Layer):
    """``[anchors, gt_boxes, gt_classes, image_info]`` -> ``(labels [B, A] int32, deltas [B, A, 4])``.

    Positives: IoU >= ``positive_iou`` with some ground truth, or an anchor of highest IoU of some
    ground-truth box (ties included; a box no anchor overlaps gets none: the original's rule would
    then make every zero-overlap anchor positive). Negatives: max IoU < ``negative_iou``; positives
    win. Anchors crossing the valid image by more than ``allowed_border`` are ignored. Then at most
    ``batch_size * positive_fraction`` positives and the rest negatives are sampled; the others
    become -1. ``deltas`` are the regression targets (zero except for positives).
    """

    def __init__(self, positive_iou=0.7, negative_iou=0.3, batch_size=256, positive_fraction=0.5,
                 allowed_border=0, stride=16, feature_rounding="floor", seed=None, level_strides=(), **kwargs):
        # IoUs and regression targets stay float32 under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)
        self.batch_size = int(batch_size)
        self.positive_fraction = float(positive_fraction)
        self.allowed_border = float(allowed_border)
        self.stride = int(stride)
        self.feature_rounding = feature_rounding
        self.level_strides = tuple(int(v) for v in level_strides)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, anchors, gt_boxes, gt_classes, image_info, image_seeds=None, anchor_levels=None):
        """``image_seeds`` int64 ``[B]``: per-image sampling seeds (the training pipeline's
        ``sample_seed``); without them, the layer's seed generator draws. ``anchor_levels [A]``:
        each anchor's level of a feature pyramid (``level_strides``; else the layer's ``stride``)."""
        strides = self.stride if anchor_levels is None else level_strides(anchor_levels, self.level_strides)
        gt_boxes, gt_classes = with_padding_column(gt_boxes, gt_classes)
        image_info = tf.cast(image_info, tf.float32)
        valid_gt = gt_classes > 0  # [B, G]
        border = self.allowed_border
        h, w = image_info[:, 0:1], image_info[:, 1:2]
        # py-faster-rcnn's rule on inclusive boxes, x1 >= -border and x2 < W + border, with the
        # inclusive x2 = our continuous xmax - 1.
        inside = ((anchors[None, :, 0] >= -border) & (anchors[None, :, 1] >= -border)
                  & (anchors[None, :, 2] - 1.0 < h + border) & (anchors[None, :, 3] - 1.0 < w + border))
        inside &= feature_position_mask(anchors, image_info, strides, self.feature_rounding)

        # max_iou -1 when the image has no objects
        max_iou, matched, is_best = match_ground_truth(anchors[None], gt_boxes, valid_gt, inside)

        positive = inside & (is_best | (max_iou >= self.positive_iou))
        negative = inside & (max_iou < self.negative_iou) & ~positive
        noise = None
        if image_seeds is not None:
            noise = hash_uniform(image_seeds, self._anchor_ids(anchors, strides, anchor_levels), self.seed or 0)
        # py-faster-rcnn: int(RPN_FG_FRACTION * RPN_BATCHSIZE) positives at most.
        positive, negative = sample_balanced(positive, negative, self.batch_size,
                                             int(self.batch_size * self.positive_fraction),
                                             self.seed_generator, noise)
        labels = tf.where(positive, 1, tf.where(negative, 0, -1))

        matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)  # [B, A, 4]
        deltas = box_ops.encode(matched_boxes, anchors[None])
        deltas = tf.where(positive[..., None], deltas, 0.0)
        return tf.stop_gradient(labels), tf.stop_gradient(deltas)

    def _anchor_ids(self, anchors, strides, levels=None):
        """``[A]`` ids of the anchors by feature cell, size and pyramid level, not by flat index:
        an anchor keeps its id whatever the width of the (padded) feature map."""
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2.0
        strides = tf.reshape(tf.cast(strides, tf.float32), [-1, 1])
        cells = tf.cast(tf.floor(centres / strides), tf.int64) & 4095  # (row, col)
        sizes = tf.cast(tf.round(anchors[:, 2:] - anchors[:, :2]), tf.int64) & 4095  # (h, w)
        ids = ((cells[:, 0] * 4096 + cells[:, 1]) * 4096 + sizes[:, 0]) * 4096 + sizes[:, 1]
        if levels is not None:  # two levels of one stride hold the same boxes
            ids += tf.cast(levels, tf.int64) * 2 ** 48
        return ids

    def get_config(self):
        return {**super().get_config(), "positive_iou": self.positive_iou,
                "negative_iou": self.negative_iou, "batch_size": self.batch_size,
                "positive_fraction": self.positive_fraction, "allowed_border": self.allowed_border,
                "stride": self.stride, "feature_rounding": self.feature_rounding, "seed": self.seed,
                "level_strides": list(self.level_strides)}


@keras.saving.register_keras_serializable(package="keras_frcnn")
class ProposalTargets(keras.layers.Layer):
    """``[proposals, num_proposals, gt_boxes, gt_classes]`` -> sampled RoIs and their targets.

    The ground-truth boxes join the proposals as candidates; foreground: IoU >= ``fg_iou``
    (at most ``fg_fraction * batch_rois``), background: IoU in ``[bg_iou[0], bg_iou[1])``, the rest
    of the ``batch_rois``. No gradient flows through the proposal boxes.

    Returns ``rois [B, S, 4]``, ``labels [B, S]`` int32 (0 background, 1..N the class),
    ``deltas [B, S, 4]`` (class-specific regression targets divided by ``box_stds``; zero for
    background) and ``valid [B, S]`` (False where fewer than S candidates qualified), foreground first.
    """

    def __init__(self, batch_rois=128, fg_fraction=0.25, fg_iou=0.5, bg_iou=(0.0, 0.5),
                 box_stds=(0.1, 0.1, 0.2, 0.2), seed=None, **kwargs):
        # IoUs and regression targets stay float32 under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.batch_rois = int(batch_rois)
        self.fg_fraction = float(fg_fraction)
        self.fg_iou = float(fg_iou)
        self.bg_iou = tuple(float(v) for v in bg_iou)
        self.box_stds = tuple(float(v) for v in box_stds)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, proposals, num_proposals, gt_boxes, gt_classes, image_seeds=None):
        """``image_seeds`` int64 ``[B]``: per-image sampling seeds (the training pipeline's
        ``sample_seed``); without them, the layer's seed generator draws."""
        proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
        gt_boxes, gt_classes = with_padding_column(gt_boxes, gt_classes)
        batch = tf.shape(proposals)[0]
        valid_gt = gt_classes > 0
        valid_proposals = tf.range(tf.shape(proposals)[1])[None, :] < tf.reshape(tf.cast(num_proposals, tf.int32), [-1, 1])
        # Padding rows guarantee at least S candidates for the fixed-size selection below.
        padding = tf.zeros([batch, self.batch_rois, 4])
        candidates = tf.concat([proposals, gt_boxes, padding], axis=1)
        usable = tf.concat([valid_proposals, valid_gt, tf.zeros([batch, self.batch_rois], tf.bool)], axis=1)

        max_iou, matched, _ = match_ground_truth(candidates, gt_boxes, valid_gt)  # [B, P + G + S]
        max_iou = tf.maximum(max_iou, 0.0)  # 0 for images without objects: background

        foreground = usable & (max_iou >= self.fg_iou)
        background = usable & (max_iou < self.bg_iou[1]) & (max_iou >= self.bg_iou[0])
        noise = None
        if image_seeds is not None:
            # A candidate's id within its image: proposal j is j, ground truth g comes right after
            # the image's own proposals, whatever the batch's padding.
            num_p = tf.shape(proposals)[1]
            own = tf.reshape(tf.cast(num_proposals, tf.int32), [-1, 1])
            ids = tf.concat([tf.tile(tf.range(num_p)[None], [batch, 1]),
                             own + tf.range(tf.shape(gt_boxes)[1])[None],
                             tf.fill([batch, self.batch_rois], -1)], axis=1)
            noise = hash_uniform(image_seeds, ids, self.seed or 0)
        # py-faster-rcnn: np.round(FG_FRACTION * rois_per_image) foreground RoIs at most.
        foreground, background = sample_balanced(foreground, background, self.batch_rois,
                                                 round(self.fg_fraction * self.batch_rois),
                                                 self.seed_generator, noise)

        # Foreground first, then background, then unused candidates: a stable fixed-size pick.
        priority = tf.where(foreground, 2, tf.where(background, 1, 0))
        _, picked = tf.math.top_k(priority, k=self.batch_rois, sorted=True)
        rois = tf.gather(candidates, picked, batch_dims=1)
        is_fg = tf.gather(foreground, picked, batch_dims=1)
        valid = is_fg | tf.gather(background, picked, batch_dims=1)
        matched = tf.gather(matched, picked, batch_dims=1)
        labels = tf.where(is_fg, tf.gather(gt_classes, matched, batch_dims=1), 0)
        deltas = box_ops.encode(tf.gather(gt_boxes, matched, batch_dims=1), rois, self.box_stds)
        deltas = tf.where(is_fg[..., None], deltas, 0.0)
        return (tf.stop_gradient(rois), tf.stop_gradient(labels), tf.stop_gradient(deltas),
                tf.stop_gradient(valid))

    def get_config(self):
        return {**super().get_config(), "batch_rois": self.batch_rois, "fg_fraction": self.fg_fraction,
                "fg_iou": self.fg_iou, "bg_iou": list(self.bg_iou), "box_stds": list(self.box_stds),
                "seed": self.seed}
