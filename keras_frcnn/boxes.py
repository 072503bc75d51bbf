"""Box maths. One internal format: absolute pixels ``[ymin, xmin, ymax, xmax]``.

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so an image of height ``H`` spans
``[0, H]`` and a box's height is ``ymax - ymin`` (no +1). The original Caffe code uses inclusive
pixel boxes (``x2 = x1 + w - 1``); an inclusive box ``(x1, y1, x2, y2)`` is our
``[y1, x1, y2 + 1, x2 + 1]``. Conversions happen only at the edges (loaders, outputs) with the
``from_*`` / ``to_*`` functions below.

Box coding follows the paper: ``ty = (y - ya) / ha``, ``tx = (x - xa) / wa``, ``th = log(h / ha)``,
``tw = log(w / wa)``, in the order ``[dy, dx, dh, dw]`` (``keras.utils.bounding_boxes``'s
``center_yxhw`` coding), divided by per-coordinate ``stds`` (the detector uses 0.1, 0.1, 0.2, 0.2).
Invariant: ``decode(encode(boxes, anchors), anchors) == boxes``.

Shape letters: ``N``, ``M`` box counts; ``...`` any leading (batch) dimensions.
"""

import math

import keras
import tensorflow as tf

# exp() of a log-scale delta is clamped here so that a wild regression output cannot overflow
# (the value torchvision and detectron2 use: a box at most 1000/16 times its anchor).
DELTA_CLAMP = math.log(1000.0 / 16)

_bb = keras.utils.bounding_boxes


def area(boxes):
    """``[..., 4]`` -> ``[...]``; zero for degenerate boxes."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def iou(boxes1, boxes2):
    """Pairwise IoU: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]`` in ``[0, 1]``.

    Leading dimensions broadcast (``keras.utils.bounding_boxes.compute_iou`` takes rank 2 or 3
    only, hence this function). A pair whose union is empty has IoU 0.
    """
    boxes1 = tf.convert_to_tensor(boxes1, tf.float32)
    boxes2 = tf.convert_to_tensor(boxes2, tf.float32)
    b1 = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b2 = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    inter_h = tf.maximum(tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.0)
    inter = inter_h * inter_w
    union = tf.expand_dims(area(boxes1), -1) + tf.expand_dims(area(boxes2), -2) - inter
    return tf.math.divide_no_nan(inter, union)


def _centre_size(boxes):
    """``[..., 4]`` yxyx -> centres ``[..., 2]`` (y, x) and sizes ``[..., 2]`` (h, w)."""
    size = boxes[..., 2:] - boxes[..., :2]
    return boxes[..., :2] + size / 2.0, size


def encode(boxes, anchors, stds=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets ``[..., N, 4]`` ``(dy, dx, dh, dw) / stds`` of ``boxes`` w.r.t. ``anchors``.

    ``keras.utils.bounding_boxes.encode_box_to_deltas``'s arithmetic (sizes at least Keras's
    epsilon, so a degenerate box has a finite log) without its format conversions through
    ``xyxy``: half the time over a training step's anchors (BENCHMARKS.md, issue 14)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    box_centres, box_sizes = _centre_size(boxes)
    anchor_centres, anchor_sizes = _centre_size(anchors)
    epsilon = keras.config.epsilon()
    anchor_sizes = tf.maximum(anchor_sizes, epsilon)
    deltas = tf.concat([(box_centres - anchor_centres) / anchor_sizes,
                        tf.math.log(tf.maximum(box_sizes, epsilon) / anchor_sizes)], axis=-1)
    return deltas / tf.constant(stds, tf.float32)


def decode(deltas, anchors, stds=(1.0, 1.0, 1.0, 1.0), clamp=DELTA_CLAMP):
    """Boxes ``[..., N, 4]`` from ``deltas`` (as produced by :func:`encode`) and ``anchors``.

    The log-scale deltas ``dh, dw`` (after multiplying by ``stds``) are clamped at ``clamp``.
    ``keras.utils.bounding_boxes.decode_deltas_to_boxes``'s arithmetic without its format
    conversions (see :func:`encode`).
    """
    deltas = tf.convert_to_tensor(deltas, tf.float32) * tf.constant(stds, tf.float32)
    anchor_centres, anchor_sizes = _centre_size(tf.convert_to_tensor(anchors, tf.float32))
    centres = deltas[..., :2] * anchor_sizes + anchor_centres
    half = tf.exp(tf.minimum(deltas[..., 2:], clamp)) * anchor_sizes / 2.0
    return tf.concat([centres - half, centres + half], axis=-1)


def clip(boxes, image_size):
    """Clip ``[..., N, 4]`` boxes to ``[0, h] x [0, w]``; ``image_size`` is ``[..., 2]`` (h, w)
    with the leading dimensions of ``boxes`` (one size per image of a padded batch), or ``[2]``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    size = tf.cast(image_size, tf.float32)
    h = tf.expand_dims(size[..., 0], -1)
    w = tf.expand_dims(size[..., 1], -1)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack(
        [tf.clip_by_value(ymin, 0.0, h), tf.clip_by_value(xmin, 0.0, w),
         tf.clip_by_value(ymax, 0.0, h), tf.clip_by_value(xmax, 0.0, w)],
        axis=-1,
    )


def min_side_mask(boxes, min_size):
    """Boolean ``[..., N]``: both sides of the box are at least ``min_size`` (broadcastable)."""
    min_size = tf.cast(min_size, tf.float32)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return (h >= min_size) & (w >= min_size)


# --- conversions at the edges ------------------------------------------------------------------


def batched_nms(boxes, scores, max_output_size, iou_threshold, score_threshold):
    """Greedy NMS per image: ``boxes [B, N, 4]`` yxyx, ``scores [B, N]`` -> (``selected [B, K]``
    int32 indices in decreasing score, zero padded, ``num_selected [B]``), K = ``max_output_size``.

    ``NonMaxSuppressionV4`` (kernels on CPU and GPU, and in XLA) in a ``map_fn`` over the batch:
    it stops at K boxes, while the batched ``non_max_suppression_padded`` compares tiles of all N
    boxes and took 3-10x longer on the CPU (1-2 images per batch here).
    """
    def one(args):
        selected, count = tf.raw_ops.NonMaxSuppressionV4(
            boxes=args[0], scores=args[1], max_output_size=max_output_size, iou_threshold=iou_threshold,
            score_threshold=score_threshold, pad_to_max_output_size=True)
        return selected, count

    # XLA's NonMaxSuppressionV4 needs at least K candidates: pad with boxes below the threshold.
    boxes, scores = tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)
    missing = tf.maximum(max_output_size - tf.shape(scores)[1], 0)
    boxes = tf.pad(boxes, [[0, 0], [0, missing], [0, 0]])
    scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=score_threshold - 1.0)
    return tf.map_fn(one, (boxes, scores), fn_output_signature=(
        tf.TensorSpec([max_output_size], tf.int32), tf.TensorSpec([], tf.int32)))


def from_normalized(boxes, image_size):
    """TFDS's normalised ``yxyx`` in ``[0, 1]`` -> pixels; ``image_size`` ``[..., 2]`` (h, w)."""
    size = tf.cast(image_size, tf.float32)
    scale = tf.expand_dims(tf.concat([size, size], axis=-1), -2)
    return tf.cast(boxes, tf.float32) * scale


def to_normalized(boxes, image_size):
    """Pixels -> TFDS's normalised ``yxyx``; ``image_size`` ``[..., 2]`` (h, w)."""
    size = tf.cast(image_size, tf.float32)
    scale = tf.expand_dims(tf.concat([size, size], axis=-1), -2)
    return tf.math.divide_no_nan(tf.cast(boxes, tf.float32), scale)


def from_voc(boxes_xyxy):
    """VOC XML ``(xmin, ymin, xmax, ymax)`` 1-based pixel numbers -> internal ``yxyx``.

    Follows TFDS's ``voc`` builder (``xmin / width`` ... with no offset), so a model trained from a
    VOC folder sees exactly the boxes of one trained from ``tfds.load("voc/2007")``: the numbers
    are used as continuous coordinates as they are.
    """
    return _bb.convert_format(tf.cast(boxes_xyxy, tf.float32), source="xyxy", target="yxyx")


def to_voc(boxes):
    """Internal ``yxyx`` -> VOC ``(xmin, ymin, xmax, ymax)`` (inverse of :func:`from_voc`)."""
    return _bb.convert_format(tf.cast(boxes, tf.float32), source="yxyx", target="xyxy")


def from_coco(boxes_xywh):
    """COCO ``[x, y, width, height]`` (0-based, continuous) -> internal ``yxyx``."""
    return _bb.convert_format(tf.cast(boxes_xywh, tf.float32), source="xywh", target="yxyx")


def to_coco(boxes):
    """Internal ``yxyx`` -> COCO ``[x, y, width, height]``."""
    return _bb.convert_format(tf.cast(boxes, tf.float32), source="yxyx", target="xywh")
