"""The detector heads: pooled RoI features -> class scores and class-specific deltas.

``DetectorHead`` is Fast R-CNN's fc6 / fc7 (VGG-16, ZF); ``Res5Head`` a ResNet's conv5 stage (the
C4 design).

Shape letters: B images, R RoIs per image, P pool size, C channels, K = num_classes + 1 (with
background at index 0).

fc6 (4096) -> ReLU -> dropout 0.5 -> fc7 (4096) -> ReLU -> dropout 0.5 -> cls_score (K, init std
0.01) and bbox_pred (4K, init std 0.001), as the paper. fc6 / fc7 have the shapes of VGG-16's fc1 /
fc2 (a 7 x 7 x 512 input flattened in channels-last order), so ImageNet weights copy straight in.
"""

import zlib

import keras
import tensorflow as tf

from keras_frcnn.backbone import folded_model, resnet_stage
from keras_frcnn.targets import hash_uniform

# The salts of fc6's and fc7's dropout draws (distinct from the samplers' seeds).
_DROPOUT_SALTS = (zlib.crc32(b"fc6 dropout"), zlib.crc32(b"fc7 dropout"))


class _BoxPredictor(keras.layers.Layer):
    """What every detector head ends with: ``cls_score`` (K = num_classes + 1, init std 0.01)
    and class-specific ``bbox_pred`` (4K, std 0.001) on per-RoI features, returned as
    ``(class_logits [B, R, K], box_deltas [B, R, K, 4])`` in float32 (the softmax, the loss and
    the box decoding are numerically sensitive)."""

    def _make_predictor(self, num_classes):
        # Called by each head after its own layers, so the weights keep their creation order.
        self.num_classes = int(num_classes)
        k = self.num_classes + 1
        self.cls_score = keras.layers.Dense(
            k, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="cls_score")
        self.bbox_pred = keras.layers.Dense(
            4 * k, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="bbox_pred")

    def _build_predictor(self, units):
        self.cls_score.build((None, units))
        self.bbox_pred.build((None, units))

    def _predict(self, x, batch, rois):
        """``x [B * R, units]`` -> ``(class_logits, box_deltas)``."""
        class_logits = tf.reshape(tf.cast(self.cls_score(x), tf.float32), [batch, rois, -1])
        box_deltas = tf.reshape(tf.cast(self.bbox_pred(x), tf.float32), [batch, rois, self.num_classes + 1, 4])
        return class_logits, box_deltas

    def compute_output_shape(self, input_shape):
        batch, rois = input_shape[:2]
        k = self.num_classes + 1
        return (batch, rois, k), (batch, rois, k, 4)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class DetectorHead(_BoxPredictor):
    """roi_features ``[B, R, P, P, C]`` -> ``(class_logits [B, R, K], box_deltas [B, R, K, 4])``."""

    def __init__(self, num_classes, fc_units=4096, dropout=0.5, **kwargs):
        super().__init__(**kwargs)
        self.fc_units = int(fc_units)
        self.dropout_rate = float(dropout)
        self.fc6 = keras.layers.Dense(self.fc_units, activation="relu", name="fc6")
        self.fc7 = keras.layers.Dense(self.fc_units, activation="relu", name="fc7")
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")  # a stable checkpoint key
        self._make_predictor(num_classes)

    def build(self, input_shape):
        flat = 1
        for d in input_shape[2:]:
            flat *= d
        self.fc6.build((None, flat))
        self.fc7.build((None, self.fc_units))
        self._build_predictor(self.fc_units)

    def call(self, roi_features, training=False, image_seeds=None):
        """``image_seeds`` int64 ``[B]`` (training: the pipeline's per-image ``sample_seed``): each
        image's dropout masks drawn from its own seed (``targets.hash_uniform``), so that a batch
        split over replicas drops exactly as on one device (Keras's ``Dropout`` gives every
        replica the same mask: its seed state is one mirrored variable) and a resumed run as an
        uninterrupted one. Without them, Keras's ``Dropout``."""
        shape = tf.shape(roi_features)
        flat = roi_features.shape[2] * roi_features.shape[3] * roi_features.shape[4]
        # One [B * R, flat] matrix: a plain MatMul that fuses with its bias and ReLU (a 3-D input
        # would be a batched matmul, a few % slower on CPU).
        x = tf.reshape(roi_features, [-1, flat])
        x = self._dropout(self.fc6(x), training, image_seeds, _DROPOUT_SALTS[0])
        x = self._dropout(self.fc7(x), training, image_seeds, _DROPOUT_SALTS[1])
        return self._predict(x, shape[0], shape[1])

    def _dropout(self, x, training, image_seeds, salt):
        """Dropout of ``x [B * R, units]`` (inverted: kept units scaled by 1 / (1 - rate))."""
        if not training or not self.dropout_rate:
            return x
        if image_seeds is None:
            return self.dropout(x, training=training)
        per_image = tf.shape(x)[0] // tf.shape(image_seeds)[0] * self.fc_units
        keep = hash_uniform(image_seeds, tf.range(per_image, dtype=tf.int64), salt) >= self.dropout_rate
        return x * tf.cast(tf.reshape(keep, tf.shape(x)), x.dtype) * tf.cast(1.0 / (1.0 - self.dropout_rate), x.dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "fc_units": self.fc_units,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="keras_frcnn")
class Res5Head(_BoxPredictor):
    """The detector head of Faster R-CNN with a ResNet C4 base (He et al. 2016; Detectron's
    ``add_ResNet_roi_conv5_head``): RoIAlign features ``[B, R, 14, 14, C]`` -> conv5 (three
    bottlenecks, the first with stride 2: 7 x 7) -> global average pooling (2048 x ``width``) ->
    ``cls_score`` (K, std 0.01) and ``bbox_pred`` (4K, std 0.001). conv5's layers carry
    ``keras.applications``' names (``conv5_block1_1_conv`` ...), so ImageNet weights copy in.

    Output as ``DetectorHead``: ``(class_logits [B, R, K], box_deltas [B, R, K, 4])``.
    """

    def __init__(self, num_classes, in_channels, width=1.0, blocks=3, fold_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.width = float(width)
        self.blocks = int(blocks)
        self.fold_batch_norm = bool(fold_batch_norm)
        crops = keras.Input((None, None, self.in_channels), name="roi_features")
        res5 = keras.Model(crops, resnet_stage(crops, 5, self.blocks, 2, self.width), name="res5")
        # The inference form (backbone.folded_model), assigned once: Keras keeps tracking a replaced one.
        self.res5 = folded_model(res5) if self.fold_batch_norm else res5
        self._make_predictor(num_classes)

    def build(self, input_shape):
        self._build_predictor(self.res5.output.shape[-1])

    def call(self, roi_features, training=False, image_seeds=None):  # (no dropout: image_seeds unused)
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [-1, shape[2], shape[3], self.in_channels])
        x = tf.reduce_mean(self.res5(x, training=training), axis=[1, 2])  # [B * R, 2048]
        return self._predict(x, shape[0], shape[1])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_channels": self.in_channels,
                "width": self.width, "blocks": self.blocks, "fold_batch_norm": self.fold_batch_norm}
