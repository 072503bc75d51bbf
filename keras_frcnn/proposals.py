"""Region proposals: RPN outputs -> the top boxes after NMS, per image of a padded batch.

Shape letters: B images, A anchors (H * W * k), N proposals kept after NMS.

Per image, as py-faster-rcnn's proposal layer: decode every anchor's deltas, clip to the image's
valid size, drop boxes with a side under ``min_size * scale``, keep the ``pre_nms_top_n`` best,
NMS at ``nms_iou``, keep the ``post_nms_top_n`` best. Anchors at feature positions that exist only
because of padding (beyond the image's own feature map) are dropped too, so an image's proposals
are the same alone or in a padded batch.

NMS is ``boxes.batched_nms`` (``NonMaxSuppressionV4`` per image, with CPU, GPU and XLA kernels);
``CombinedNonMaxSuppression`` and ``NonMaxSuppressionV5`` are CPU-only.
"""

import keras
import tensorflow as tf

from keras_frcnn import boxes as box_ops
from keras_frcnn.anchors import level_strides
from keras_frcnn.preprocessing import converting

# Scores of dropped boxes; probabilities are >= 0, so NMS's score threshold below excludes them.
_DROPPED = -1.0


def feature_position_mask(anchors, image_info, stride, rounding):
    """``[B, A]``: the anchor's feature position lies inside the image's own feature map.

    An anchor of position (i, j) is centred on ((i + 0.5) * stride, (j + 0.5) * stride), so its
    row is floor(centre / stride); the image's feature map has floor or ceil(h / stride) rows.
    ``stride``: a number, or each anchor's ``[A]`` (a feature pyramid's levels).
    """
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2.0  # [A, 2] (y, x)
    stride = tf.reshape(tf.cast(stride, tf.float32), [-1, 1])  # [1, 1] or [A, 1]
    positions = tf.floor(centres / stride)  # (i + 0.5 divided: exact enough for floor)
    # p < floor(h / s) as (p + 1) s <= h, p < ceil(h / s) as p s < h: whole numbers, exact. (Not
    # h / s: with constant shapes TensorFlow's optimiser turns it into h * (1 / s), and its
    # vectorised reciprocal gives 128 / 32 = 3.9999998, the last row lost.)
    reach = (positions + 1.0 if rounding == "floor" else positions) * stride  # [A, 2]
    sizes = tf.expand_dims(image_info[:, :2], 1)  # [B, 1, 2]
    inside = reach[None] <= sizes if rounding == "floor" else reach[None] < sizes  # [B, A, 2]
    return tf.reduce_all(inside, axis=-1)


def _keep_top_k_in_place(scores, k):
    """``scores [B, A]`` with all but the ``k`` best of each row set to ``_DROPPED``, in place:
    the set a stable sorted top-k keeps (ties at the k-th score go to the lower indices). NMS
    then orders by score itself, breaking ties by the lower index, so its selection equals that
    from the sorted top-k. For the converters: OpenVINO's sorted TopK takes ~180 ms for 6000 of
    10000 scores (O(n k)), its unsorted one 1 ms."""
    kth = tf.reduce_min(tf.math.top_k(scores, k=k, sorted=False).values, axis=1, keepdims=True)
    above = scores > kth
    tied = tf.equal(scores, kth)
    room = k - tf.reduce_sum(tf.cast(above, tf.int32), axis=1, keepdims=True)
    keep = above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=1) <= room))
    return tf.where(keep, scores, _DROPPED)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class Proposals(keras.layers.Layer):
    """``[objectness_logits, deltas, anchors, image_info]`` -> ``(proposals, scores, num_proposals)``.

    Inputs:
      objectness_logits: ``[B, A]`` RPN logits (sigmoid objectness, one per anchor).
      deltas: ``[B, A, 4]`` RPN box deltas ``(dy, dx, dh, dw)``.
      anchors: ``[A, 4]`` yxyx pixels (``Anchors``).
      image_info: ``[B, 3]`` (valid h, valid w, scale) in resized-image pixels.
    Outputs:
      proposals ``[B, N, 4]`` yxyx resized-image pixels, sorted by score, zero rows as padding;
      scores ``[B, N]`` objectness probabilities (0 for padding); num_proposals ``[B]`` int32.
    ``N`` is ``post_nms_top_n[0]`` in training and ``post_nms_top_n[1]`` at inference; the
    ``(train, test)`` pairs default to the paper's (12000, 6000) and (2000, 300). A
    ``pre_nms_top_n`` <= 0 means no cut before NMS.

    A feature pyramid (``level_strides``, e.g. (4, 8, 16, 32, 64)) gives a fifth input,
    ``anchor_levels [A]`` int32 (``PyramidAnchors``): ``pre_nms_top_n`` then applies per level, and
    NMS runs per level (one call, the levels' boxes moved apart), ``post_nms_top_n`` over all
    levels. ``score_threshold``: proposals of lower objectness probability are dropped
    (torchvision's ``rpn_score_thresh``).
    """

    def __init__(self, pre_nms_top_n=(12000, 6000), post_nms_top_n=(2000, 300), nms_iou=0.7,
                 min_size=16, stride=16, feature_rounding="floor", level_strides=(), score_threshold=0.0,
                 **kwargs):
        # Box decoding, clipping and NMS scores stay float32 under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pre_nms_top_n = tuple(int(v) for v in pre_nms_top_n)
        self.post_nms_top_n = tuple(int(v) for v in post_nms_top_n)
        self.nms_iou = float(nms_iou)
        self.min_size = float(min_size)
        self.stride = int(stride)
        if feature_rounding not in ("floor", "ceil"):
            raise ValueError(f"feature_rounding must be 'floor' or 'ceil', got {feature_rounding!r}")
        self.feature_rounding = feature_rounding
        self.level_strides = tuple(int(v) for v in level_strides)
        self.score_threshold = float(score_threshold)

    def call(self, inputs, training=False):
        objectness_logits, deltas, anchors, image_info = inputs[:4]
        anchor_levels = inputs[4] if len(inputs) > 4 else None
        anchor_strides = self.stride if anchor_levels is None else level_strides(anchor_levels, self.level_strides)
        phase = 0 if training else 1
        pre_nms_top_n = self.pre_nms_top_n[phase]
        post_nms_top_n = self.post_nms_top_n[phase]
        image_info = tf.cast(image_info, tf.float32)

        pred_boxes = box_ops.decode(deltas, anchors[None])  # [B, A, 4]
        pred_boxes = box_ops.clip(pred_boxes, image_info[:, :2])
        keep = box_ops.min_side_mask(pred_boxes, self.min_size * image_info[:, 2:3])
        keep &= feature_position_mask(anchors, image_info, anchor_strides, self.feature_rounding)
        scores = tf.sigmoid(tf.cast(objectness_logits, tf.float32))
        if self.score_threshold > 0:
            keep &= scores >= self.score_threshold
        scores = tf.where(keep, scores, _DROPPED)

        num_anchors = tf.shape(scores)[1]
        k = num_anchors if pre_nms_top_n <= 0 else tf.minimum(pre_nms_top_n, num_anchors)
        if self.level_strides:
            scores, pred_boxes, nms_boxes = self._top_k_per_level(scores, pred_boxes, anchor_levels, k,
                                                                  image_info)
        else:
            if converting():
                scores = _keep_top_k_in_place(scores, k)
            else:
                scores, order = tf.math.top_k(scores, k=k, sorted=True)
                pred_boxes = tf.gather(pred_boxes, order, batch_dims=1)
            nms_boxes = pred_boxes
        selected, num_proposals = box_ops.batched_nms(nms_boxes, scores, post_nms_top_n,
                                                      self.nms_iou, _DROPPED / 2)
        valid = tf.range(post_nms_top_n)[None, :] < num_proposals[:, None]  # [B, N]
        proposals = tf.gather(pred_boxes, selected, batch_dims=1)
        proposals = tf.where(valid[..., None], proposals, 0.0)
        scores = tf.where(valid, tf.gather(scores, selected, batch_dims=1), 0.0)
        return proposals, scores, num_proposals

    def _top_k_per_level(self, scores, pred_boxes, anchor_levels, k, image_info):
        """A feature pyramid's candidates: the ``k`` best of each level (torchvision's and
        Detectron's FPN proposals), and their boxes moved apart by level for the one NMS call, so
        that boxes of two levels never suppress each other (NMS per level, merged by score).
        Returns ``(scores, boxes, boxes for NMS)``."""
        offset = tf.reduce_max(image_info[:, :2]) + 1.0
        shifted = pred_boxes + tf.reshape(tf.cast(anchor_levels, tf.float32) * offset, [1, -1, 1])
        masks = [tf.equal(anchor_levels, level)[None] for level in range(len(self.level_strides))]
        if converting():
            kept = tf.fill(tf.shape(scores), _DROPPED)
            for here in masks:
                level_k = tf.minimum(k, tf.reduce_sum(tf.cast(here, tf.int32)))
                kept = tf.where(here, _keep_top_k_in_place(tf.where(here, scores, _DROPPED), level_k), kept)
            return kept, pred_boxes, shifted
        top_scores, orders = [], []
        for here in masks:
            level_k = tf.minimum(k, tf.reduce_sum(tf.cast(here, tf.int32)))
            values, order = tf.math.top_k(tf.where(here, scores, _DROPPED), k=level_k, sorted=True)
            top_scores.append(values)
            orders.append(order)
        order = tf.concat(orders, axis=1)
        return (tf.concat(top_scores, axis=1), tf.gather(pred_boxes, order, batch_dims=1),
                tf.gather(shifted, order, batch_dims=1))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0]
        n = self.post_nms_top_n[1]
        return (batch, n, 4), (batch, n), (batch,)

    def get_config(self):
        return {
            **super().get_config(),
            "pre_nms_top_n": list(self.pre_nms_top_n),
            "post_nms_top_n": list(self.post_nms_top_n),
            "nms_iou": self.nms_iou,
            "min_size": self.min_size,
            "stride": self.stride,
            "feature_rounding": self.feature_rounding,
            "level_strides": list(self.level_strides),
            "score_threshold": self.score_threshold,
        }
