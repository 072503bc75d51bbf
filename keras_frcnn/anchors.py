"""Anchors: the k reference boxes of every feature-map position.

``base_anchors`` reproduces the original implementation's rounding (py-faster-rcnn's
``generate_anchors``): for ratio ``r = h / w``, ``w = round(sqrt(base_size**2 / r))`` and
``h = round(w * r)`` (NumPy rounding, halves to even, as the original), both times the scale, every
anchor centred on the base cell. The original writes inclusive-pixel boxes ``(x1, y1, x2, y2)``
with ``x2 = x1 + w - 1`` around the centre 7.5; in our continuous frame the same pixels are
``[y1, x1, y2 + 1, x2 + 1]``, centred on 8.0, the middle of the 16 x 16 cell.

Order: anchor index = ratio index * len(scales) + scale index (ratios outer, as the original), and
``Anchors`` enumerates positions row-major (y, then x), then the k anchors: the order of an RPN
output ``[B, H, W, k]`` reshaped to ``[B, H * W * k]``.
"""

import keras
import numpy as np
import tensorflow as tf


def base_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """The ``[k, 4]`` anchors ``[ymin, xmin, ymax, xmax]`` (float32 pixels) around the first cell."""
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    centre = base_size / 2.0
    widths = np.round(np.sqrt(base_size * base_size / ratios))
    heights = np.round(widths * ratios)
    # [ratio, scale] grid, ratios outer.
    w = (widths[:, None] * scales[None, :]).reshape(-1)
    h = (heights[:, None] * scales[None, :]).reshape(-1)
    return np.stack([centre - h / 2, centre - w / 2, centre + h / 2, centre + w / 2], axis=1).astype(
        np.float32
    )


def grid_anchors(features, stride, cell):
    """The ``[k, 4]`` ``cell`` anchors repeated over the ``[B, H, W, C]`` feature map at
    ``stride``: ``[H * W * k, 4]``, positions row-major, then the k anchors."""
    cell = tf.constant(cell)
    shape = tf.shape(features)
    ys = tf.cast(tf.range(shape[1]) * stride, tf.float32)
    xs = tf.cast(tf.range(shape[2]) * stride, tf.float32)
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
    shifts = tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1)  # [H, W, 4]
    anchors = tf.reshape(shifts, [-1, 1, 4]) + tf.expand_dims(cell, 0)  # [H*W, k, 4]
    return tf.reshape(anchors, [-1, 4])


@keras.saving.register_keras_serializable(package="keras_frcnn")
class Anchors(keras.layers.Layer):
    """All anchors of a feature map, in input-image pixels.

    Input: features ``[B, H, W, C]`` (H, W dynamic). Output: ``[H * W * k, 4]`` yxyx pixels, the
    same for every image of the batch (a padded batch shares one feature grid), in the order of
    the RPN head's flattened outputs.
    """

    def __init__(self, stride=16, base_size=16, ratios=(0.5, 1.0, 2.0), scales=(8.0, 16.0, 32.0), **kwargs):
        # Pixel coordinates stay float32 under mixed precision; the features are only measured.
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.base_size = int(base_size)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.num_anchors = len(self.ratios) * len(self.scales)

    def call(self, features):
        return grid_anchors(features, self.stride, base_anchors(self.base_size, self.ratios, self.scales))

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        n = None if h is None or w is None else h * w * self.num_anchors
        return (n, 4)

    def get_config(self):
        return {
            **super().get_config(),
            "stride": self.stride,
            "base_size": self.base_size,
            "ratios": list(self.ratios),
            "scales": list(self.scales),
        }


@keras.saving.register_keras_serializable(package="keras_frcnn")
class PyramidAnchors(keras.layers.Layer):
    """The anchors of a feature pyramid (FPN, Lin et al. 2017): level l at ``strides[l]`` gets
    ``base_anchors(stride, ratios, scales)``, i.e. Detectron's FPN anchors (one size, ``scales``
    times the level's stride: 32-512 px for strides 4-64 at scale 8, per ratio); or, given
    ``sizes``, anchors of every one of these sides (pixels) on every level (torchvision's
    MobileNetV3-FPN: 32-512 px on each of its three levels).

    Input: the levels' features ``[[B, H_l, W_l, C], ...]``, finest first. Output:
    ``(anchors [A, 4], levels [A] int32)``, the levels concatenated in order (each as
    ``Anchors``), and each anchor's level index (``Proposals`` and ``AnchorTargets`` take it;
    two levels may share a stride).
    """

    def __init__(self, strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), scales=(8.0,), sizes=(), **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.sizes = tuple(float(s) for s in sizes)
        self.num_anchors = len(self.ratios) * len(self.sizes or self.scales)

    def level_cell(self, stride):
        """The ``[k, 4]`` anchors of a level of ``stride`` around its first cell."""
        scales = [size / stride for size in self.sizes] if self.sizes else self.scales
        return base_anchors(stride, self.ratios, scales)

    def call(self, features):
        anchors, levels = [], []
        for level, (stride, level_features) in enumerate(zip(self.strides, features)):
            level_anchors = grid_anchors(level_features, stride, self.level_cell(stride))
            anchors.append(level_anchors)
            levels.append(tf.fill(tf.shape(level_anchors)[:1], level))
        return tf.concat(anchors, 0), tf.concat(levels, 0)

    def compute_output_shape(self, input_shape):
        return (None, 4), (None,)

    def compute_output_spec(self, features):
        return keras.KerasTensor((None, 4), "float32"), keras.KerasTensor((None,), "int32")

    def get_config(self):
        return {**super().get_config(), "strides": list(self.strides), "ratios": list(self.ratios),
                "scales": list(self.scales), "sizes": list(self.sizes)}


def level_strides(levels, strides):
    """Each anchor's stride ``[A]`` float32 from its pyramid ``levels`` ``[A]`` and the levels'
    ``strides``."""
    return tf.gather(tf.constant(strides, tf.float32), levels)
