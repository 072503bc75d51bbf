"""The example layout every data source produces (the TFDS detection layout).

One example, as yielded by every source's ``tf.data.Dataset``::

    {
        "image": uint8 [H, W, 3]            (or the encoded file, a scalar string; see below)
        "image/filename": string []         file name, e.g. "000005.jpg"
        "image/id": int64 []                COCO image id; -1 where the source has none
        "objects": {
            "bbox": float32 [N, 4]          normalised [ymin, xmin, ymax, xmax] in [0, 1]
            "label": int64 [N]              0-based class, indexes DetectionSource.class_names
            "is_difficult": bool [N]        VOC "difficult" or COCO "iscrowd": never a positive
            "area": float32 [N]             the object's area in pixels of the original image as
                                            the source gives it (COCO's segmentation area, which
                                            picks COCO AP's small / medium / large bins), or -1
                                            where the source has none (VOC): the box's area then
        },
    }

``N`` may be 0 (an image without objects: a negative). Normalised coordinates are relative to the
image's own height and width, continuous (pixel ``i`` covers ``[i, i + 1)``), so multiplying by
``[H, W, H, W]`` gives absolute pixels in the internal ``yxyx`` format of :mod:`keras_frcnn.boxes`.

With ``decode_images=False`` a source leaves ``image`` as the encoded file (JPEG, PNG, ...): the
training pipeline then decodes after shuffling, so its shuffle buffer holds compressed bytes
instead of decoded images. :mod:`keras_frcnn.data.pipeline` accepts both.

Folder sources (a VOC folder, a COCO JSON file) also give random access: ``example_at(index)``
builds example ``index`` in the graph (reading its file), so the training stream can shuffle
indices, a true permutation per epoch with nothing buffered. TFDS sources are read in their stored
order (TFDS writes examples in a hashed, random order) and shuffled as encoded records.

``example_key(example)`` names an example (file name and id): stored proposals carry it, and a
proposal read for another example is an error naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import typing

import numpy as np
import tensorflow as tf

from keras_frcnn.data import image_files
from keras_frcnn.data.problems import DataError, logger, warn_once

# The 20 PASCAL VOC classes in TFDS's (alphabetical) order, so labels agree with tfds "voc".
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


@dataclasses.dataclass(frozen=True)
class DetectionSource:
    """A data set in the example layout, with what is needed to interpret its labels.

    dataset: ``tf.data.Dataset`` of examples in the layout above, in a fixed order (the training
      pipeline numbers examples in this order, so the order must not change between runs).
    class_names: ``class_names[label]`` names each 0-based label.
    num_examples: number of examples, when known.
    name: where the data comes from, e.g. ``"voc/2007 train+validation"``.
    problems: kind -> count of the bad-data warnings issued while listing (folder sources).
    example_at: random access, where the source has it: int64 scalar tensor ``index`` -> the
      example at that position of ``dataset``, as graph code (usable in ``tf.data`` maps).
    voc_pixel_numbers: the normalised boxes are VOC XML's 1-based pixel numbers over the image
      size (TFDS's ``voc`` builder writes them so, and the VOC folder loader alike): ``xmin`` is
      the number of the first pixel inside, ``xmax`` of the last. The pipelines convert them to
      continuous coordinates, ``[xmin - 1, xmax]`` in pixels (py-faster-rcnn's 0-based inclusive
      box ``(xmin - 1, ..., xmax - 1)``), so training matches the paper's code and evaluation's
      continuous IoU equals the VOC devkit's.
    num_objects: objects a detector is trained on (difficult and crowd ones not counted), when
      known (folder sources, TFRecord files).
    objects_per_class: those objects of each class (``objects_per_class[label]``), when known
      (folder sources).
    files: the real paths of the image files, when known (folder sources): two sources that share
      images can be told.
    fingerprint: the image file names and sizes in order (hashed), when known (folder sources): the
      same data however its folder was named (relative or absolute, from another directory), and
      other images of the same names (another set exported alike: ``im0.jpg`` ...) told apart; a
      TFDS set's full name with its version, and the split (``"TFDS voc/2007/5.0.0 test"``): a
      set rebuilt by another version of its builder (other boxes, other images) told apart. See
      ``identity``.
    shuffled_records: for a source without random access that can read its examples in another
      order than ``dataset``'s (TFRecord files, read in a seeded order of files): int64 seed ->
      ``tf.data.Dataset`` of ``(index, example)``, each example once, ``index`` its position in
      ``dataset``. The training stream then shuffles these (instead of ``dataset.enumerate()``).
    """

    dataset: tf.data.Dataset
    class_names: tuple
    num_examples: typing.Optional[int] = None
    name: str = ""
    problems: dict = dataclasses.field(default_factory=dict)
    example_at: typing.Optional[typing.Callable] = None
    voc_pixel_numbers: bool = False
    num_objects: typing.Optional[int] = None
    objects_per_class: typing.Optional[tuple] = None
    files: typing.Optional[frozenset] = None
    fingerprint: str = ""
    shuffled_records: typing.Optional[typing.Callable] = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", usable_class_names(self.class_names, self.name))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def identity(self) -> str:
        """What a checkpoint or stored proposals compare to tell the same data: the fingerprint of
        a folder source (its ``name`` holds the path as typed), else the name."""
        return self.fingerprint or self.name

    def recorded_as(self, identity, name) -> bool:
        """Whether data a checkpoint or stored proposals recorded as ``identity`` and ``name`` is
        this source's. A record from before identities (``identity`` None) compares names; one
        whose identity was its name (before TFDS sets had versions in theirs) matches by name, as
        it did."""
        if identity is None:
            return name == self.name
        return identity == self.identity or identity == name == self.name

    def identity_differs(self, identity, name) -> str:
        """What to add to a refusal of data recorded as ``identity``, ``name`` where the names are
        the same: another build of a TFDS set (both versions), or other image files or order."""
        if name != self.name or identity is None or identity == self.identity:
            return ""
        if identity.startswith("TFDS ") and self.identity.startswith("TFDS "):
            return f"; another build of the set: {identity[5:]!r} then, {self.identity[5:]!r} now"
        return "; other image files or order of the same name"


def class_name(name) -> str:
    """A class name as the sources, the model and its checkpoints hold it: text without the spaces
    around it (label files list one name a line, and their readers strip each line)."""
    return str(name).strip()


def usable_class_names(names, where: str = "") -> tuple:
    """``names`` as a model can hold them: each one line of text (label files list one class a line,
    and their readers strip each line), so spaces around a name are taken away, with a warning; an
    empty name, one of several lines or two names made one by that is a ``DataError`` naming them."""
    where = where or "the data"
    names = tuple(names)
    bad = [name for name in names if not isinstance(name, str) or not name.strip() or name.splitlines() != [name]]
    if bad:
        raise DataError(f"{where}: class names must be text of one line, not empty: {bad!r}; rename them in "
                        "the annotations")
    usable = tuple(class_name(name) for name in names)
    if usable != names:
        logger.warning("%s: class names %s taken without the spaces around them", where,
                       [name for name, kept in zip(names, usable) if name != kept])
    twice = sorted({name for name in usable if usable.count(name) > 1})
    if twice:
        raise DataError(f"{where}: the class names {twice} are each given more than once (spaces around a name "
                        "not counted); give the classes distinct names")
    return usable


def in_class_order(source: DetectionSource, class_names) -> DetectionSource:
    """``source`` with its labels numbered as ``class_names`` where its names are those or some
    of those, in any order (a COCO file's other category ids, another export's label map, a
    held-out file listing only the categories it uses): each object keeps its class, and the
    source's class list becomes ``class_names``. Names beyond ``class_names`` that no object
    trained on has, where the source counts them (a folder source: an export's label list of
    every class of its project, an annotation tool's unused label), are left out with a warning,
    with any difficult or crowd objects of theirs. Other names: ``source`` as it is (the caller
    says what differs: :func:`classes_differ`)."""
    names, wanted = list(source.class_names), list(class_names)
    if names == wanted or len(set(names)) != len(names):
        return source
    known = set(wanted)
    unused = [name for name in names if name not in known]
    counts = source.objects_per_class
    if unused and (counts is None or any(counts[names.index(name)] for name in unused)):
        return source
    if unused:
        warn_once("%s lists %d class(es) that none of its objects has and the %d classes wanted lack: %s; "
                  "left out", source.name, len(unused), len(wanted), some_names(unused))
    # old label -> new; -1: a left-out class (only difficult or crowd objects, if any, have it)
    table = tf.constant([wanted.index(name) if name in known else -1 for name in names], tf.int64)

    def relabel(example):
        objects = example["objects"]
        labels = tf.gather(table, tf.cast(objects["label"], tf.int64))
        if unused:
            kept = labels >= 0
            objects = {key: tf.boolean_mask(value, kept) for key, value in objects.items()}
            labels = tf.boolean_mask(labels, kept)
        return {**example, "objects": {**objects, "label": tf.cast(labels, objects["label"].dtype)}}

    def at(index):
        return relabel(source.example_at(index))

    def shuffled(seed):
        return source.shuffled_records(seed).map(lambda index, example: (index, relabel(example)))

    return dataclasses.replace(
        source, dataset=source.dataset.map(relabel), class_names=tuple(wanted),
        example_at=at if source.example_at is not None else None,
        shuffled_records=shuffled if source.shuffled_records is not None else None,
        objects_per_class=tuple(counts[names.index(name)] if name in names else 0 for name in wanted)
        if counts is not None else None)


def classes_differ(names, wanted) -> str:
    """What a data set's class ``names`` have that ``wanted`` (a model's, the training data's)
    has not, for a message (a source's names are distinct: ``DetectionSource`` checks)."""
    unknown = [name for name in names if name not in set(wanted)]
    return f"{len(unknown)} class(es) not among the {len(wanted)} known: {some_names(unknown)}"


def some_names(names, shown: int = 10) -> str:
    """The first ``shown`` of ``names`` and how many more, for a line of output."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


@dataclasses.dataclass
class ImageRecord:
    """One checked image of a folder source, ready for :func:`records_to_dataset`.

    boxes: float32 ``[N, 4]`` normalised ``yxyx``, clipped to ``[0, 1]``, none degenerate.
    """

    path: str
    filename: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: int = -1
    area: typing.Optional[np.ndarray] = None  # [N] pixels of the original image; None: unknown
    annotation: str = ""  # where its objects were read (a VOC XML file), for messages; "": the reader's file


def one_record_per_image(records: typing.Sequence[ImageRecord], problems, pixel_numbers: bool = False) -> list:
    """``records`` with those of one image file (two COCO image ids of one file after a merge of
    files, a VOC ``000001 - Copy.xml`` naming ``000001.jpg``, a YOLO list naming it twice) made one,
    at the first's place: its objects are all of theirs, an object repeated exactly kept once
    (warned, counted). Apart, each would teach the other's objects as background (and a split's
    image listed twice is read once, as VOC's split files are).

    A box the reader found of some width and height that has none once normalised in float32 (a
    width of 1e-9 pixels) is skipped, warned and counted as the readers' degenerate boxes are;
    ``pixel_numbers``: boxes of VOC's pixel numbers, where equal corners are one pixel (kept)."""
    places = {}
    for number, record in enumerate(records):
        places.setdefault(os.path.realpath(record.path), []).append(number)
    merged = {}
    for numbers in places.values():
        if len(numbers) == 1:
            continue
        parts = [records[n] for n in numbers]
        first = parts[0]
        rows, seen = [], set()
        for part in parts:
            areas = part.area if part.area is not None else np.full(len(part.labels), np.nan, np.float32)
            for box, label, difficult, area in zip(part.boxes, part.labels, part.difficult, areas):
                key = (tuple(np.asarray(box, np.float32).tolist()), int(label))
                if key not in seen:
                    seen.add(key)
                    rows.append((box, label, difficult, area))
        repeated = sum(len(part.labels) for part in parts) - len(rows)
        named = [part.annotation or (f"image id {part.image_id}" if part.image_id >= 0 else "") for part in parts]
        problems.warn("image listed twice", first.path,
                      f"listed {len(parts)} times" + (f" ({', '.join(named)})" if all(named) else ""),
                      f"read once, with every listing's objects: {len(rows)}"
                      + (f" ({repeated} repeated exactly, kept once)" if repeated else ""))
        merged[numbers[0]] = dataclasses.replace(
            first, boxes=np.asarray([row[0] for row in rows], np.float32).reshape(-1, 4),
            labels=np.asarray([row[1] for row in rows], np.int64),
            difficult=np.asarray([row[2] for row in rows], np.bool_),
            area=None if first.area is None else np.asarray([row[3] for row in rows], np.float32))
        merged.update({n: None for n in numbers[1:]})
    kept = []
    for number, record in enumerate(records):
        record = merged.get(number, record)
        if record is not None:  # (None: merged into the first of its image)
            kept.append(record if pixel_numbers else _without_flat_boxes(record, problems))
    return kept


def _without_flat_boxes(record: ImageRecord, problems) -> ImageRecord:
    boxes = np.asarray(record.boxes, np.float32).reshape(-1, 4)
    flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if not flat.any():
        return record
    for box in boxes[flat]:  # (counted one a box, as the readers count theirs)
        problems.warn("degenerate box", record.annotation or record.path, f"a box of {record.filename} too thin to "
                      f"keep a width and height in float32 (normalised yxyx {[round(v, 6) for v in box.tolist()]})",
                      "object skipped")
    keep = ~flat
    return dataclasses.replace(record, boxes=boxes[keep], labels=np.asarray(record.labels)[keep],
                               difficult=np.asarray(record.difficult)[keep],
                               area=None if record.area is None else np.asarray(record.area)[keep])


def decode_image(encoded):
    """Encoded JPEG / PNG / GIF / BMP / WebP bytes -> uint8 ``[H, W, 3]`` (any channel count in; an
    animation's first frame). TensorFlow's WebP decoder gives a WebP with transparency (and every
    animated one) as RGBA and cannot be asked for 3 channels: its alpha is dropped here instead."""
    length = tf.strings.length(encoded)  # (substr fails past a string's end: a few bytes sent to serving)
    webp = tf.logical_and(tf.equal(tf.strings.substr(encoded, 0, 4), b"RIFF"),
                          tf.equal(tf.strings.substr(encoded, tf.minimum(8, length), 4), b"WEBP"))
    image = tf.cond(webp,
                    lambda: tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)[..., :3],
                    lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8))
    image.set_shape([None, None, 3])
    return image


def records_to_dataset(records: typing.Sequence[ImageRecord], decode_images: bool = True):
    """Checked records -> (``tf.data.Dataset`` of examples in the layout, in the records' order;
    ``example_at``, the same examples by index).

    The objects of all images are held as flat constant arrays plus row offsets: each example
    slices its rows in the graph, which keeps the dataset a pure graph (parallel map, no Python
    generator) and small (boxes are a few bytes per object).
    """
    counts = np.array([len(r.labels) for r in records], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(records) else counts

    def flat(values, dtype, shape):
        values = [np.asarray(v, dtype).reshape(shape) for v in values]
        return tf.constant(np.concatenate(values) if values else np.zeros((0, *shape[1:]), dtype))

    all_boxes = flat([r.boxes for r in records], np.float32, (-1, 4))
    all_labels = flat([r.labels for r in records], np.int64, (-1,))
    all_difficult = flat([r.difficult for r in records], np.bool_, (-1,))
    all_area = flat([np.full(len(r.labels), -1.0) if r.area is None else r.area for r in records],
                    np.float32, (-1,))
    table = {
        # (as bytes: a file name that is not UTF-8, e.g. Latin-1 on Linux, is no str a tensor takes)
        "path": tf.constant([os.fsencode(r.path) for r in records], tf.string, shape=[len(records)]),
        "filename": tf.constant([os.fsencode(r.filename) for r in records], tf.string, shape=[len(records)]),
        "image_id": tf.constant([r.image_id for r in records], tf.int64, shape=[len(records)]),
        "start": tf.constant(starts, tf.int64, shape=[len(records)]),
        "count": tf.constant(counts, tf.int64, shape=[len(records)]),
    }

    def example_at(index):
        return to_example({key: tf.gather(column, index) for key, column in table.items()})

    def to_example(row):
        rows = tf.range(row["start"], row["start"] + row["count"])
        image = tf.io.read_file(row["path"])
        if decode_images:
            image = decode_image(image)
        return {
            "image": image,
            "image/filename": row["filename"],
            "image/id": row["image_id"],
            "objects": {
                "bbox": tf.gather(all_boxes, rows),
                "label": tf.gather(all_labels, rows),
                "is_difficult": tf.gather(all_difficult, rows),
                "area": tf.gather(all_area, rows),
            },
        }

    dataset = tf.data.Dataset.from_tensor_slices(table)
    return dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), example_at


def records_to_source(records: typing.Sequence[ImageRecord], class_names, name: str, problems: dict,
                      decode_images: bool = True, voc_pixel_numbers: bool = False) -> DetectionSource:
    """A folder source's checked records as a :class:`DetectionSource` with random access."""
    dataset, example_at = records_to_dataset(records, decode_images=decode_images)
    files = frozenset(os.path.realpath(record.path) for record in records)
    image_files.FILES_READ.update(files)
    trained_on = [record.labels[~record.difficult] for record in records]
    per_class = np.bincount(np.concatenate(trained_on or [np.zeros(0, np.int64)]).astype(np.int64),
                            minlength=len(class_names))
    return DetectionSource(dataset=dataset, class_names=tuple(class_names), num_examples=len(records),
                           name=name, problems=dict(problems), example_at=example_at,
                           voc_pixel_numbers=voc_pixel_numbers,
                           num_objects=int(per_class.sum()),
                           objects_per_class=tuple(int(count) for count in per_class),
                           files=files,
                           fingerprint=fingerprint(f"{os.path.basename(record.path)}:{os.path.getsize(record.path)}"
                                                   for record in records))


def fingerprint(parts) -> str:
    """A short hash of the strings ``parts``, in order."""
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def example_key(example):
    """A string scalar naming ``example``: ``"<image/filename>#<image/id>"``."""
    filename = example.get("image/filename", tf.constant("", tf.string))
    image_id = example.get("image/id", tf.constant(-1, tf.int64))
    return tf.strings.join([filename, "#", tf.strings.as_string(image_id)])


def from_tfds_example(example, boxes: tuple = ("objects", "bbox"), label: typing.Optional[tuple] = ("objects", "label"),
                      difficult: typing.Optional[tuple] = ("objects", "is_difficult")):
    """A TFDS detection example (voc, coco, shapes, kitti, wider_face, open_images_v4, stanford_dogs,
    caltech_birds2011 ...) -> the layout; extra features dropped. The features are paths of keys
    (``tfds_sources.DetectionLayout``):

    ``boxes``: the boxes, a sequence's (``("objects", "bbox")``; ``("faces", "bbox")`` in
    wider_face, ``("bobjects", "bbox")`` in open_images_v4) or the image's one box
    (``("head_bbox",)`` in oxford_iiit_pet). ``label``: each object's class (``("objects",
    "label")``; ``("objects", "type")`` in kitti), the image's class for all its boxes
    (``("label",)``), or None (one class). ``difficult``: the object feature that marks objects
    never trained as positives where it is 1 (``("objects", "is_difficult")`` for VOC,
    ``is_crowd`` for COCO, ``is_group_of`` for Open Images, ``invalid`` for WIDER FACE), or None.
    """
    def feature(path):
        value = example
        for key in path:
            value = value[key]
        return value

    objects = example[boxes[0]] if len(boxes) > 1 else {}
    box_rows = tf.reshape(tf.cast(feature(boxes), tf.float32), [-1, 4])
    count = tf.shape(box_rows)[:1]
    if label is None:
        labels = tf.zeros(count, tf.int64)
    elif len(label) == 1:  # the image's class, for each of its boxes
        labels = tf.fill(count, tf.cast(feature(label), tf.int64))
    else:
        labels = tf.cast(feature(label), tf.int64)
    if difficult is None:
        is_difficult = tf.zeros_like(labels, tf.bool)
    else:  # (Open Images' -1: unknown, not a group)
        is_difficult = tf.equal(tf.cast(feature(difficult), tf.int64), 1)
    image = example["image"]
    if image.dtype != tf.string:
        image = tf.cast(image, tf.uint8)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
    if "area" in objects:  # COCO's segmentation area, in pixels of the original image
        area = tf.cast(objects["area"], tf.float32)
    else:
        area = -tf.ones_like(labels, tf.float32)
    filename = next((example[key] for key in ("image/filename", "image/file_name", "file_name") if key in example),
                    tf.constant("", tf.string))
    return {
        "image": image,
        "image/filename": filename,
        "image/id": tf.cast(example.get("image/id", tf.constant(-1, tf.int64)), tf.int64),
        "objects": {
            "bbox": box_rows,
            "label": labels,
            "is_difficult": is_difficult,
            "area": area,
        },
    }
