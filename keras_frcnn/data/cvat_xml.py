"""CVAT's own export, "CVAT for images 1.1" -> examples in the layout of :mod:`keras_frcnn.data.examples`.

CVAT (cvat.ai) exports a task or a project as ``annotations.xml`` with, when asked to save them,
the images in ``images/`` (a project's in ``images/<subset>/``)::

    <annotations><version>1.1</version>
      <meta><task> (or <project>) ... <labels><label><name>car</name><type>rectangle</type>...
      <image id="0" name="a.jpg" width="640" height="480" [subset="Train" task_id="3"]>
        <box label="car" occluded="0" xtl="10.5" ytl="20" xbr="100" ybr="200" [rotation="15"]>
          <attribute name="difficult">false</attribute></box>
        <polygon label="car" points="x,y;x,y;..."/>  <ellipse cx= cy= rx= ry=/>  <mask left= top= width= height=/>

Each shape gives a box in CVAT's continuous pixel coordinates: a ``box`` its corners (turned by
its ``rotation``, degrees about its centre: the box around the turned rectangle), a ``polygon`` /
``polyline`` / ``cuboid`` the box around its points, an ``ellipse`` the box around it (turned
likewise), a ``mask`` its ``left, top, width, height``; ``points``, ``skeleton`` and ``tag`` mark
no object (counted). A ``difficult`` attribute that is true makes the object difficult (never a
positive), as CVAT's Pascal VOC export writes it. The image's ``width`` / ``height`` are the size
CVAT showed it at: a phone photo's (EXIF 5-8) turned size means boxes drawn on it turned, which
are turned onto the stored pixels (warned; where it cannot be told, taken as stored, warned).

Classes: the meta's labels in their order (labels only for tags, points or skeletons, and a
skeleton's own points, left out), then any other label a shape names, sorted. Splits: the images'
``subset`` (a project's Train / Validation / Test: ``train``, ``val``, ``test``); without subsets the
file is one split, ``all`` (``all[:90%]`` -> ``all[90%:]``). "CVAT for video" (tracks) is refused:
export "CVAT for images" instead. The file is read as a stream (an export of 100,000 images is not
held as a tree).
"""

from __future__ import annotations

import functools
import math
import os

import defusedxml.ElementTree
import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, class_name, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import (annotated_as_shown, as_on_disk, check_images, exif_undecided, frame_undecided,
                                          image_problem, shown_size, to_stored_frame)
from keras_frcnn.data.problems import DataError, DataProblems, box_in_image, ellipse_extent, finite_box, merge_groups
from keras_frcnn.data.voc_folder import SPLIT_ALIASES, held_out_tenth, sliced, split_parts

ALL = "all"
SHAPES = ("box", "polygon", "polyline", "ellipse", "mask", "cuboid")
NOT_OBJECTS = ("points", "skeleton", "tag")
TRUE = ("true", "1", "yes")


def annotations_file(path) -> str:
    """``--cvat path``'s XML file: the file itself, or ``annotations.xml`` in the folder."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        path = os.path.join(path, "annotations.xml")
        if not os.path.isfile(path):
            raise DataError(f"--cvat {os.path.dirname(path)}: no annotations.xml in it (CVAT's export, unzipped)")
    elif not os.path.isfile(path):
        raise DataError(f"--cvat {path}: no such file or folder")
    return path


class CvatFile:
    """An export read once: its class names (``labels``), and its images by split: ``(name,
    width, height, split, shapes, subset)`` (the subset as written, ``split`` its split name),
    each shape ``(tag, attributes, {attribute name: value})``."""

    def __init__(self, path):
        self.path = annotations_file(path)
        meta_labels, found, self.images = [], set(), []
        try:
            for _, element in defusedxml.ElementTree.iterparse(self.path, events=("end",)):
                if element.tag == "label" and element.find("name") is not None:
                    kind = (element.findtext("type") or "").strip()
                    if kind not in ("tag", "skeleton", "points") and element.find("parent") is None:
                        meta_labels.append(element.findtext("name").strip())
                elif element.tag == "track":
                    raise DataError(f"{self.path}: a \"CVAT for video\" export (tracks): export the task as "
                                    "\"CVAT for images 1.1\"")
                elif element.tag == "image":
                    shapes = [(child.tag, {**child.attrib, "label": class_name(child.get("label", ""))},
                               {a.get("name", ""): (a.text or "").strip() for a in child.findall("attribute")})
                              for child in element]
                    found.update(attributes.get("label", "") for tag, attributes, _ in shapes if tag in SHAPES)
                    subset = element.get("subset", "").strip()
                    self.images.append((element.get("name", ""), element.get("width"), element.get("height"),
                                        SPLIT_ALIASES.get(subset.lower(), subset.lower() or ALL), shapes, subset))
                    element.clear()  # (a stream: the images read are not kept as a tree)
        except defusedxml.DefusedXmlException as error:
            raise DataError(f"{self.path}: refused (entity expansion?): {type(error).__name__}") from None
        except defusedxml.ElementTree.ParseError as error:
            raise DataError(f"{self.path}: malformed XML ({error})") from None
        if not self.images:
            raise DataError(f"{self.path}: no <image> in it: not a \"CVAT for images\" export")
        seen = set(meta_labels)
        self.labels = tuple(dict.fromkeys(meta_labels)) + tuple(sorted(found - seen - {""}))

    @property
    def splits(self) -> dict:
        """split -> its images in the file's order: each subset's (``train``, ``val``, ``test``, or
        another name lower-cased, such as CVAT's ``default``), and ``all`` of them."""
        splits = {}
        for image in self.images:
            if image[3] != ALL:
                splits.setdefault(image[3], []).append(image)
        splits[ALL] = list(self.images)
        return splits


def read_cvat(path) -> CvatFile:
    """``--cvat path``'s export, parsed once in a process while the file stays as it is (train.py
    reads it for its splits, then each split)."""
    path = annotations_file(path)
    stat = os.stat(path)
    return _parsed(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _parsed(path, size, mtime_ns) -> CvatFile:
    del size, mtime_ns  # (the cache's key: a file rewritten is read again)
    return CvatFile(path)


def default_splits(path) -> tuple:
    """``train`` -> ``val`` (else ``test``) of a project's subsets, ``train[:90%]`` ->
    ``train[90%:]`` without either; no subsets: ``all[:90%]`` -> ``all[90%:]``."""
    splits = read_cvat(path).splits
    first = "train" if "train" in splits else ALL
    held = next((name for name in ("val", "test") if name in splits), None) if first == "train" else None
    return (first, held) if held else held_out_tenth(first, len(splits[first]))


def labelled_splits(path) -> str:
    """What an export trains on beside a first one: all of its images."""
    return ALL


def shape_box(tag, attributes) -> tuple:
    """(xmin, ymin, xmax, ymax) of a CVAT shape (``ValueError`` saying what is wrong)."""
    try:
        theta = math.radians(float(attributes.get("rotation", 0.0)))  # degrees about the centre
        if tag == "box":  # the box around the turned rectangle
            xtl, ytl, xbr, ybr = (float(attributes[k]) for k in ("xtl", "ytl", "xbr", "ybr"))
            cx, cy, rx, ry = (xtl + xbr) / 2, (ytl + ybr) / 2, (xbr - xtl) / 2, (ybr - ytl) / 2
            dx = rx * abs(math.cos(theta)) + ry * abs(math.sin(theta))
            dy = rx * abs(math.sin(theta)) + ry * abs(math.cos(theta))
            box = (cx - dx, cy - dy, cx + dx, cy + dy)
        elif tag == "ellipse":
            box = ellipse_extent(*(float(attributes[k]) for k in ("cx", "cy", "rx", "ry")), theta)
        elif tag == "mask":
            left, top, width, height = (float(attributes[k]) for k in ("left", "top", "width", "height"))
            box = (left, top, left + width, top + height)
        else:  # polygon, polyline: "x,y;x,y;..."; a cuboid's corners
            if tag == "cuboid":
                points = [(float(attributes[f"x{c}"]), float(attributes[f"y{c}"]))
                          for c in ("tl1", "bl1", "tr1", "br1", "tl2", "bl2", "tr2", "br2")]
            else:
                points = [tuple(float(v) for v in pair.split(",")) for pair in attributes["points"].split(";")]
            xs, ys = (np.asarray(v, np.float64) for v in zip(*points))
            box = (xs.min(), ys.min(), xs.max(), ys.max())
    except KeyError as error:
        raise ValueError(f"a {tag} without its {error}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"a {tag} with coordinates that are not numbers ({error})") from None
    return finite_box(box, f"a {tag}")


def load_cvat(path, split: str = ALL, skip_empty: bool = False, decode_images: bool = True,
              strict: bool = False) -> DetectionSource:
    """The images of ``split`` of CVAT export ``path`` (its ``annotations.xml`` or the folder) as a
    :class:`DetectionSource` with random access. Images are found in ``images/<subset>/``,
    ``images/`` and beside the file, by the name CVAT gives them (which may hold folders). A shape
    that cannot be read skips its image; a point, a skeleton, a tag are no objects; a missing or
    corrupt image: named, counted, skipped."""
    export = read_cvat(path)
    splits = export.splits
    problems = DataProblems(f"CVAT {export.path} {split}", strict=strict)
    label_of = {name: label for label, name in enumerate(export.labels)}
    listed = []
    for match in split_parts(split, splits, export.path):
        listed.extend(sliced(splits[match["name"]], match))
    root = os.path.dirname(export.path)
    paths = as_on_disk([_image_path(root, name, subset) for name, _, _, _, _, subset in listed])[0]
    records = []
    for (name, width, height, _, shapes, _), image_path, image in zip(listed, paths, check_images(paths),
                                                                      strict=True):
        if isinstance(image, Exception):
            problems.warn(image_problem(image_path), image_path, str(image), "image skipped")
            continue
        here = f"{export.path}: image {name}"
        try:
            stated = (int(float(height)), int(float(width)))
        except (TypeError, ValueError, OverflowError):  # missing, not a number, inf
            stated = None
        as_shown = stated is not None and annotated_as_shown(image, stated)
        if as_shown:
            problems.warn("EXIF orientation", here, f"width x height {stated[1]} x {stated[0]} is the image as shown "
                          f"(EXIF orientation {image.orientation}; stored {image.width} x {image.height})",
                          "boxes turned onto the stored pixels")
        elif stated is not None and stated != tuple(image[:2]):  # (another image under this name: boxes misplaced)
            problems.warn("size mismatch", here, f"width x height {stated[1]} x {stated[0]} but "
                          f"{os.path.basename(image_path)} is {image.width} x {image.height}", "using the image's size")
        elif frame_undecided(image, stated):
            problems.warn("EXIF orientation", image_path, exif_undecided(image), "boxes taken as stored")
        objects = _objects(here, shapes, shown_size(image) if as_shown else image[:2], label_of, problems)
        if objects is None or (skip_empty and not len(objects[1])):
            continue
        boxes, labels, difficult = objects
        records.append(ImageRecord(path=image_path, filename=os.path.basename(name),
                                   boxes=to_stored_frame(boxes, image.orientation) if as_shown else boxes,
                                   labels=labels, difficult=difficult))
    records = one_record_per_image(records, problems)
    problems.summary(len(records), hint=f"are the images in {os.path.join(root, 'images')}?"
                     if problems.counts["missing image file"] else "")
    return records_to_source(records, export.labels, problems.source, problems.counts, decode_images=decode_images)


def _image_path(root, name, subset) -> str:
    """Where an image of the export is: ``images/<subset>/<name>`` (a project's), ``images/<name>``,
    else beside the XML file."""
    candidates = [os.path.join(root, "images", subset, name)] if subset else []
    candidates += [os.path.join(root, "images", name), os.path.join(root, name)]
    # Not there: where it belongs, named as missing (a project's subset folder where the export has one).
    belongs = 0 if subset and os.path.isdir(os.path.join(root, "images", subset)) else -2
    return next((path for path in candidates if os.path.isfile(path)), candidates[belongs])


def _objects(here, shapes, size, label_of, problems):
    height, width = size
    found = []  # CVAT's group of one label's shapes (an object drawn in parts) is one object
    for number, (tag, attributes, named) in enumerate(shapes):
        where = f"{here}: <{tag}> {number}"
        if tag in NOT_OBJECTS:
            problems.warn("not an object", where, f"a {tag} marks no object", "passed over")
            continue
        if tag not in SHAPES:
            continue  # (CVAT's other elements inside an image: none today)
        try:
            box = shape_box(tag, attributes)
        except ValueError as error:
            problems.warn("malformed shape", where, str(error), "image skipped")
            return None
        if attributes.get("label", "") not in label_of:
            problems.warn("no class", where, "a shape without a label", "image skipped")
            return None
        group = attributes.get("group_id", "").strip()
        found.append((group if group not in ("", "0") else None, where, f"a {tag}", box, attributes["label"],
                      named.get("difficult", "").lower() in TRUE))
    boxes, labels, difficult = [], [], []
    for where, what, box, label, hard in merge_groups(found):
        normalised = box_in_image(box, height, width, problems, where, what)
        if normalised is None:
            continue
        boxes.append(normalised)
        labels.append(label_of[label])
        difficult.append(hard)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
            np.asarray(difficult, np.bool_))
