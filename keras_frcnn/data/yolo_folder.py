"""A data set in the YOLO format (an Ultralytics ``data.yaml``, Darknet's ``obj.data``, or a folder
with ``classes.txt``) -> examples in the layout of :mod:`keras_frcnn.data.examples`.

The YAML names the images of each split and the classes, as Ultralytics reads it and as
Roboflow's "YOLO" exports write it::

    path: ../datasets/coco8   # the root (default: the YAML's folder); relative: to the YAML's folder
    train: images/train       # a folder of images (searched through), a .txt file listing image
    val: images/val           #   paths, or a list of these; relative to the root
    test:                     # optional
    names: {0: person, 1: bicycle}   # or a list; without names, nc: 80 gives class_0 ... class_79

Darknet's ``obj.data`` (CVAT's "YOLO 1.1" export) names the same in ``key = value`` lines:
``names = obj.names`` (a class a line), ``train = train.txt``, ``valid = valid.txt`` (the val split),
paths relative to its folder (Darknet's ``data/`` before them is taken off where needed). A folder
without either, but with ``classes.txt`` or ``obj.names`` (Label Studio's YOLO export: ``images/``,
``labels/``, ``classes.txt``), is one split ``train`` of every image in it.

Each image's labels are a ``.txt`` file at its path with the last ``/images/`` replaced by
``/labels/`` (``images/train/a.jpg`` -> ``labels/train/a.txt``; beside the image where the path has
no ``images`` folder), one object a line: ``class x_center y_center width height``, normalised to
the image. Segment and oriented-box lines (``class x1 y1 x2 y2 ...``) give the box around their
points; pose lines (with ``kpt_shape`` in the YAML) their box. An image without a label file, or
with an empty one, is a negative (Ultralytics' background images).

Coordinates are normalised to the image as shown (EXIF orientation applied: Ultralytics reads
images so), and turned onto the stored pixels TensorFlow decodes (:func:`to_stored_frame`). They
are continuous (a box's edges, no pixel numbering), so they pass to the example layout unchanged.

As Ultralytics does, an image whose label file cannot be read entirely (a malformed line, a class
beyond the names, a box whose centre or size lies more than 1 % outside [0, 1], as pixel
coordinates do) is skipped, warned and counted: training on part of its objects would teach the
others as background; boxes reaching out of the image are clipped to it. The splits are the YAML's
keys (``train``, ``val`` or ``validation``, ``test``), their parts as in TFDS (``train[:90%]``); a
data set trains on ``train`` and evaluates on ``val`` (without it, on ``test``; with neither,
``train[:90%]`` -> ``train[90%:]``).
"""

from __future__ import annotations

import errno
import math
import os
import typing

import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import as_on_disk, check_images, image_problem, path_tails, to_stored_frame
from keras_frcnn.data.problems import DataError, DataProblems, logger
from keras_frcnn.data.voc_folder import held_out_tenth, sliced, split_parts

SPLITS = ("train", "val", "test")
# The other names of the splits: Ultralytics renames "validation" to val; Darknet's obj.data has "valid"
# (CVAT writes its subsets' names as typed: "Train", "Validation").
SPLIT_NAMES = {"validation": "val", "valid": "val"}
# The files taken for images, Ultralytics' list (its IMG_FORMATS: not GIF); those TensorFlow does not
# decode (TIFF, DNG, HEIC, PFM) are named when checked.
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
# How far a box's centre and size may lie outside [0, 1] (Ultralytics allows 1 %; beyond it the
# numbers are pixels, or wrong), and how far its edges may reach out unwarned (exports' rounding).
_TOLERANCE = 0.01
_ROUNDING = 1e-3


class YoloData(typing.NamedTuple):
    path: str  # the YAML file
    root: str  # the folder the splits are relative to
    splits: dict  # split key -> list of its entries (folders or .txt files) as written
    class_names: tuple
    keypoint_values: int  # numbers after the box on a pose line (kpt_shape's product); 0 without


# The files that describe a data set given as its folder, in the order they are looked for.
DESCRIPTIONS = ("data.yaml", "data.yml", "dataset.yaml", "obj.data")
NAME_FILES = ("classes.txt", "obj.names")


def read_yolo(path) -> YoloData:
    """The data set ``path`` describes (a ``data.yaml``, an ``obj.data``, or the data set's folder);
    a ``DataError`` naming the file and field otherwise."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        for name in DESCRIPTIONS:
            if os.path.isfile(os.path.join(path, name)):
                return read_yolo(os.path.join(path, name))
        for name in NAME_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return YoloData(path, path, {"train": ["."]}, _names_file(os.path.join(path, name)), 0)
        raise DataError(f"{path}: not a YOLO data set (none of {', '.join(DESCRIPTIONS + NAME_FILES)} in it)")
    if path.endswith(".data"):
        return _read_darknet(path)
    return _read_yaml(path)


def _read_darknet(path) -> YoloData:
    """Darknet's ``obj.data``: ``key = value`` lines."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            fields = dict(line.split("=", 1) for line in f if "=" in line and not line.lstrip().startswith("#"))
    except FileNotFoundError:
        raise DataError(f"{path}: Darknet obj.data file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    fields = {key.strip().lower(): value.strip() for key, value in fields.items()}
    root = os.path.dirname(path)
    splits = {SPLIT_NAMES.get(key, key): [value] for key, value in fields.items()
              if SPLIT_NAMES.get(key, key) in SPLITS and value}
    for key in ("names", "train"):
        if not (fields if key == "names" else splits).get(key):
            raise DataError(f"{path}: {key}: missing (an obj.data names its names file and train list)")
    names = _names_file(_existing(root, fields["names"]) or os.path.join(root, fields["names"]))
    if fields.get("classes", "").isascii() and fields.get("classes", "").isdigit() \
            and int(fields["classes"]) != len(names):
        raise DataError(f"{path}: classes = {fields['classes']}, but {fields['names']} names {len(names)}")
    return YoloData(path, root, splits, names, 0)


def _names_file(path) -> tuple:
    """Class names a line (``obj.names``, ``classes.txt``)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        hint = ": save it as UTF-8" if isinstance(error, UnicodeDecodeError) else ""
        raise DataError(f"{path}: the class names cannot be read ({type(error).__name__}{hint})") from None
    return _distinct_names(path, names)


def _existing(root, entry) -> typing.Optional[str]:
    """``entry`` in ``root`` (its folders parted by ``/`` or, written on Windows, ``\\``), or, where
    that is not there, without a first ``../`` or ``data/`` (Roboflow's ``../train/images`` written
    from a level up, as Ultralytics reads it; Darknet's ``data/obj_train_data/a.jpg``)."""
    portable = entry.replace("\\", "/")
    first, _, after = portable.partition("/")
    for candidate in (entry, portable, *([after] if first in ("..", "data") and after else [])):
        path = os.path.normpath(os.path.join(root, candidate))
        if os.path.exists(path):
            return path
    return None


def _read_yaml(yaml_path) -> YoloData:
    import yaml

    try:
        with open(yaml_path, encoding="utf-8-sig") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise DataError(f"{yaml_path}: YOLO data YAML file not found") from None
    except IsADirectoryError:
        raise DataError(f"{yaml_path}: a folder; give the data set's YAML file (data.yaml)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataError(f"{yaml_path}: malformed YAML ({' '.join(str(error).split())})") from None
    except RecursionError:
        raise DataError(f"{yaml_path}: malformed YAML (nested too deeply)") from None
    if not isinstance(data, dict) or "train" not in data:
        raise DataError(f"{yaml_path}: not a YOLO data YAML (needs 'train' and 'names', as Ultralytics' data.yaml)")
    splits = _split_entries(yaml_path, data)
    return YoloData(yaml_path, _root(yaml_path, data.get("path"), splits["train"][0]), splits,
                    _class_names(yaml_path, data), _keypoint_values(yaml_path, data.get("kpt_shape")))


def _root(yaml_path, path, train) -> str:
    """The folder the splits are relative to: ``path`` (relative: to the YAML's folder, else to the
    working directory, or its ``datasets/``, as Ultralytics' own YAMLs name ``coco8`` or
    ``../datasets/coco8`` from where it runs), or the YAML's folder. A ``path`` of another machine
    (``/content/datasets/x`` of a notebook, the data set since copied) is passed over, warned,
    where the YAML's folder holds the ``train`` entry."""
    here = os.path.dirname(yaml_path)
    if path in (None, ""):
        return here
    candidates = [os.path.join(here, str(path)), os.path.abspath(str(path)),
                  os.path.abspath(os.path.join("datasets", str(path)))]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    if _existing(here, train):
        logger.warning("%s: path: %s is not a folder here; the YAML's own folder holds train: %s and is used",
                       yaml_path, path, train)
        return here
    raise DataError(f"{yaml_path}: path: {path} is not a folder (looked at {', '.join(candidates)})")


def _split_entries(yaml_path, data) -> dict:
    splits = {}
    for key, value in data.items():
        key = SPLIT_NAMES.get(key, key)
        if key not in SPLITS or value in (None, "", []):
            continue
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(entry, str) and entry for entry in entries):
            raise DataError(f"{yaml_path}: {key}: {value!r} is not a folder, a .txt file or a list of these")
        splits[key] = entries
    if "train" not in splits:
        raise DataError(f"{yaml_path}: train: no images named")
    return splits


def _shown(value, limit=60) -> str:
    text = repr(value) if isinstance(value, (str, bool, int, float, type(None))) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _class_names(yaml_path, data) -> tuple:
    names, count = data.get("names"), data.get("nc")
    if names is None and isinstance(count, int) and count > 0:
        return tuple(f"class_{i}" for i in range(count))  # Ultralytics' names for an unnamed nc
    if isinstance(names, dict):
        names = {int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key: name
                 for key, name in names.items()}
        if sorted(names, key=str) != sorted(range(len(names)), key=str):
            raise DataError(f"{yaml_path}: names: the keys must be the class ids 0 .. {len(names) - 1}, "
                            f"got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{yaml_path}: names: give the class names, a list or {{0: name, ...}} (got {names!r})")
    for i, name in enumerate(names):  # YAML reads yes / no / null / 1.0 as other types
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise DataError(f"{yaml_path}: names[{i}]: {_shown(name)} is not a class name (YAML read it as "
                            f"{type(name).__name__}: quote it)")
    names = tuple(str(name).strip() for name in names)
    if not all(names):
        raise DataError(f"{yaml_path}: names: an empty class name")
    if isinstance(count, int) and count != len(names):
        raise DataError(f"{yaml_path}: nc: {count}, but names has {len(names)}")
    return _distinct_names(f"{yaml_path}: names", names)


def _distinct_names(where, names) -> tuple:
    if not names:
        raise DataError(f"{where}: no class names")
    if len(set(names)) != len(names):  # a model's classes are told apart by name (evaluation, export)
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{where}: {twice} named twice: give the classes distinct names")
    return tuple(names)


def _keypoint_values(yaml_path, kpt_shape) -> int:
    if kpt_shape is None:
        return 0
    if not (isinstance(kpt_shape, list) and len(kpt_shape) == 2
            and all(isinstance(n, int) and n > 0 for n in kpt_shape)):
        raise DataError(f"{yaml_path}: kpt_shape: {kpt_shape!r} is not [keypoints, 2 or 3]")
    return kpt_shape[0] * kpt_shape[1]


def default_splits(yaml_path) -> tuple:
    """The data set's own (training, evaluation) splits: ``train`` -> ``val``, or as Ultralytics
    validates without ``val``, ``test``; with neither, ``train[:90%]`` -> ``train[90%:]``
    (:func:`~keras_frcnn.data.voc_folder.held_out_tenth`)."""
    data = read_yolo(yaml_path)
    for held_out in ("val", "test"):
        if held_out in data.splits:
            return "train", held_out
    return held_out_tenth("train", len(_split_images(data, "train")))


def load_yolo(
    yaml_path,
    split: str = "train",
    skip_empty: bool = False,
    decode_images: bool = True,
    strict: bool = False,
) -> DetectionSource:
    """The images of ``split`` (``"train"``, ``"val"``, ``"train+val"``, ``"train[:90%]"`` ...) of the
    data set ``yaml_path`` describes (a ``data.yaml``, an ``obj.data`` or a folder; see
    :func:`read_yolo`), as a :class:`DetectionSource`.

    skip_empty: leave out images without objects (by default they are kept, as negatives).
    strict: raise ``DataError`` on the first problem instead of warning and skipping.
    """
    data = read_yolo(yaml_path)
    problems = DataProblems(f"YOLO {os.fspath(yaml_path)} {split}", strict=strict)
    paths = []
    for match in split_parts(split, data.splits, data.path):
        paths.extend(sliced(_split_images(data, match["name"]), match))

    checked = check_images(paths)
    records, labelled = [], 0
    for image_path, image in zip(paths, checked, strict=True):
        if isinstance(image, Exception):
            problems.warn(image_problem(image_path), image_path, str(image), "image skipped")
            continue
        boxes, labels, found = _read_labels(label_file(image_path), data, problems)
        if boxes is None:
            continue
        labelled += found
        if skip_empty and not len(labels):
            continue
        if image.orientation != 1:
            boxes = to_stored_frame(boxes, image.orientation)
        records.append(ImageRecord(
            path=image_path,
            filename=os.path.relpath(image_path, data.root),
            boxes=boxes,
            labels=labels,
            difficult=np.zeros(len(labels), np.bool_),
        ))
    if records and not labelled:
        logger.warning("%s: no image has a label file (%s for %s): every image is a negative", problems.source,
                       label_file(paths[0]), paths[0])
    records = one_record_per_image(records, problems)
    problems.summary(len(records))
    return records_to_source(records, data.class_names, problems.source, problems.counts,
                             decode_images=decode_images)


def label_file(image_path) -> str:
    """An image's label file, as Ultralytics finds it: the last ``/images/`` of its path made
    ``/labels/``, the suffix ``.txt``."""
    head, images, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    path = f"{head}{os.sep}labels{os.sep}{tail}" if images else image_path
    return os.path.splitext(path)[0] + ".txt"


def _split_images(data: YoloData, key) -> list:
    """Every image file of split ``key``: each folder's, searched through in name order (hidden
    files and folders left out, linked folders followed, a linked split folder taken where it
    points, as Ultralytics resolves it, so its labels are found there), and each list file's, in
    its order."""
    images = []
    for entry in data.splits[key]:
        path = _existing(data.root, entry) or os.path.normpath(os.path.join(data.root, entry))
        if os.path.isdir(path):
            images.extend(sorted(_image_files(os.path.realpath(path))))
        elif os.path.isfile(path):
            images.extend(_listed_images(path, data.root))
        else:
            raise DataError(f"{data.path}: {key}: {entry} is not a folder or a .txt file of image paths "
                            f"(looked for {path})")
    return images


def _image_files(folder):
    visited = set()  # real folders: a link back up (``again -> .``) is walked once
    for parent, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in visited:
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]  # .ipynb_checkpoints, ...
        yield from (os.path.join(parent, name) for name in names
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES)


def _listed_images(list_path, root) -> list:
    """The image paths a list file names, one a line (of image suffixes): ``./`` and other relative
    paths are the list's folder's, or the root's, or either without the first folder
    (:func:`_existing`), or the working directory's; a path found nowhere is kept as the list's,
    and named missing when checked."""
    folder = os.path.dirname(list_path)
    try:
        with open(list_path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if os.path.splitext(line.strip())[1].lower() in IMAGE_SUFFIXES]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{list_path}: not a list of image paths ({type(error).__name__}: {error})") from None

    def where(name):
        if os.path.isabs(name) and os.path.exists(name):
            return name
        found = None if os.path.isabs(name) else (_existing(folder, name) or _existing(root, name)
                                                  or (os.path.abspath(name) if os.path.isfile(name) else None))
        # An absolute path of another machine (a list written where the data was made): its last folders and name.
        found = found or next((path for tail in path_tails(name) for base in (folder, root)
                               for path in [os.path.join(base, tail)] if os.path.isfile(path)), None)
        if found and path_tails(name):
            elsewhere.append((name, found))
        return found or (name if os.path.isabs(name) else os.path.normpath(os.path.join(folder, name)))

    elsewhere = []
    paths = [where(name) for name in names]
    if elsewhere:
        logger.warning("%s: %d image paths are paths of another machine (e.g. %s); found by their last folders and "
                       "name (%s)", list_path, len(elsewhere), *elsewhere[0])
    return as_on_disk(paths)[0]  # (a list written on Windows: IMG_1.jpg for IMG_1.JPG)


def _read_labels(path, data: YoloData, problems):
    """A label file -> (normalised ``yxyx`` float32 ``[N, 4]``, int64 labels ``[N]``, whether the file
    is there); ``(None, None, True)`` for an image to skip (warned). No file: no objects."""
    try:
        if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block, a folder fail
            raise OSError(errno.EINVAL, "not a regular file")
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.split() for line in f]
    except FileNotFoundError:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), False
    except (OSError, UnicodeDecodeError) as error:
        problems.warn("unreadable label file", path, f"cannot be read ({type(error).__name__}: {error})",
                      "image skipped")
        return None, None, True
    boxes, labels, seen = [], [], set()
    for number, values in enumerate(lines, 1):
        if not values:
            continue
        try:
            box, label = _object(values, data)
        except ValueError as error:
            problems.warn("malformed label file", path, f"line {number}: {error}", "image skipped")
            return None, None, True
        key = (label, *box)
        if key in seen:
            problems.warn("duplicate label", path, f"line {number}: the same object as an earlier line",
                          "kept once")
            continue
        seen.add(key)
        xmin, ymin, xmax, ymax = clipped = tuple(min(max(c, 0.0), 1.0) for c in box)
        if max(abs(a - b) for a, b in zip(box, clipped)) > _ROUNDING:
            problems.warn("box clipped", path, f"line {number}: the box reaches outside the image "
                          f"(x {box[0]:.4f} .. {box[2]:.4f}, y {box[1]:.4f} .. {box[3]:.4f})", "clipped to it")
        if xmax <= xmin or ymax <= ymin:
            problems.warn("degenerate box", path, f"line {number}: a box of no width or height", "object skipped")
            continue
        boxes.append((ymin, xmin, ymax, xmax))
        labels.append(label)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), True


def _object(values, data: YoloData):
    """One label line's box ``(xmin, ymin, xmax, ymax)`` (normalised, unclipped) and class."""
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        raise ValueError(f"not numbers: {' '.join(values)[:80]!r}") from None
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"a number that is not finite: {' '.join(values)[:80]!r}")
    label = numbers[0]
    if label != int(label) or not 0 <= label < len(data.class_names):
        raise ValueError(f"class {values[0]} is not one of the {len(data.class_names)} class ids 0 .. "
                         f"{len(data.class_names) - 1} of names")
    coordinates = numbers[1:]
    if data.keypoint_values and len(coordinates) == 4 + data.keypoint_values:
        coordinates = coordinates[:4]  # a pose line: its box
    if len(coordinates) == 4:
        x, y, width, height = coordinates
    elif len(coordinates) >= 6 and len(coordinates) % 2 == 0:  # a segment or an oriented box: its points
        xs, ys = coordinates[0::2], coordinates[1::2]
        x, y, width, height = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    else:
        raise ValueError(f"{len(values)} numbers: a box line has 5 (class x_center y_center width height), "
                         "a segment line an odd number >= 7")
    if width < 0 or height < 0:
        raise ValueError(f"a negative width or height ({' '.join(values[1:])[:60]}): YOLO labels are "
                         "x_center y_center width height")
    if any(c < -_TOLERANCE or c > 1 + _TOLERANCE for c in (x, y, width, height)):
        raise ValueError(f"coordinates outside [0, 1] ({' '.join(values[1:])[:60]}): YOLO labels are "
                         "normalised to the image's width and height, not pixels")
    return (x - width / 2, y - height / 2, x + width / 2, y + height / 2), int(label)
