"""Detector outputs -> final detections, in the graph.

Shape letters: B images, R RoIs, K = N + 1 classes (0 is background), D = max_detections.

Per image: softmax, class-specific box decoding (deltas times the stds), clipping to the image,
score threshold 0.05, per-class NMS at IoU 0.3 and the best 100, as the paper's test setting.
Empty boxes (a side under 0.01 px after clipping) are dropped before NMS, as torchvision does;
NMS ranks by log-odds, the probability's order without its rounding to 1.0. Per-class NMS is one
NMS call over boxes shifted by ``class * (largest side + 1)``, so boxes of
different classes never overlap; ``boxes.batched_nms`` runs it per image with an op that has
GPU kernels. Boxes are returned in the input image's pixels.
"""

import keras
import tensorflow as tf

from keras_frcnn import boxes as box_ops
from keras_frcnn.preprocessing import converting, distinct_ranks

_MIN_SIDE = 0.01  # px
_DROPPED_RANK = -1e4  # below every log-odds NMS keeps (> logit(score_threshold)); LiteRT mishandled -1e30


@keras.saving.register_keras_serializable(package="keras_frcnn")
class Detections(keras.layers.Layer):
    """``[class_logits, box_deltas, rois, num_rois, image_info, original_sizes]`` -> detections.

    Inputs: class_logits ``[B, R, K]``; box_deltas ``[B, R, K, 4]``; rois ``[B, R, 4]`` yxyx in
    resized pixels; num_rois ``[B]``; image_info ``[B, 3]`` (valid resized h, w, scale);
    original_sizes ``[B, 2]`` (h, w) of each input image.
    Returns a dict: ``boxes [B, D, 4]`` yxyx input-image pixels, ``confidence [B, D]``, ``labels
    [B, D]`` int32 (0-based object class, -1 padding), ``num_detections [B]`` int32; and, as the
    TF Object Detection API's Faster R-CNN gives them, ``multiclass_scores [B, D, K]`` (the
    softmax over all classes, background first, of the RoI each detection came from),
    ``raw_boxes [B, R, 4]`` (each RoI's box for its best object class, input-image pixels, before
    the score threshold and NMS) and ``raw_scores [B, R, K]`` (each RoI's softmax); zeros for
    padding.
    """

    def __init__(self, score_threshold=0.05, nms_iou=0.3, max_detections=100,
                 box_stds=(0.1, 0.1, 0.2, 0.2), **kwargs):
        # Softmax, box decoding and NMS stay float32 under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.box_stds = tuple(float(s) for s in box_stds)

    def call(self, inputs):
        class_logits, box_deltas, rois, num_rois, image_info, original_sizes = inputs
        image_info = tf.cast(image_info, tf.float32)
        shape = tf.shape(class_logits)
        batch, num_rois_padded, num_classes = shape[0], shape[1], shape[2] - 1

        probabilities = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)  # [B, R, K]
        scores = probabilities[:, :, 1:]  # [B, R, N]
        pred_boxes = box_ops.decode(box_deltas[:, :, 1:], rois[:, :, None, :], self.box_stds)
        pred_boxes = box_ops.clip(pred_boxes, image_info[:, None, :2])  # [B, R, N, 4]
        valid_roi = tf.range(num_rois_padded)[None, :] < tf.reshape(tf.cast(num_rois, tf.int32), [-1, 1])
        factor = tf.cast(original_sizes, tf.float32) / image_info[:, :2]  # resized -> input pixels
        factor = tf.expand_dims(tf.tile(factor, [1, 2]), 1)  # [B, 1, 4]
        best = tf.argmax(scores, axis=-1, output_type=tf.int32)  # [B, R]
        raw_boxes = tf.gather(pred_boxes, best, batch_dims=2) * factor
        raw_boxes = tf.where(tf.expand_dims(valid_roi, -1), raw_boxes, 0.0)
        raw_scores = tf.where(tf.expand_dims(valid_roi, -1), probabilities, 0.0)
        # Empty boxes (clipped to a line at the image border) are no detections: dropped before
        # NMS as torchvision does (remove_small_boxes, 0.01 px). Runtimes' NMS treat zero-area
        # boxes differently (LiteRT kept 50 such duplicates where TensorFlow kept 9).
        sides = pred_boxes[..., 2:] - pred_boxes[..., :2]
        keep = tf.expand_dims(valid_roi, -1) & (scores > self.score_threshold)
        keep &= tf.reduce_all(sides >= _MIN_SIDE, axis=-1)
        # NMS ranks by log-odds, log(p / (1 - p)) = the class's logit minus the log-sum-exp of
        # the others, the probability's order: a confident detection's probability rounds to
        # exactly 1.0 in float32 (a logit margin over ~17), as does its log-softmax to 0, and ties
        # among those would leave the pick to each runtime's NMS sort (LiteRT's kept other
        # boxes); their log-odds still differ.
        log_odds = _log_odds(tf.cast(class_logits, tf.float32))[:, :, 1:]  # [B, R, N]
        ranks = tf.reshape(tf.where(keep, log_odds, _DROPPED_RANK), [batch, -1])  # [B, R * N]
        scores = tf.reshape(tf.where(keep, scores, 0.0), [batch, -1])
        pred_boxes = tf.reshape(pred_boxes, [batch, -1, 4])
        classes = tf.tile(tf.range(num_classes), [num_rois_padded])  # the class of each column
        if converting() and not distinct_ranks():
            # No sort: NMS orders by rank itself, ties to the lower index, which is the order
            # of the stable sort below (OpenVINO's sorted TopK is O(n k): ~180 ms for 6000).
            order = tf.tile(tf.range(tf.shape(ranks)[1])[None], [batch, 1])
            classes = tf.tile(classes[None], [batch, 1])
        else:
            ranks, order = tf.math.top_k(ranks, k=tf.shape(ranks)[1], sorted=True)
            scores = tf.gather(scores, order, batch_dims=1)
            pred_boxes = tf.gather(pred_boxes, order, batch_dims=1)
            classes = tf.gather(classes, order)  # [B, R * N]
            if distinct_ranks():  # (LiteRT: equal ranks, from RoIs of equal logits, would go to the later)
                places = tf.cast(tf.range(tf.shape(ranks)[1]), tf.float32) / tf.cast(tf.shape(ranks)[1], tf.float32)
                ranks = tf.where(ranks > _DROPPED_RANK / 2, -places[None], _DROPPED_RANK)

        offset = tf.reduce_max(image_info[:, :2]) + 1.0
        shifted = pred_boxes + tf.expand_dims(tf.cast(classes, tf.float32), -1) * offset
        selected, num_detections = box_ops.batched_nms(shifted, ranks, self.max_detections,
                                                       self.nms_iou, _DROPPED_RANK / 2)
        valid = tf.range(self.max_detections)[None, :] < num_detections[:, None]
        out_boxes = tf.gather(pred_boxes, selected, batch_dims=1) * factor
        source_roi = tf.gather(order, selected, batch_dims=1) // num_classes  # [B, D]
        multiclass = tf.gather(raw_scores, source_roi, batch_dims=1)
        return {
            "boxes": tf.where(valid[..., None], out_boxes, 0.0),
            "confidence": tf.where(valid, tf.gather(scores, selected, batch_dims=1), 0.0),
            "labels": tf.where(valid, tf.gather(classes, selected, batch_dims=1), -1),
            "num_detections": num_detections,
            "multiclass_scores": tf.where(tf.expand_dims(valid, -1), multiclass, 0.0),
            "raw_boxes": raw_boxes,
            "raw_scores": raw_scores,
        }

    def compute_output_shape(self, input_shape):
        batch, rois, k = input_shape[0]
        d = self.max_detections
        return {"boxes": (batch, d, 4), "confidence": (batch, d), "labels": (batch, d),
                "num_detections": (batch,), "multiclass_scores": (batch, d, k),
                "raw_boxes": (batch, rois, 4), "raw_scores": (batch, rois, k)}

    def compute_output_spec(self, *args, **kwargs):
        """The outputs' shapes and dtypes (labels and counts int32, as ``call`` gives them)."""
        shapes = self.compute_output_shape([tuple(x.shape) for x in tf.nest.flatten(args[0])])
        return {name: keras.KerasTensor(shape, "int32" if name in ("labels", "num_detections") else "float32")
                for name, shape in shapes.items()}

    def get_config(self):
        return {**super().get_config(), "score_threshold": self.score_threshold,
                "nms_iou": self.nms_iou, "max_detections": self.max_detections,
                "box_stds": list(self.box_stds)}


def _log_odds(logits):
    """``log(p / (1 - p))`` of the softmax of ``logits`` ``[..., K]``, each class's logit minus the
    log-sum-exp of the others, in ``[..., K]`` memory (a ``[..., K, K]`` table of "the others" took
    5 GB for 300 RoIs of LVIS's 1,204 classes). For the top class the others' log-sum-exp is taken
    with it left out; for every other class it is the whole sum less the class's own term, a
    difference that keeps the top class's term (>= 1 after the max is subtracted), so no
    cancellation."""
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    terms = tf.exp(logits - top)
    total = tf.reduce_sum(terms, axis=-1, keepdims=True)
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)[..., None]
    is_top = tf.equal(tf.range(tf.shape(logits)[-1]), best)  # not one_hot: tf2onnx takes rank 1 only
    without_top = tf.reduce_logsumexp(tf.where(is_top, _DROPPED_RANK, logits), axis=-1, keepdims=True)
    others = tf.where(is_top, without_top, top + tf.math.log(tf.maximum(total - terms, 1.0)))
    return logits - others
