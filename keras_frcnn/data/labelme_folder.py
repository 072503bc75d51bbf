"""A folder of LabelMe JSON files -> examples in the layout of :mod:`keras_frcnn.data.examples`.

LabelMe (github.com/wkentaro/labelme) saves one JSON file per image, beside it by default::

    DIR/0001.jpg
    DIR/0001.json   {"shapes": [{"label": "cat", "points": [[x1, y1], [x2, y2]],
                                 "shape_type": "rectangle", "flags": {}}, ...],
                     "imagePath": "0001.jpg", "imageHeight": 480, "imageWidth": 640,
                     "imageData": "<base64, or null with --nodata>"}

Each shape gives a box: a rectangle its two corners, a polygon (LabelMe's default shape) the box
around its points, a circle (centre, a point on it) the box around it; points, lines and line
strips are no objects (counted). A shape whose ``flags`` mark it ``difficult`` (or whose
``difficult`` key is true, as some exports write) is never a positive. ``imagePath`` is relative to
the JSON file (LabelMe writes ``..\\images\\a.jpg`` on Windows); where it is not there, the image
file of the JSON's own name beside it; an image that exists only inside the JSON (``imageData``: a
file shared alone) is taken from there, written once, named by its content, to ``labelme_images/``
beside the image-check cache (:func:`extracted_folder`). LabelMe applies EXIF orientation when it
loads an image (its ``LabelFile``), so the coordinates are on the image as shown, for every
orientation: they are turned onto the stored pixels TensorFlow decodes.

Classes: ``labels.txt`` in the folder (or the one above; labelme2voc's and labelme2coco's file, a
name a line, its ``__ignore__`` and ``_background_`` lines passed over), else every label in the
folder's JSON files, sorted. Splits: split folders (``train/``, ``val/`` or ``valid/``, ``test/``)
of JSON files, else one split ``all`` of every JSON file in the folder and its subfolders, held out
as the other folder sources are (``all[:90%]`` -> ``all[90%:]``). Files in name order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import typing

import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import IMAGE_SUFFIXES, as_on_disk, cache_path, check_images, shown_size, to_stored_frame
from keras_frcnn.data.problems import DataError, DataProblems, box_in_image, logger, merge_groups, read_json
from keras_frcnn.data.splits import beside_held_out, every_split, own_splits
from keras_frcnn.data.voc_folder import sliced, split_parts
from keras_frcnn.files import write_atomically

ALL = "all"
SPLIT_FOLDERS = {"train": "train", "training": "train", "trainval": "trainval", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
NOT_OBJECTS = ("point", "line", "linestrip")  # LabelMe shapes that mark no object
LABEL_LISTS = ("labels.txt", "classes.txt")
LIST_MARKERS = ("__ignore__", "_background_")


class LabelMeData(typing.NamedTuple):
    path: str  # the folder
    splits: dict  # split name -> sorted JSON files
    labels_file: typing.Optional[str]


def read_labelme(path) -> LabelMeData:
    """The JSON files of the folder ``path`` by split (see the module docstring)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise DataError(f"--labelme {path}: not a folder (give the folder of LabelMe's JSON files)")
    splits = {}
    for name in sorted(os.listdir(path)):
        split = SPLIT_FOLDERS.get(name.lower())
        if split and os.path.isdir(os.path.join(path, name)):
            splits.setdefault(split, []).extend(_json_files(os.path.join(path, name)))
    splits = {split: files for split, files in splits.items() if files}
    splits = beside_held_out(splits, lambda: [  # every file outside the split folders
        file for name in sorted(os.listdir(path)) if not SPLIT_FOLDERS.get(name.lower())
        for file in (_json_files(os.path.join(path, name)) if os.path.isdir(os.path.join(path, name))
                     else [os.path.join(path, name)] if _is_json(name) else [])])
    if not splits:
        splits = {ALL: _json_files(path)}
        if not splits[ALL]:
            raise DataError(f"--labelme {path}: no JSON files in it or in its train/, val/, test/ folders")
    labels = next((os.path.join(folder, name) for folder in (path, os.path.dirname(path)) for name in LABEL_LISTS
                   if os.path.isfile(os.path.join(folder, name))), None)
    return LabelMeData(path, {split: sorted(files) for split, files in splits.items()}, labels)


def labelled_splits(path) -> str:
    """Every split of the folder joined (``train+val``; ``all``): what it trains on beside a first one."""
    return every_split(read_labelme(path).splits)


def _json_files(folder) -> list:
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(os.path.join(parent, name) for name in names if _is_json(name))
    return found


def _is_json(name) -> bool:
    return name.lower().endswith(".json") and not name.startswith(".")


def default_splits(path) -> tuple:
    """``train`` -> ``val`` (else ``test``), ``trainval`` -> ``test``; a folder without split
    folders: ``all[:90%]`` -> ``all[90%:]`` (:func:`~keras_frcnn.data.splits.own_splits`)."""
    data = read_labelme(path)
    return own_splits(data.splits, lambda split: len(data.splits[split]))


class _Annotation(typing.NamedTuple):
    image: typing.Optional[str]  # the image file found, or None
    written: str  # imagePath as written
    size: typing.Optional[tuple]  # (height, width) stated
    shapes: list  # [(label, shape_type, points, difficult, group_id or None)]
    embedded: bool  # the image taken from the file's imageData (written to extracted_folder())


def _ticked(value) -> bool:
    """A flag as tools write it: true / 1, and "false" / "0" / "no" written as text are not set."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none", "null")
    return bool(value)


def _read(path) -> _Annotation:
    """One LabelMe JSON file (``ValueError`` saying what is wrong)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ValueError("not a LabelMe file (no 'shapes' list)")
    shapes = []
    for number, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("points"), list):
            raise ValueError(f"shapes[{number}]: no 'points' list")
        flags = shape.get("flags") if isinstance(shape.get("flags"), dict) else {}
        difficult = _ticked(flags.get("difficult")) or _ticked(shape.get("difficult"))
        label = shape.get("label")
        label = "" if label is None or isinstance(label, (dict, list)) else str(label).strip()  # null: no class
        group = shape.get("group_id")  # LabelMe's object drawn in parts: its shapes share label and group_id
        group = None if group is None or isinstance(group, (dict, list, bool)) or str(group).strip() == "" \
            else str(group).strip()
        shapes.append((label, str(shape.get("shape_type") or "polygon"), shape["points"], difficult, group))
    written = str(data.get("imagePath") or "")
    folder = os.path.dirname(path)
    # (as_on_disk: the name in other letter case or Unicode form, as written on Windows or macOS)
    candidates = as_on_disk([os.path.normpath(os.path.join(folder, written.replace("\\", "/")))])[0] if written else []
    stem = os.path.splitext(path)[0]
    candidates += [stem + suffix for suffix in IMAGE_SUFFIXES] + [stem + suffix.upper() for suffix in IMAGE_SUFFIXES]
    image = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
    embedded = bool(data.get("imageData"))
    if image is None and embedded:  # a file shared alone: its image is the one inside it
        image = _extracted(data["imageData"])
    try:
        size = (float(data["imageHeight"]), float(data["imageWidth"]))
    except (KeyError, TypeError, ValueError, OverflowError):  # (OverflowError: an integer no float holds)
        size = None
    return _Annotation(image, written, size, shapes, embedded and image is not None and image.startswith(
        extracted_folder()))


def extracted_folder() -> str:
    """Where images found only inside their LabelMe files (``imageData``) are written, once each,
    named by their content: ``labelme_images/`` beside the image-check cache."""
    return os.path.join(os.path.dirname(cache_path()), "labelme_images")


def _extracted(image_data) -> str:
    """The file of an ``imageData`` value (base64 of the image LabelMe showed: EXIF orientation
    applied), written if not there yet (``ValueError`` where it is not base64)."""
    try:
        encoded = base64.b64decode(str(image_data), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("imageData is not base64") from None
    suffix = ".png" if encoded.startswith(b"\x89PNG") else ".jpg" if encoded.startswith(b"\xff\xd8") else ".img"
    path = os.path.join(extracted_folder(), hashlib.sha256(encoded).hexdigest()[:32] + suffix)
    def write(partial):
        with open(partial, "wb") as f:
            f.write(encoded)

    if not os.path.isfile(path):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomically(path, write, partial=f"{path}.partial-{os.getpid()}")
        except OSError as error:
            raise ValueError(f"its image is only inside it (imageData) and cannot be written to {path} "
                             f"({error.strerror or error})") from None
    return path


def _box(shape_type, points) -> tuple:
    """(xmin, ymin, xmax, ymax) of a shape's points (``ValueError`` where they are not numbers)."""
    try:
        xy = np.asarray(points, np.float64).reshape(-1, 2)
    except (TypeError, ValueError, OverflowError):  # (OverflowError: an integer no float holds)
        raise ValueError(f"points that are not [x, y] pairs: {str(points)[:60]}") from None
    if not len(xy) or not np.isfinite(xy).all():
        raise ValueError(f"no points, or points that are not finite: {str(points)[:60]}")
    if shape_type == "circle":
        if len(xy) != 2:
            raise ValueError("a circle has two points (its centre and one on it)")
        radius = float(np.hypot(*(xy[1] - xy[0])))
        return xy[0, 0] - radius, xy[0, 1] - radius, xy[0, 0] + radius, xy[0, 1] + radius
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def load_labelme(path, split: str = "all", skip_empty: bool = False, decode_images: bool = True,
                 strict: bool = False) -> DetectionSource:
    """The images of ``split`` (``"all"``, ``"train"``, ``"val"``, ``"all[:90%]"`` ...) of the LabelMe
    folder ``path`` as a :class:`DetectionSource` with random access. A file that cannot be read, a
    shape that cannot (an image skipped: part of its objects would teach the others as
    background), an image missing, corrupt or only inside its JSON: named, counted, skipped."""
    data = read_labelme(path)
    problems = DataProblems(f"LabelMe {data.path} {split}", strict=strict)
    parts = split_parts(split, data.splits, data.path)
    in_split = {file for match in parts for file in data.splits[match["name"]]}
    annotations = {}
    for file in sorted({file for files in data.splits.values() for file in files}):  # (every split's labels)
        try:
            annotations[file] = _read(file)
        except ValueError as error:
            if file in in_split:
                problems.warn("malformed JSON", file, str(error), "image skipped")
    if data.labels_file:
        class_names = _labels(data.labels_file)
    else:
        class_names = tuple(sorted({shape[0] for a in annotations.values() for shape in a.shapes
                                    if shape[0] and shape[1] not in NOT_OBJECTS}))
    if not class_names:
        raise DataError(f"{data.path}: no shape has a label")
    label_of = {name: label for label, name in enumerate(class_names)}

    listed = []
    for match in parts:
        listed.extend(file for file in sliced(data.splits[match["name"]], match) if file in annotations)
    found = []
    for file in listed:
        annotation = annotations[file]
        if annotation.image is None:
            problems.warn("missing image file", file, f"its image {annotation.written or '(no imagePath)'} is not "
                          "there, nor one of the file's own name, nor inside it (imageData)", "image skipped")
        else:
            found.append(file)
    taken = sum(annotations[file].embedded for file in found)
    if taken:
        logger.warning("%s: %d images only inside their LabelMe files (imageData) read from there (written once to "
                       "%s)", data.path, taken, extracted_folder())
    checked = check_images([annotations[file].image for file in found])

    records = []
    for file, image in zip(found, checked, strict=True):
        annotation = annotations[file]
        if isinstance(image, Exception):
            problems.warn("bad image file", annotation.image, str(image), "image skipped")
            continue
        objects = _objects(file, annotation, image, label_of, problems)
        if objects is None or (skip_empty and not len(objects[1])):
            continue
        boxes, labels, difficult = objects
        # (an image taken from its file's imageData is named after the file)
        name = os.path.splitext(file)[0] + os.path.splitext(annotation.image)[1] if annotation.embedded \
            else annotation.image
        records.append(ImageRecord(path=annotation.image, filename=os.path.relpath(name, data.path), boxes=boxes,
                                   labels=labels, difficult=difficult, annotation=file))
    records = one_record_per_image(records, problems)
    problems.summary(len(records))
    return records_to_source(records, class_names, problems.source, problems.counts, decode_images=decode_images)


def _labels(path) -> tuple:
    try:
        with open(path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip() and line.strip() not in LIST_MARKERS]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: the labels cannot be read ({type(error).__name__})") from None
    if not names or len(set(names)) != len(names):
        raise DataError(f"{path}: give distinct class names, one a line")
    return tuple(names)


def _objects(file, annotation: _Annotation, image, label_of, problems):
    """An annotation's shapes -> (normalised ``yxyx`` [N, 4], labels, difficult), or None for an
    image to skip (warned)."""
    # LabelMe shows (and stores in imageData) every image with its EXIF orientation applied: the points are
    # on the image as shown, whatever the orientation.
    height, width = shown_size(image)
    if annotation.size is not None and annotation.size != (float(height), float(width)):
        problems.warn("size mismatch", file, f"imageWidth x imageHeight {annotation.size[1]:g} x "
                      f"{annotation.size[0]:g}, but the image is {width} x {height} as shown", "using the image's size")
    found = []  # the shapes of one label and group_id (an object drawn in parts) are one object
    for number, (label, shape_type, points, hard, group) in enumerate(annotation.shapes):
        where = f"{file}: shapes[{number}]"
        if shape_type in NOT_OBJECTS:
            problems.warn("not an object", where, f"a {shape_type} marks no object", "passed over")
            continue
        try:
            box = _box(shape_type, points)
        except ValueError as error:
            problems.warn("malformed shape", where, str(error), "image skipped")
            return None
        if label not in label_of:
            problems.warn("unknown class", where, f"label {label!r} is not one of the classes", "object skipped")
            continue
        found.append((group, where, f"a {shape_type}", box, label, hard))
    boxes, labels, difficult = [], [], []
    for where, what, box, label, hard in merge_groups(found):
        normalised = box_in_image(box, height, width, problems, where, what)
        if normalised is None:
            continue
        boxes.append(normalised)
        labels.append(label_of[label])
        difficult.append(hard)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if image.orientation != 1:
        boxes = to_stored_frame(boxes, image.orientation)
    return boxes, np.asarray(labels, np.int64), np.asarray(difficult, np.bool_)

