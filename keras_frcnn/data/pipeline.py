"""One ``tf.data`` pipeline for every source: training batches and evaluation batches.

Input: a :class:`~keras_frcnn.data.examples.DetectionSource` (or a ``tf.data.Dataset`` of
examples) in the TFDS detection layout, images decoded or encoded.

Shape letters: ``B`` images per batch, ``H, W`` the largest (padded) image size of the batch,
``G`` the largest ground-truth count of the batch.

Training reads one **stream** of examples (:func:`example_stream`): position ``p`` of the stream
is pass ``p // N`` over the ``N`` examples, and every pass visits each example exactly once, in an
order of its own. A source with random access (a VOC folder, a COCO JSON file) shuffles indices:
position ``p`` is example ``index_shuffle(p % N, seed=(seed, p // N))``, a uniform permutation per
pass with nothing buffered. A TFDS source is read in its stored order (TFDS writes examples in a
hashed order) through a seeded shuffle buffer of encoded records, reseeded every pass; TFRecord
files likewise, read each pass in a seeded order of files, several in turns
(``DetectionSource.shuffled_records``). Images are
decoded after shuffling, so no shuffle buffer holds decoded images (aspect grouping holds one
block of them, 16 by default). Everything random about position
``p`` (its flip, its anchor and RoI sampling seed) is a stateless function of ``(seed, p)``, so the
stream started at position ``p`` continues exactly where an uninterrupted one would be: a resumed
run passes its checkpointed position as ``start``. With ``aspect_group`` the stream is reordered
within fixed blocks of positions (images of one orientation batched together), each block as a
function of its examples, so this still holds.

:func:`train_dataset` then decodes, resizes with the paper's rule (shorter side
``config.image.min_side``, longer side at most ``config.image.max_side``), flips
(``config.image.flip``), drops difficult / crowd objects, and pads the batch. Boxes are absolute
``[ymin, xmin, ymax, xmax]`` pixels of the resized (and flipped) image, continuous coordinates.

Evaluation (:func:`eval_dataset`) keeps the original images and boxes in original pixels, difficult
objects included and flagged; the inference model resizes inside its graph.

Everything is graph code (no ``py_function``): the pipeline runs in parallel and under
``tf.distribute`` input pipelines.
"""

from __future__ import annotations

import dataclasses
import random
import typing

import tensorflow as tf

from keras_frcnn.data.examples import DetectionSource, decode_image, example_key
from keras_frcnn.data.problems import DataError
from keras_frcnn.preprocessing import scaled_size

AUTOTUNE = tf.data.AUTOTUNE

# Encoded records in the shuffle buffer of a source without random access (TFDS): a VOC or COCO
# JPEG is 50-200 kB, so ~100-200 MB at most.
SHUFFLE_BUFFER = 1024

_ENDLESS = 2 ** 62  # "no end" for position ranges

PREFETCH_BATCHES = 2

_SIDE = "_side"  # an example's drawn shorter side while ``aspect_group`` reorders the stream


def pipeline_options(shard_by_data: bool = False) -> tf.data.Options:
    """The tf.data options of the package's pipelines. Autotuning is off: a finished autotuned
    iterator (a stage's training stream, freed by Python's collector at some later moment) blocks
    the thread that frees it until its autotune thread's timed wait runs out (TF 2.21: the main
    thread in ``~RootDataset::Iterator`` while the autotune thread sleeps in
    ``Model::OptimizeLoop``, a wait whose period doubles up to 60 s): 9-60 s stalls with no CPU in
    use at random points of a run (BENCHMARKS.md, issue 14). Without it parallel maps run on as
    many threads as there are cores (AUTOTUNE's starting value) and ``PREFETCH_BATCHES`` batches
    are prefetched. ``shard_by_data``: under tf.distribute every worker reads the whole stream and
    keeps its share of each batch (auto-shard policy DATA)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    if shard_by_data:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def as_source(source: typing.Union[DetectionSource, tf.data.Dataset]) -> DetectionSource:
    """A ``DetectionSource`` for a source or a bare dataset of examples (counted if its size is
    unknown)."""
    if not isinstance(source, DetectionSource):
        source = DetectionSource(dataset=source, class_names=())
    if source.num_examples is None:
        count = int(source.dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        source = dataclasses.replace(source, num_examples=count)
    return source


def example_stream(
    source: typing.Union[DetectionSource, tf.data.Dataset],
    seed: int,
    start: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    num_parallel_calls: int = AUTOTUNE,
) -> tf.data.Dataset:
    """The examples of ``source`` as one stream of passes, from stream position ``start``.

    Elements: ``{"position": int64, "index": int64, "example": <the example>}``: ``position``
    counts examples in the stream (pass ``position // N``), ``index`` is the example's position
    in the source (stable across runs: it names the example).

    shuffle: a new order every pass (see the module docstring); False: the source's order.
    repeat: pass after pass, without end; False: only the rest of ``start``'s pass.
    shuffle_buffer: records in the shuffle buffer of a source without random access.
    """
    source = as_source(source)
    n = source.num_examples
    if n == 0:
        raise DataError(f"{source.name or 'the data set'}: no examples to read")
    first_pass = start // n
    end = _ENDLESS if repeat else (first_pass + 1) * n
    positions = tf.data.Dataset.range(start, end)
    seed = tf.constant(seed, tf.int64)

    if source.example_at is not None:
        def locate(position):
            index = position % n
            if shuffle:
                index = tf.random.experimental.index_shuffle(
                    index, seed=tf.stack([seed, position // n]), max_index=n - 1)
            return {"position": position, "index": index, "example": source.example_at(index)}

        return positions.map(locate, num_parallel_calls=num_parallel_calls, deterministic=True)

    def one_pass(number):
        # tf.data mixes a shuffle's seed with the global seed (keras.utils.set_random_seed) of the
        # graph being traced: clear it in this function's graph, so the order depends on ``seed``.
        tf.compat.v1.get_default_graph().seed = None
        if shuffle and source.shuffled_records is not None:  # TFRecord files: their order, then the buffer
            records = source.shuffled_records(seed * 1_000_003 + number)
        else:
            records = source.dataset.enumerate()
        if shuffle:
            records = records.shuffle(shuffle_buffer, seed=seed * 1_000_003 + number,
                                      reshuffle_each_iteration=False)
        return records

    passes = tf.data.Dataset.range(first_pass, end // n if not repeat else _ENDLESS)
    records = passes.flat_map(one_pass).skip(start - first_pass * n)
    return tf.data.Dataset.zip(positions, records).map(
        lambda position, record: {"position": position, "index": record[0], "example": record[1]})


def train_dataset(
    source: typing.Union[DetectionSource, tf.data.Dataset],
    config,
    batch_size: int,
    shuffle: bool = True,
    seed: typing.Optional[int] = None,
    start: int = 0,
    flip_probability: typing.Optional[float] = None,
    repeat: bool = False,
    drop_remainder: bool = True,
    num_parallel_calls: int = AUTOTUNE,
    pad_multiple: typing.Optional[int] = None,
    image_multiple: int = 1,
    proposals=None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    at_proposal_side: bool = False,
    aspect_group: int = 0,
) -> tf.data.Dataset:
    """Training batches: a dict with these keys (and no others).

    - ``images``: uint8 ``[B, H, W, 3]``, each image resized by the config's rule (bilinear,
      ``tf.image.resize``, rounded back to uint8), zero padded at the bottom / right. With
      ``config.image.train_min_sides`` the shorter sides of a batch's images are one of them,
      drawn per batch from the seed and stream position (multi-scale training), else ``min_side``.
    - ``image_info``: float32 ``[B, 3]`` = (valid height, valid width, scale) of each image.
    - ``gt_boxes``: float32 ``[B, G, 4]`` yxyx pixels of the resized (flipped) image; zero rows pad.
    - ``gt_classes``: int32 ``[B, G]`` = 0-based label + 1 (1..N objects, 0 padding).
    - ``num_gt``: int32 ``[B]`` valid rows of ``gt_boxes`` (0 for an image without objects).
    - ``index``: int64 ``[B]`` position of the example in ``source`` (stable across runs).
    - ``key``: string ``[B]`` the example's name (``examples.example_key``).
    - ``position``: int64 ``[B]`` position in the stream (see :func:`example_stream`).
    - ``flipped``: bool ``[B]`` whether the image (and its boxes) were mirrored.
    - ``sample_seed``: int64 ``[B]`` a seeded random draw per stream position: the seed of its
      anchor and RoI sampling (``targets.hash_uniform``).

    With stored proposals (``proposals``, a :class:`~keras_frcnn.data.stored_proposals.ProposalStore`,
    or examples that carry ``proposals`` float32 ``[P, 4]``: yxyx pixels of the example resized to
    ``config.image.proposal_side``, unflipped) there are two more: ``proposals`` float32
    ``[B, P, 4]`` (scaled to the image's drawn side, flipped with it, zero padded) and
    ``num_proposals`` int32 ``[B]``.

    Ground truth: boxes are scaled by the single ``scale`` (as py-faster-rcnn does; dividing by it
    undoes the resize exactly) and clipped to the resized image; difficult / crowd objects are
    removed (the paper does not train on them), as are degenerate boxes.

    config: a :class:`keras_frcnn.Config` (``config.image`` is used).
    seed: seeds the order, the flips and the sampling seeds (``None``: different every run).
    start: the stream position to begin at (a resumed run's checkpointed position).
    flip_probability: chance of a horizontal flip; default 0.5 if ``config.image.flip`` else 0.
    repeat: pass after pass without end (each pass reshuffled and re-flipped); False: one pass.
    at_proposal_side: every image at ``config.image.proposal_side`` (the proposal dump).
    drop_remainder: keep batches full; a short last batch can leave a replica of a distribution
      strategy with zero images, which crashes oneDNN kernels.
    pad_multiple: for XLA-compiled training steps, which compile anew for every input shape: pad
      image sides to a multiple of this many pixels, ground truth to a multiple of 16 boxes and
      proposals to a multiple of 256 (``image_info`` keeps the valid sizes; the model masks the rest).
    image_multiple: pad image sides to a multiple of this many pixels (ground truth and proposals
      as they are): a few image shapes for kernels set up per input shape (oneDNN, cuDNN).
    aspect_group: with ``shuffle`` and ``repeat``, the stream is reordered in blocks of this
      many positions, rounded up to whole batches (block ``k`` of ``m``: positions ``[k * m,
      (k + 1) * m)``), by the side drawn for each batch, then by aspect ratio (py-faster-rcnn's
      ``ASPECT_GROUPING``), so that a batch pairs images of one orientation and pads less. Every
      position is still read once (a block at a pass's end mixes it with the next pass's first
      examples), and the order within a block is a function of the block, so a stream started at
      any ``start`` continues as an uninterrupted one. 0 or 1 (or batches of one image): the
      stream's order.

    Under ``tf.distribute`` every worker reads the whole seeded stream and keeps its share of each
    global batch (auto-shard policy DATA).
    """
    image_config = config.image
    if flip_probability is None:
        flip_probability = 0.5 if image_config.flip else 0.0
    max_side, stored_side = image_config.max_side, image_config.proposal_side
    train_sides = tuple(image_config.train_min_sides) or (image_config.min_side,)
    if at_proposal_side:
        train_sides = (stored_side,)
    if seed is None:
        seed = random.getrandbits(62)
    source = as_source(source)
    group = 0
    if shuffle and repeat and batch_size > 1 and aspect_group > 1:
        group = -(-aspect_group // batch_size) * batch_size  # whole batches of the stream
    first = start - start % group if group else start  # a block is reordered whole
    stream = example_stream(source, seed, start=first, shuffle=shuffle, repeat=repeat,
                            shuffle_buffer=shuffle_buffer, num_parallel_calls=num_parallel_calls)
    seed = tf.constant(seed, tf.int64)

    def prepare(element):
        example, position = element["example"], element["position"]
        image = _image(example)
        boxes, labels, difficult = _pixel_boxes(example, tf.shape(image)[:2], source.voc_pixel_numbers)
        keep = tf.logical_not(difficult) & _non_degenerate(boxes)
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)

        shape = tf.shape(image)
        side = train_sides[0]
        if len(train_sides) > 1:
            # One draw per batch (its images pad to about one size), from seeds apart from the
            # flip's and the sampling seed's (which use the positions, >= 0).
            draw = tf.random.stateless_uniform([], seed=tf.stack([seed, -1 - position // batch_size]),
                                               minval=0, maxval=len(train_sides), dtype=tf.int32)
            side = tf.gather(tf.constant(train_sides, tf.int32), draw)
        new_size, scale = scaled_size(shape[:2], side, max_side)  # the inference model's rule
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

        # Two independent stateless draws per stream position: the flip and the sampling seed.
        uniform = tf.random.stateless_uniform([], seed=tf.stack([seed, 2 * position]))
        sample_seed = tf.random.stateless_uniform([], seed=tf.stack([seed, 2 * position + 1]),
                                                  minval=None, maxval=None, dtype=tf.int64)
        flipped = uniform < flip_probability
        stored = example.get("proposals")
        if stored is None and proposals is not None:
            stored = proposals.read(element["index"], example)
        if stored is None:
            image, boxes = tf.cond(flipped, lambda: _flip(image, boxes, new_w), lambda: (image, boxes))
        else:
            stored = tf.reshape(tf.cast(stored, tf.float32), [-1, 4])
            if train_sides != (stored_side,):  # stored at proposal_side's scale
                stored = _clip(stored * (scale / scaled_size(shape[:2], stored_side, max_side)[1]), new_h, new_w)
            image, boxes, stored = tf.cond(
                flipped,
                lambda: (*_flip(image, boxes, new_w), _flip_boxes(stored, new_w)),
                lambda: (image, boxes, stored))
        batch = {
            "images": image,
            "image_info": tf.stack([new_h, new_w, scale]),
            "gt_boxes": boxes,
            "gt_classes": tf.cast(labels, tf.int32) + 1,
            "num_gt": tf.shape(labels)[0],
            "index": element["index"],
            "key": example_key(example),
            "position": position,
            "flipped": flipped,
            "sample_seed": sample_seed,
        }
        if stored is not None:
            batch.update(proposals=stored, num_proposals=tf.shape(stored)[0])
        if group:
            batch[_SIDE] = tf.cast(side, tf.int32)
        return batch

    dataset = stream.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    if group:
        dataset = _grouped_by_aspect(dataset, group).skip(start - first)
    dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    if pad_multiple:
        dataset = dataset.map(lambda batch: _pad_to_buckets(batch, pad_multiple),
                              num_parallel_calls=num_parallel_calls)
    elif image_multiple > 1:
        dataset = dataset.map(lambda batch: _pad_images(batch, image_multiple), num_parallel_calls=num_parallel_calls)
    return dataset.prefetch(PREFETCH_BATCHES).with_options(pipeline_options(shard_by_data=True))


def _grouped_by_aspect(dataset, block):
    """``dataset``'s prepared examples reordered within consecutive blocks of ``block`` (whole
    batches of the stream): by the side drawn for their batch (``_SIDE``; multi-scale training),
    then by height / width; ties keep the stream's order, and each batch keeps one drawn side.
    Each block is padded together, sorted, and every example cut back to its own size (its image
    to ``image_info``'s valid size, its boxes and proposals to their counts). Boxes and proposals
    get one zero row more while they are in a block: TF 2.21's ``unbatch`` crashes the process
    (SIGSEGV) on a component of zero length in every example of a batch (a block of images
    without objects)."""
    rows = ("gt_boxes", "gt_classes", "proposals")

    def one_more_row(example):
        return {key: tf.concat([value, tf.zeros(tf.concat([[1], tf.shape(value)[1:]], 0), value.dtype)], 0)
                if key in rows else value for key, value in example.items()}

    def sort(examples):
        info = examples["image_info"]
        order = tf.argsort(info[:, 0] / info[:, 1], stable=True)
        order = tf.gather(order, tf.argsort(tf.gather(examples.pop(_SIDE), order), stable=True))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), examples)

    def own_size(example):
        size = tf.cast(example["image_info"][:2], tf.int32)
        example = {**example, "images": example["images"][:size[0], :size[1]],
                   "gt_boxes": example["gt_boxes"][:example["num_gt"]],
                   "gt_classes": example["gt_classes"][:example["num_gt"]]}
        if "proposals" in example:
            example["proposals"] = example["proposals"][:example["num_proposals"]]
        return example

    return dataset.map(one_more_row).padded_batch(block).map(sort).unbatch().map(own_size)


def _pad_to(tensor, axis, multiple):
    size = tf.shape(tensor)[axis]
    padding = [[0, 0]] * len(tensor.shape)
    padding[axis] = [0, tf.maximum((size + multiple - 1) // multiple, 1) * multiple - size]
    return tf.pad(tensor, padding)


def _pad_images(batch, multiple):
    """A batch whose image sides are padded to a multiple of ``multiple`` pixels."""
    return {**batch, "images": _pad_to(_pad_to(batch["images"], 1, multiple), 2, multiple)}


def _pad_to_buckets(batch, multiple):
    """A batch padded to a few shapes (see ``train_dataset``'s ``pad_multiple``)."""
    batch = _pad_images(batch, multiple)
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
    - ``gt_boxes``: float32 ``[B, G, 4]`` yxyx continuous pixels of the original image (VOC pixel
      numbers converted; clipped; degenerate boxes removed); zero rows pad.
    - ``gt_classes``: int32 ``[B, G]`` = 0-based label + 1 (0 padding).
    - ``gt_difficult``: bool ``[B, G]`` VOC difficult / COCO crowd (neither a hit nor a miss).
    - ``gt_area``: float32 ``[B, G]`` the source's object area (COCO), -1 where it has none.
    - ``num_gt``: int32 ``[B]``; ``index``: int64 ``[B]`` position in ``source``.
    - ``image/filename``: string ``[B]``; ``image/id``: int64 ``[B]`` (COCO id, else -1).

    config: unused (accepted so both pipelines are called alike): evaluation feeds original images,
      and the inference model resizes them in its graph.
    """
    del config
    voc_pixel_numbers = isinstance(source, DetectionSource) and source.voc_pixel_numbers
    dataset = _dataset_of(source).enumerate()

    def prepare(index, example):
        image = _image(example)
        size = tf.shape(image)[:2]
        boxes, labels, difficult = _pixel_boxes(example, size, voc_pixel_numbers)
        keep = _non_degenerate(boxes)
        area = tf.reshape(tf.cast(example["objects"].get("area", -tf.ones_like(labels, tf.float32)),
                                  tf.float32), [-1])
        return {
            "images": image,
            "image_size": size,
            "gt_boxes": tf.boolean_mask(boxes, keep),
            "gt_classes": tf.cast(tf.boolean_mask(labels, keep), tf.int32) + 1,
            "gt_difficult": tf.boolean_mask(difficult, keep),
            "gt_area": tf.boolean_mask(area, keep),
            "num_gt": tf.reduce_sum(tf.cast(keep, tf.int32)),
            "index": index,
            "image/filename": example["image/filename"],
            "image/id": example["image/id"],
        }

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.padded_batch(batch_size, drop_remainder=False)
    return dataset.prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


# --- pieces -------------------------------------------------------------------------------------


def _dataset_of(source):
    return source.dataset if isinstance(source, DetectionSource) else source


def _image(example):
    image = example["image"]
    if image.dtype == tf.string:
        return decode_image(image)
    return image


def _pixel_boxes(example, image_size, voc_pixel_numbers=False):
    """Normalised boxes -> continuous pixels of the image (clipped): (boxes ``[N, 4]``, labels,
    difficult). VOC pixel numbers (``DetectionSource.voc_pixel_numbers``) start one pixel earlier:
    the first pixel inside, numbered ``xmin`` from 1, begins at ``xmin - 1``."""
    objects = example["objects"]
    h, w = tf.cast(image_size[0], tf.float32), tf.cast(image_size[1], tf.float32)
    boxes = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]) * tf.stack([h, w, h, w])
    if voc_pixel_numbers:
        boxes = boxes - tf.constant([1.0, 1.0, 0.0, 0.0])
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
