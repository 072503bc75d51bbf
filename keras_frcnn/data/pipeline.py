"""One ``tf.data`` pipeline for every source: training batches and evaluation batches.

Input: a :class:`~keras_frcnn.data.examples.DetectionSource` (or its ``tf.data.Dataset``) of
examples in the TFDS detection layout, images decoded or encoded.

Shape letters: ``B`` images per batch, ``H, W`` the largest (padded) image size of the batch,
``G`` the largest ground-truth count of the batch.

Training (:func:`train_dataset`) numbers each example (``index``, its position in the source,
used to join precomputed proposals), shuffles, decodes, resizes with the paper's rule (shorter side
``config.image.min_side``, longer side at most ``config.image.max_side``), flips at random
(``config.image.flip``), drops difficult / crowd objects, and pads the batch. Boxes are absolute
``[ymin, xmin, ymax, xmax]`` pixels of the resized (and flipped) image, continuous coordinates.

Evaluation (:func:`eval_dataset`) keeps the original images and boxes in original pixels, difficult
objects included and flagged; the inference model resizes inside its graph.

Everything is graph code (no ``py_function``): the pipeline runs in parallel and under
``tf.distribute`` input pipelines.
"""

from __future__ import annotations

import typing

import tensorflow as tf

from keras_frcnn.data.examples import DetectionSource, decode_image
from keras_frcnn.preprocessing import scaled_size

AUTOTUNE = tf.data.AUTOTUNE


def train_dataset(
    source: typing.Union[DetectionSource, tf.data.Dataset],
    config,
    batch_size: int,
    shuffle: bool = True,
    seed: typing.Optional[int] = None,
    shuffle_buffer: int = 1024,
    flip_probability: typing.Optional[float] = None,
    repeat: bool = False,
    drop_remainder: bool = True,
    num_parallel_calls: int = AUTOTUNE,
    pad_multiple: typing.Optional[int] = None,
) -> tf.data.Dataset:
    """Training batches: a dict with these keys (and no others).

    - ``images``: uint8 ``[B, H, W, 3]``, each image resized by the config's rule (bilinear,
      ``tf.image.resize``, rounded back to uint8), zero padded at the bottom / right.
    - ``image_info``: float32 ``[B, 3]`` = (valid height, valid width, scale) of each image.
    - ``gt_boxes``: float32 ``[B, G, 4]`` yxyx pixels of the resized (flipped) image; zero rows pad.
    - ``gt_classes``: int32 ``[B, G]`` = 0-based label + 1 (1..N objects, 0 padding).
    - ``num_gt``: int32 ``[B]`` valid rows of ``gt_boxes`` (0 for an image without objects).
    - ``index``: int64 ``[B]`` position of the example in ``source`` (stable across runs).
    - ``flipped``: bool ``[B]`` whether the image (and its boxes) were mirrored.
    - ``sample_seed``: int64 ``[B]`` a seeded random draw per example and pass: the seed of its
      anchor and RoI sampling (``targets.hash_uniform``).

    Only when the examples carry ``proposals`` float32 ``[P, 4]`` (yxyx pixels of this pipeline's resize of
    the example, unflipped: the stored proposals of the alternating schedule's detector stages)
    are there two more: ``proposals`` float32 ``[B, P, 4]`` (flipped with the image, zero padded) and
    ``num_proposals`` int32 ``[B]``.

    Ground truth: boxes are scaled by the single ``scale`` (as py-faster-rcnn does; dividing by it
    undoes the resize exactly) and clipped to the resized image; difficult / crowd objects are
    removed (the paper does not train on them), as are degenerate boxes.

    config: a :class:`keras_frcnn.Config` (``config.image`` is used).
    seed: seeds the shuffle and the flips (``None``: different every run).
    flip_probability: chance of a horizontal flip; default 0.5 if ``config.image.flip`` else 0.
    repeat: repeat forever (reshuffled and re-flipped every pass).
    drop_remainder: keep batches full; a short last batch can leave a replica of a distribution
      strategy with zero images, which crashes oneDNN kernels.
    pad_multiple: for XLA-compiled training steps, which compile anew for every input shape: pad
      image sides to a multiple of this many pixels, ground truth to a multiple of 16 boxes and
      proposals to a multiple of 256 (``image_info`` keeps the valid sizes; the model masks the rest).

    Under ``tf.distribute`` every worker reads the whole seeded stream and keeps its share of each
    global batch (auto-shard policy DATA): sharding by files would split a source from the
    proposals zipped to it.
    """
    dataset = _dataset_of(source)
    image_config = config.image
    if flip_probability is None:
        flip_probability = 0.5 if image_config.flip else 0.0
    min_side, max_side = image_config.min_side, image_config.max_side

    # Numbered before shuffling, so the number names the example, not its place in this epoch.
    dataset = dataset.enumerate().map(lambda index, example: {**example, "index": index})
    # Each pass is reshuffled. A seeded pipeline repeats its batches as long as it is iterated
    # once: every new iterator of the same dataset object advances the seeds.
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Flip draws come from their own seeded stream (not stateful ops inside a parallel map), so a
    # seeded pipeline is reproducible however the map is parallelised.
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, draws)

    def prepare(example, draw):
        image = _image(example)
        boxes, labels, difficult = _pixel_boxes(example, tf.shape(image)[:2])
        keep = tf.logical_not(difficult) & _non_degenerate(boxes)
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)

        shape = tf.shape(image)
        new_size, scale = scaled_size(shape[:2], min_side, max_side)  # the inference model's rule
        image = tf.cond(
            tf.reduce_all(new_size == shape[:2]),
            lambda: image,
            lambda: tf.cast(tf.round(tf.clip_by_value(
                tf.image.resize(image, new_size, method="bilinear"), 0.0, 255.0)), tf.uint8),
        )
        new_h, new_w = tf.cast(new_size[0], tf.float32), tf.cast(new_size[1], tf.float32)
        boxes = _clip(boxes * scale, new_h, new_w)
        keep = _non_degenerate(boxes)  # a sliver can vanish at the border after clipping
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)

        uniform = tf.random.stateless_uniform([], seed=tf.stack([draw, example["index"]]))
        flipped = uniform < flip_probability
        proposals = example.get("proposals")
        if proposals is None:
            image, boxes = tf.cond(flipped, lambda: _flip(image, boxes, new_w), lambda: (image, boxes))
        else:
            proposals = tf.reshape(tf.cast(proposals, tf.float32), [-1, 4])
            image, boxes, proposals = tf.cond(
                flipped,
                lambda: (*_flip(image, boxes, new_w), _flip_boxes(proposals, new_w)),
                lambda: (image, boxes, proposals))
        batch = {
            "images": image,
            "image_info": tf.stack([new_h, new_w, scale]),
            "gt_boxes": boxes,
            "gt_classes": tf.cast(labels, tf.int32) + 1,
            "num_gt": tf.shape(labels)[0],
            "index": example["index"],
            "flipped": flipped,
            "sample_seed": draw,
        }
        if proposals is not None:
            batch.update(proposals=proposals, num_proposals=tf.shape(proposals)[0])
        return batch

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    if pad_multiple:
        dataset = dataset.map(lambda batch: _pad_to_buckets(batch, pad_multiple),
                              num_parallel_calls=num_parallel_calls)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _pad_to(tensor, axis, multiple):
    size = tf.shape(tensor)[axis]
    padding = [[0, 0]] * len(tensor.shape)
    padding[axis] = [0, tf.maximum((size + multiple - 1) // multiple, 1) * multiple - size]
    return tf.pad(tensor, padding)


def _pad_to_buckets(batch, multiple):
    """A batch padded to a few shapes (see ``train_dataset``'s ``pad_multiple``)."""
    batch = dict(batch)
    batch["images"] = _pad_to(_pad_to(batch["images"], 1, multiple), 2, multiple)
    batch["gt_boxes"] = _pad_to(batch["gt_boxes"], 1, 16)
    batch["gt_classes"] = _pad_to(batch["gt_classes"], 1, 16)
    if "proposals" in batch:
        batch["proposals"] = _pad_to(batch["proposals"], 1, 256)
    return batch


def eval_dataset(
    source: typing.Union[DetectionSource, tf.data.Dataset],
    config=None,
    batch_size: int = 1,
    num_parallel_calls: int = AUTOTUNE,
) -> tf.data.Dataset:
    """Evaluation batches, in source order, every example once (no dropped remainder).

    - ``images``: uint8 ``[B, H, W, 3]`` the original images, zero padded at the bottom / right.
    - ``image_size``: int32 ``[B, 2]`` (height, width) of each original image.
    - ``gt_boxes``: float32 ``[B, G, 4]`` yxyx pixels of the original image (clipped; degenerate
      boxes removed); zero rows pad.
    - ``gt_classes``: int32 ``[B, G]`` = 0-based label + 1 (0 padding).
    - ``gt_difficult``: bool ``[B, G]`` VOC difficult / COCO crowd (neither a hit nor a miss).
    - ``num_gt``: int32 ``[B]``; ``index``: int64 ``[B]`` position in ``source``.
    - ``image/filename``: string ``[B]``; ``image/id``: int64 ``[B]`` (COCO id, else -1).

    config: unused (accepted so both pipelines are called alike): evaluation feeds original images,
      and the inference model resizes them in its graph.
    """
    del config
    dataset = _dataset_of(source).enumerate()

    def prepare(index, example):
        image = _image(example)
        size = tf.shape(image)[:2]
        boxes, labels, difficult = _pixel_boxes(example, size)
        keep = _non_degenerate(boxes)
        return {
            "images": image,
            "image_size": size,
            "gt_boxes": tf.boolean_mask(boxes, keep),
            "gt_classes": tf.cast(tf.boolean_mask(labels, keep), tf.int32) + 1,
            "gt_difficult": tf.boolean_mask(difficult, keep),
            "num_gt": tf.reduce_sum(tf.cast(keep, tf.int32)),
            "index": index,
            "image/filename": example["image/filename"],
            "image/id": example["image/id"],
        }

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.padded_batch(batch_size, drop_remainder=False)
    return dataset.prefetch(AUTOTUNE)


# --- pieces -------------------------------------------------------------------------------------


def _dataset_of(source):
    return source.dataset if isinstance(source, DetectionSource) else source


def _image(example):
    image = example["image"]
    if image.dtype == tf.string:
        return decode_image(image)
    return image


def _pixel_boxes(example, image_size):
    """Normalised boxes -> pixels of the image (clipped): (boxes ``[N, 4]``, labels, difficult)."""
    objects = example["objects"]
    h, w = tf.cast(image_size[0], tf.float32), tf.cast(image_size[1], tf.float32)
    boxes = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]) * tf.stack([h, w, h, w])
    return _clip(boxes, h, w), objects["label"], tf.cast(objects["is_difficult"], tf.bool)


def _clip(boxes, h, w):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([tf.clip_by_value(ymin, 0.0, h), tf.clip_by_value(xmin, 0.0, w),
                     tf.clip_by_value(ymax, 0.0, h), tf.clip_by_value(xmax, 0.0, w)], axis=-1)


def _non_degenerate(boxes):
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _flip(image, boxes, width):
    """Mirror left-right: pixel column ``j`` -> ``W - 1 - j``; box ``x`` -> ``W - x`` (continuous)."""
    return tf.reverse(image, axis=[1]), _flip_boxes(boxes, width)


def _flip_boxes(boxes, width):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
