"""TFDS detection sets (``voc/2007``, ``voc/2012``, ``coco/2017``, the built-in ``shapes``; and any
other in TFDS's detection layout: ``kitti``, ``wider_face``, ``open_images_v4``, ``lvis``, ``bccd``
...; and the fine-grained sets with boxes: ``stanford_dogs``, ``caltech_birds2011``, ``cars196``,
``oxford_iiit_pet``) as sources in the layout of :mod:`keras_frcnn.data.examples`.

Class names come from the builder's ``info.features["objects"]["label"].names`` (another set's
boxes and class feature: :func:`detection_layout`). VOC's splits are
``train``, ``validation`` and ``test`` (``"trainval"`` is accepted for ``"train+validation"``,
the paper's training set); VOC 2012's test split has no annotations. COCO 2017's are ``train``,
``validation`` and ``test`` (no annotations); its ``is_crowd`` becomes ``is_difficult``.

Offline (no network, or to use tars you already have): put the official archives, under their
original names, in TFDS's manual directory, ``<data_dir>/downloads/manual/`` by default (or pass
``manual_dir``); ``download_and_prepare`` then takes them from there instead of downloading, checks
their checksums and builds the TFRecords under ``<data_dir>/voc/2007/...``. Once built, loading
needs neither network nor archives. The files (``OFFLINE_FILES``):

- ``voc/2007``: ``VOCtrainval_06-Nov-2007.tar``, ``VOCtest_06-Nov-2007.tar``
- ``voc/2012``: ``VOCtrainval_11-May-2012.tar``, ``VOC2012test.tar``
- ``coco/2017``: ``train2017.zip``, ``val2017.zip``, ``test2017.zip`` (images.cocodataset.org/zips/)
  and ``annotations_trainval2017.zip``, ``image_info_test2017.zip`` (.../annotations/)
- ``coco/2014`` (plain ``coco``): ``train2014.zip``, ``val2014.zip``, ``test2014.zip``, ``test2015.zip``,
  ``annotations_trainval2014.zip``, ``image_info_test2014.zip``, ``image_info_test2015.zip``
- any other set: the files of its TFDS checksums (``kitti``: ``data_object_image_2.zip``,
  ``data_object_label_2.zip``, ``devkit_object.zip``), named in the error of a build that failed

An unpacked ``VOCdevkit/VOC2007`` folder can also be read directly with
:func:`keras_frcnn.data.voc_folder.load_voc_folder`, and COCO files with
:func:`keras_frcnn.data.coco_json.load_coco_json`, without building anything.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import typing

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_frcnn.data.examples import DetectionSource, from_tfds_example
from keras_frcnn.data.problems import DataError, logger
from keras_frcnn.locks import file_lock

OFFLINE_FILES = {
    "voc/2007": ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"),
    "voc/2012": ("VOCtrainval_11-May-2012.tar", "VOC2012test.tar"),
    "coco/2017": ("train2017.zip", "val2017.zip", "test2017.zip", "annotations_trainval2017.zip",
                  "image_info_test2017.zip"),
    "coco/2014": ("train2014.zip", "val2014.zip", "test2014.zip", "test2015.zip", "annotations_trainval2014.zip",
                  "image_info_test2014.zip", "image_info_test2015.zip"),
}

SPLIT_ALIASES = {"trainval": "train+validation"}

# (training split, evaluation split) of each set: evaluation is always on held-out, labelled data.
# VOC 2007: the paper's trainval -> test. VOC 2012 and COCO publish no annotations for their test
# splits, so they evaluate on validation (COCO: the paper's "trained on train, tested on val").
DEFAULT_SPLITS = {
    "voc/2007": ("train+validation", "test"),
    "voc/2012": ("train", "validation"),
    "coco/2017": ("train", "validation"),
    "coco/2014": ("train", "validation"),
    "shapes": ("train", "test"),
    # TFDS's own KITTI split of the labelled images (10 % of the drives each for validation and test): test
    # kept for a last figure. WIDER FACE publishes no test annotations; Open Images is evaluated on validation.
    "kitti": ("train", "validation"),
    "wider_face": ("train", "validation"),
    "open_images_v4": ("train", "validation"),
    # LVIS's test is COCO's test-dev images without annotations (TFDS's lvis builder reads
    # lvis_v1_image_info_test_dev.json for it); its labelled held-out split is validation.
    "lvis": ("train", "validation"),
    # Oxford-IIIT Pet's head boxes are drawn for its trainval images only (TFDS's "train").
    "oxford_iiit_pet": ("train[:90%]", "train[90%:]"),
}
UNLABELLED_SPLITS = {"voc/2012": ("test",), "coco/2017": ("test",), "coco/2014": ("test", "test2015"),
                     "wider_face": ("test",), "oxford_iiit_pet": ("test",), "lvis": ("test",)}
# Sets whose TFDS boxes have their origin at the image's bottom left (TFDS's kitti builder writes
# ymin = (height - bottom) / height: its _build_bounding_box, "A TFDS BBox (origin bottom left)"),
# turned to TFDS's usual top-left frame when read.
BOTTOM_LEFT_BOXES = ("kitti",)


def canonical_name(name: str) -> str:
    """``"voc"`` -> ``"voc/2007"`` (TFDS's default config), ``"coco"`` -> ``"coco/2014"``; a
    version pinned stays (``"voc:5.0.0"`` -> ``"voc/2007:5.0.0"``)."""
    base, colon, version = name.partition(":")
    return {"voc": "voc/2007", "coco": "coco/2014"}.get(base, base) + colon + version


def _listed(table: dict, name: str, default=None):
    """``table``'s entry for TFDS set ``name``, whatever version it pins (``voc/2012:5.0.0`` is
    ``voc/2012``'s), by its name and config, else by its name alone (``open_images_v4/original``
    is ``open_images_v4``'s)."""
    base = canonical_name(name).split(":")[0]
    return table.get(base, table.get(base.split("/")[0], default))


def default_splits(name: str) -> tuple:
    """The (training, evaluation) splits of TFDS set ``name`` (``("train", "test")`` for a set
    not listed in ``DEFAULT_SPLITS``)."""
    return _listed(DEFAULT_SPLITS, name, ("train", "test"))


def check_labelled(name: str, split: str, role: str = "evaluation"):
    """``DataError`` if ``split`` reads a split of ``name`` that has no annotations."""
    parts = [part.split("[")[0].strip() for part in SPLIT_ALIASES.get(split, split).split("+")]
    for part in parts:
        if part in _listed(UNLABELLED_SPLITS, name, ()):
            train, test = default_splits(name)
            raise DataError(f"{name} split {part!r} has no annotations, so it cannot be used for "
                            f"{role}; the labelled splits are {train!r} (training) and {test!r} "
                            "(evaluation): see --train-split / --test-split")


def build_lock(builder):
    """A lock file beside ``builder``'s data, held while one process builds it: TFDS renames a
    finished build into place and fails in a second process building the same set at the same
    time ("Cannot rename ... already exists", seen with two ``train.py`` runs started together on a
    new machine). The second waits, then finds the set built."""
    config = builder.builder_config.name if builder.builder_config else "default"
    return file_lock(os.path.join(os.fspath(builder.data_dir_root), f".{builder.name}-{config}.lock"))


def check_reachable(builder, manual_dir=None, timeout=10.0):
    """Before building ``builder``'s set: unless every archive it needs is in the manual directory,
    a ``ConnectionError`` now if a server it downloads from (or the proxy the environment names)
    cannot be reached (no network, no DNS, a firewall). TFDS would retry each download for minutes
    before failing."""
    import socket
    import urllib.parse
    import urllib.request

    manual = manual_folder(builder, manual_dir)
    needed = OFFLINE_FILES.get(builder.info.full_name.rsplit("/", 1)[0])
    if needed and all(os.path.exists(os.path.join(manual, name)) for name in needed):
        return
    # TFDS takes a download from the manual folder where a file of its checksums' name is there:
    # only the servers of the others are needed.
    urls = [url for url, name in archives(builder).items() if not (name and os.path.exists(os.path.join(manual, name)))]
    proxies = urllib.request.getproxies()  # $https_proxy, $http_proxy ...: connections go there
    servers = {}  # (host, port) -> what it is
    for parts in map(urllib.parse.urlsplit, urls):
        what = f"{parts.hostname}, where TFDS downloads {builder.info.full_name} from"
        if parts.hostname and parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname):
            what = f"the proxy {proxies[parts.scheme]} (${parts.scheme}_proxy) for {what}"
            parts = urllib.parse.urlsplit(proxies[parts.scheme])
        if parts.hostname:
            servers[parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)] = what
    for (host, port), what in sorted(servers.items()):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            raise ConnectionError(f"cannot reach {what} ({error.strerror or error})") from None


def expanded(path):
    """A folder option as given (``"~/tensorflow_datasets"``: the home folder's), None left None."""
    return os.path.expanduser(os.fspath(path)) if path else path


def manual_folder(builder, manual_dir=None) -> str:
    """Where TFDS looks for ``builder``'s archives: ``manual_dir``, else ``<data_dir>/downloads/manual``."""
    return expanded(manual_dir or os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual"))


def archives(builder) -> dict:
    """``{url: file name in the manual folder (or None)}`` of what ``builder`` downloads, from its
    checksums file (empty for a builder without one)."""
    try:
        infos = builder.url_infos or {}
    except Exception:  # a builder without a checksums file
        return {}
    return {url: getattr(info, "filename", None) for url, info in infos.items()}


_SHARDS = {}  # a TFDS shard file's path -> its number in this process (split_examples)
MAX_LISTED_EXAMPLES = 2_000_000  # (about 150 MB of set; Open Images' 1.7M training images fit)


def split_examples(builder, split: str) -> typing.Optional[frozenset]:
    """The examples ``split`` (an expression: ``"train[:90%]+validation"``) reads, as numbers of
    (shard file, place in it) (a source's ``files``: two splits that share examples are told apart
    from two that do not), or None where TFDS cannot say or the split is larger than
    ``MAX_LISTED_EXAMPLES``."""
    try:
        instructions = builder.info.splits[split].file_instructions
    except Exception:  # (no split info, e.g. mocked)
        return None
    parts = []
    for part in instructions:
        shard = os.path.join(os.fspath(builder.data_dir), os.path.basename(os.fspath(part.filename)))
        take = part.take if part.take >= 0 else part.examples_in_shard - part.skip
        parts.append((_SHARDS.setdefault(shard, len(_SHARDS)) << 32, part.skip, take))
    if sum(take for _, _, take in parts) > MAX_LISTED_EXAMPLES:
        return None
    return frozenset(shard + i for shard, skip, take in parts for i in range(skip, skip + take))


def prepared(make_builder, download_config, builder=None):
    """The set of ``builder`` (default ``make_builder()``) built if needed, one process at a time
    (:func:`build_lock`); the builder returned has the finished set's info (one made while another
    process was still building read an empty folder: ``make_builder()`` makes it again). A set
    built already is used as it is, without the lock (its folder may be read-only: a shared,
    prebuilt data directory)."""
    builder = builder or make_builder()
    if builder.is_prepared():  # nothing to build, no lock: a read-only data directory is fine
        return builder
    check_reachable(builder, download_config.manual_dir)
    with build_lock(builder):
        remove_dead_builds(builder)
        builder.download_and_prepare(download_config=download_config)
    return builder if builder.info.splits else make_builder()


def remove_dead_builds(builder):
    """Remove what builds of ``builder``'s set that were killed left: TFDS builds into
    ``incomplete.XXXXXX_<version>/`` beside the version's folder and renames it when done, so a
    killed build (kill -9, a machine lost) leaves that folder, as large as the data written, for
    ever. Called with :func:`build_lock` held, when no other process is building the set."""
    parent = os.path.dirname(os.path.normpath(os.fspath(builder.data_dir)))
    pattern = re.compile(r"^incomplete\.[0-9A-Z]{6}_.+$")
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        if pattern.match(name) and os.path.isdir(os.path.join(parent, name)):
            logger.warning("%s: removing %s, left by a build of %s that did not finish", parent, name,
                           builder.name)
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def read_split(builder, split: str, decode_images: bool = True):
    """``(dataset, num_examples)`` of a built set's ``split`` in TFDS's fixed order (``num_examples``
    None where TFDS cannot count the expression or has no count, e.g. mocked), or a ``DataError``
    naming the split and the set's splits: an unknown name or a malformed expression (TFDS's
    ``ValueError``), or one that selects nothing (``"train[4:2]"``, ``"train[:0]"``); found before
    anything is trained."""
    where = f"TFDS {builder.name}" + (f"/{builder.builder_config.name}" if builder.builder_config else "")
    splits = ", ".join(f"{name} ({info.num_examples})" for name, info in sorted(builder.info.splits.items()))
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    except ValueError as error:
        raise DataError(f"{where}: split {split!r}: {' '.join(str(error).split())} "
                        f"(its splits: {splits})") from None
    try:
        num_examples = builder.info.splits[split].num_examples
    except Exception:  # split expressions TFDS cannot count (or no split info, e.g. mocked)
        num_examples = None
    if num_examples is not None and num_examples < 0:  # an empty slice (TFDS counts 0 as no info)
        raise DataError(f"{where}: split {split!r} selects no examples (its splits: {splits})")
    return dataset, num_examples or None


class DetectionLayout(typing.NamedTuple):
    """Where a TFDS set keeps its boxes, as paths of feature keys: ``boxes`` a sequence's box
    feature (``("objects", "bbox")``), or a box of the image (``("head_bbox",)``: one object an
    image); ``label`` the class feature of each object (``("objects", "label")``), of the image
    (``("label",)``: every box of the image is of its class) or None (one class); its class names;
    ``difficult`` the objects' never-a-positive flag (or None)."""

    boxes: tuple
    label: typing.Optional[tuple]
    class_names: tuple
    difficult: typing.Optional[tuple]

    @property
    def one_box(self) -> bool:
        """One box an image (a top-level box feature): an image whose box is empty has none drawn
        (Oxford-IIIT Pet's images without a head annotation), and is left out, not a negative."""
        return len(self.boxes) == 1


# A sequence's class feature and never-a-positive flag, in the order looked for: VOC, COCO, LVIS and
# Open Images have "label", KITTI "type"; VOC marks "is_difficult", COCO "is_crowd", Open Images
# "is_group_of", WIDER FACE "invalid" (faces its evaluation ignores).
LABEL_KEYS = ("label", "type", "category", "class")
DIFFICULT_KEYS = ("is_difficult", "is_crowd", "is_group_of", "invalid")


def detection_layout(name, features) -> DetectionLayout:
    """The :class:`DetectionLayout` of a TFDS set's features: the top-level sequence holding a
    ``BBoxFeature`` (``objects``; ``faces`` in wider_face, ``bobjects`` in open_images_v4) and its
    class label; objects without one take the image's class label (stanford_dogs' breeds), else
    one class named after the sequence (``face``). Without such a sequence, a top-level box with the
    image's class label is one object an image (the fine-grained sets: caltech_birds2011, cars196,
    oxford_iiit_pet's ``head_bbox``, as the TF Object Detection API's pet tutorial trains on it). A
    ``DataError`` for a set without boxes."""
    def class_labels(found):
        keys = [k for k in LABEL_KEYS if isinstance(found.get(k), tfds.features.ClassLabel)]
        return keys + [k for k, f in found.items() if isinstance(f, tfds.features.ClassLabel) and k not in keys]

    def boxes_of(found):
        return [k for k, f in found.items() if isinstance(f, tfds.features.BBoxFeature)]

    features = dict(features.items())
    image_labels = class_labels(features)
    sequences = [key for key, feature in features.items() if isinstance(feature, tfds.features.Sequence)
                 and isinstance(feature.feature, tfds.features.FeaturesDict) and boxes_of(feature.feature)]
    if sequences:
        key = "objects" if "objects" in sequences else sequences[0]
        objects = dict(features[key].feature.items())
        if boxes_of(objects) != ["bbox"]:
            raise DataError(f"TFDS {name!r}: {key} has no single 'bbox' box feature")
        labels = class_labels(objects)
        difficult = next(((key, k) for k in DIFFICULT_KEYS if k in objects), None)
        if labels:
            return DetectionLayout((key, "bbox"), (key, labels[0]), tuple(objects[labels[0]].names), difficult)
        if image_labels:
            return DetectionLayout((key, "bbox"), (image_labels[0],), tuple(features[image_labels[0]].names),
                                   difficult)
        return DetectionLayout((key, "bbox"), None, (key[:-1] if key.endswith("s") else key,), difficult)
    boxes = boxes_of(features)
    if len(boxes) == 1 and image_labels:
        return DetectionLayout((boxes[0],), (image_labels[0],), tuple(features[image_labels[0]].names), None)
    if len(boxes) > 1:
        raise DataError(f"TFDS {name!r}: several box features ({', '.join(boxes)}) and no sequence of objects: "
                        "which one is the object's cannot be told")
    raise DataError(f"TFDS {name!r} is not a detection set: no sequence of objects with a bounding box feature, "
                    f"nor a box and a class label of the image (its features: {', '.join(features.keys())})")


def _from_bottom_left(example):
    """``example``'s boxes (ymin, xmin, ymax, xmax) of a bottom-left origin in the top-left frame."""
    y0, x0, y1, x1 = tf.unstack(example["objects"]["bbox"], axis=-1)
    objects = {**example["objects"], "bbox": tf.stack([1.0 - y1, x0, 1.0 - y0, x1], axis=-1)}
    return {**example, "objects": objects}


def load_tfds(
    name: str,
    split: str,
    data_dir=None,
    manual_dir=None,
    download: bool = True,
    decode_images: bool = True,
) -> DetectionSource:
    """A TFDS detection set's ``split`` as a :class:`DetectionSource`, in TFDS's (fixed) order.

    name: ``"voc/2007"``, ``"voc/2012"``, ``"coco/2017"``, ``"shapes"`` (the built-in set, built
      locally), or another TFDS detection set (:func:`detection_layout`: kitti, wider_face,
      open_images_v4, lvis ...).
    split: a TFDS split expression (``"train+validation"``, ``"test"``, ``"train[:10%]"``);
      ``"trainval"`` means ``"train+validation"``.
    data_dir: TFDS's data directory (default ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
    manual_dir: where the official archives are for an offline build (default
      ``<data_dir>/downloads/manual``).
    download: build the set if it is not built yet (downloading unless the archives are in the
      manual directory); False requires it built already.
    decode_images: ``image`` as uint8 ``[H, W, 3]`` (True) or the encoded JPEG bytes (False).
    """
    split = SPLIT_ALIASES.get(split, split)
    data_dir, manual_dir = expanded(data_dir), expanded(manual_dir)
    if name == "shapes":
        from keras_frcnn.data.shapes import load_shapes  # a TFDS builder of its own
        return load_shapes(split, data_dir=data_dir, decode_images=decode_images)

    make_builder = functools.partial(tfds.builder, name, data_dir=data_dir)
    try:
        builder = make_builder()
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError) as error:
        # A name misspelt, a namespace TFDS lacks, a config or version of none (voc/2099): TFDS's own
        # message lists every set it has; its first line and its guess are kept.
        said = str(error).strip().split("\n")
        guess = [line.strip() for line in said if line.startswith("Did you mean")]
        raise DataError(f"--dataset {name}: not a TFDS set or config ({' '.join([said[0][:300], *guess])}); the "
                        "built-in set is 'shapes', and files are read with --voc-dir, --coco-json, --yolo-data, "
                        "--csv ... (see --help)") from None
    # Its features are the builder's code's: a set without boxes (mnist) is refused before its
    # download, not after (or, offline, with a download error).
    layout = detection_layout(name, builder.info.features)
    if download:
        try:
            builder = prepared(make_builder, tfds.download.DownloadConfig(manual_dir=manual_dir), builder)
        except Exception as error:  # network, checksum, disk ... errors of many types
            manual = manual_folder(builder, manual_dir)
            files = ", ".join(_listed(OFFLINE_FILES, name, None)
                              or sorted({n for n in archives(builder).values() if n}) or ("the dataset's archives",))
            raise DataError(
                f"could not build TFDS {name!r} in {builder.data_dir_root}: {type(error).__name__}: "
                f"{error}\nOffline: put {files} in {manual} and run again.") from error
    elif not builder.is_prepared():
        raise DataError(f"TFDS {name!r} is not built in {builder.data_dir_root}: load it with download=True (it "
                        "downloads and builds it, or builds it from the archives in the manual folder)")
    dataset, num_examples = read_split(builder, split, decode_images)
    dataset = dataset.map(functools.partial(from_tfds_example, boxes=layout.boxes, label=layout.label,
                                            difficult=layout.difficult))
    if canonical_name(name).split("/")[0].split(":")[0] in BOTTOM_LEFT_BOXES:
        dataset = dataset.map(_from_bottom_left)
    if layout.one_box:  # an image without its box drawn is left out (counted by the pipeline), not a negative
        dataset = dataset.filter(lambda example: tf.reduce_all(
            example["objects"]["bbox"][:, 2:] > example["objects"]["bbox"][:, :2]))
        num_examples = None
    return DetectionSource(
        dataset=dataset,
        class_names=layout.class_names,
        num_examples=num_examples,
        name=f"{name} {split}",
        fingerprint=f"TFDS {builder.info.full_name} {split}",  # (its version: a rebuilt set is other data)
        files=split_examples(builder, split),
        # TFDS's voc builder divides the XML's 1-based pixel numbers by the size, no offset.
        voc_pixel_numbers=canonical_name(name).startswith("voc/"),
    )
