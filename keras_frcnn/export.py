"""Export a trained model as one SavedModel that TensorFlow Serving runs without this package.

    python export.py --model runs/shapes/model.keras --out exported/shapes [--version N]

writes ``exported/shapes/N/`` (TF Serving's layout: ``saved_model.pb``, ``variables/``,
``assets.extra/tf_serving_warmup_requests``). The graph is the inference model's own data path
(``models.forward``: resize, base, RPN, proposals with NMS, RoI pooling, heads, per-class NMS);
only the input decoding and the output format are added here, at the edge.

Signatures (the TF Object Detection API's names, so its clients work unchanged):

- ``serving_default``: ``input_tensor`` uint8 ``[B, H, W, 3]``.
- ``serving_encoded``: ``encoded_image_string_tensor`` string ``[B]`` of JPEG / PNG / BMP / GIF
  (first frame) bytes, of any sizes in one batch; grayscale, RGBA and 16-bit images are converted
  to 8-bit RGB. Each image's detections are those of the image sent alone.
- ``tf_example``: ``tf_example`` string ``[B]`` of serialized ``tf.train.Example`` protos whose
  ``image/encoded`` feature holds the image bytes (the TF Object Detection API's and Model
  Garden's TFRecord input), decoded as ``serving_encoded``.

All return, with D = ``max_detections`` (100), R = the test proposals (300) and K = classes + 1:
``detection_boxes`` ``[B, D, 4]`` float32 yxyx normalised to each image's own size,
``detection_scores`` ``[B, D]``, ``detection_classes`` ``[B, D]`` float32 (1-based class ids,
0 for padding), ``num_detections`` ``[B]`` float32, ``detection_class_names`` ``[B, D]`` string
(the model's class list, "" for padding), and the OD API's Faster R-CNN extras:
``detection_multiclass_scores`` ``[B, D, K]`` (softmax over background and every class of the
RoI each detection came from), ``raw_detection_boxes`` ``[B, R, 4]`` (each RoI's box for its best
object class, normalised, before the score threshold and NMS) and ``raw_detection_scores``
``[B, R, K]`` (each RoI's softmax).

A request that cannot be served (undecodable bytes, an image of zero height or width, the wrong
dtype or rank) fails alone with an ``InvalidArgument`` error; an empty batch returns empty
outputs.

Every op the signatures run has a GPU kernel for its dtypes in this TensorFlow build
(``ops_without_gpu_kernels``), but image decoding, ``tf_example``'s parsing, the ragged batch
the encoded signatures build and the string ops (``detection_class_names``' lookup of the class
names at the output, run on the host; the network itself has no string tensor); no Python ops. ``jit_compile=True`` compiles the network (everything after decoding) with XLA.
"""

from __future__ import annotations

import copy
import errno
import functools
import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_frcnn.data.examples import decode_image
from keras_frcnn.data.image_files import GIF_PIXELS, MAX_PIXELS
from keras_frcnn.files import staging_folder
from keras_frcnn.models import forward
from keras_frcnn.preprocessing import Preprocess, for_converters, resize_bilinear, scaled_size

DEFAULT_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serving_encoded"
TENSOR_INPUT = "input_tensor"
ENCODED_INPUT = "encoded_image_string_tensor"
EXAMPLE_SIGNATURE = "tf_example"
EXAMPLE_INPUT = "tf_example"
EXAMPLE_IMAGE_KEY = "image/encoded"
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
               "detection_class_names", "detection_multiclass_scores", "raw_detection_boxes",
               "raw_detection_scores")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The class names in label order, a line each, for clients and tools (TF Serving ignores the file).
LABELS_FILE = os.path.join("assets.extra", "labels.txt")

# Op types that call back into Python (absent in TF Serving). Ops without a GPU kernel are found
# from TensorFlow's kernel registry: ops_without_gpu_kernels.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def od_api_outputs(detections, image_sizes, class_names):
    """The Keras model's detection dict -> the TF Object Detection API's output dict.

    ``image_sizes`` ``[B, 2]`` (h, w) of each input image normalises its boxes.
    """
    labels = detections["labels"]
    valid = labels >= 0
    scale = tf.tile(tf.cast(image_sizes, tf.float32), [1, 2])[:, None, :]
    boxes = tf.clip_by_value(detections["boxes"] / scale, 0.0, 1.0)
    names = tf.constant(list(class_names), tf.string)
    k = len(class_names) + 1
    return {
        "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
        "detection_scores": detections["confidence"],
        "detection_classes": tf.where(valid, tf.cast(labels + 1, tf.float32), 0.0),
        "num_detections": tf.cast(detections["num_detections"], tf.float32),
        "detection_class_names": tf.where(valid, tf.gather(names, tf.maximum(labels, 0)), ""),
        "detection_multiclass_scores": tf.ensure_shape(detections["multiclass_scores"], [None, None, k]),
        "raw_detection_boxes": tf.clip_by_value(detections["raw_boxes"] / scale, 0.0, 1.0),
        "raw_detection_scores": tf.ensure_shape(detections["raw_scores"], [None, None, k]),
    }


def empty_outputs(max_detections, num_rois, num_classes):
    """The outputs of an empty batch (``num_classes`` with the background)."""
    return {
        "detection_multiclass_scores": tf.zeros([0, max_detections, num_classes], tf.float32),
        "raw_detection_boxes": tf.zeros([0, num_rois, 4], tf.float32),
        "raw_detection_scores": tf.zeros([0, num_rois, num_classes], tf.float32),
        "detection_boxes": tf.zeros([0, max_detections, 4], tf.float32),
        "detection_scores": tf.zeros([0, max_detections], tf.float32),
        "detection_classes": tf.zeros([0, max_detections], tf.float32),
        "num_detections": tf.zeros([0], tf.float32),
        "detection_class_names": tf.fill([0, max_detections], ""),
    }


def _integer_at(data, offset, size, big_endian=False):
    """The unsigned ``size``-byte integer at ``offset`` of a string, little-endian unless told
    (int64; the bytes past its end left out, 0 for an offset past it)."""
    length = tf.cast(tf.strings.length(data), tf.int64)
    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(data, tf.minimum(tf.constant(offset, tf.int64), length), size),
                                      tf.uint8), tf.int64)
    places = tf.range(tf.size(digits, tf.int64), dtype=tf.int64)
    return tf.reduce_sum(digits * 256 ** (places[::-1] if big_endian else places))


def bmp_read_right(data):
    """False for a BMP that ``DecodeBmp`` reads wrong (the rule of
    ``data.image_files._check_bmp``): it takes every BMP as uncompressed 8-bit grey, 24-bit BGR or
    32-bit BGRA, so a colour palette comes out as grey index values and RLE data as noise. True
    for every other string (other formats are their decoders' to judge)."""

    def judge():
        header_size, bits = _integer_at(data, 14, 4), _integer_at(data, 28, 2)
        compression = _integer_at(data, 30, 4)
        masks = tf.strings.substr(data, 54, 12) == b"\x00\x00\xff\x00\x00\xff\x00\x00\xff\x00\x00\x00"
        colors = _integer_at(data, 46, 4)
        colors = tf.where(colors == 0, tf.constant(256, tf.int64), tf.minimum(colors, 256))
        start = tf.minimum(14 + header_size, tf.cast(tf.strings.length(data), tf.int64))
        palette = tf.io.decode_raw(tf.strings.substr(data, start, 4 * colors), tf.uint8)

        def grey_palette():  # entry i is (i, i, i): the index is the grey level
            entries = tf.cast(tf.reshape(palette, [-1, 4])[:, :3], tf.int64)
            return tf.reduce_all(entries == tf.range(colors)[:, None])

        whole_palette = tf.size(palette, tf.int64) == 4 * colors
        return (header_size >= 40) & (
            ((bits == 24) | (bits == 32)) & (compression == 0)
            | (bits == 32) & (compression == 3) & masks
            | (bits == 8) & (compression == 0) & tf.cond(whole_palette, grey_palette, lambda: False))

    return tf.cond(_is_bmp(data), judge, lambda: True)


def _is_bmp(data):
    return (tf.strings.substr(data, 0, 2) == b"BM") & (tf.strings.length(data) >= 54)


def bmp_width_positive(data):
    """False for a BMP whose header states a width of 0 or below (its signed field; TensorFlow's
    decoder refuses it without naming the image); True for every other string."""
    width = _integer_at(data, 18, 4)
    return tf.logical_not(_is_bmp(data)) | ((width > 0) & (width < 2 ** 31))


def stated_size(data):
    """Graph code: int64 ``[2]``, the (height, width) a PNG, GIF, BMP or WebP string's header states
    ((0, 0) for other strings; each side capped at 2^30, so products of a few stay int64)."""
    number = functools.partial(_integer_at, data)

    def side(value):
        return tf.minimum(value, 2 ** 30)

    def bits(value, low, count):
        return tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, low), 2 ** count - 1)

    at = functools.partial(_bytes_at, data)
    bmp_height = number(22, 4)
    bmp_height = tf.where(bmp_height >= 2 ** 31, 2 ** 32 - bmp_height, bmp_height)  # (negative: rows top-down)
    bmp_width = number(18, 4)
    bmp_width = tf.where(bmp_width >= 2 ** 31, tf.constant(0, tf.int64), bmp_width)  # (negative: refused apart)
    # WebP (Google's container and bitstream specifications): the extended header's canvas (24-bit
    # sides less one), the lossless bitstream's 14-bit sides less one, the lossy frame's 14-bit sides.
    lossless = number(21, 4)
    none = tf.zeros([2], tf.int64)
    webp = tf.where(at(12, b"VP8X"), tf.stack([number(27, 3) + 1, number(24, 3) + 1]),
                    tf.where(at(12, b"VP8L"), tf.stack([bits(lossless, 14, 14) + 1, bits(lossless, 0, 14) + 1]),
                             tf.where(at(12, b"VP8 "), tf.stack([bits(number(28, 2), 0, 14), bits(number(26, 2), 0, 14)]),
                                      none)))
    return tf.where(at(0, b"\x89PNG"), side(tf.stack([number(20, 4, True), number(16, 4, True)])),
                    tf.where(at(0, b"GIF8"), tf.stack([number(8, 2), number(6, 2)]),
                             tf.where(at(0, b"BM"), side(tf.stack([bmp_height, bmp_width])),
                                      tf.where(at(0, b"RIFF") & at(8, b"WEBP"), webp, none))))


def gif_pixels(data):
    """Graph code: int64 ``[2]``, (the largest picture's pixels, all pictures' pixels) of a GIF
    string, its blocks walked as ``data.image_files.gif_pictures`` walks them; (0, 0) for other
    strings. TensorFlow's decoder holds every picture (a byte a pixel) to give the first, and a
    picture may exceed the screen size its header states: a 3.8 MB GIF of 80 pictures of 8000 x
    8000 took 5.9 GB, one of a 1 x 1 screen with a 30,000 x 30,000 picture 4.4 GB."""
    length = tf.cast(tf.strings.length(data), tf.int64)

    def window(position, size):  # int64 [size] of the bytes from ``position`` (zeros past the end)
        piece = tf.strings.substr(data, tf.minimum(tf.cast(position, tf.int64), length), size)
        piece = tf.strings.substr(tf.strings.join([piece, b"\0" * size]), 0, size)  # (string ops: on the host)
        return tf.cast(tf.io.decode_raw(piece, tf.uint8), tf.int64)

    def colour_table(flags):
        return tf.where(tf.bitwise.bitwise_and(flags, 0x80) > 0,
                        3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7)), 0)

    def step(position, in_blocks, largest, total):
        ahead = window(position, 256 * 64)
        # Encoders write an image's data in full sub-blocks (a length byte 255, then 255 bytes): a run
        # of them, at every 256th byte, is passed in one step (up to 64), the rest one at a time.
        full = tf.reduce_sum(tf.math.cumprod(tf.cast(tf.equal(ahead[::256], 255), tf.int64)))
        kind = ahead[0]  # a block's first byte: a sub-block's length, or its kind
        picture = tf.logical_not(in_blocks) & tf.equal(kind, 0x2C)
        extension = tf.logical_not(in_blocks) & tf.equal(kind, 0x21)
        pixels = tf.where(picture, (ahead[5] + 256 * ahead[6]) * (ahead[7] + 256 * ahead[8]), 0)
        position = tf.where(in_blocks, position + tf.maximum(256 * full, kind + 1),  # sub-blocks, then their bytes
                            tf.where(picture, position + 11 + colour_table(ahead[9]),
                                     tf.where(extension, position + 2, length)))  # (else: the trailer, or junk)
        return position, (in_blocks & (kind > 0)) | picture | extension, tf.maximum(largest, pixels), total + pixels

    gif = _bytes_at(data, 0, b"GIF8")
    start = 13 + colour_table(window(10, 1)[0])
    zero = tf.constant(0, tf.int64)
    _, _, largest, total = tf.while_loop(lambda position, *_: position < length, step,
                                         (tf.where(gif, start, length), tf.constant(False), zero, zero))
    return tf.stack([largest, total])


def stated_pixels(data):
    """Graph code: the width x height a PNG, GIF, BMP or WebP string's header states (0 for other
    strings): what its decoder allocates, however small the file (a decompression bomb states
    50,000 x 50,000 in a few kB; a lossless WebP of 10 kB, 16,383 x 16,383: 268 megapixels).
    JPEG's decoder refuses more than :data:`MAX_PIXELS` itself."""
    return tf.reduce_prod(stated_size(data))


def _bytes_at(data, position, value):
    """Graph code: whether the string ``data`` holds ``value`` at ``position`` (False where it is
    shorter: substr fails past the end of a string, so it is looked at from within it)."""
    return tf.strings.substr(data, tf.minimum(position, tf.strings.length(data)), len(value)) == value


# No image file is shorter (the smallest GIF, 1 x 1, has 26 bytes; a PNG 67): a signature alone is no image.
MIN_IMAGE_BYTES = 20


def is_image_file(data):
    """Graph code: whether the string ``data`` begins as a file ``tf.io.decode_image`` reads:
    JPEG, PNG, GIF, BMP, WebP or JPEG XL (its own error names neither the input nor the image)."""
    at = functools.partial(_bytes_at, data)
    return ((at(0, b"\xff\xd8\xff") | at(0, b"\x89PNG") | at(0, b"GIF8") | at(0, b"BM")
             | (at(0, b"RIFF") & at(8, b"WEBP")) | at(0, b"\xff\x0a") | at(4, b"JXL "))
            & (tf.strings.length(data) >= MIN_IMAGE_BYTES))


def is_animated_webp(data):
    """Graph code: whether ``data`` is a WebP whose VP8X header says it is animated (TensorFlow's
    WebP decoder corrupts its memory on some, which would take the server down: refused, as the
    folder sources' check refuses them)."""
    at = functools.partial(_bytes_at, data)
    flags = tf.cast(tf.io.decode_raw(tf.strings.substr(data, tf.minimum(20, tf.strings.length(data)), 1), tf.uint8),
                    tf.int32)
    return (at(0, b"RIFF") & at(8, b"WEBP") & at(12, b"VP8X")
            & tf.reduce_any(tf.bitwise.bitwise_and(flags, 2) > 0))  # (flags: [] or [1])


def decode_images(encoded, min_side, max_side, name=ENCODED_INPUT):
    """string ``[B]`` of encoded images -> (float32 ``[B, H', W', 3]`` each image resized by the
    paper's rule (``min_side``, ``max_side``: ``preprocessing.scaled_size``) as it is decoded, zero
    padded to the largest; float32 ``[B, 3]`` each image's resized (h', w') and scale, the
    ``image_info`` of an already resized batch; int32 ``[B, 2]`` each image's (h, w) as decoded).

    One ``DecodeImage`` per element in a ``map_fn`` loop of the graph, at most two at a time, each
    image resized (``resize_bilinear``, the model's own sampling) before it is stacked: a request
    of several large images, or the requests TF Serving's batching joins, holds their resized
    copies and at most two decoded ones, not every decoded image padded to the largest. The
    network then sees the pixels ``Preprocess`` would have made of each image. A single image (the
    usual request) skips the ragged stack. A file TensorFlow would misread or should not decode
    fails the request, ``name`` (the input) and the image's place in its message."""

    def said(index, text):  # one string: "name[1]: ..." (Assert prints each of its data in brackets)
        return [tf.strings.join([f"{name}[", tf.strings.as_string(index), f"]: {text}"])]

    def decode(data, index):
        said_here = functools.partial(said, index)
        known = tf.debugging.Assert(is_image_file(data), said_here(
            "not an image file TensorFlow decodes (JPEG, PNG, GIF, BMP, WebP): empty, too short, or other bytes"))
        bmp = tf.debugging.Assert(bmp_read_right(data), said_here(
            "a BMP with a colour palette, RLE compression or 1, 4 or 16-bit pixels, which TensorFlow's decoder "
            "reads wrong: send PNG, JPEG or 24-bit BMP"))
        bmp_width = tf.debugging.Assert(bmp_width_positive(data), said_here(
            "a BMP whose header states a width of 0 or below: corrupt"))
        still = tf.debugging.Assert(tf.logical_not(is_animated_webp(data)), said_here(
            "an animated WebP, which TensorFlow's WebP decoder is not safe on: send one frame as PNG or JPEG"))
        small = tf.debugging.Assert(stated_pixels(data) <= MAX_PIXELS, said_here(
            f"its header states over {MAX_PIXELS / 1e6:.0f} megapixels (the most read, as TensorFlow's JPEG "
            "decoder's limit): scale it down"))
        gif = gif_pixels(data)
        pictures = tf.debugging.Assert((gif[0] <= MAX_PIXELS) & (gif[1] <= GIF_PIXELS), said_here(
            f"a GIF with a picture over {MAX_PIXELS / 1e6:.0f} megapixels, or over {GIF_PIXELS / 1e6:.0f} in all its "
            "pictures (TensorFlow's decoder holds every one to give the first): send its first picture as PNG or JPEG"))
        with tf.control_dependencies([known, bmp, bmp_width, still, small, pictures]):
            image = decode_image(data)  # (a WebP with transparency: its alpha dropped)
        size = tf.shape(image)[:2]
        new_size, scale = scaled_size(size[None], min_side, max_side)
        # An image at its size (a 600 x 1000 photo for the paper's rule) is not resampled.
        resized = tf.cond(tf.reduce_all(new_size[0] == size), lambda: tf.cast(image, tf.float32),
                          lambda: resize_bilinear(image[None], size[None], new_size)[0])
        return resized, tf.concat([tf.cast(new_size[0], tf.float32), scale], axis=0), size

    def one():
        image, info, size = decode(encoded[0], 0)
        return image[None], info[None], size[None]

    def ragged(element):
        image, info, size = decode(*element)
        return tf.RaggedTensor.from_tensor(image, ragged_rank=1), info, size

    def many():
        images, info, sizes = tf.map_fn(ragged, (encoded, tf.range(tf.size(encoded))), parallel_iterations=2,
                                        fn_output_signature=(
                                            tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1),
                                            tf.TensorSpec([3], tf.float32), tf.TensorSpec([2], tf.int32)))
        return images.to_tensor(), info, sizes

    images, info, sizes = tf.cond(tf.size(encoded) == 1, one, many)
    images.set_shape([None, None, None, 3])
    info.set_shape([None, 3])
    sizes.set_shape([None, 2])
    return images, info, sizes


def check_image_sizes(sizes, name):
    """An ``InvalidArgument`` error naming the input if an image has no pixels."""
    return tf.debugging.assert_positive(
        sizes, message=f"{name}: every image needs a height and a width of at least 1 pixel")


class ServingFunctions:
    """The two serving signatures over a ``FasterRCNN``'s layers, as ``tf.function``s."""

    def __init__(self, model, jit_compile=False):
        self.model = model
        self.layers = model.layers_
        self.class_names = tuple(model.class_names)
        self.max_detections = model.frcnn_config.detector.max_detections
        self.num_rois = model.frcnn_config.rpn.post_nms_top_n[1]
        self.jit_compile = bool(jit_compile)
        # The encoded signatures resize each image as they decode it: their batch enters the
        # network resized, through a Preprocess that takes it so (its sizes and scales given).
        preprocess = self.layers.preprocess
        self.resize_rule = (preprocess.min_side, preprocess.max_side)
        self.resized_layers = copy.copy(self.layers)
        self.resized_layers.preprocess = Preprocess.from_config(
            {**preprocess.get_config(), "resize": False, "name": "preprocess_resized"})
        if self.jit_compile:
            # XLA compiles the network for one image and the batch is mapped over it in the graph: a
            # batch of two compiled as one ran for minutes on the CPU (TF 2.21; the NMS loop of
            # XLA's NonMaxSuppressionV4 inside the batch's loop), one image at a time ~0.1 s each.
            self._one = tf.function(self._detect_one, jit_compile=True, autograph=False)
            self._network = self._detect_each
        else:
            self._network = tf.function(self._detect, autograph=False)
        self.serving_default = tf.function(
            self._serve_tensor, autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=TENSOR_INPUT)])
        self.serving_encoded = tf.function(
            self._serve_encoded, autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name=ENCODED_INPUT)])
        self.serving_tf_example = tf.function(
            self._serve_tf_example, autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)])

    def _detect(self, images, image_sizes, original_sizes=None):
        """``original_sizes`` given: ``images`` come resized, ``image_sizes`` their (h', w', scale)."""
        if original_sizes is None:
            return forward(self.layers, images, image_sizes)
        return forward(self.resized_layers, images, image_sizes, original_sizes)

    def _detect_one(self, image, *sizes):
        return {key: value[0] for key, value in self._detect(image[None], *(size[None] for size in sizes)).items()}

    def _detect_each(self, images, *sizes):
        """The XLA-compiled network image by image (``tf.map_fn``), as one batch's outputs."""
        # Traced as for the converters: RoIAlign samples by gathers (XLA has no CropAndResize), a
        # pyramid's levels each pool every RoI (no dynamic shapes), no tf.cond shortcuts.
        with for_converters():
            one = self._one.get_concrete_function(tf.TensorSpec([None, None, 3], images.dtype), *(
                tf.TensorSpec(size.shape[1:], size.dtype) for size in sizes))
        spec = one.structured_outputs
        # Over the images' numbers, each image sliced out: map_fn over the images themselves would
        # hold them in a uint8 TensorList, which has no GPU kernel.
        return tf.map_fn(lambda i: one(images[i], *(size[i] for size in sizes)), tf.range(tf.shape(images)[0]),
                         fn_output_signature={key: tf.TensorSpec(value.shape, value.dtype)
                                              for key, value in spec.items()})

    def _detect_batch(self, images, image_sizes, name, image_info=None):
        """``image_info`` given: ``images`` come resized (``decode_images``), ``image_sizes`` are
        the decoded images' own."""
        with tf.control_dependencies([check_image_sizes(image_sizes, name)]):
            images = tf.identity(images)
        sizes = (image_sizes,) if image_info is None else (image_info, image_sizes)
        # Class names are strings, which XLA does not handle: looked up outside the network.
        return tf.cond(tf.shape(images)[0] > 0,
                       lambda: od_api_outputs(self._network(images, *sizes), image_sizes, self.class_names),
                       lambda: empty_outputs(self.max_detections, self.num_rois,
                                             self.model.num_classes + 1))

    def _serve_tensor(self, input_tensor):
        # TF Serving checks a request's dtype but not its shape: check the rank here, by name.
        input_tensor = tf.ensure_shape(input_tensor, [None, None, None, 3], name=TENSOR_INPUT)
        shape = tf.shape(input_tensor)
        sizes = tf.tile(shape[1:3][None], [shape[0], 1])
        return self._detect_batch(input_tensor, sizes, TENSOR_INPUT)

    def _serve_encoded(self, encoded_image_string_tensor):
        encoded_image_string_tensor = tf.ensure_shape(encoded_image_string_tensor, [None],
                                                      name=ENCODED_INPUT)
        images, info, sizes = decode_images(encoded_image_string_tensor, *self.resize_rule)
        return self._detect_batch(images, sizes, ENCODED_INPUT, info)

    def _serve_tf_example(self, tf_example):
        tf_example = tf.ensure_shape(tf_example, [None], name=EXAMPLE_INPUT)
        features = tf.io.parse_example(
            tf_example, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        images, info, sizes = decode_images(features[EXAMPLE_IMAGE_KEY], *self.resize_rule, EXAMPLE_INPUT)
        return self._detect_batch(images, sizes, EXAMPLE_INPUT, info)


def warmup_requests(model_name, image_size=(480, 640)):
    """One ``PredictionLog`` per signature (a ``image_size`` grey image), as TF Serving replays at
    load time to build its kernels before the first real request."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    image = np.full((1, *image_size, 3), 128, np.uint8)
    jpeg = tf.io.encode_jpeg(image[0]).numpy()
    inputs = {
        DEFAULT_SIGNATURE: (TENSOR_INPUT, tf.make_tensor_proto(image)),
        ENCODED_SIGNATURE: (ENCODED_INPUT, tf.make_tensor_proto([jpeg], dtype=tf.string)),
        EXAMPLE_SIGNATURE: (EXAMPLE_INPUT, tf.make_tensor_proto(
            [tf_example_bytes(jpeg)], dtype=tf.string)),
    }
    logs = []
    for signature, (key, tensor) in inputs.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tensor)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def tf_example_bytes(encoded_image):
    """A serialized ``tf.train.Example`` holding ``image/encoded``, as the ``tf_example``
    signature takes (the TF Object Detection API's and TFRecord data sets' key)."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded_image]))
    return tf.train.Example(features=tf.train.Features(
        feature={EXAMPLE_IMAGE_KEY: feature})).SerializeToString()


def read_warmup_requests(path):
    """The ``PredictRequest``s of a warm-up file."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def next_version(base_path) -> int:
    """1 + the highest numeric version folder in ``base_path`` (1 if none)."""
    if not os.path.isdir(base_path):
        return 1
    versions = [int(n) for n in os.listdir(base_path) if re.fullmatch(r"\d+", n)]
    return max(versions, default=0) + 1


def export_saved_model(model, base_path, version=None, jit_compile=False, warmup=True,
                       warmup_image_size=(480, 640), verbose=False):
    """Write ``model`` (a ``FasterRCNN``) as ``base_path/<version>/``, TF Serving's layout.

    ``version`` defaults to the next free number. The version folder is written beside under a
    temporary name and renamed into place when complete, so a server polling ``base_path`` never
    sees half a model. Returns the version folder's path.
    """
    base_path = os.path.abspath(os.fspath(base_path))
    if os.path.isfile(os.path.join(base_path, "saved_model.pb")):  # (a version would be written inside a version)
        raise FileExistsError(f"{base_path} is a SavedModel (one version of a model); give its base path, "
                              f"{os.path.dirname(base_path)}, for the next version beside it")
    chosen = version is not None
    version = int(version) if chosen else next_version(base_path)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = os.path.join(base_path, str(version))
    if os.path.exists(target):
        raise FileExistsError(_taken(target))
    os.makedirs(base_path, exist_ok=True)
    functions = ServingFunctions(model, jit_compile=jit_compile)
    archive = keras.export.ExportArchive()
    # Not archive.track(model): the endpoints capture every variable they read already, and
    # tracking the model as well stores each weight twice, as the Keras wrapper and as the
    # tf.Variable it holds (keras-team/keras#23553): twice the size on disk and twice the variable
    # memory in every server that loads it. The model has no lookup tables or other assets.
    archive.add_endpoint(DEFAULT_SIGNATURE, functions.serving_default)
    archive.add_endpoint(ENCODED_SIGNATURE, functions.serving_encoded)
    archive.add_endpoint(EXAMPLE_SIGNATURE, functions.serving_tf_example)
    with staging_folder(base_path, str(version)) as staging:  # not a number: TF Serving skips it
        archive.write_out(staging, verbose=verbose)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in functions.class_names))
        if warmup:
            name = os.path.basename(base_path)
            with tf.io.TFRecordWriter(os.path.join(staging, WARMUP_FILE)) as writer:
                for log in warmup_requests(name, warmup_image_size):
                    writer.write(log.SerializeToString())
        while True:
            try:
                os.rename(staging, target)
                return target
            except OSError as error:  # another export took the version meanwhile
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if chosen:
                    raise FileExistsError(_taken(target)) from None
                target = os.path.join(base_path, str(next_version(base_path)))


def _taken(target) -> str:
    return (f"{target} exists: TF Serving versions are immutable, pick another --version (or leave it "
            "out for the next one)")


def _graph_nodes(saved_model_dir, signature=None):
    """(nodes, function names) of a SavedModel: every node of its graphs and their functions, or
    with ``signature`` only the nodes that signature's outputs depend on (through the graph's
    inputs and every function they call, branches and loop bodies included)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes, functions = [], set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        library = {function.signature.name: function for function in graph.library.function}
        functions.update(library)
        if signature is None:
            nodes.extend(graph.node)
            for function in library.values():
                nodes.extend(function.node_def)
            continue
        if signature not in meta_graph.signature_def:
            raise ValueError(f"{saved_model_dir} has no signature {signature!r}")
        by_name = {node.name: node for node in graph.node}
        pending = [t.name.split(":")[0] for t in meta_graph.signature_def[signature].outputs.values()]
        seen, called = set(), []
        while pending:
            name = pending.pop().lstrip("^").split(":")[0]
            if name in seen or name not in by_name:
                continue
            seen.add(name)
            nodes.append(by_name[name])
            pending.extend(by_name[name].input)
            called.extend(_called_functions(by_name[name]))
        done = set()
        while called:
            name = called.pop()
            if name in done or name not in library:
                continue
            done.add(name)
            for node in library[name].node_def:
                nodes.append(node)
                called.extend(_called_functions(node))
                if node.op in library:
                    called.append(node.op)
    return nodes, functions


def _called_functions(node):
    """Names of the functions a node calls through its attributes (f, branches, loop bodies)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        elif value.HasField("list"):
            names.extend(f.name for f in value.list.func)
    return names


def _node_types(node, name):
    """The dtypes a node's attribute ``name`` holds (a type or a list of types)."""
    if name not in node.attr:
        return None
    value = node.attr[name]
    return list(value.list.type) if value.HasField("list") else [value.type]


def _has_kernel(node, device_types):
    from tensorflow.python.framework import kernels

    for kernel in kernels.get_registered_kernels_for_op(node.op).kernel:
        if kernel.device_type not in device_types:
            continue
        allowed = True
        for constraint in kernel.constraint:
            types = _node_types(node, constraint.name)
            if types is not None and not set(types) <= set(constraint.allowed_values.list.type):
                allowed = False
                break
        if allowed:
            return True
    return False


# Ops a GPU server may run on its CPU: image decoding at the input and the byte reads of a BMP's
# header before it (string ops are let through by their dtype; these have integer attributes).
HOST_OPS = frozenset({"DecodeImage", "DecodeJpeg", "DecodePng", "DecodeBmp", "DecodeGif", "DecodeRaw",
                      "Substr", "StringLength"})


def ops_without_gpu_kernels(saved_model_dir, signature=None) -> dict:
    """``{op type: sorted dtypes}`` of every node of a SavedModel (graphs and all their functions)
    that this TensorFlow build has no GPU kernel for, with the node's dtypes (a kernel is
    registered per dtype: ``CropAndResize`` has GPU kernels, but not for bfloat16). TensorFlow
    lists its CUDA kernels even on a machine without a GPU. Not counted: calls of the graph's own
    functions, ops TensorFlow runs on any device (``DEFAULT`` kernels: control flow, identity),
    string ops and ``HOST_OPS`` (decoding). ``signature``: only the nodes that signature's
    outputs depend on (not, e.g., the checkpoint-saving functions)."""
    import tensorflow as tf

    nodes, functions = _graph_nodes(saved_model_dir, signature)
    missing = {}
    for node in nodes:
        if node.op in functions or node.op in HOST_OPS:
            continue
        dtypes = {t for name in node.attr for t in _node_types(node, name) if t}
        if tf.string.as_datatype_enum in dtypes:
            continue
        if not _has_kernel(node, ("GPU", "DEFAULT")):
            names = sorted(tf.dtypes.as_dtype(t).name for t in dtypes if t)
            missing.setdefault(node.op, set()).update(names)
    return {op: sorted(names) for op, names in missing.items()}


def graph_op_types(saved_model_dir) -> set:
    """Every op type in a SavedModel: its graphs and every function of their libraries."""
    return {node.op for node in _graph_nodes(saved_model_dir)[0]}
