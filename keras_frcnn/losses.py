"""The four losses, as py-faster-rcnn computes them.

RPN: binary cross-entropy over the sampled anchors, and smooth L1 (sigma 3) over the positive
anchors, both divided by the number of sampled anchors. Detector: softmax cross-entropy over the
sampled RoIs, and smooth L1 (sigma 1) on the ground-truth class's 4 deltas of the foreground RoIs,
both divided by the number of sampled RoIs. Box losses are exactly 0 when nothing is positive.

Each image is normalised by its own sampled count and a batch's loss is the mean over its images.
For the paper's batches this is the original's normalisation (the RPN trains on one image; the
detector's two images have 64 RoIs each, so the mean equals Caffe's division by 128), and it makes
a batch split over replicas exactly the batch on one device: under ``tf.distribute`` the caller
divides by the replica count and Keras sums the replicas' gradients.
"""

import tensorflow as tf


def smooth_l1(x, sigma):
    """0.5 (sigma x)^2 where |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2 (elementwise)."""
    sigma2 = sigma * sigma
    abs_x = tf.abs(x)
    return tf.where(abs_x < 1.0 / sigma2, 0.5 * sigma2 * tf.square(x), abs_x - 0.5 / sigma2)


def _normalised(values, mask, count_mask):
    """``[B, N]`` values -> the mean over images of (the sum of ``values`` where ``mask``) / (the
    image's count of ``count_mask``, at least 1)."""
    per_image = tf.reduce_sum(tf.where(mask, values, 0.0), axis=1)
    count = tf.maximum(tf.reduce_sum(tf.cast(count_mask, tf.float32), axis=1), 1.0)
    return tf.reduce_mean(per_image / count)


def rpn_losses(objectness_logits, pred_deltas, gt_labels, gt_deltas, sigma=3.0):
    """``[B, A]`` logits, ``[B, A, 4]`` deltas, labels ``[B, A]`` (1 / 0 / -1 ignored) ->
    ``(loss_objectness, loss_rpn_box_reg)`` scalars."""
    sampled = gt_labels >= 0
    positive = gt_labels == 1
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(positive, tf.float32),
                                                  logits=tf.cast(objectness_logits, tf.float32))
    box = tf.reduce_sum(smooth_l1(tf.cast(pred_deltas, tf.float32) - gt_deltas, sigma), axis=-1)
    return _normalised(bce, sampled, sampled), _normalised(box, positive, sampled)


def detector_losses(class_logits, pred_deltas, gt_labels, gt_deltas, valid, sigma=1.0):
    """``[B, S, K]`` logits, ``[B, S, K, 4]`` class-specific deltas, labels ``[B, S]`` (0 is
    background), targets ``[B, S, 4]``, ``valid [B, S]`` -> ``(loss_classifier, loss_box_reg)``."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=gt_labels,
                                                        logits=tf.cast(class_logits, tf.float32))
    own_class = tf.gather(tf.cast(pred_deltas, tf.float32), gt_labels, batch_dims=2)  # [B, S, 4]
    box = tf.reduce_sum(smooth_l1(own_class - gt_deltas, sigma), axis=-1)
    return _normalised(ce, valid, valid), _normalised(box, valid & (gt_labels > 0), valid)
