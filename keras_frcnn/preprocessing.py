"""Image preprocessing inside the graph: resize, Caffe BGR mean subtraction, padding mask.

The paper resizes every image so that its shorter side is 600 px and its longer side at most
1000 px, then feeds VGG-16 Caffe-style input: BGR channel order, 0-255 values, the ImageNet means
subtracted, no division. ``Preprocess`` does this on a batch in which every image may have its own
valid size (a padded batch), so it can sit at the front of the exported model.

``image_info`` ``[B, 3]`` = (valid height, valid width, scale) of each resized image is what the
rest of the model needs: the valid sizes clip proposals, the scale turns the minimum proposal
size into resized pixels.
"""

import contextlib
import threading

import keras
import tensorflow as tf

_TRACING = threading.local()


@contextlib.contextmanager
def for_converters(distinct_ranks=False):
    """Layers traced inside this context build a graph that other runtimes' converters (tf2onnx,
    OpenVINO, LiteRT) map exactly, with the same values: no ``tf.cond`` shortcut (the padding
    masks always multiply, and images already at their size are resampled anyway, which at scale
    1 gives each pixel back: its neighbour's weight is 0; OpenVINO computes wrong values from
    some ``If`` outputs of dynamic shape), no float64 (RoI pooling's bin lengths come from a
    table; LiteRT has no float64 division) and no sorted top-k (proposals keep the top-k set in
    place, detections go to NMS unsorted, the same selection; OpenVINO's sorted TopK is O(n k)).
    ``distinct_ranks``: detections sorted after all and NMS given their places as its scores
    (LiteRT's NMS keeps the later of two equal scores, where TensorFlow's keeps the earlier)."""
    previous = getattr(_TRACING, "converting", False), getattr(_TRACING, "distinct_ranks", False)
    _TRACING.converting, _TRACING.distinct_ranks = True, distinct_ranks
    try:
        yield
    finally:
        _TRACING.converting, _TRACING.distinct_ranks = previous


def converting():
    """Whether layers are being traced inside ``for_converters()``."""
    return getattr(_TRACING, "converting", False)


def distinct_ranks():
    """Whether layers are being traced inside ``for_converters(distinct_ranks=True)``."""
    return getattr(_TRACING, "distinct_ranks", False)


def scaled_size(image_sizes, min_side, max_side):
    """Resize rule of the paper for ``[..., 2]`` (h, w) sizes -> (new sizes int32 ``[..., 2]``,
    scales float32 ``[...]``): scale = min_side / shorter side, unless that makes the longer side
    exceed max_side (after rounding), then max_side / longer side. ``min_side`` may be a tensor
    (multi-scale training draws it per batch).
    """
    sizes = tf.cast(image_sizes, tf.float32)
    short = tf.reduce_min(sizes, axis=-1)
    long = tf.reduce_max(sizes, axis=-1)
    scale = (tf.cast(min_side, tf.float32) if tf.is_tensor(min_side) else float(min_side)) / short
    scale = tf.where(tf.round(scale * long) > float(max_side), float(max_side) / long, scale)
    new_sizes = tf.maximum(tf.round(sizes * scale[..., None]), 1.0)
    return tf.cast(new_sizes, tf.int32), scale


def check_rounding(rounding):
    """``rounding`` ("floor" or "ceil", ``valid_feature_sizes``), else a ValueError naming it."""
    if rounding not in ("floor", "ceil"):
        raise ValueError(f"rounding must be 'floor' or 'ceil', got {rounding!r}")
    return rounding


def valid_feature_sizes(image_info, stride, rounding):
    """``[B, 2]`` float32: each image's valid feature size (rows, columns) at ``stride``, its valid
    pixel size (``image_info[:, :2]``) / stride rounded down or up (``rounding``: how the base maps
    a side, ``config.feature_rounding``)."""
    sizes = tf.cast(image_info[:, :2], tf.float32) / float(stride)
    return tf.floor(sizes) if rounding == "floor" else tf.math.ceil(sizes)


def valid_mask(valid_sizes, height, width):
    """``[B, height, width, 1]`` float mask, 1 inside each image's valid ``[h, w]`` region."""
    valid_sizes = tf.cast(valid_sizes, tf.int32)
    rows = tf.range(height)[None, :] < valid_sizes[:, 0:1]  # [B, H]
    cols = tf.range(width)[None, :] < valid_sizes[:, 1:2]  # [B, W]
    # expand_dims rather than [:, :, None]: LiteRT's converter cannot map a strided slice that
    # adds an axis between dynamic ones.
    mask = tf.logical_and(tf.expand_dims(rows, 2), tf.expand_dims(cols, 1))
    return tf.expand_dims(tf.cast(mask, tf.float32), -1)


def _interpolation(out_size, valid_in, valid_out):
    """Bilinear sampling of ``tf.image.resize`` (half-pixel centres) along one axis, per image.

    Returns lower / upper source indices ``[B, out_size]`` int32 and weights ``[B, out_size]``.
    """
    ratio = tf.cast(valid_in, tf.float32) / tf.cast(valid_out, tf.float32)  # [B]
    positions = (tf.range(out_size, dtype=tf.float32)[None, :] + 0.5) * ratio[:, None] - 0.5
    floor = tf.floor(positions)
    last = tf.cast(valid_in, tf.int32)[:, None] - 1
    lower = tf.clip_by_value(tf.cast(floor, tf.int32), 0, tf.maximum(last, 0))
    upper = tf.clip_by_value(tf.cast(tf.math.ceil(positions), tf.int32), 0, tf.maximum(last, 0))
    return lower, upper, positions - floor


def _gather_rows(images, *rows):
    """``tf.gather(images, r, axis=1, batch_dims=1)`` for each ``r`` of ``rows``. uint8 rows are
    gathered as int32 words: GatherV2 has no GPU kernel for uint8 (a GPU server would run it on
    the CPU), and the image is not widened to floats first. A row whose byte count is a multiple
    of 4 is viewed as words in place (the zero padding, reshape and bitcast copy nothing); other
    rows are padded by 1-3 bytes, a copy of the image."""
    if images.dtype != tf.uint8:
        return [tf.gather(images, r, axis=1, batch_dims=1) for r in rows]
    shape = tf.shape(images)
    row_bytes = shape[2] * shape[3]
    rows_of_bytes = tf.reshape(images, [shape[0], shape[1], row_bytes])
    padded = tf.pad(rows_of_bytes, [[0, 0], [0, 0], [0, -row_bytes % 4]])
    words = tf.bitcast(tf.reshape(padded, [shape[0], shape[1], -1, 4]), tf.int32)
    gathered = []
    for r in rows:
        row_words = tf.bitcast(tf.gather(words, r, axis=1, batch_dims=1), tf.uint8)
        row_words = tf.reshape(row_words, [shape[0], tf.shape(r)[1], -1])[..., :row_bytes]
        gathered.append(tf.reshape(row_words, [shape[0], tf.shape(r)[1], shape[2], shape[3]]))
    return gathered


def resize_bilinear(images, valid_sizes, new_sizes):
    """Resize the valid ``[h, w]`` region of each image of ``images`` ``[B, H, W, C]`` to its own
    ``new_sizes[b]``, on a canvas of the largest new size (the rest is garbage: mask it).

    Same sampling as ``tf.image.resize(..., "bilinear")`` of each image alone. Gathers rows first
    on the input dtype, so a uint8 8000 x 8000 image never becomes a float copy of itself.
    """
    out_h = tf.reduce_max(new_sizes[:, 0])
    out_w = tf.reduce_max(new_sizes[:, 1])
    top, bottom, wy = _interpolation(out_h, valid_sizes[:, 0], new_sizes[:, 0])
    left, right, wx = _interpolation(out_w, valid_sizes[:, 1], new_sizes[:, 1])
    # [B, h, W, C] each
    rows_top, rows_bottom = (tf.cast(r, tf.float32) for r in _gather_rows(images, top, bottom))

    def columns(rows):
        return (tf.gather(rows, left, axis=2, batch_dims=1),
                tf.gather(rows, right, axis=2, batch_dims=1))

    tl, tr = columns(rows_top)
    bl, br = columns(rows_bottom)
    wx = tf.expand_dims(tf.expand_dims(wx, 1), -1)  # [B, 1, w, 1]
    wy = tf.expand_dims(tf.expand_dims(wy, -1), -1)  # [B, h, 1, 1]
    upper = tl + (tr - tl) * wx
    lower = bl + (br - bl) * wx
    return upper + (lower - upper) * wy


# The smallest input side (pixels) a base is given: at least one cell at every base's stride
# (VGG-16 / ZF 16, MobileNetV3 32, the pyramid's P6 64).
MIN_INPUT_SIDE = 64


def _at_least(images, side):
    """``images`` ``[B, H, W, C]`` with ``H`` and ``W`` grown to at least ``side`` by rows and
    columns below and right (their values are the caller's to mask). A side under ``side`` (a
    12 x 3000 strip scaled to 4 x 1000) would leave a base no feature cell: VGG-16's fourth pooling
    of a 1-row map is empty, and oneDNN's pooling aborts on it. For the converters the rows and
    columns are gathers (the last one repeated), whose shape keeps the channel count that a
    computed ``tf.pad`` loses (LiteRT then cannot convert the first convolution)."""
    shape = tf.shape(images)
    if converting():
        rows = tf.minimum(tf.range(tf.maximum(shape[1], side)), shape[1] - 1)
        columns = tf.minimum(tf.range(tf.maximum(shape[2], side)), shape[2] - 1)
        return tf.gather(tf.gather(images, rows, axis=1), columns, axis=2)
    grow = tf.maximum(side - shape[1:3], 0)
    grown = tf.cond(tf.reduce_any(grow > 0),
                    lambda: tf.pad(images, [[0, 0], [0, grow[0]], [0, grow[1]], [0, 0]]), lambda: images)
    grown.set_shape(images.shape[:1].concatenate([None, None]).concatenate(images.shape[3:]))
    return grown


@keras.saving.register_keras_serializable(package="keras_frcnn")
class Preprocess(keras.layers.Layer):
    """RGB images -> resized, BGR mean-subtracted float32 images and ``image_info``.

    Call: ``Preprocess(...)(images)`` or ``Preprocess(...)([images, image_sizes])``.
      images: ``[B, H, W, 3]`` RGB, uint8 or float, 0-255.
      image_sizes: optional ``[B, 2]`` (h, w) valid size of each image of a padded batch;
        the whole ``H x W`` when absent.
    Returns ``(processed [B, H', W', 3] float32, image_info [B, 3])``; ``processed`` is zero outside
    each image's valid region (the mean colour, so the base's zero padding sees the same values
    whether an image is alone or padded in a batch). With ``resize=False`` the images are taken as
    already resized (the training pipeline resizes in ``tf.data``) and ``image_info`` carries the
    scale given by ``image_sizes`` columns, if it has 3 columns, else 1. ``pixel_scale``
    multiplies the mean-subtracted values: 1 for Caffe's VGG-16 (0-255), about 1/64 for a base
    trained from scratch (unit-scale inputs keep He-initialised activations O(1)).
    ``channel_order`` "rgb" keeps the input's order (Keras's MobileNetV3 takes RGB; ``pixel_means``
    are then in R, G, B order).
    """

    def __init__(self, min_side=600, max_side=1000, pixel_means=(102.9801, 115.9465, 122.7717),
                 resize=True, pixel_scale=1.0, channel_order="bgr", **kwargs):
        # Resizing and mean subtraction in float32; the base casts to its compute dtype.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.min_side = int(min_side)
        self.max_side = int(max_side)
        self.pixel_means = tuple(float(m) for m in pixel_means)
        self.resize = bool(resize)
        self.pixel_scale = float(pixel_scale)
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        self.channel_order = channel_order

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            images, image_sizes = inputs
        else:
            images, image_sizes = inputs, None
        shape = tf.shape(images)
        batch = shape[0]
        if image_sizes is None:
            valid = tf.tile(shape[1:3][None], [batch, 1])
            given_scale = tf.ones([batch], tf.float32)
        else:
            image_sizes = tf.cast(image_sizes, tf.float32)
            valid = tf.cast(image_sizes[:, :2], tf.int32)
            given_scale = image_sizes[:, 2] if image_sizes.shape[-1] == 3 else tf.ones([batch], tf.float32)

        if self.resize:
            new_sizes, scale = scaled_size(valid, self.min_side, self.max_side)
            # Images already at their size (a 600 x 1000 photo for the paper's rule) skip the
            # resampling, which would return them unchanged.
            height, width = tf.reduce_max(new_sizes[:, 0]), tf.reduce_max(new_sizes[:, 1])
            if converting():
                images = resize_bilinear(images, valid, new_sizes)
            else:
                images = tf.cond(tf.reduce_all(new_sizes == valid),
                                 lambda: tf.cast(images[:, :height, :width], tf.float32),
                                 lambda: resize_bilinear(images, valid, new_sizes))
        else:
            new_sizes, scale = valid, given_scale
            images = tf.cast(images, tf.float32)

        means = tf.constant(self.pixel_means, tf.float32)
        if self.channel_order == "bgr":
            images = tf.reverse(images, axis=[-1])
        centred = _at_least((images - means) * self.pixel_scale, MIN_INPUT_SIDE)
        out_shape = tf.shape(centred)
        processed = centred * valid_mask(new_sizes, out_shape[1], out_shape[2])
        image_info = tf.concat([tf.cast(new_sizes, tf.float32), scale[:, None]], axis=-1)
        return processed, image_info

    def compute_output_shape(self, input_shape):
        images_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)) else input_shape
        batch = images_shape[0]
        spatial = (None, None) if self.resize else tuple(images_shape[1:3])
        return (batch, *spatial, 3), (batch, 3)

    def get_config(self):
        return {
            **super().get_config(),
            "min_side": self.min_side,
            "max_side": self.max_side,
            "pixel_means": list(self.pixel_means),
            "resize": self.resize,
            "pixel_scale": self.pixel_scale,
            "channel_order": self.channel_order,
        }


@keras.saving.register_keras_serializable(package="keras_frcnn")
class ImageSizes(keras.layers.Layer):
    """images ``[B, H, W, C]`` -> ``[B, 2]`` int32 (H, W) of every image (an unpadded batch)."""

    def call(self, images):
        shape = tf.shape(images)
        return tf.tile(shape[1:3][None], [shape[0], 1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)
