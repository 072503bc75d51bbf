"""A COCO instances JSON file and its image folder -> examples in the layout of
:mod:`keras_frcnn.data.examples`.

- Categories: COCO's ids (1..90 with gaps for COCO itself) become contiguous 0-based labels in
  increasing id order; ``class_names[label]`` keeps each category's name.
- Boxes: COCO's ``[x, y, width, height]`` (0-based, continuous pixels) -> normalised
  ``[y / H, x / W, (y + height) / H, (x + width) / W]``, the arithmetic of TFDS's ``coco`` builder
  (which divides by the JSON's image size; here the image file's own size is used, and a JSON size
  that disagrees is warned about).
- ``iscrowd`` -> ``is_difficult``: crowd regions are never trained as positives, and evaluation
  treats them as VOC treats difficult objects (COCO AP: as crowd regions).
- ``area`` -> ``objects/area``: COCO AP's small / medium / large bins use it, as the official
  evaluation does (-1 where an annotation has none: the box's area then).
- LVIS files (COCO's format; image entries with a ``coco_url`` and no ``file_name``) read the
  same way: each image is the URL's file, in the image folder or its ``train2017/`` / ``val2017/``.
  Evaluation stays COCO's (pycocotools), not LVIS's federated one (``neg_category_ids`` and
  ``not_exhaustive_category_ids`` are not read).
- Images are in increasing image id order (as TFDS's builder writes them); ``image/id`` keeps the
  COCO id for writing results back in COCO's format.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import typing

import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import (annotated_as_shown, as_on_disk, check_images, exif_undecided, frame_undecided,
                                          image_problem, path_tails, shown_size, to_stored_frame)
from keras_frcnn.data.problems import DataError, DataProblems, logger


def load_coco_json(
    json_path,
    image_dir,
    skip_empty: bool = False,
    decode_images: bool = True,
    strict: bool = False,
) -> DetectionSource:
    """COCO instances ``json_path`` with images in ``image_dir`` as a :class:`DetectionSource`.

    image_dir: the folder of the images, or several folders to choose from: the first that holds
      any of the JSON's first image files; the JSON's own folder (Roboflow's exports keep
      ``train/_annotations.coco.json`` beside its images) and COCO's (``train2017/`` for
      ``annotations/instances_train2017.json``; see :func:`_folders_by_layout`) are tried after
      them, or alone for ``None``.

    skip_empty: leave out images without annotations (by default they are kept, as negatives).
    decode_images: ``image`` as uint8 ``[H, W, 3]`` (True) or the encoded file bytes (False).
    strict: raise ``DataError`` on the first problem instead of warning and skipping.

    A file that is not JSON, or lacks the ``images`` / ``categories`` lists, is a ``DataError``
    naming it. Warned, counted and skipped: annotations with an unknown image or category id,
    malformed or degenerate boxes (width or height <= 0), missing or corrupt image files; boxes
    reaching outside the image are clipped (warned).
    """
    json_path = os.fspath(json_path)
    try:
        with open(json_path, encoding="utf-8-sig") as f:  # -sig: Windows tools start files with a BOM
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{json_path}: COCO JSON file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{json_path}: malformed JSON ({error})") from None
    except RecursionError:
        raise DataError(f"{json_path}: malformed JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise DataError(f"{json_path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    if not isinstance(data.get("annotations") or [], list):
        raise DataError(f"{json_path}: 'annotations' is {reprlib.repr(data['annotations'])}, not a list")
    problems = DataProblems(f"COCO {json_path}", strict=strict)

    try:
        categories = sorted(((_whole(c["id"]), str(c["name"])) for c in data["categories"]))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{json_path}: malformed category ({error!r})") from None
    ids = [category_id for category_id, _ in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{json_path}: duplicate category ids")
    categories = _without_group_categories(json_path, data, categories)
    ids = [category_id for category_id, _ in categories]
    label_of = {category_id: label for label, category_id in enumerate(ids)}
    class_names = tuple(name for _, name in categories)
    named = {}
    for category_id, name in categories:  # a model's classes are told apart by name (evaluation, export)
        if name in named:
            raise DataError(f"{json_path}: categories {named[name]} and {category_id} are both named {name!r}: "
                            "give them distinct names, or merge them into one category")
        named[name] = category_id

    image_dir = _images_folder(json_path, image_dir, data["images"])
    images = {}
    for number, image in enumerate(data["images"]):
        try:
            image_id = _whole(image["id"])
            image["file_name"] = _file_name(image, image_dir)
        except (KeyError, TypeError, ValueError) as error:
            problems.warn("malformed image entry", json_path, f"images[{number}] has no usable id / file_name "
                          f"(or coco_url): {error}", "skipped")
            continue
        if image_id in images:
            problems.warn("malformed image entry", json_path, f"duplicate image id {image_id}", "skipped")
            continue
        images[image_id] = image
    federated = sum(bool(image.get("neg_category_ids") or image.get("not_exhaustive_category_ids"))
                    for image in images.values())
    if federated:  # (the evaluation, not the training: an unlisted category is background to both)
        logger.warning("%s: %d images list LVIS's neg_category_ids / not_exhaustive_category_ids, which are not "
                       "read: evaluation is COCO's (a detection of a category an image neither has nor rules out "
                       "counts as a false positive, where LVIS's own evaluation, the lvis package, ignores it)",
                       json_path, federated)
    annotations = {image_id: [] for image_id in images}
    for number, annotation in enumerate(data.get("annotations") or []):
        try:
            image_id = _whole(annotation["image_id"])
        except (KeyError, TypeError, ValueError):
            problems.warn("malformed annotation", json_path, f"annotations[{number}] has no image_id",
                          "skipped")
            continue
        if image_id not in annotations:
            problems.warn("unknown image id", json_path,
                          f"annotations[{number}] refers to image id {image_id}, not in 'images'", "skipped")
            continue
        annotations[image_id].append((number, annotation))

    order = sorted(images)
    paths, moved = as_on_disk([os.path.join(image_dir, images[i]["file_name"]) for i in order])
    elsewhere = []  # absolute file_name values of another machine, found here by their last folders and name
    for n, (path, image_id) in enumerate(zip(paths, order)):
        if not os.path.exists(path):
            found = next((candidate for tail in path_tails(images[image_id]["file_name"])
                          for candidate in [os.path.join(image_dir, tail)] if os.path.isfile(candidate)), None)
            if found:
                paths[n] = found
                elsewhere.append((images[image_id]["file_name"], found))
    if elsewhere:
        logger.warning("%s: %d file_name values are paths of another machine (e.g. %s); found under %s by their "
                       "last folders and name (%s)", json_path, len(elsewhere), elsewhere[0][0], image_dir,
                       elsewhere[0][1])
    if moved:
        logger.warning("%s: %d file_name values name their image as written on Windows or macOS (folders "
                       "parted by \\ or the name in other letter case; e.g. %s is on disk): read as on disk",
                       json_path, len(moved), moved[0])
    checked = check_images(paths)

    records = []
    for image_id, path, size in zip(order, paths, checked, strict=True):
        if isinstance(size, Exception):
            problems.warn(image_problem(path), path, str(size), "image skipped")
            continue
        info = images[image_id]
        stated = tuple(_stated_side(info.get(key)) for key in ("height", "width"))
        as_shown = annotated_as_shown(size, stated)
        if as_shown:
            problems.warn("EXIF orientation", json_path,
                          f"image id {image_id} ({info['file_name']}): JSON's {stated[1]} x {stated[0]} (w x h) "
                          f"is the image as shown (EXIF orientation {size.orientation}; stored {size.width} x "
                          f"{size.height})", "boxes turned onto the stored pixels")
        elif stated not in ((None, None), tuple(size[:2])):
            problems.warn("size mismatch", json_path,
                          f"image id {image_id} ({info['file_name']}): JSON says {info.get('width')} x "
                          f"{info.get('height')} (w x h), the file is {size.width} x {size.height}", "using the file's")
        elif frame_undecided(size, None if stated == (None, None) else stated):
            problems.warn("EXIF orientation", path, exif_undecided(size), "boxes taken as stored")
        height, width = shown_size(size) if as_shown else size[:2]
        boxes, labels, crowd, areas = [], [], [], []
        for number, annotation in annotations[image_id]:
            where = f"annotations[{number}] (image {info['file_name']})"
            try:
                category = _whole(annotation.get("category_id"))
            except (TypeError, ValueError):
                category = None
            if category not in label_of:
                problems.warn("unknown class", json_path,
                              f"{where}: unknown category_id {annotation.get('category_id')!r}", "skipped")
                continue
            box = _normalised_box(annotation.get("bbox"), height, width, json_path, where, problems)
            if box is None:
                continue
            boxes.append(box)
            labels.append(label_of[category])
            crowd.append(_flag(annotation.get("iscrowd", 0), json_path, f"{where}: iscrowd", problems))
            areas.append(_area(annotation.get("area")))
        if skip_empty and not boxes:
            continue
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        records.append(ImageRecord(
            path=path,
            filename=info["file_name"],
            image_id=image_id,
            boxes=to_stored_frame(boxes, size.orientation) if as_shown else boxes,
            labels=np.asarray(labels, np.int64),
            difficult=np.asarray(crowd, np.bool_),
            area=np.asarray(areas, np.float32),
        ))

    records = one_record_per_image(records, problems)
    problems.summary(len(records), hint=f"are the JSON's file_name values relative to {image_dir}? "
                     "(another image folder: --coco-images)"
                     if problems.counts["missing image file"] else "")
    return records_to_source(records, class_names, problems.source, problems.counts,
                             decode_images=decode_images)


def _without_group_categories(json_path, data, categories) -> list:
    """``categories`` without those that only group others: no annotation, and the
    ``supercategory`` of other categories (Roboflow's exports add one such, id 0, named after the
    project, to every JSON; as a class it would be one no image holds)."""
    used = set()
    for annotation in data.get("annotations") or []:
        try:
            used.add(_whole(annotation["category_id"]))
        except (KeyError, TypeError, ValueError):
            continue  # warned about when annotations are read
    groups = set()
    for category in data["categories"]:
        parent = category.get("supercategory") if isinstance(category, dict) else None
        if isinstance(parent, str) and parent != category.get("name"):
            groups.add(parent)
    dropped = [(category_id, name) for category_id, name in categories if category_id not in used and name in groups]
    for category_id, name in dropped:
        logger.warning("%s: category %d %r has no annotations and groups the others (their supercategory): "
                       "not a class", json_path, category_id, name)
    return [category for category in categories if category not in dropped]


def _images_folder(json_path, image_dir, entries) -> str:
    """The one of the folders ``image_dir`` names (see :func:`load_coco_json`) that holds any of
    the first image files ``entries`` name; the first folder if none does (its missing files are
    then named one by one)."""
    if isinstance(image_dir, (str, os.PathLike)):
        folders = [os.fspath(image_dir)]
    else:  # None, or folders to choose from: the JSON's own and those of COCO's layout come last
        folders = [os.fspath(folder) for folder in image_dir or () if folder is not None]
        folders += [folder for folder in _folders_by_layout(json_path) if folder not in folders]
    existing = [folder for folder in folders if os.path.isdir(folder)]
    if not existing:
        raise DataError(f"{folders[0]}: image directory not found")
    if len(existing) == 1:
        return existing[0]
    for folder in existing:
        for image in entries[:20]:
            try:
                if os.path.isfile(os.path.join(folder, _file_name(image, folder))):
                    return folder
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    return existing[0]


def _folders_by_layout(json_path) -> list:
    """The folders that may hold a JSON's images when none is given: its own (Roboflow's
    ``train/_annotations.coco.json``), and beside an ``annotations/`` folder: for
    ``annotations/instances_train2017.json`` (or ``person_keypoints_train2017.json``, any name
    ending in ``_train2017``) COCO's ``train2017/`` (or ``images/train2017/``, as
    Ultralytics and CVAT's exports lay it out), and ``images/`` (CVAT's older exports, Supervisely)."""
    own = os.path.dirname(os.path.abspath(json_path))
    if os.path.basename(own) != "annotations":
        return [own]
    stem = os.path.splitext(os.path.basename(json_path))[0]
    root = os.path.dirname(own)
    # (its split after the last underscore: instances_val2017, person_keypoints_val2017, a_b_train)
    name = stem.rsplit("_", 1)[1] if "_" in stem else ""
    split = [os.path.join(root, name), os.path.join(root, "images", name)] if name else []
    return [own, *split, os.path.join(root, "images")]


def _file_name(image, image_dir) -> str:
    """An image entry's file, relative to ``image_dir``: its ``file_name``, or for LVIS, whose
    entries have only a ``coco_url`` (``http://images.cocodataset.org/train2017/000000391895.jpg``),
    the URL's file name, in ``image_dir`` itself or in its COCO folder (``train2017/``) there."""
    if "file_name" in image:
        return str(image["file_name"])
    import urllib.parse

    parts = urllib.parse.urlsplit(str(image["coco_url"])).path.split("/")
    if not parts[-1]:
        raise ValueError("coco_url names no file")
    nested = "/".join(parts[-2:])
    return nested if not os.path.exists(os.path.join(image_dir, parts[-1])) and \
        os.path.exists(os.path.join(image_dir, nested)) else parts[-1]


def _stated_side(value):
    """An image entry's ``height`` or ``width`` as a number, also where a tool wrote it as text
    (``"260"``); None where it is missing or not a number (the file's own size is used)."""
    try:
        return _whole(value)
    except ValueError:
        return value if isinstance(value, float) else None


def _whole(value) -> int:
    """A COCO id: an integer, also as written by tools that store numbers as floats (``3.0``) or
    strings (``"3"``); ``ValueError`` for anything else (``3.5``, ``"a"``, ``true``)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an id")
    if isinstance(value, float) and value.is_integer() or isinstance(value, int) \
            or isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit():
        if not -2**63 <= int(value) < 2**63:  # (1e19 too, written as a float)
            raise ValueError(f"{value!r} is outside the 64-bit ids")
        return int(value)
    raise ValueError(f"{value!r} is not an id")


def _flag(value, path, where, problems) -> bool:
    """A 0 / 1 flag (``iscrowd``): numbers, booleans, and those written as strings ("0", "false");
    anything else is warned about and read as 0."""
    if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("0", "1", "true", "false", "0.0", "1.0"):
        return text in ("1", "true", "1.0")
    problems.warn("malformed annotation", path, f"{where} is {value!r}, not 0 or 1", "read as 0")
    return False


def _area(value) -> float:
    """An annotation's ``area`` (COCO AP's size bins), or -1 when missing or not a number."""
    try:
        area = float(value)
    except (TypeError, ValueError, OverflowError):  # (an integer of 400 digits: no float holds it)
        return -1.0
    return area if math.isfinite(area) and area >= 0 else -1.0


def _normalised_box(bbox, height, width, path, where, problems) -> typing.Optional[list]:
    """COCO ``[x, y, w, h]`` -> normalised ``[ymin, xmin, ymax, xmax]`` clipped, or ``None``."""
    try:
        if any(isinstance(v, bool) for v in bbox):  # (JSON's true / false: Python's 1 / 0)
            raise ValueError
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # (OverflowError: an integer no float holds)
        problems.warn("malformed annotation", path, f"{where}: bbox {bbox!r} is not 4 numbers", "skipped")
        return None
    if w <= 0 or h <= 0:
        problems.warn("degenerate box", path, f"{where}: degenerate bbox {bbox!r}", "skipped")
        return None
    xmin, ymin, xmax, ymax = x, y, x + w, y + h
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
               min(max(xmax, 0.0), width), min(max(ymax, 0.0), height))
    if clipped != (xmin, ymin, xmax, ymax):
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            problems.warn("box outside the image", path,
                          f"{where}: bbox {bbox!r} lies outside the {width} x {height} image", "skipped")
            return None
        problems.warn("box clipped", path,
                      f"{where}: bbox {bbox!r} reaches outside the {width} x {height} image", "clipped")
    xmin, ymin, xmax, ymax = clipped
    return [ymin / height, xmin / width, ymax / height, xmax / width]
