"""Detection CSV files -> examples in the layout of :mod:`keras_frcnn.data.examples`.

One object a row. Two layouts, told apart by the first row:

* With a header row: the TF Object Detection API tutorials' ``xml_to_csv.py`` files (read by their
  ``generate_tfrecord.py``), Roboflow's "Tensorflow Object Detection CSV" export, Kaggle's sets::

      filename,width,height,class,xmin,ymin,xmax,ymax
      raccoon-1.jpg,650,417,raccoon,81,88,522,408

  Columns are found by name (any case; spaces, ``_`` and ``-`` ignored; other columns passed over):
  the image (:data:`IMAGE_COLUMNS`), the class (:data:`CLASS_COLUMNS`), the box's corners
  (:data:`BOX_COLUMNS`: ``xmin ymin xmax ymax``, ``x1 y1 x2 y2``, ``left top right bottom``), and
  where present the image's size (``width``, ``height``) and a difficult / crowd / group flag
  (``difficult``, ``iscrowd``, ``IsGroupOf``: never a positive, as VOC's difficult objects).
  A row with an empty class and box is an image without objects (a negative).

* Without a header: keras-retinanet's CSV, Roboflow's "RetinaNet Keras CSV" export and the
  "simple" text format of the earlier keras-frcnn (``train_frcnn.py -o simple``)::

      path/to/image.jpg,x1,y1,x2,y2,class_name
      path/to/negative.jpg,,,,,

Coordinates are pixels of the image file as stored (continuous: a box's edges), or, where every
coordinate of a file lies in [0, 1], normalised ones (Open Images' ``XMin,XMax,YMin,YMax``). Where
the rows give the image's size and it is the image turned by its EXIF orientation (5-8), the boxes
were drawn on the image as shown and are turned onto the stored pixels, as for VOC folders; a size
that disagrees otherwise is warned and the file's size used. The delimiter is found from the first
row (``,``, ``;`` as spreadsheets write in many locales, with decimal commas then read, or a tab); a
byte-order mark is ignored.

An image path is looked up, in order, relative to the ``images`` folder given (``--csv-images``),
the CSV file's folder (keras-retinanet's rule), its ``images/`` folder, the folder above and its
``images/`` (the TF OD API tutorials' ``data/train_labels.csv`` beside ``images/``), and the working
directory (the earlier keras-frcnn's rule); absolute paths as they are, or, where they are not on
this machine (``C:\\Users\\...``, a notebook's ``/content/drive/...``), by their last folders and name
under those folders (warned); folders parted by ``\\`` (written on Windows) and names in another
letter case are found; a name without a suffix (Open Images' ``ImageID``) is the image file of that
name with an image suffix.

Classes: a classes file (``--csv-classes``, or ``_classes.csv`` / ``classes.csv`` beside the
annotations: keras-retinanet's ``name,id`` rows, ids 0 .. N-1 in any order, or a name a line) sets
them and their order; an object of another class is skipped, warned. Without one the classes are
the names in every CSV file of the data set (all splits), sorted (class ids as numbers: a
``class_id`` column), so every split has the same labels.

Splits: a CSV file is one split, ``all`` (trained on ``all[:90%]``, evaluated on ``all[90%:]``); a
folder holds split folders (Roboflow's ``train/``, ``valid/``, ``test/``, each with its
``_annotations.csv``) or CSV files named by split (``train_labels.csv``, ``test_labels.csv``;
``train.csv``, ``val.csv``); trained on ``train``, evaluated on ``val`` (else ``test``). Parts as in
TFDS (``train[:90%]``). Images are in the order of their first row.

Faults are named by file and row and counted: a row that cannot be read (too few fields, a box
that is not numbers, a class without a box) skips its image, as training on part of an image's
objects teaches the others as background; a degenerate box or one outside the image skips its
object; a box reaching out is clipped; a row repeated is kept once; a missing or corrupt image is
skipped.
"""

from __future__ import annotations

import collections
import csv
import itertools
import math
import os
import re
import typing

import numpy as np

from keras_frcnn.data.examples import DetectionSource, ImageRecord, one_record_per_image, records_to_source
from keras_frcnn.data.image_files import (IMAGE_SUFFIXES, annotated_as_shown, check_images, exif_undecided, folded,
                                          frame_undecided, path_tails, shown_size, to_stored_frame)
from keras_frcnn.data.problems import DataError, DataProblems, box_in_image, logger
from keras_frcnn.data.splits import beside_held_out, named_splits, own_splits
from keras_frcnn.data.voc_folder import sliced, split_parts

ALL = "all"
# Words of a CSV file's or folder's name -> the split they name.
SPLIT_WORDS = {"train": "train", "trainval": "trainval", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "eval": "val", "test": "test", "testing": "test"}
# Header names (lower case, without " ", "_" and "-") of each column read.
IMAGE_COLUMNS = ("filename", "file", "filepath", "path", "image", "imagename", "imagepath", "imagefile", "img",
                 "imageid", "imagefilename", "frame")
CLASS_COLUMNS = ("class", "classname", "label", "labelname", "category", "categoryname", "name", "classtitle",
                 "classid", "labelid", "categoryid")  # (ids: the classes are their numbers, in order)
BOX_COLUMNS = (("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"), ("left", "top", "right", "bottom"),
               ("bboxxmin", "bboxymin", "bboxxmax", "bboxymax"))
SIZE_COLUMNS = (("width", "height"), ("imagewidth", "imageheight"), ("imgwidth", "imgheight"))
DIFFICULT_COLUMNS = ("difficult", "isdifficult", "iscrowd", "crowd", "isgroupof")
CLASSES_FILES = ("_classes.csv", "classes.csv")
# How far normalised coordinates may lie outside [0, 1] (exports' rounding), and pixels outside the image
# unwarned.
_TOLERANCE = 0.01
_ROUNDING = 1e-3


class CsvData(typing.NamedTuple):
    """What ``--csv`` names: its CSV files by split, and its classes file (or None)."""

    path: str
    splits: dict  # split name -> tuple of CSV files
    classes_file: typing.Optional[str]


class Table(typing.NamedTuple):
    """One CSV file read: its rows in file order (see :func:`_entry`), and whether its coordinates
    are normalised (every one in [0, 1])."""

    path: str
    rows: list
    normalised: bool


# --- what --csv names ------------------------------------------------------------------------------


def read_csv_data(path, classes_file=None) -> CsvData:
    """The CSV files and classes file of ``path`` (see the module docstring); ``classes_file``
    overrides the one found."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        splits = beside_held_out(_split_folders(path), lambda: tuple(_csv_files(path))) or _named_splits(path)
    elif os.path.isfile(path):
        splits = {ALL: (path,)}
    else:
        raise DataError(f"--csv {path}: no such file or folder")
    if classes_file is None:
        beside = {os.path.join(os.path.dirname(file), name) for files in splits.values() for file in files
                  for name in CLASSES_FILES}
        found = sorted(file for file in beside if os.path.isfile(file))
        classes_file = found[0] if found else None
    return CsvData(path, splits, os.path.abspath(os.fspath(classes_file)) if classes_file else None)


def _csv_files(folder) -> list:
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(".csv") and not name.startswith(".") and name.lower() not in CLASSES_FILES
                  and os.path.isfile(os.path.join(folder, name)))


def _split_of(name) -> typing.Optional[str]:
    """The split the words of a file or folder name say (``train_labels.csv`` -> ``train``)."""
    name = name.lower()
    words = re.split(r"[^a-z0-9]+", name[:-len(".csv")] if name.endswith(".csv") else name)
    found = {SPLIT_WORDS[word] for word in words if word in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _split_folders(folder) -> dict:
    """Roboflow's layout: split folders (``train``, ``valid``, ``test``) each with its CSV file."""
    splits = {}
    for name in sorted(os.listdir(folder)):
        split, sub = SPLIT_WORDS.get(name.lower()), os.path.join(folder, name)
        if split and os.path.isdir(sub) and _csv_files(sub):
            splits.setdefault(split, []).extend(_csv_files(sub))
    return {name: tuple(files) for name, files in splits.items()}


def _named_splits(folder) -> dict:
    files = _csv_files(folder)
    if not files:
        raise DataError(f"--csv {folder}: no CSV files (*.csv) in it or in train/, valid/, test/ folders")
    return named_splits(files, _split_of)


def default_splits(path) -> tuple:
    """The (training, evaluation) splits of ``--csv path`` (:func:`~keras_frcnn.data.splits.own_splits`):
    ``train`` -> ``val``, else ``test``; ``trainval`` -> ``test``; else ``train[:90%]`` ->
    ``train[90%:]`` (a single split ``all`` alike; under ten images the last one)."""
    splits = read_csv_data(path).splits

    def count(split):  # (a megabyte of rows: ten images and more, not parsed twice: loading reads them)
        if sum(os.path.getsize(file) for file in splits[split]) >= 2 ** 20:
            return 10
        return len({entry[1] for file in splits[split] for entry in read_table(file).rows if entry[1]})

    return own_splits(splits, count)


# --- reading a CSV file -----------------------------------------------------------------------------


def _key(name) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def _number(text, decimal_comma=False) -> bool:
    try:
        float(text.replace(",", ".") if decimal_comma else text)
        return True
    except ValueError:
        return False


def _delimiter(lines) -> str:
    """The delimiter of a CSV file from its first ``lines``: of ",", ";" and tab, the one that splits
    most of them into the most fields (a decimal comma, or a comma or ";" in a class name, splits some
    lines, the delimiter every line alike; ties: the comma). Fields are read as CSV writers write
    them (quotes doubled in a quoted field, spaces after a delimiter skipped): ``csv.Sniffer``
    guessed those from the lines it saw (a first line without a doubled quote turned doubling off
    for the whole file), and took the comma of a decimal comma or a class name for the delimiter."""
    def fields(delimiter):  # the most common number of fields a line
        counts = collections.Counter(len(row) for row in csv.reader(lines, csv.excel, delimiter=delimiter,
                                                                     skipinitialspace=True))
        return max(counts, key=lambda n: (counts[n], n), default=0)

    return max((",", ";", "\t"), key=fields)


def read_table(path) -> Table:
    """Read one CSV file's rows, streamed (``DataError`` naming the file where it is not a detection
    CSV); row numbers are the file's line numbers."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            delimiter = _delimiter(list(itertools.islice((line for line in f if line.strip()), 20)))
            f.seek(0)
            reader = csv.reader(f, csv.excel, delimiter=delimiter, skipinitialspace=True)
            columns, header, table, low, high = None, None, [], math.inf, -math.inf
            decimal_comma = delimiter == ";"  # (12,5: spreadsheets in many locales)
            for row in reader:
                if not any(field.strip() for field in row) or row == header:  # (files joined: headers repeated)
                    continue
                if columns is None:
                    if len(row) >= 6 and all(_number(v, decimal_comma) or not v.strip() for v in row[1:5]):
                        columns = HEADERLESS
                    else:
                        columns, header = _columns(path, row), row
                        continue
                entry = _entry(reader.line_num, row, columns, decimal_comma)
                numbers = [float(v) for v in entry[3] if _number(v)]
                low, high = min([low, *numbers]), max([high, *numbers])
                table.append(entry)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot be read as CSV ({type(error).__name__}: {error})") from None
    if not table:
        raise DataError(f"{path}: empty: no rows" if columns is None else f"{path}: no rows after the header")
    return Table(path, table, -_TOLERANCE <= low <= high <= 1 + _TOLERANCE)


# The columns of a file without a header: path,x1,y1,x2,y2,class_name.
HEADERLESS = {"image": 0, "box": (1, 2, 3, 4), "class": 5, "size": None, "difficult": None, "count": 6}


def _entry(number, row, columns, decimal_comma=False) -> tuple:
    """A row -> ``(row number, image, class, box strings, size strings or None, fault or None,
    difficult)``; ``decimal_comma``: numbers may be written ``12,5`` (a spreadsheet's ``;``-delimited
    file in the many locales that write decimals so)."""
    if len(row) < columns["count"]:
        image = row[columns["image"]].strip() if len(row) > columns["image"] else ""
        return number, image, None, (), None, f"{len(row)} fields, {columns['count']} expected", False
    size = tuple(row[i].strip() for i in columns["size"]) if columns["size"] else None
    difficult = columns["difficult"] is not None and row[columns["difficult"]].strip().lower() in ("1", "true", "yes")
    box = tuple(row[i].strip() for i in columns["box"])
    if decimal_comma:
        box = tuple(v.replace(",", ".") for v in box)
        size = size and tuple(v.replace(",", ".") for v in size)
    return number, row[columns["image"]].strip(), row[columns["class"]].strip(), box, size, None, difficult


def _columns(path, header) -> dict:
    keys = [_key(name) for name in header]

    def index(names):
        return next((keys.index(name) for name in names if name in keys), None)

    image, name = index(IMAGE_COLUMNS), index(CLASS_COLUMNS)
    box = next((tuple(keys.index(k) for k in names) for names in BOX_COLUMNS if all(k in keys for k in names)), None)
    missing = [what for what, found in (("the image", image), ("the class", name), ("the box", box)) if found is None]
    if missing:
        raise DataError(
            f"{path}: the header row {','.join(header)[:120]!r} names no column for {' and '.join(missing)}: a "
            f"detection CSV names its columns {', '.join(IMAGE_COLUMNS[:5])} ... (the image), class or label, and "
            "xmin,ymin,xmax,ymax (or x1,y1,x2,y2); or has no header and rows of path,x1,y1,x2,y2,class_name")
    size = next((tuple(keys.index(k) for k in names) for names in SIZE_COLUMNS if all(k in keys for k in names)), None)
    used = [image, name, *box, *(size or ()), index(DIFFICULT_COLUMNS)]
    return {"image": image, "class": name, "box": box, "size": size, "difficult": index(DIFFICULT_COLUMNS),
            "count": max(i for i in used if i is not None) + 1}


def read_classes(path) -> tuple:
    """A classes file: keras-retinanet's ``name,id`` rows (ids 0 .. N-1, any order), or a name a line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [row for row in csv.reader(f) if row and any(v.strip() for v in row)]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: the classes cannot be read ({type(error).__name__}: {error})") from None
    if rows and all(len(row) >= 2 for row in rows):
        if _key(rows[0][1]) in ("id", "classid", "labelid", "index"):  # a header row ("name,id")
            rows = rows[1:]
        try:
            ids = {int(row[1]): row[0].strip() for row in rows}
        except ValueError:
            raise DataError(f"{path}: rows of name,id: an id that is not a whole number") from None
        if sorted(ids) != list(range(len(rows))):
            raise DataError(f"{path}: the ids must be 0 .. {len(rows) - 1}, each once; got {sorted(ids)[:20]}")
        names = tuple(ids[i] for i in range(len(rows)))
    else:
        names = tuple(row[0].strip() for row in rows)
    if not names or not all(names):
        raise DataError(f"{path}: no class names, or an empty one")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: {sorted({n for n in names if names.count(n) > 1})} named twice")
    return names


# --- images ------------------------------------------------------------------------------------------


class _ImageFinder:
    """Finds the image file a row names (see the module docstring); each folder is listed once, and
    the folder that held the last image found is tried first."""

    def __init__(self, csv_path, images=None):
        here = os.path.dirname(csv_path)
        up = os.path.dirname(here)
        roots = [os.path.abspath(images)] if images else []
        roots += [here, os.path.join(here, "images"), up, os.path.join(up, "images"), os.getcwd()]
        self.roots = list(dict.fromkeys(root for root in roots if os.path.isdir(root)))
        self.listings = {}  # folder -> {lower-case name or stem: [file names]}
        self.moved = []  # (path as written, file found) of absolute paths of another machine

    def find(self, name) -> typing.Optional[str]:
        portable = name.replace("\\", "/")
        found = self._under_roots(portable)
        if found:
            return found
        for tail in path_tails(portable):  # an absolute path of another machine: the longest tail here
            found = self._under_roots(tail)
            if found:
                self.moved.append((name, found))
                return found
        return None

    def _under_roots(self, portable) -> typing.Optional[str]:
        for root in self.roots:
            found = self._resolve(os.path.normpath(os.path.join(root, portable)))
            if found:
                self.roots.remove(root)
                self.roots.insert(0, root)
                return found
        return None

    def _resolve(self, path) -> typing.Optional[str]:
        """``path``'s file, its folders and name matched in any letter case or Unicode form
        (:func:`folded`) where not as written, a name without a suffix taken as the image file of
        that name."""
        if os.path.isfile(path):
            return path
        folder, file_name = os.path.split(path)
        if folder != path and not os.path.isdir(folder):
            folder = self._resolve_folder(folder)
            if folder is None:
                return None
        listing = self._listing(folder)
        matches = listing.get(folded(file_name), [])
        if not matches and os.path.splitext(file_name)[1].lower() not in IMAGE_SUFFIXES:
            matches = listing.get(("stem", folded(file_name)), [])  # Open Images' ImageID
        return os.path.join(folder, matches[0]) if len(matches) == 1 else None

    def _resolve_folder(self, folder) -> typing.Optional[str]:
        parent, name = os.path.split(folder)
        if parent == folder:
            return None
        if not os.path.isdir(parent):
            parent = self._resolve_folder(parent)
            if parent is None:
                return None
        matches = [match for match in self._listing(parent).get(folded(name), [])
                   if os.path.isdir(os.path.join(parent, match))]
        return os.path.join(parent, matches[0]) if len(matches) == 1 else None

    def _listing(self, folder) -> dict:
        if folder not in self.listings:
            listing = {}
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            for file_name in names:
                listing.setdefault(folded(file_name), []).append(file_name)
                stem, suffix = os.path.splitext(file_name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    listing.setdefault(("stem", folded(stem)), []).append(file_name)
            self.listings[folder] = listing
        return self.listings[folder]


# --- the source ---------------------------------------------------------------------------------------


def load_csv(
    path,
    split: str = "train",
    images=None,
    classes_file=None,
    skip_empty: bool = False,
    decode_images: bool = True,
    strict: bool = False,
) -> DetectionSource:
    """The images of ``split`` (``"all"``, ``"train"``, ``"val"``, ``"train[:90%]"`` ...) of ``--csv
    path`` (see :func:`read_csv_data`) as a :class:`DetectionSource` with random access.

    images: the folder image paths are relative to (default: looked for, see the module docstring).
    classes_file: the classes (default: the one beside the annotations, else the names found).
    skip_empty: leave out images without objects (by default they are kept, as negatives).
    strict: raise ``DataError`` on the first problem instead of warning and skipping.
    """
    data = read_csv_data(path, classes_file)
    problems = DataProblems(f"CSV {data.path} {split}", strict=strict)
    tables = {file: read_table(file) for files in data.splits.values() for file in files}
    if data.classes_file:
        class_names = read_classes(data.classes_file)
    else:
        class_names = tuple(sorted({entry[2] for table in tables.values() for entry in table.rows if entry[2]},
                                   key=_in_order))
        if not class_names:
            raise DataError(f"{data.path}: no row names a class")
    label_of = {name: label for label, name in enumerate(class_names)}

    listed = []  # (table, image name as written, its rows) in order of first rows
    for match in split_parts(split, data.splits, data.path):
        images_of_part = []
        for file in data.splits[match["name"]]:
            by_image = {}
            for entry in tables[file].rows:
                if not entry[1]:
                    problems.warn("malformed row", f"{file}: row {entry[0]}", "no image named", "row skipped")
                    continue
                # one image however its rows write it (./a.jpg, a.jpg; images\a.jpg, images/a.jpg)
                by_image.setdefault(os.path.normpath(entry[1].replace("\\", "/")), []).append(entry)
            images_of_part.extend((tables[file], name, rows) for name, rows in by_image.items())
        listed.extend(sliced(images_of_part, match))

    finders = {}
    paths = []
    for table, name, _ in listed:
        finder = finders.setdefault(table.path, _ImageFinder(table.path, images))
        paths.append(finder.find(name))
    for table_path, finder in finders.items():
        if finder.moved:
            logger.warning("%s: %d image paths are not on this machine (e.g. %s); found by their last folders and "
                           "name (%s)", table_path, len(finder.moved), *finder.moved[0])
    found = [(item, path) for item, path in zip(listed, paths, strict=True) if path is not None]
    for (table, name, rows), path in zip(listed, paths, strict=True):
        if path is None:
            problems.warn("missing image file", f"{table.path}: row {rows[0][0]}",
                          f"image {name} not found (looked in {', '.join(finders[table.path].roots)})", "image skipped")
    checked = check_images([path for _, path in found])

    records = []
    for ((table, name, rows), image_path), image in zip(found, checked, strict=True):
        if isinstance(image, Exception):
            problems.warn("bad image file", image_path, str(image), "image skipped")
            continue
        objects = _objects(table, name, rows, image, label_of, problems)
        if objects is None:
            continue
        boxes, labels, difficult = objects
        if skip_empty and not len(labels):
            continue
        records.append(ImageRecord(path=image_path, filename=name.replace("\\", "/"), boxes=boxes, labels=labels,
                                   difficult=difficult))
    records = one_record_per_image(records, problems)
    problems.summary(len(records), hint="give the images' folder with --csv-images"
                     if problems.counts["missing image file"] else "")
    return records_to_source(records, class_names, problems.source, problems.counts, decode_images=decode_images)


def _objects(table: Table, name, rows, image, label_of, problems):
    """An image's rows -> (normalised ``yxyx`` float32 ``[N, 4]``, int64 labels, difficult), or None
    for an image to skip (warned)."""
    where = f"{table.path}: row {rows[0][0]} ({name})"
    sizes = {entry[4] for entry in rows if entry[4] and all(_number(v) for v in entry[4])}
    stated = None
    if len(sizes) == 1:
        width, height = (float(v) for v in sizes.pop())
        stated = (height, width)
    as_shown = stated is not None and annotated_as_shown(image, stated)
    if as_shown:
        problems.warn("EXIF orientation", where, f"the rows' size {stated[1]:g} x {stated[0]:g} (w x h) is the "
                      f"image as shown (EXIF orientation {image.orientation}; stored {image.width} x {image.height})",
                      "boxes turned onto the stored pixels")
    elif stated is not None and not table.normalised and stated != (float(image.height), float(image.width)):
        problems.warn("size mismatch", where, f"the rows say {stated[1]:g} x {stated[0]:g} (w x h) but the image is "
                      f"{image.width} x {image.height}", "using the image's size")
    elif frame_undecided(image, stated):
        problems.warn("EXIF orientation", where, exif_undecided(image), "boxes taken as stored")
    # Boxes are divided by the size of the frame they were drawn in; a normalised one already is.
    height, width = (1.0, 1.0) if table.normalised else shown_size(image) if as_shown else (image.height, image.width)
    slack = _ROUNDING if table.normalised else 1.0  # reaching out by less is rounding: clipped unwarned

    boxes, labels, difficult, seen = [], [], [], set()
    for number, _, class_name, box, _, fault, hard in rows:
        here = f"{table.path}: row {number} ({name})"
        if fault is None and not class_name and not any(box):
            continue  # a negative's row
        if fault is None:
            fault = _fault(class_name, box)
        if fault:
            problems.warn("malformed row", here, fault, "image skipped")
            return None
        if class_name not in label_of:
            problems.warn("unknown class", here, f"class {class_name!r} is not one of the classes", "object skipped")
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        if (class_name, x1, y1, x2, y2) in seen:
            problems.warn("duplicate row", here, "the same object as an earlier row", "kept once")
            continue
        seen.add((class_name, x1, y1, x2, y2))
        normalised = box_in_image((x1, y1, x2, y2), height, width, problems, here, f"box ({','.join(box)})", slack)
        if normalised is None:
            continue
        boxes.append(normalised)
        labels.append(label_of[class_name])
        difficult.append(hard)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if as_shown:
        boxes = to_stored_frame(boxes, image.orientation)
    return boxes, np.asarray(labels, np.int64), np.asarray(difficult, np.bool_)


def _in_order(name):
    """Names sorted as words, class ids (``2`` before ``10``) as numbers; ids of one number
    (``1``, ``01``) by their text, so the order never depends on the set's iteration order."""
    return (0, int(name), name) if name.isascii() and name.isdigit() else (1, 0, name)


def _fault(class_name, box) -> str:
    if not all(box):
        return f"a box with an empty coordinate ({','.join(box)})"
    if not all(_number(v) for v in box):
        return f"a box that is not numbers ({','.join(box)[:60]})"
    if not all(math.isfinite(float(v)) for v in box):
        return f"a coordinate that is not finite ({','.join(box)})"
    if not class_name:
        return "a box without a class"
    return ""

