"""The Region Proposal Network head.

Shape letters: B images, H x W feature positions, k anchors per position, A = H * W * k.

A 3x3 convolution (512 channels for VGG-16, 256 for ZF) with ReLU, then two sibling 1x1
convolutions: objectness and box deltas. Objectness is one logit per anchor (k sigmoid outputs)
rather than the paper's 2k softmax: the two are equivalent for two classes, and k outputs halve
the layer and keep the loss a plain binary cross-entropy. Initialisation: Gaussian std 0.01,
zero bias, as the paper.
"""

import keras
import tensorflow as tf


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="keras_frcnn")
class RPNHead(keras.layers.Layer):
    """features ``[B, H, W, C]`` -> ``(objectness_logits [B, A], deltas [B, A, 4])``.

    The flattening is row-major over (H, W, k), the order of ``Anchors``.
    """

    def __init__(self, channels=512, num_anchors=9, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.num_anchors = int(num_anchors)
        self.conv = keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu",
                                        kernel_initializer=_normal(0.01), name="rpn_conv")
        self.objectness = keras.layers.Conv2D(self.num_anchors, 1, kernel_initializer=_normal(0.01),
                                              name="rpn_objectness")
        self.deltas = keras.layers.Conv2D(4 * self.num_anchors, 1, kernel_initializer=_normal(0.01),
                                          name="rpn_deltas")

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]  # a pyramid: one head for every level
        self.conv.build(input_shape)
        hidden = (*input_shape[:-1], self.channels)
        self.objectness.build(hidden)
        self.deltas.build(hidden)

    def call(self, features):
        if isinstance(features, (list, tuple)):
            # A feature pyramid (FPN): the same head on every level, outputs concatenated in the
            # order of PyramidAnchors (levels finest first).
            outputs = [self.call(level) for level in features]
            return tf.concat([o[0] for o in outputs], 1), tf.concat([o[1] for o in outputs], 1)
        hidden = self.conv(features)
        batch = tf.shape(features)[0]
        # Logits stay float32 under mixed precision: the loss and the proposal ranking need them.
        logits = tf.cast(tf.reshape(self.objectness(hidden), [batch, -1]), tf.float32)
        deltas = tf.cast(tf.reshape(self.deltas(hidden), [batch, -1, 4]), tf.float32)
        return logits, deltas

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            return (input_shape[0][0], None), (input_shape[0][0], None, 4)
        batch, h, w = input_shape[:3]
        a = None if h is None or w is None else h * w * self.num_anchors
        return (batch, a), (batch, a, 4)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_anchors": self.num_anchors}
