"""VGG Image Annotator (VIA) JSON files -> examples in the layout of :mod:`keras_frcnn.data.examples`.

VIA (robots.ox.ac.uk/~vgg/software/via) exports its regions as one JSON file per folder of images,
``via_region_data.json`` as the Keras Mask R-CNN balloon tutorial keeps them (``train/``, ``val/``
each with its file beside its images), or inside a VIA 2 project file (``_via_img_metadata``)::

    {"a.jpg12345": {"filename": "a.jpg", "size": 12345, "file_attributes": {},
                    "regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [...],
                                                      "all_points_y": [...]},
                                 "region_attributes": {"class": "balloon"}}]}}

``regions`` is a list (VIA 2) or a dict of them (VIA 1). Each region gives a box: a ``rect`` its
``x, y, width, height``, a ``polygon`` / ``polyline`` the box around its points, a ``circle`` /
``ellipse`` the box around it (an ellipse's rotation ``theta`` taken into account); a ``point`` is no
object (counted). The class is the region's attribute named ``class``, ``label``, ``name``, ``type``
or ``category`` (or its only attribute), a text or the option ticked; a region without one is of
the class ``object`` where no region has any (the balloon set's); where others have a class, a
region without one skips its image (counted). Coordinates are pixels of the
image as VIA shows it: browsers show a photo with its EXIF orientation applied (all of them since
2020, CSS's ``image-orientation: from-image``), so a turned or mirrored photo's boxes are turned
onto the stored pixels TensorFlow decodes, warned (the files state no size to confirm it).

Classes: the names found in every file of the data set, sorted. Splits: split folders (``train/``,
``val/`` or ``valid/``, ``test/``) each with one JSON file, else a folder or file is one split
``all`` (``all[:90%]`` -> ``all[90%:]``). Images in the file's order, found beside it.
"""

from __future__ import annotations

import os
import reprlib
import typing

import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import as_on_disk, check_images, image_problem, shown_size, to_stored_frame
from keras_frcnn.data.problems import DataError, DataProblems, box_in_image, ellipse_extent, finite_box, read_json
from keras_frcnn.data.splits import beside_held_out, every_split, own_splits
from keras_frcnn.data.voc_folder import sliced, split_parts

ALL = "all"
SPLIT_FOLDERS = {"train": "train", "training": "train", "trainval": "trainval", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
CLASS_ATTRIBUTES = ("class", "label", "name", "type", "category")
NO_CLASS = "object"


def read_via(path) -> dict:
    """``--via path``'s JSON files by split (see the module docstring)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        return {ALL: [path]}
    if not os.path.isdir(path):
        raise DataError(f"--via {path}: no such file or folder")
    splits = {}
    for name in sorted(os.listdir(path)):
        split, sub = SPLIT_FOLDERS.get(name.lower()), os.path.join(path, name)
        if split and os.path.isdir(sub) and _json_files(sub):
            splits.setdefault(split, []).extend(_json_files(sub))
    splits = beside_held_out(splits, lambda: _json_files(path))
    if not splits and _json_files(path):
        splits = {ALL: _json_files(path)}
    if not splits:
        raise DataError(f"--via {path}: no VIA JSON file (via_region_data.json) in it or in train/, val/, test/ "
                        "folders")
    return splits


def labelled_splits(path) -> str:
    """Every split of ``--via path`` joined (``train+val``; ``all``): what it trains on beside a first one."""
    return every_split(read_via(path))


def _json_files(folder) -> list:
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(".json") and not name.startswith(".")
                  and os.path.isfile(os.path.join(folder, name)))


def default_splits(path) -> tuple:
    """``train`` -> ``val`` (else ``test``), ``trainval`` -> ``test``; one split: ``all[:90%]`` ->
    ``all[90%:]`` (:func:`~keras_frcnn.data.splits.own_splits`)."""
    splits = read_via(path)

    def count(split):  # (a megabyte: ten images and more, not parsed twice)
        if sum(os.path.getsize(file) for file in splits[split]) >= 2 ** 20:
            return 10
        return sum(len(_entries(file)) for file in splits[split])

    return own_splits(splits, count)


def _entries(path) -> list:
    """The image entries of a VIA file, in its order (``DataError`` naming it where it is not one)."""
    try:
        data = read_json(path)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):  # a VIA 2 project file
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise DataError(f"{path}: not a VIA export (a JSON object of image entries with 'filename' and 'regions')")
    return list(data.values())


def _class_of(attributes) -> typing.Optional[str]:
    """A region's class from its attributes: the text (or ticked option) of the first of
    :data:`CLASS_ATTRIBUTES` it has, or of its only attribute; ``object`` without attributes."""
    if not isinstance(attributes, dict) or not attributes:
        return NO_CLASS
    key = next((k for k in CLASS_ATTRIBUTES if k in attributes),
               next(iter(attributes)) if len(attributes) == 1 else None)
    if key is None:
        return None
    value = attributes[key]
    if isinstance(value, dict):  # a checkbox / radio attribute: the option ticked
        ticked = [option for option, on in value.items() if on]
        value = ticked[0] if len(ticked) == 1 else ""
    if value is None or isinstance(value, (dict, list)):  # null, or not a name
        return None
    value = str(value).strip()
    return value or None


def _box(shape) -> tuple:
    """(xmin, ymin, xmax, ymax) of a VIA shape (``ValueError`` saying what is wrong)."""
    name = shape.get("name")
    try:
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            box = (x, y, x + w, y + h)
        elif name in ("polygon", "polyline"):
            xs = np.asarray(shape["all_points_x"], np.float64)
            ys = np.asarray(shape["all_points_y"], np.float64)
            if not len(xs) or xs.shape != ys.shape:
                raise ValueError(f"a {name} of {len(xs)} x and {len(ys)} y points")
            box = (xs.min(), ys.min(), xs.max(), ys.max())
        elif name == "circle":
            cx, cy, r = (float(shape[k]) for k in ("cx", "cy", "r"))
            box = (cx - r, cy - r, cx + r, cy + r)
        elif name == "ellipse":
            box = ellipse_extent(*(float(shape[k]) for k in ("cx", "cy", "rx", "ry")), float(shape.get("theta", 0.0)))
        else:
            raise ValueError(f"shape {name!r} is not a rect, polygon, polyline, circle or ellipse")
    except (KeyError, TypeError) as error:
        raise ValueError(f"a {name} without its {error}") from None
    except OverflowError:  # (an integer of 400 digits: no float holds it)
        raise ValueError(f"a {name} with a coordinate beyond any float") from None
    return finite_box(box, f"a {name}")


def load_via(path, split: str = "all", skip_empty: bool = False, decode_images: bool = True,
             strict: bool = False) -> DetectionSource:
    """The images of ``split`` of ``--via path`` as a :class:`DetectionSource` with random access.
    A region that cannot be read skips its image (part of its objects would teach the others as
    background); a point is no object; a region without a class of its attributes, a missing or
    corrupt image: named, counted, skipped."""
    splits = read_via(path)
    where = os.path.abspath(os.fspath(path))
    problems = DataProblems(f"VIA {where} {split}", strict=strict)
    entries = {file: _entries(file) for files in splits.values() for file in files}
    names, bare = set(), False  # bare: a region without attributes (the class "object" only where none has any)
    for file_entries in entries.values():
        for entry in file_entries:
            for region in _regions(entry) or []:
                shape = region.get("shape_attributes") if isinstance(region, dict) else None
                if isinstance(region, dict) and (shape if isinstance(shape, dict) else {}).get("name") != "point":
                    attributes = region.get("region_attributes")
                    if isinstance(attributes, dict) and attributes:
                        names.add(_class_of(attributes))
                    else:
                        bare = True
    class_names = tuple(sorted(name for name in names if name)) or ((NO_CLASS,) if bare else ())
    if not class_names:
        raise DataError(f"{where}: no region with a class")
    label_of = {name: label for label, name in enumerate(class_names)}

    listed = []  # (file, entry number, entry)
    for match in split_parts(split, splits, where):
        part = [(file, number, entry) for file in splits[match["name"]] for number, entry in enumerate(entries[file])]
        listed.extend(sliced(part, match))
    paths = as_on_disk([os.path.join(os.path.dirname(file), str(entry["filename"])) for file, _, entry in listed])[0]
    checked = check_images(paths)
    records = []
    for (file, number, entry), image_path, image in zip(listed, paths, checked, strict=True):
        here = f"{file}: {entry['filename']}"
        if isinstance(image, Exception):
            problems.warn(image_problem(image_path), image_path, str(image), "image skipped")
            continue
        if image.orientation != 1:
            problems.warn("EXIF orientation", image_path, f"EXIF orientation {image.orientation}: read as drawn on the "
                          "photo as the browser showed it (turned, as browsers show photos since 2020)",
                          "boxes turned onto the stored pixels")
        objects = _objects(here, entry, image, label_of, problems)
        if objects is None or (skip_empty and not len(objects[1])):
            continue
        records.append(ImageRecord(path=image_path, filename=str(entry["filename"]), boxes=objects[0],
                                   labels=objects[1], difficult=np.zeros(len(objects[1]), np.bool_)))
    records = one_record_per_image(records, problems)
    problems.summary(len(records))
    return records_to_source(records, class_names, problems.source, problems.counts, decode_images=decode_images)


def _regions(entry) -> typing.Optional[list]:
    """An entry's regions, a list (VIA 2) or a dict (VIA 1) of them; None where they are neither."""
    regions = entry.get("regions") or []
    if isinstance(regions, dict):
        return list(regions.values())
    return regions if isinstance(regions, list) else None


def _objects(here, entry, image, label_of, problems):
    regions = _regions(entry)
    if regions is None:
        problems.warn("malformed region", here, f"regions is {reprlib.repr(entry['regions'])}, not a list",
                      "image skipped")
        return None
    height, width = shown_size(image)  # (a browser shows a photo with its EXIF orientation applied)
    boxes, labels = [], []
    for number, region in enumerate(regions):
        where = f"{here}: regions[{number}]"
        shape = region.get("shape_attributes") if isinstance(region, dict) else None
        if not isinstance(shape, dict):
            problems.warn("malformed region", where, "no shape_attributes", "image skipped")
            return None
        if shape.get("name") == "point":
            problems.warn("not an object", where, "a point marks no object", "passed over")
            continue
        try:
            xmin, ymin, xmax, ymax = _box(shape)
        except ValueError as error:
            problems.warn("malformed region", where, str(error), "image skipped")
            return None
        name = _class_of(region.get("region_attributes"))
        if name not in label_of:  # (None; or "object" of a region without attributes where others have a class)
            problems.warn("no class", where, f"region_attributes {region.get('region_attributes')} name no class "
                          f"(an attribute {' / '.join(CLASS_ATTRIBUTES)})", "image skipped")
            return None
        normalised = box_in_image((xmin, ymin, xmax, ymax), height, width, problems, where, f"a {shape['name']}")
        if normalised is None:
            continue
        boxes.append(normalised)
        labels.append(label_of[name])
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return to_stored_frame(boxes, image.orientation) if image.orientation != 1 else boxes, np.asarray(labels, np.int64)
