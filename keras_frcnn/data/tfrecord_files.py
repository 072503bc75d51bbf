"""TFRecord files of ``tf.train.Example`` records in the TF Object Detection API's layout (``--tfrecord``),
as the TF OD API's ``create_*_tf_record.py`` scripts, TF Model Garden and Roboflow's "TFRecord"
export write them.

What ``--tfrecord PATH`` names (:func:`read_tfrecord_data`):

- a TF OD API ``pipeline.config``: ``train_input_reader``'s ``input_path`` (files or glob patterns)
  is the ``train`` split, the first ``eval_input_reader``'s the ``val`` split, and ``label_map_path``
  gives the classes;
- a folder of split folders as Roboflow exports them: ``train/``, ``valid/`` (or ``val/``,
  ``validation/``), ``test/``, each holding its record files and a ``*_label_map.pbtxt``;
- a folder of record files (``*.tfrecord``, ``*.record``, ``*.tfrecords``, ``*.tfrec``, and shards
  such as ``train.record-00003-of-00010`` or ``train-00003-of-00010``): split by the words of their names
  (``pascal_train.record`` -> ``train``, ``pascal_val.record`` -> ``val``, ``test``), or one split
  ``all`` where a name says none;
- a record file, or a glob pattern of files: one split, ``all``.

Paths may be local or on any file system ``tf.io.gfile`` reads (``gs://``, where the TF OD API's
guides keep records, ``s3://``, ...).

Splits take parts as TFDS's do (``all[:90%]``). A set trains on ``train`` and evaluates on ``val``,
else ``test``, else on ``train[90%:]`` after training on ``train[:90%]`` (``all`` alike).

Classes: the label map, ``item { id: 1 name: "cat" display_name: "Cat" }`` (``--label-map``, else the
pipeline config's, else the ``.pbtxt`` beside the records), ordered by id (ids may have gaps, as
COCO's 1..90), named by ``display_name`` where it has one. As the TF OD API's decoder does, an
object's class is its ``image/object/class/text`` looked up by ``name`` (or ``display_name``) and,
without a text, its ``image/object/class/label`` id. Without a label map the records' own ids and
texts make the classes: ``id -> text`` ordered by id where every object has an id (``class_<id>``
without texts), else the texts sorted.

Keys read (the TF OD API's ``tf_example_decoder``): ``image/encoded`` (JPEG, PNG, ...),
``image/filename`` (else ``image/source_id``), ``image/source_id`` (COCO's image id where it is a
number), ``image/object/bbox/{ymin,xmin,ymax,xmax}`` normalised to the image, continuous,
``image/object/class/{text,label}``, ``image/object/difficult`` (VOC) or ``image/object/is_crowd``
(COCO) as never-positive objects, ``image/object/area`` (COCO's area). Other keys are ignored.

Checks (every record read once when the data is loaded, in Python, and remembered per file in the
image-check cache, keyed by the file's path, size and modification time): a record that is not a
``tf.train.Example`` in this layout, whose image TensorFlow cannot decode, whose lists disagree in
length, whose coordinates are not normalised (pixels: beyond [0, 1] by more than 1 %) or not
ordered, or whose class is not in the label map is skipped, named by file, record number and image
file name, and counted; boxes reaching out are clipped, degenerate ones dropped (counted). A file
that is corrupt or cut short from some record on (a copy that did not finish) gives the records
before it. GZIP- and ZLIB-compressed files are read as such.

Order: the check notes each record's size, so each record's byte offset in its file is known;
the training stream reads records at their offsets (``TFRecordDatasetV2``'s ``byte_offsets``), a
source with random access as folder sources are: each pass a uniform permutation of every usable
record, nothing buffered, however the files were written (one file sorted by class included).
Compressed files cannot be read from the middle: each pass reads them in a seeded order of its own, up
to ``INTERLEAVE_FILES`` in turns, one record each (as the TF OD API reads files), through the
training stream's shuffle buffer of encoded records (``pipeline.SHUFFLE_BUFFER``); records written
in shards or shuffled mix well, and a set whose records are grouped by class is reported when
loaded (:func:`_report_order`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import io
import json
import os
import re
import typing

import numpy as np
import tensorflow as tf

from keras_frcnn.data.examples import DetectionSource, decode_image, fingerprint
from keras_frcnn.data.image_files import (LONG_CHECK, annotated_as_shown, cache_path, check_image, connect_cache,
                                          decoding_errors, file_key, stored_path, trim_cache)
from keras_frcnn.data.problems import DataError, DataProblems, logger, warn_once
from keras_frcnn.data.splits import beside_held_out, named_splits, own_splits
from keras_frcnn.data.voc_folder import sliced, split_parts

# A record file's name: TFRecord suffixes, sharded ("-00003-of-00010") or not, or a shard's number alone
# (the TF OD API's COCO script given an output path without a suffix writes "train-00003-of-00100").
RECORD_NAME = re.compile(r"(\.(tfrecords?|records?|tfrec)(-\d+-of-\d+)?|-\d{5}-of-\d{5})$", re.IGNORECASE)
# Words of a file or folder name -> the split they name.
SPLIT_WORDS = {"train": "train", "trainval": "trainval", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "eval": "val", "test": "test", "testing": "test"}
ALL = "all"
# Files read in turns in a training pass (the TF OD API's ``num_readers`` default is 64).
INTERLEAVE_FILES = 64
# Coordinates beyond [0, 1] by more than this are not normalised (pixels, or wrong).
TOLERANCE = 0.01

_FLOAT, _INT, _BYTES = "float_list", "int64_list", "bytes_list"
_KINDS = {
    "image/encoded": _BYTES, "image/filename": _BYTES, "image/source_id": _BYTES,
    "image/object/bbox/ymin": _FLOAT, "image/object/bbox/xmin": _FLOAT,
    "image/object/bbox/ymax": _FLOAT, "image/object/bbox/xmax": _FLOAT,
    "image/object/class/text": _BYTES, "image/object/class/label": _INT,
    "image/object/difficult": _INT, "image/object/is_crowd": _INT, "image/object/area": _FLOAT,
}
_BOX_KEYS = ("image/object/bbox/ymin", "image/object/bbox/xmin", "image/object/bbox/ymax",
             "image/object/bbox/xmax")
_PER_OBJECT = ("image/object/difficult", "image/object/is_crowd", "image/object/area")
_ONE_VALUE = ("image/encoded", "image/filename", "image/source_id")


def _a(word) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


class TFRecordData(typing.NamedTuple):
    """What ``--tfrecord`` names: its record files by split, and its label map (or None)."""

    path: str
    splits: dict  # split name -> tuple of record files
    label_map: typing.Optional[str]


class LabelMap(typing.NamedTuple):
    """A label map: ``names[i]`` the class of label ``i``; ``ids[i]`` its id; ``by_text`` name (or
    display name) -> label."""

    names: tuple
    ids: tuple
    by_text: dict


# --- what --tfrecord names -----------------------------------------------------------------------


def read_tfrecord_data(path, label_map=None) -> TFRecordData:
    """The record files and label map of ``path`` (see the module docstring); ``label_map``: a
    ``.pbtxt`` file that overrides the one found."""
    path = os.fspath(path)
    if _isfile(path) and not RECORD_NAME.search(path) and _is_pipeline_config(path):
        splits, found_map = _read_pipeline_config(path)
    elif tf.io.gfile.isdir(path):
        splits = beside_held_out(_split_folders(path), lambda: tuple(_record_files(path))) or _named_splits(path)
        found_map = None
    else:
        files = _matching(path)
        if not files:
            raise DataError(f"--tfrecord {path}: no such file, folder or files matching it")
        splits, found_map = {ALL: files}, None
        by_name = named_splits(files, _split_of)
        if len(by_name) > 1:  # a glob of several splits' files (*_train.record and *_val.record): theirs
            splits = by_name
    for name, files in splits.items():
        if not files:
            raise DataError(f"{path}: split {name!r} names no record file")
        _warn_of_missing_shards(path, name, files)
    label_map = label_map or found_map or _label_map_beside(splits)
    return TFRecordData(path, splits, os.fspath(label_map) if label_map else None)


_SHARD = re.compile(r"^(?P<stem>.*)-(?P<number>\d+)-of-(?P<count>\d+)$")


def _warn_of_missing_shards(path, split, files):
    """A warning where ``split``'s files are shards (``train.record-00003-of-00010``) and some of
    their set are not there (a copy or download that did not finish): the split is read without
    them."""
    shards = {}
    for file in files:
        match = _SHARD.match(file)
        if match:
            shards.setdefault((match["stem"], int(match["count"])), set()).add(int(match["number"]))
    for (stem, count), numbers in sorted(shards.items()):
        missing = sorted(set(range(count)) - numbers)
        if missing:
            warn_once("%s: split %r has %d of the %d shards of %s (missing: number %s%s): read without them",
                      path, split, count - len(missing), count, stem, ", ".join(map(str, missing[:5])),
                      " ..." if len(missing) > 5 else "")


# Paths go through tf.io.gfile, as TensorFlow's readers do: local ones, and gs:// (where the TF OD API's
# guides keep their records), s3://, hdfs:// ... alike.


def _isfile(path) -> bool:
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _names(folder) -> list:
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(folder))


def _read_text(path) -> str:
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read().lstrip("\ufeff")  # Windows tools start files with a byte-order mark


def _real(path) -> str:
    """A path's real form (links resolved) where it is local; others as given."""
    return path if "://" in path else os.path.realpath(path)


def _matching(pattern) -> tuple:
    if _isfile(pattern):
        return (pattern,)
    try:
        return tuple(sorted(name for name in tf.io.gfile.glob(pattern) if _isfile(name)))
    except tf.errors.OpError:  # a folder in the pattern that is not there
        return ()


def _record_files(folder) -> list:
    return [os.path.join(folder, name) for name in _names(folder)
            if RECORD_NAME.search(name) and not name.startswith(".") and _isfile(os.path.join(folder, name))]


def _split_of(name) -> typing.Optional[str]:
    """The split the words of a file or folder name say (``pascal_train.record`` -> ``train``)."""
    words = re.split(r"[^a-z0-9]+", RECORD_NAME.sub("", name.lower()))
    found = {SPLIT_WORDS[word] for word in words if word in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _split_folders(folder) -> dict:
    """Roboflow's layout: split folders (``train``, ``valid``, ``test``) of record files."""
    splits = {}
    for name in _names(folder):
        split = SPLIT_WORDS.get(name.lower())
        sub = os.path.join(folder, name)
        if split and tf.io.gfile.isdir(sub) and _record_files(sub):
            splits.setdefault(split, []).extend(_record_files(sub))
    return {name: tuple(files) for name, files in splits.items()}


def _named_splits(folder) -> dict:
    files = _record_files(folder)
    if not files:
        raise DataError(f"--tfrecord {folder}: no record files (*.tfrecord, *.record, *.tfrecords, *.tfrec, or "
                        "shards such as *.record-00000-of-00010) in it or in train/, valid/, test/ folders")
    return named_splits(files, _split_of)


def _is_pipeline_config(path) -> bool:
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return b"input_reader" in f.read(1 << 20)
    except tf.errors.OpError:
        return False


def _folders_above(folder) -> list:
    """The folders above a local ``folder``, nearest first."""
    above = []
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        above.append(folder)
    return above


def _read_pipeline_config(path):
    """A TF OD API ``pipeline.config`` -> (splits, label map path)."""
    from google.protobuf import text_format

    try:
        config = text_format.Parse(_read_text(path), _messages()["Pipeline"](), allow_unknown_field=True)
    except (tf.errors.OpError, UnicodeDecodeError, text_format.ParseError) as error:
        raise DataError(f"{path}: not a TF Object Detection API pipeline config ({error})") from None
    folder = os.path.dirname(path if "://" in path else os.path.abspath(path))

    def located(name):
        """As written (the TF OD API runs from its workspace), else beside the config or under a folder
        above it (the workspace of its guide's layout, ``models/<name>/pipeline.config`` naming
        ``annotations/train.record``: a run evaluated or resumed from another folder finds them)."""
        if "://" in name or os.path.isabs(name) or _matching(name):
            return name
        above = [folder] if "://" in folder else [folder, *_folders_above(folder)]
        return next((os.path.join(base, name) for base in above if _matching(os.path.join(base, name))),
                    os.path.join(folder, name))

    def files(reader, what):
        paths = list(reader.tf_record_input_reader.input_path)
        if not paths:
            raise DataError(f"{path}: {what} has no tf_record_input_reader {{ input_path: ... }}")
        found = []
        for pattern in paths:
            matched = _matching(located(pattern))
            if not matched:
                raise DataError(f"{path}: {what}: input_path {pattern!r} matches no file")
            found.extend(matched)
        return tuple(found)

    if not config.HasField("train_input_reader"):
        raise DataError(f"{path}: no train_input_reader")
    splits = {"train": files(config.train_input_reader, "train_input_reader")}
    if config.eval_input_reader:
        splits["val"] = files(config.eval_input_reader[0], "eval_input_reader")
    label_map = config.train_input_reader.label_map_path
    return splits, (located(label_map) if label_map else None)


def _label_map_beside(splits) -> typing.Optional[str]:
    """The ``.pbtxt`` beside the first record file (in its folder, else the folder above): the
    one there, or the one named ``*label_map*``."""
    first = next(iter(splits.values()))[0]
    folder = os.path.dirname(first if "://" in first else os.path.abspath(first))
    for where in (folder, os.path.dirname(folder)):
        found = [os.path.join(where, name) for name in _names(where) if name.endswith(".pbtxt")]
        named = [name for name in found if "label_map" in os.path.basename(name).lower()]
        if len(found) == 1 or len(named) == 1:
            return found[0] if len(found) == 1 else named[0]
        if found:
            raise DataError(f"{where}: several label maps ({', '.join(map(os.path.basename, found))}): "
                            "name one with --label-map")
    return None


def _messages() -> dict:
    """The TF OD API's label map and pipeline config messages, the fields read here only (others
    are skipped when parsing): built from descriptors, as the TF OD API is not a dependency."""
    if not hasattr(_messages, "classes"):
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(name="keras_frcnn_od_api.proto", package="keras_frcnn_od_api")
        layout = {
            "Item": [("name", field.TYPE_STRING, False), ("id", field.TYPE_INT32, False),
                     ("display_name", field.TYPE_STRING, False)],
            "LabelMap": [("item", "Item", True)],
            "TFRecordInputReader": [("input_path", field.TYPE_STRING, True)],
            "InputReader": [("label_map_path", field.TYPE_STRING, False),
                            ("tf_record_input_reader", "TFRecordInputReader", False)],
            "Pipeline": [("train_input_reader", "InputReader", False), ("eval_input_reader", "InputReader", True)],
        }
        for name, fields in layout.items():
            message = file.message_type.add(name=name)
            for number, (field_name, kind, repeated) in enumerate(fields, 1):
                entry = message.field.add(name=field_name, number=number,
                                          label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
                if isinstance(kind, str):
                    entry.type, entry.type_name = field.TYPE_MESSAGE, f".keras_frcnn_od_api.{kind}"
                else:
                    entry.type = kind
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        _messages.classes = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(
            f"keras_frcnn_od_api.{name}")) for name in layout}
    return _messages.classes


def read_label_map(path) -> LabelMap:
    """A TF OD API label map (``.pbtxt``) -> :class:`LabelMap`, ordered by id (an item ``id: 0
    name: "background"`` is not a class)."""
    from google.protobuf import text_format

    try:
        items = text_format.Parse(_read_text(path), _messages()["LabelMap"](), allow_unknown_field=True).item
    except (tf.errors.OpError, UnicodeDecodeError, text_format.ParseError) as error:
        raise DataError(f"{path}: not a label map ({error})") from None
    for item in items:  # as the TF OD API's label_map_util: ids from 1, 0 only for the background
        if item.id < 0 or item.id == 0 and item.name != "background":
            raise DataError(f"{path}: item {item.name or item.display_name!r} has id {item.id}: label map ids "
                            "start at 1 (0 is the background)")
    items = sorted((item for item in items if item.id), key=lambda item: item.id)
    ids = [item.id for item in items]
    if not items:
        raise DataError(f"{path}: no item {{ id: ... name: ... }}")
    if len(set(ids)) < len(ids):
        raise DataError(f"{path}: id {next(i for i in ids if ids.count(i) > 1)} is given twice")
    names = tuple(item.display_name or item.name or f"class_{item.id}" for item in items)
    if len(set(names)) < len(names):
        raise DataError(f"{path}: class name {next(n for n in names if names.count(n) > 1)!r} is given twice")
    by_text = {}
    for label, item in enumerate(items):  # names first: the TF OD API looks texts up by name
        for text in (item.display_name, item.name):
            if text:
                by_text.setdefault(text, label)
    for label, item in enumerate(items):
        if item.name:
            by_text[item.name] = label
    return LabelMap(names, tuple(ids), by_text)


def default_splits(path, label_map=None) -> tuple:
    """The (training, evaluation) splits of ``--tfrecord path`` (:func:`~keras_frcnn.data.splits.own_splits`):
    ``train`` -> ``val``, else ``test``; ``trainval`` -> ``test``; else ``train[:90%]`` ->
    ``train[90%:]`` (a single split ``all`` alike)."""
    splits = read_tfrecord_data(path, label_map).splits

    def count(split):  # (64 MB of records: ten and more, not read twice)
        if sum(tf.io.gfile.stat(file).length for file in splits[split]) >= 2 ** 26:
            return 10
        return sum(len(file_facts(file).records) for file in splits[split])

    return own_splits(splits, count)


# --- reading the records once --------------------------------------------------------------------


class FileFacts(typing.NamedTuple):
    """What one record file holds, found by reading it once.

    records: one entry per record read: ``[problem, ids, texts, notes, name, never, size]``: ``problem``
      what makes it unusable whatever the label map ("" if nothing), each object's class id and text
      (as stored; ``None`` for a list the record has not), ``notes`` the kinds of its lesser problems
      (a box clipped, a degenerate box), ``name`` its image file name, ``never`` how many of its
      objects are difficult or crowd ones, ``size`` its length in bytes (the next record of an
      uncompressed file starts ``size + 16`` bytes after it: a length, two checksums).
    stop: why reading stopped before the end of the file ("" if it did not).
    """

    compression: str
    records: list
    stop: str


def _compression(path) -> str:
    """The file's compression: "GZIP" (its magic bytes), "ZLIB" (it has none: a file whose first
    record reads so and not uncompressed) or "" (none)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return "GZIP"

    def readable(compression):
        try:
            next(iter(tf.data.TFRecordDataset(path, compression_type=compression).take(1)), None)
            return True
        except tf.errors.OpError:
            return False

    return "ZLIB" if not readable("") and readable("ZLIB") else ""


def file_facts(path, cache=True) -> FileFacts:
    """:class:`FileFacts` of a record file (cached, as image checks are)."""
    key = file_key(path)
    if cache and key:
        known = _FactsCache.read(key)
        if known is not None:
            return known
    compression = _compression(path)
    records, stop = [], ""
    reader = iter(tf.data.TFRecordDataset(path, compression_type=compression).batch(64))
    workers = min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        while True:
            try:
                batch = next(reader).numpy()
            except StopIteration:
                break
            except tf.errors.OpError as error:  # DataLossError: a corrupt or truncated record
                message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]?|\s*name:\s*$", "", error.message)  # TensorFlow's node names
                stop = f"{type(error).__name__}: {' '.join(message.split())[:200]}"
                break
            records.extend(pool.map(record_facts, batch))
    if stop:  # the records of the last full batch may be followed by readable ones: read them singly
        for serialized in _readable_records(path, compression, len(records)):
            records.append(record_facts(serialized))
    facts = FileFacts(compression, records, stop)
    if cache and key:
        _FactsCache.write(key, facts)
    return facts


def _readable_records(path, compression, start):
    """The records of a file from ``start`` on, up to the first that cannot be read."""
    reader = iter(tf.data.TFRecordDataset(path, compression_type=compression).skip(start))
    while True:
        try:
            yield next(reader).numpy()
        except (StopIteration, tf.errors.OpError):
            return


def record_facts(serialized: bytes) -> list:
    """One record's ``[problem, ids, texts, notes, name, never, size]`` (see :class:`FileFacts`)."""
    return _facts_of(serialized) + [len(serialized)]


def _facts_of(serialized: bytes) -> list:
    try:
        feature = tf.train.Example.FromString(serialized).features.feature
    except Exception:  # protobuf's DecodeError, and others
        return ["not a tf.train.Example record", None, None, [], "", 0]

    def values(key):
        if key not in feature:
            return None
        kind = feature[key].WhichOneof("kind")
        if kind not in (None, _KINDS[key]):
            raise ValueError(f"{key} is {_a(kind)} feature, not {_a(_KINDS[key])} one")
        found = list(getattr(feature[key], kind).value) if kind else []
        if key in _ONE_VALUE and len(found) > 1:
            raise ValueError(f"{key} holds {len(found)} values, not one")
        return found

    name = ""
    try:
        for key in _ONE_VALUE:  # the graph parses these as one value each
            values(key)
        names = values("image/filename") or values("image/source_id") or [b""]
        name = names[0].decode("utf-8", "replace")
        encoded = values("image/encoded")
        if not encoded:
            keys = ", ".join(sorted(feature)[:8])
            return [f"no image/encoded: not the TF Object Detection API's layout (its keys: {keys}"
                    + ("; a TFDS set's record: read it with --dataset NAME --data-dir DIR)" if "objects/bbox" in feature
                       else ")"), None, None, [], name, 0]
        boxes = [values(key) or [] for key in _BOX_KEYS]
        ids, texts = values("image/object/class/label"), values("image/object/class/text")
        count = len(boxes[0])
        problem = _layout_problem(boxes, ids, texts, count, values)
        if problem:
            return [problem, None, None, [], name, 0]
        try:
            checked = check_image(io.BytesIO(encoded[0]))
        except ValueError as error:
            return [f"bad image: {error}", None, None, [], name, 0]
        notes = _box_notes(np.array(boxes, np.float64).T.reshape(-1, 4))
        if checked.orientation != 1:  # read as the TF OD API reads it: on the stored pixels
            stated = tuple(feature[key].int64_list.value[0] if key in feature and feature[key].int64_list.value
                           else None for key in ("image/height", "image/width"))
            notes.append("EXIF orientation as shown" if annotated_as_shown(checked, stated) else "EXIF orientation")
        try:  # the graph looks classes up by these bytes: text it cannot name is no class
            texts = [text.decode("utf-8") for text in texts] if texts else texts
        except UnicodeDecodeError:
            return ["a class text that is not UTF-8", None, None, [], name, 0]
        never = np.maximum(np.array(values("image/object/difficult") or [0] * count),
                           np.array(values("image/object/is_crowd") or [0] * count))
        return ["", ids if ids else None, texts if texts else None, notes, name, int(np.count_nonzero(never))]
    except ValueError as error:
        return [str(error), None, None, [], name, 0]


def _layout_problem(boxes, ids, texts, count, values) -> str:
    lengths = [len(b) for b in boxes]
    if len(set(lengths)) > 1:
        return "the box lists differ in length (" + ", ".join(
            f"{key.rsplit('/', 1)[1]} {n}" for key, n in zip(_BOX_KEYS, lengths)) + ")"
    if count and not (ids and len(ids) == count or texts and len(texts) == count):
        return (f"{count} boxes but {len(ids or [])} image/object/class/label ids and {len(texts or [])} "
                "image/object/class/text names")
    for key, given in (("image/object/class/label", ids), ("image/object/class/text", texts)):
        if given and len(given) != count:
            return f"{count} boxes but {len(given)} {key} values"
    for key in _PER_OBJECT:
        given = values(key)
        if given and len(given) != count:
            return f"{count} boxes but {len(given)} {key} values"
    if not count:
        return ""
    ymin, xmin, ymax, xmax = (np.array(b, np.float64) for b in boxes)
    every = np.concatenate([ymin, xmin, ymax, xmax])
    if not np.all(np.isfinite(every)):
        return "a box coordinate is not a number"
    if every.min() < -TOLERANCE or every.max() > 1 + TOLERANCE:
        worst = every[np.argmax(np.abs(every - 0.5))]
        return (f"box coordinates are not normalised to the image (e.g. {worst:g}, outside [0, 1]): "
                "the TF OD API's boxes are fractions of the image's height and width")
    if np.any(ymin > ymax) or np.any(xmin > xmax):
        return "a box with ymin > ymax or xmin > xmax"
    return ""


def _box_notes(boxes) -> list:
    notes = []
    if len(boxes) and (boxes.min() < -1e-3 or boxes.max() > 1 + 1e-3):
        notes.append("box clipped")
    clipped = np.clip(boxes, 0.0, 1.0)
    if np.any((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])):
        notes.append("degenerate box")
    return notes


# The record files of the TFRecord sources made in this process (:func:`load_tfrecord`; a command
# clears it as it starts): searched for a record whose image TensorFlow's decoder refused inside a
# tf.data graph, whose error names none (``image_files.FILES_READ`` for image files).
FILES_READ = set()


def refused_records(files) -> tuple:
    """The records of ``files`` whose image the pipelines' decoder refuses though the check
    (:func:`check_image`) passed it: ``(f"{file}: record N (image name)", TensorFlow's message)``
    each; and whether each is now remembered in its file's facts in the cache as a bad record,
    which the next run skips with a counted warning (``image_files.refused_by_tensorflow`` for
    image files)."""
    refused, remembered = [], True
    for file in sorted(files):
        key = file_key(file)
        facts = (_FactsCache.read(key) if key else None) or file_facts(file, cache=False)
        records = [list(record) for record in facts.records]

        def images():  # (the records after an unreadable one are not read)
            reader = tf.data.TFRecordDataset(file, compression_type=facts.compression).take(len(records))
            for number, serialized in enumerate(reader.as_numpy_iterator()):
                if not records[number][0]:  # (the records skipped already: not read)
                    feature = tf.train.Example.FromString(serialized).features.feature
                    yield number, feature["image/encoded"].bytes_list.value[0]

        found = decoding_errors(images())
        for number, told in found:
            name = records[number][4]
            records[number][0] = f"bad image: TensorFlow does not decode it ({told})"
            refused.append((f"{file}: record {number}" + (f" ({name})" if name else ""), told))
        if found and key:
            _FactsCache.write(key, FileFacts(facts.compression, records, facts.stop))
            again = _FactsCache.read(key)
            remembered = remembered and again is not None and all(again.records[number][0] for number, _ in found)
        elif found:
            remembered = False
    return refused, remembered and bool(refused)


class _FactsCache:
    """SQLite rows of a record file's key -> its :class:`FileFacts` (JSON), beside the image
    checks (:func:`image_files.cache_path`)."""

    RULES = 7  # bump when record_facts's rules change

    @classmethod
    def _connect(cls):
        return connect_cache("tfrecord_files", "facts TEXT", cls.RULES)

    @classmethod
    def read(cls, key) -> typing.Optional[FileFacts]:
        import sqlite3

        try:
            connection, rules = cls._connect()
            with contextlib.closing(connection):
                row = connection.execute("SELECT facts FROM tfrecord_files WHERE path = ? AND size = ? AND "
                                         "mtime = ? AND rules = ?", [stored_path(key[0]), *key[1:], rules]).fetchone()
        except (sqlite3.Error, OSError):
            return None
        return FileFacts(*json.loads(row[0])) if row else None

    @classmethod
    def write(cls, key, facts: FileFacts):
        import sqlite3

        try:
            connection, rules = cls._connect()
            with contextlib.closing(connection), connection:
                connection.execute("INSERT OR REPLACE INTO tfrecord_files VALUES (?, ?, ?, ?, ?)",
                                   [stored_path(key[0]), *key[1:], rules, json.dumps(list(facts))])
                trim_cache(connection, "tfrecord_files")
        except (sqlite3.Error, OSError):
            pass


# --- classes ---------------------------------------------------------------------------------------


def class_map(data: TFRecordData, facts: dict) -> LabelMap:
    """The label map of the data, or the classes its records hold (every split's files, so that
    training and evaluation agree)."""
    if data.label_map:
        return read_label_map(data.label_map)
    named, texts, every_id, usable = {}, set(), True, False
    for file in sorted(facts):
        for problem, ids, names, *_ in facts[file].records:
            if problem:
                continue
            usable = True
            texts.update(names or ())
            every_id &= ids is not None or not names
            for i, text in zip(ids or (), names or [None] * len(ids or ())):
                if text is not None and named.setdefault(i, text) != text:
                    raise DataError(f"{file}: class id {i} is {named[i]!r} in one record and {text!r} in another: "
                                    "give a label map (--label-map)")
                named.setdefault(i, None)
    if every_id and named:
        ids = sorted(named)
        names = tuple(named[i] or f"class_{i}" for i in ids)
        if len(set(names)) == len(names):
            return LabelMap(names, tuple(ids), {name: label for label, name in enumerate(names)})
    if not usable:  # no record to take classes from: the listing says why, record by record
        return LabelMap((), (), {})
    if not texts:
        raise DataError(f"{data.path}: no object has a class (image/object/class/text or /label)")
    names = tuple(sorted(texts))
    return LabelMap(names, (), {name: label for label, name in enumerate(names)})


def _class_problem(ids, texts, by_text: dict, by_id: dict) -> str:
    """Why a record's objects have no class as the graph finds them (its text where it has one, as
    the TF Object Detection API's decoder reads it, else its id), or "". A text not in the label
    map is no class, whatever its id says (its id is then another class's)."""
    for k in range(len(ids or texts or ())):
        text = texts[k] if texts and texts[k] else None
        if not (text in by_text if text is not None else ids is not None and ids[k] in by_id):
            return f"{f'class {text!r}' if text is not None else f'class id {ids[k]}'} is not in the label map"
    return ""


# The lesser problems of a record (``FileFacts`` notes): what is said, and what is done.
NOTES = {"box clipped": ("a box reaching outside the image", "clipped"),
         "degenerate box": ("a box of no width or height", "box dropped"),
         # A phone photo: viewers show it turned. The boxes are read on its stored pixels, as the TF Object
         # Detection API's own input pipeline decodes it (the other sources turn boxes drawn on it as shown).
         "EXIF orientation as shown": ("an EXIF-turned photo whose image/height and image/width are its size as "
                                       "shown: its boxes were likely drawn on it turned",
                                       "boxes read on the stored pixels, as the TF Object Detection API reads "
                                       "them; write the record from the image turned (Pillow's exif_transpose)"),
         "EXIF orientation": ("an image with an EXIF orientation (viewers show it turned or mirrored)",
                              "boxes read on the stored pixels, as the TF Object Detection API reads them")}


# --- the source ---------------------------------------------------------------------------------


def load_tfrecord(
    path,
    split: str = "train",
    label_map=None,
    decode_images: bool = True,
    strict: bool = False,
) -> DetectionSource:
    """The records of ``split`` (``"train"``, ``"val"``, ``"all"``, ``"train[:90%]"``, ``"train+val"``)
    of ``--tfrecord path`` (see :func:`read_tfrecord_data`) as a :class:`DetectionSource`: in
    file order, each usable record once; with random access (``example_at``) where no file is
    compressed, else ``shuffled_records`` (a pass in a seeded order of files).

    label_map: a ``.pbtxt`` file (default: the one found). strict: raise ``DataError`` on the
    first problem instead of warning and skipping.
    """
    data = read_tfrecord_data(path, label_map)
    problems = DataProblems(f"TFRecord {os.fspath(path)} {split}", strict=strict)
    parts = [(match, data.splits[match["name"]]) for match in split_parts(split, data.splits, data.path)]
    every_file = sorted({file for files in data.splits.values() for file in files})
    facts = {file: _FactsCache.read(file_key(file)) for file in every_file}  # None: not checked yet
    unchecked = [file for file, known in facts.items() if known is None]
    size = sum(tf.io.gfile.stat(file).length for file in unchecked)
    if size >= LONG_CHECK * 100_000:  # records of ~100 kB: a minute or more of silence otherwise
        logger.warning("%s: checking %.1f GB of records in %d files, once: the results are remembered in %s",
                       data.path, size / 2 ** 30, len(unchecked), cache_path())
    facts.update({file: file_facts(file) for file in unchecked})
    classes = class_map(data, facts)
    by_id = {i: label for label, i in enumerate(classes.ids)}

    files, raw_starts, counts, kept, objects = [], [], [], [], 0
    for match, split_files in parts:
        usable = []  # (file number in ``files``, record number): this part's usable records in order
        for file in split_files:
            if file in files:
                raise DataError(f"{data.path}: {file} is read twice by split {split!r}")
            number, file_facts_ = len(files), facts[file]
            files.append(file)
            raw_starts.append(sum(counts))
            counts.append(len(file_facts_.records))
            if file_facts_.stop:
                problems.warn("unreadable record", file, f"record {len(file_facts_.records)} cannot be read "
                              f"({file_facts_.stop})", "the records after it are skipped")
            for record, (problem, ids, texts, notes, name, never, _) in enumerate(file_facts_.records):
                where = f"{file}: record {record}" + (f" ({name})" if name else "")
                problem = problem or _class_problem(ids, texts, classes.by_text, by_id)
                if problem:
                    problems.warn("bad record", where, problem, "record skipped")
                    continue
                for note in notes:
                    problems.warn(note, where, *NOTES[note])
                usable.append((number, record, len(ids or texts or ()) - never))
        for number, record, count in sliced(usable, match):
            kept.append(raw_starts[number] + record)
            objects += count
    problems.summary(len(kept))
    FILES_READ.update(files)
    compression = {file: facts[file].compression for file in files}
    reader = _Reader(files, raw_starts, counts, kept, compression, classes, decode_images)
    if any(compression.values()):  # read from the start only: files in turns, then the buffer
        _report_order(facts, files, kept, problems.source)
        dataset = reader.in_order()
    else:  # each record at its offset, in order too: a part of a file is read without the rest before it
        reader.locate([facts[file].records for file in files])
        dataset = tf.data.Dataset.range(len(kept)).map(reader.example_at, num_parallel_calls=tf.data.AUTOTUNE,
                                                       deterministic=True)
    return DetectionSource(
        dataset=dataset,
        class_names=classes.names,
        num_examples=len(kept),
        name=problems.source,
        problems=dict(problems.counts),
        num_objects=objects,
        # Records by file and number: a split that shares records with another (an eval_input_reader
        # naming the training files) is told, as folder sources tell shared image files.
        files=frozenset(f"{_real(files[number])}#{number_in_file}" for number, number_in_file in
                        _file_and_number(kept, raw_starts)),
        fingerprint=fingerprint([f"{os.path.basename(f)}:{n}" for f, n in zip(files, counts)]
                                + [str(len(kept)), str(kept[0]), str(kept[-1])]),
        example_at=reader.example_at if reader.offsets is not None else None,
        shuffled_records=None if reader.offsets is not None else reader.shuffled,
    )


def _file_and_number(kept, raw_starts):
    """(file number, record number in it) of each global record number of ``kept``."""
    files = np.searchsorted(np.asarray(raw_starts), np.asarray(kept, np.int64), side="right") - 1
    return zip(files.tolist(), (np.asarray(kept, np.int64) - np.asarray(raw_starts)[files]).tolist())


class _Reader:
    """Graph code reading the kept records of ``files``: ``example_at(index)`` one of them (random
    access, uncompressed files, after :meth:`locate`); for compressed files, read from their start
    only, ``in_order()`` the examples in file order and ``shuffled(seed)`` ``(index, example)``
    pairs in a seeded order of files read in turns. ``index`` is a record's position among the kept ones (its global record
    number found in ``kept`` by binary search)."""

    def __init__(self, files, raw_starts, counts, kept, compression, classes: LabelMap, decode_images):
        kept = np.asarray(kept, np.int64)
        self.kept = tf.constant(kept)
        # Each file's window of records holding kept ones: records [first, last] of it.
        rows = []
        for number, file in enumerate(files):
            start, end = raw_starts[number], raw_starts[number] + counts[number]
            lo, hi = np.searchsorted(kept, [start, end])
            if hi > lo:
                first, last = int(kept[lo]), int(kept[hi - 1])
                rows.append((os.fsencode(file), compression[file], first, first - start, last - first + 1))
        self.table = {key: tf.constant([row[i] for row in rows], dtype) for i, (key, dtype) in enumerate(
            [("path", tf.string), ("compression", tf.string), ("first", tf.int64), ("skip", tf.int64),
             ("take", tf.int64)])}
        self.num_files = len(rows)
        self.by_text = (list(classes.by_text), list(classes.by_text.values()))
        self.by_id = (list(classes.ids), list(range(len(classes.ids))))
        self.decode_images = decode_images
        self.files, self.raw_starts, self.kept_numbers = list(files), list(raw_starts), kept
        self.offsets = None

    def locate(self, records_of_files):
        """Where each kept record is: its file, byte offset and size (from the records' sizes)."""
        file_of, offset_of, size_of = [], [], []
        for number, records in enumerate(records_of_files):
            sizes = np.array([facts[-1] for facts in records], np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes + 16)[:-1]]).astype(np.int64)
            start = self.raw_starts[number]
            lo, hi = np.searchsorted(self.kept_numbers, [start, start + len(records)])
            local = self.kept_numbers[lo:hi] - start
            file_of.append(np.full(len(local), number, np.int32))
            offset_of.append(offsets[local])
            size_of.append(sizes[local])
        self.paths = tf.constant(self.files, tf.string)
        self.file_of = tf.constant(np.concatenate(file_of))
        self.offsets = tf.constant(np.concatenate(offset_of))
        self.sizes = tf.constant(np.concatenate(size_of))

    def example_at(self, index):
        """The example of kept record ``index`` (int64 scalar), read at its byte offset:
        ``TFRecordDatasetV2``'s ``byte_offsets`` seek there (the public ``TFRecordDataset`` reads
        a file from its start only), one record, its checksums verified."""
        variant = tf.raw_ops.TFRecordDatasetV2(
            filenames=tf.reshape(tf.gather(self.paths, tf.gather(self.file_of, index)), [1]),
            compression_type="", buffer_size=tf.gather(self.sizes, index) + 16,
            byte_offsets=tf.reshape(tf.gather(self.offsets, index), [1]))
        records = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.string))
        return self.parse(records.take(1).get_single_element())

    def _file_records(self, row):
        """One file's window of records, numbered globally: (record number, serialized)."""
        records = tf.data.TFRecordDataset(row["path"], compression_type=row["compression"])
        return records.skip(row["skip"]).take(row["take"]).enumerate(row["first"])

    def _records(self, files: tf.data.Dataset, interleave: int):
        if interleave > 1:
            records = files.interleave(self._file_records, cycle_length=interleave, block_length=1,
                                       num_parallel_calls=min(interleave, 8), deterministic=True)
        else:
            records = files.flat_map(self._file_records)
        kept = self.kept

        def position(number):  # where ``number`` is, or would be, in ``kept``
            return tf.searchsorted(kept, tf.reshape(number, [1]), out_type=tf.int64)[0]

        def is_kept(number, _):
            return tf.equal(kept[tf.minimum(position(number), tf.size(kept, tf.int64) - 1)], number)

        def to_example(number, serialized):
            return position(number), self.parse(serialized)

        return records.filter(is_kept).map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def in_order(self) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices(self.table)
        return self._records(files, 1).map(lambda index, example: example)

    def shuffled(self, seed) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices(self.table).shuffle(
            max(self.num_files, 1), seed=seed, reshuffle_each_iteration=False)
        return self._records(files, min(self.num_files, INTERLEAVE_FILES))

    def parse(self, serialized):
        """A serialized record -> an example in the layout (its objects' classes mapped to labels)."""
        parsed = tf.io.parse_single_example(serialized, {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
            **{key: tf.io.VarLenFeature(tf.float32) for key in _BOX_KEYS + ("image/object/area",)},
            "image/object/class/text": tf.io.VarLenFeature(tf.string),
            "image/object/class/label": tf.io.VarLenFeature(tf.int64),
            "image/object/difficult": tf.io.VarLenFeature(tf.int64),
            "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
        })
        dense = {key: value.values if isinstance(value, tf.sparse.SparseTensor) else value
                 for key, value in parsed.items()}
        boxes = tf.stack([dense[key] for key in _BOX_KEYS], axis=-1)
        count = tf.shape(boxes)[0]

        def per_object(key, missing):  # a list of the boxes' length, else ``missing`` for each
            values = dense[key]
            return tf.cond(tf.equal(tf.size(values), count), lambda: values,
                           lambda: tf.fill([count], tf.constant(missing, values.dtype)))

        by_text = _lookup(per_object("image/object/class/text", ""), *self.by_text, tf.string)
        by_id = _lookup(per_object("image/object/class/label", -1), *self.by_id, tf.int64)
        labels = tf.where(tf.strings.length(per_object("image/object/class/text", "")) > 0, by_text, by_id)
        difficult = (per_object("image/object/difficult", 0) > 0) | (per_object("image/object/is_crowd", 0) > 0)
        source_id = dense["image/source_id"]
        image_id = tf.cond(tf.strings.regex_full_match(source_id, r"[0-9]{1,18}"),
                           lambda: tf.strings.to_number(source_id, tf.int64), lambda: tf.constant(-1, tf.int64))
        filename = tf.where(tf.strings.length(dense["image/filename"]) > 0, dense["image/filename"], source_id)
        image = dense["image/encoded"]
        return {
            "image": decode_image(image) if self.decode_images else image,
            "image/filename": filename,
            "image/id": image_id,
            "objects": {
                "bbox": tf.clip_by_value(boxes, 0.0, 1.0),
                "label": labels,
                "is_difficult": difficult,
                "area": per_object("image/object/area", -1.0),
            },
        }


def _lookup(found, keys, values, dtype):
    """``values[keys.index(f)]`` for each of ``found`` (-1 where it is not a key), by comparison
    with every key: no lookup table, a resource that tf.distribute's auto-sharding of the input
    pipeline cannot always carry (a few thousand classes at most)."""
    if not keys:
        return -tf.ones_like(found, tf.int64)
    match = tf.equal(found[:, None], tf.constant(keys, dtype)[None, :])
    position = tf.argmax(tf.cast(match, tf.int32), axis=1)
    return tf.where(tf.reduce_any(match, axis=1), tf.gather(tf.constant(values, tf.int64), position), -1)


def _report_order(facts, files, kept, source):
    """Warn where the training stream's window cannot mix the records: few files whose records
    come grouped by class (neighbours share their first class far more often than in a random
    order: over half the way from a random order's share to a sorted one's, 100 %)."""
    from keras_frcnn.data.pipeline import SHUFFLE_BUFFER

    if len(kept) <= 4 * SHUFFLE_BUFFER or len(files) >= INTERLEAVE_FILES:
        return
    firsts = []
    for file in files:
        for problem, ids, texts, *_ in facts[file].records:
            firsts.append((texts or ids or [None])[0] if not problem else None)
    sequence = [firsts[k] for k in kept if firsts[k] is not None]
    if len(sequence) < 2:
        return
    same = np.mean([a == b for a, b in zip(sequence, sequence[1:])])
    shares = np.array(list(collections.Counter(sequence).values()), np.float64) / len(sequence)
    chance = float(np.sum(shares ** 2))
    if chance < 0.99 and (same - chance) / (1 - chance) > 0.5:  # over half the way from random to sorted
        logger.warning("%s: the records are stored grouped by class (%.0f%% of neighbours share their first class, "
                       "%.0f%% in a random order) in %d file(s): the training stream mixes records within a window of "
                       "%d from up to %d files, so it trains on one class at a time; write the records shuffled, or "
                       "in more shards", source, 100 * same, 100 * chance, len(files), SHUFFLE_BUFFER,
                       INTERLEAVE_FILES)
